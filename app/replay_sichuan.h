#pragma once
// The Sichuan fraud users file (sichuan-fraud/users_train.csv: one row of
// per-number summary features per phone number) as events of the profiles
// stream, for `tocsin replay` (docs/packs/fraud.md, "Replaying the Sichuan data").
//
// Each row becomes one profile: `number` is phone_no_m (a pseudonym in that
// data), every other field of the profiles schema (pipeline/event.cc) is the
// column of the same name. The file carries no dates, so every profile gets
// the same event time, SichuanOptions::as_of_ms. The `label` column (fraud or
// not) is ground truth, not a feature: it is never mapped.
#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "app/replay.h"

namespace tocsin::app {

// The column every Sichuan users file has: read_replay_events can check for it.
inline constexpr std::string_view kSichuanNumberColumn = "phone_no_m";

struct SichuanOptions {
  int64_t as_of_ms = kSichuanDefaultAsOfMs;  // the event time of every profile
  std::string id_prefix = "sichuan-";        // profile_id = prefix + the 1-based data row number
};

// Maps one data row (`row_number`: 1 for the first row after the header).
// A value that is empty or NaN means the number has no such records and is
// sent as 0, as the fitted model reads it (tools/fit_fraud_profile.py) —
// except arpu_mean, which is left out (unknown revenue is not 0). A count
// written as a decimal ("1258.0") becomes an integer (rounded). A column the
// file lacks is left out. Returns nullopt (stats.invalid) for a row without
// phone_no_m or with a value that is not a number.
std::optional<ReplayEvent> map_sichuan_user_row(const CsvHeader& h, const std::vector<std::string>& row,
                                                int64_t row_number, const SichuanOptions& o, MapStats& stats);

// Reads a whole users file (header first). False with `error` set when the
// header has no phone_no_m column.
bool read_sichuan_users(std::istream& in, const SichuanOptions& o, std::vector<ReplayEvent>& events,
                        MapStats& stats, std::string& error);

}  // namespace tocsin::app
