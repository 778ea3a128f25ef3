#include "rules/calendar.h"

#include <algorithm>
#include <cstdio>

namespace tocsin::rules {
namespace {
constexpr int64_t kDayMs = 86'400'000;

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : (a - b + 1) / b; }

// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}
}  // namespace

int32_t Calendar::day_of(int64_t epoch_ms) const {
  return static_cast<int32_t>(floor_div(epoch_ms + utc_offset_ms, kDayMs));
}

bool Calendar::working(int32_t day) const {
  if (std::binary_search(workdays.begin(), workdays.end(), day)) return true;
  if (std::binary_search(holidays.begin(), holidays.end(), day)) return false;
  const int weekday = static_cast<int>(((day % 7) + 7 + 3) % 7) + 1;  // 1970-01-01 was a Thursday
  return !(weekend >> (weekday - 1) & 1);
}

int64_t Calendar::add(int64_t start_ms, int64_t duration_ms) const {
  int32_t day = day_of(start_ms);
  int64_t pos = start_ms + utc_offset_ms - static_cast<int64_t>(day) * kDayMs;  // ms into the local day
  if (!working(day)) {
    do ++day; while (!working(day));
    pos = 0;
  }
  int64_t remaining = duration_ms;
  while (remaining > kDayMs - pos) {
    remaining -= kDayMs - pos;
    do ++day; while (!working(day));
    pos = 0;
  }
  return static_cast<int64_t>(day) * kDayMs + pos + remaining - utc_offset_ms;
}

bool parse_day(const std::string& text, int32_t& day) {
  int y = 0;
  unsigned m = 0, d = 0;
  char tail = 0;
  if (text.size() != 10 || std::sscanf(text.c_str(), "%4d-%2u-%2u%c", &y, &m, &d, &tail) != 3) return false;
  static constexpr unsigned kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m < 1 || m > 12 || d < 1 || d > kDays[m - 1]) return false;
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (m == 2 && d == 29 && !leap) return false;
  day = static_cast<int32_t>(days_from_civil(y, m, d));
  return true;
}

}  // namespace tocsin::rules
