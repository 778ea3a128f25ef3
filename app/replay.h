#pragma once
// `tocsin replay`: turns recorded public data (CSV or JSONL) into events of the
// three input streams and runs them through an in-process rule engine whose
// timers follow event time (`pipeline.timers: event`), then summarises the alerts.
//
// Built-in mappings (docs/packs/heating.md, "Replaying NYC 311"):
//   nyc311    311 service requests (CSV): complaint types containing HEAT become
//             complaints `received`, category heating.no_heat.
//   heatseek  Heat Seek sensor readings (CSV, °F): faults `telemetry` with indoor_temp_c.
//   jsonl     one event per line in the stream's own JSON; the stream is --stream or
//             the file's name (calls.jsonl, faults.jsonl, complaints.jsonl).
#include <array>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/event.h"

namespace tocsin::app {

// RFC 4180 CSV: quoted fields may hold commas, "" and line breaks.
class CsvReader {
 public:
  explicit CsvReader(std::istream& in) : in_(in) {}
  // Reads the next record into `fields`; false at end of input.
  bool next(std::vector<std::string>& fields);
  // The raw text of the last record (for hashing).
  const std::string& raw() const { return raw_; }

 private:
  std::istream& in_;
  std::string raw_;
};

// One event ready for the decoder.
struct ReplayEvent {
  Stream stream = Stream::kComplaints;
  int64_t time_ms = 0;
  std::string json;
};

// A CSV header: column name -> index.
struct CsvHeader {
  std::map<std::string, size_t, std::less<>> index;
  explicit CsvHeader(const std::vector<std::string>& names);
  // The (trimmed) value of `column` in `row`, or "" when the column is absent.
  std::string_view get(const std::vector<std::string>& row, std::string_view column) const;
};

struct MapStats {
  int64_t rows = 0;       // data rows read
  int64_t mapped = 0;     // rows that became events
  int64_t skipped = 0;    // rows the mapping does not take (e.g. not a heating complaint)
  int64_t invalid = 0;    // rows the mapping takes but cannot read (no address, bad time...)
  int64_t jittered = 0;   // rows whose time was truncated to midnight and spread over the day
};

// "12/25/2013 11:59:08 PM" in New York local time (US Eastern, with DST) -> epoch ms.
std::optional<int64_t> parse_nyc_datetime(std::string_view text);
// "2014-12-17 02:00:19.067+00" -> epoch ms.
std::optional<int64_t> parse_sql_timestamp(std::string_view text);
// Upper case, runs of spaces collapsed, trimmed.
std::string normalize_address(std::string_view s);
// Synthetic phone-like complainant id derived from a row's raw text.
std::string synthetic_complainant(std::string_view raw_row);

// Maps one row; nullopt when the row is skipped or invalid (stats say which).
std::optional<ReplayEvent> map_nyc311_row(const CsvHeader& h, const std::vector<std::string>& row,
                                          std::string_view raw, uint64_t jitter_seed, bool jitter, MapStats& stats);
std::optional<ReplayEvent> map_heatseek_row(const CsvHeader& h, const std::vector<std::string>& row, MapStats& stats);

struct ReplayOptions {
  std::vector<std::string> inputs;
  std::string mapping;            // nyc311 | heatseek | jsonl
  std::string stream;             // jsonl: the stream (default: from the file name)
  std::vector<std::string> rule_files;
  uint64_t jitter_seed = 1;
  bool jitter = true;
  std::string inferred_type_prefix = "heating.suspected";  // alert types counted as inferred outages
  int64_t progress_every = 10000;
  bool print_alerts = false;
};

struct ReplaySummary {
  MapStats map;
  int64_t events_sent = 0;
  int64_t rejected = 0;           // events the decoder refused
  std::array<int64_t, kStreamCount> by_stream{};
  int64_t first_time_ms = 0, last_time_ms = 0;
  std::map<std::string, int64_t> alerts_by_rule;  // every loaded rule, 0 included
  int64_t alerts = 0;
  int64_t inferred_alerts = 0;
  std::set<std::string> inferred_buildings, inferred_streets;
};

// Reads and maps the inputs (sorted by event time, stable). Errors go to `error`.
bool read_replay_events(const ReplayOptions& o, std::vector<ReplayEvent>& events, MapStats& stats, std::string& error);
// Runs the whole replay; progress lines and alerts go to `log`. Returns false
// with `error` set when the rules or inputs cannot be loaded.
bool run_replay(const ReplayOptions& o, ReplaySummary& summary, std::ostream& log, std::string& error);
void print_replay_summary(const ReplayOptions& o, const ReplaySummary& s, std::ostream& out);
// The subcommand: 0 ok, 2 when inputs or rules cannot be loaded.
int replay_main(const ReplayOptions& o, std::ostream& out, std::ostream& err);

}  // namespace tocsin::app
