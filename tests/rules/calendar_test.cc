#include "rules/calendar.h"

#include <gtest/gtest.h>

namespace tocsin::rules {
namespace {

constexpr int64_t kHour = 3'600'000, kDay = 24 * kHour;

int32_t day(const char* text) {
  int32_t d = 0;
  EXPECT_TRUE(parse_day(text, d)) << text;
  return d;
}

TEST(Calendar, ParsesDays) {
  EXPECT_EQ(day("1970-01-01"), 0);
  EXPECT_EQ(day("2026-11-26"), 20783);
  EXPECT_EQ(day("2024-02-29"), day("2024-02-28") + 1);
  int32_t d;
  EXPECT_FALSE(parse_day("2026-02-29", d));  // not a leap year
  EXPECT_FALSE(parse_day("2026-13-01", d));
  EXPECT_FALSE(parse_day("2026-1-01", d));
  EXPECT_FALSE(parse_day("2026-01-01x", d));
}

TEST(Calendar, WeekendsHolidaysAndMakeUpDays) {
  Calendar c;
  c.utc_offset_ms = 8 * kHour;
  c.holidays = {day("2026-10-01")};
  c.workdays = {day("2026-10-10")};  // a Saturday
  EXPECT_TRUE(c.working(day("2026-11-26")));   // Thursday
  EXPECT_FALSE(c.working(day("2026-11-28")));  // Saturday
  EXPECT_FALSE(c.working(day("2026-11-29")));  // Sunday
  EXPECT_FALSE(c.working(day("2026-10-01")));  // holiday (a Thursday)
  EXPECT_TRUE(c.working(day("2026-10-10")));   // make-up Saturday
  // 2026-11-26T20:00Z is already Friday in UTC+8.
  EXPECT_EQ(c.day_of(int64_t{day("2026-11-26")} * kDay + 20 * kHour), day("2026-11-27"));
}

TEST(Calendar, AddsWorkingTimeOnly) {
  Calendar c;
  c.utc_offset_ms = 8 * kHour;
  const int64_t thu_0800_local = int64_t{day("2026-11-26")} * kDay;  // 00:00Z
  EXPECT_EQ(c.add(thu_0800_local, 2 * kHour), thu_0800_local + 2 * kHour);  // within the day
  EXPECT_EQ(c.add(thu_0800_local, kDay), thu_0800_local + kDay);           // Fri 08:00
  // 2 working days from Thursday 08:00: Friday, then the weekend is skipped -> Mon 08:00.
  EXPECT_EQ(c.add(thu_0800_local, 2 * kDay), thu_0800_local + 4 * kDay);
  // Starting on Saturday: counts from Monday 00:00 local.
  const int64_t sat_1200_local = thu_0800_local + 2 * kDay + 4 * kHour;
  const int64_t mon_0000_local = int64_t{day("2026-11-30")} * kDay - 8 * kHour;
  EXPECT_EQ(c.add(sat_1200_local, 3 * kHour), mon_0000_local + 3 * kHour);
  // Exactly to midnight stays at midnight; a zero duration on a working day is the start.
  EXPECT_EQ(c.add(thu_0800_local, 16 * kHour), thu_0800_local + 16 * kHour);
  EXPECT_EQ(c.add(thu_0800_local, 0), thu_0800_local);
  // 7 working days from a Thursday cross two weekends: 11 calendar days.
  EXPECT_EQ(c.add(thu_0800_local, 7 * kDay), thu_0800_local + 11 * kDay);
}

TEST(Calendar, NegativeOffsetAndNoWeekend) {
  Calendar c;
  c.utc_offset_ms = -5 * kHour;
  c.weekend = 0;
  c.holidays = {day("2026-12-25")};
  const int64_t dec24_2000_local = int64_t{day("2026-12-24")} * kDay + 20 * kHour + 5 * kHour;
  // 4 h left on the 24th, the 25th off, then 20 h on the 26th.
  EXPECT_EQ(c.add(dec24_2000_local, kDay), dec24_2000_local + 2 * kDay);
}

}  // namespace
}  // namespace tocsin::rules
