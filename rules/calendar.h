#pragma once
// Working-day calendars for service clocks (docs/rules.md, "Calendars").
//
// A calendar says which local days are working days: every day except its
// weekend days and holidays, plus make-up working days (调休) that fall on a
// weekend. Local days are taken at a fixed UTC offset (China has no DST).
// A clock on a calendar counts only time inside working days, 24 h per day.
#include <cstdint>
#include <string>
#include <vector>

namespace tocsin::rules {

struct Calendar {
  std::string name;
  int64_t utc_offset_ms = 0;
  uint8_t weekend = 0b1100000;   // bit d-1 for ISO weekday d (1 = Monday): Saturday and Sunday
  std::vector<int32_t> holidays;  // local day numbers (days since 1970-01-01), sorted
  std::vector<int32_t> workdays;  // make-up working days, sorted

  // The local day number of a time.
  int32_t day_of(int64_t epoch_ms) const;
  bool working(int32_t day) const;
  // The time at which `duration_ms` of working time has passed after `start_ms`.
  // A start on a non-working day counts from the next working day's midnight.
  // Requires at least one working day in every 366 (checked at load).
  int64_t add(int64_t start_ms, int64_t duration_ms) const;
};

// "2026-10-01" -> day number; false when it is not a valid date.
bool parse_day(const std::string& text, int32_t& day);

}  // namespace tocsin::rules
