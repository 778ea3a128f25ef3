#include <algorithm>
#include <cstring>

#if defined(__SSE4_1__)
#include <smmintrin.h>
#endif

#include "pipeline/decoder.h"

namespace tocsin {
namespace {

void civil_from_days(int64_t z, int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
}

bool digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    const char c = s[i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

constexpr int kDaysInMonth[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

#if !defined(__SSE4_1__)  // else CanonicalTimeReader::read reads it with vectors
// Whether t[0, 24) has the layout "DDDD-DD-DDTDD:DD:DD.DDDZ" (D a digit).
bool canonical_layout(const char* t) {
  static constexpr char kLayout[] = "0000-00-00T00:00:00.000Z";
  for (int i = 0; i < 24; ++i)
    if (kLayout[i] == '0' ? static_cast<unsigned char>(t[i] - '0') > 9 : t[i] != kLayout[i]) return false;
  return true;
}

// Two digits at t[at], known to be digits.
inline int two(const char* t, int at) { return (t[at] - '0') * 10 + (t[at + 1] - '0'); }

// Of a canonical layout: milliseconds into the day, or -1 for no such time
// (hour 24 and up, minute 60 and up, a leap second: the general parser decides).
inline int64_t canonical_time_of_day(const char* t) {
  const int hh = two(t, 11), mm = two(t, 14), ss = two(t, 17);
  if (hh > 23 || mm > 59 || ss > 59) return -1;
  return ((hh * 60 + mm) * 60 + ss) * 1000LL + two(t, 20) * 10 + (t[22] - '0');
}

// Of a canonical layout: the epoch day of its date; false for no such date.
bool canonical_day(const char* t, int64_t& days) {
  const int year = two(t, 0) * 100 + two(t, 2), mon = two(t, 5), day = two(t, 8);
  if (mon < 1 || mon > 12 || day < 1 || day > kDaysInMonth[mon - 1] + (mon == 2 && leap(year))) return false;
  days = days_from_civil(year, static_cast<unsigned>(mon), static_cast<unsigned>(day));
  return true;
}
#endif

}  // namespace

int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

DecodeError parse_rfc3339_ms(std::string_view s, int64_t& epoch_ms) {
  // The form producers write: two compares, no byte-by-byte checks.
  if (s.size() == 24 && CanonicalTimeReader().read(s.data(), epoch_ms)) return DecodeError::kOk;
  int year, mon, day, hh, mm, ss;
  if (!digits(s, 0, 4, year) || s.size() < 19 || s[4] != '-' || !digits(s, 5, 2, mon) ||
      s[7] != '-' || !digits(s, 8, 2, day) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !digits(s, 11, 2, hh) || s[13] != ':' || !digits(s, 14, 2, mm) || s[16] != ':' ||
      !digits(s, 17, 2, ss))
    return DecodeError::kWrongType;
  size_t pos = 19;
  int ms = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int n = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (n < 3) ms = ms * 10 + (s[pos] - '0');
      ++n;
      ++pos;
    }
    if (n == 0) return DecodeError::kWrongType;
    for (; n < 3; ++n) ms *= 10;
  }
  int offset_min = 0;
  if (pos >= s.size()) return DecodeError::kWrongType;
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
  } else if (s[pos] == '+' || s[pos] == '-') {
    int oh, om;
    if (!digits(s, pos + 1, 2, oh) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
        !digits(s, pos + 4, 2, om))
      return DecodeError::kWrongType;
    if (oh > 23 || om > 59) return DecodeError::kImpossibleTime;
    offset_min = (oh * 60 + om) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return DecodeError::kWrongType;
  }
  if (pos != s.size()) return DecodeError::kWrongType;
  if (mon < 1 || mon > 12 || day < 1) return DecodeError::kImpossibleTime;
  const int mdays = kDaysInMonth[mon - 1] + (mon == 2 && leap(year) ? 1 : 0);
  if (day > mdays || hh > 23 || mm > 59 || ss > 60) return DecodeError::kImpossibleTime;
  if (ss == 60) ss = 59;  // leap second: clamp
  const int64_t days = days_from_civil(year, static_cast<unsigned>(mon), static_cast<unsigned>(day));
  epoch_ms = ((days * 24 + hh) * 60 + mm) * 60000LL + ss * 1000LL + ms - offset_min * 60000LL;
  if (epoch_ms < kMinRfc3339Ms || epoch_ms > kMaxRfc3339Ms) return DecodeError::kImpossibleTime;
  return DecodeError::kOk;
}

#if defined(__SSE4_1__)
// The canonical form read with a few vector instructions: the layout checked
// as canonical_layout() does, then the 17 digits gathered into pairs and
// multiplied out at once, every field range-checked by one compare.
bool CanonicalTimeReader::read(const char* t, int64_t& epoch_ms) {
  static constexpr char kLayout[] = "0000-00-00T00:00:00.000Z";
  constexpr unsigned kLowSep = 1u << 4 | 1u << 7 | 1u << 10 | 1u << 13;               // of bytes 0..15
  constexpr unsigned kHighSep = 1u << 2 | 1u << 5 | 1u << 8 | 1u << 11 | 1u << 15;  // of bytes 8..23
  auto load = [](const char* at) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(at)); };
  const __m128i lo = load(t), hi = load(t + 8);
  const __m128i zero = _mm_set1_epi8('0'), nine = _mm_set1_epi8(9);
  const __m128i dlo = _mm_sub_epi8(lo, zero), dhi = _mm_sub_epi8(hi, zero);
  auto digits = [&](__m128i d) {  // bit i: byte i was '0'..'9'
    return static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(d, nine), d)));
  };
  auto equal = [&](__m128i v, const char* pattern) {  // bit i: byte i is pattern[i]
    return static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, load(pattern))));
  };
  if (((digits(dlo) & ~kLowSep) | (equal(lo, kLayout) & kLowSep)) != 0xffff ||
      ((digits(dhi) & ~kHighSep) | (equal(hi, kLayout + 8) & kHighSep)) != 0xffff)
    return false;
  // Digit pairs YY YY MM DD hh mm ss and the first two of mmm, as eight 16-bit numbers.
  const __m128i pairs = _mm_maddubs_epi16(
      _mm_or_si128(_mm_shuffle_epi8(dlo, _mm_setr_epi8(0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, -1, -1, -1, -1)),
                   _mm_shuffle_epi8(dhi, _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 9, 10, 12, 13))),
      _mm_setr_epi8(10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1));
  // Month 1..12, day 1..31, hour 0..23, minute and second 0..59 (hour 24, a leap
  // second: the general parser decides).
  const __m128i out_of_range =
      _mm_or_si128(_mm_cmpgt_epi16(pairs, _mm_setr_epi16(99, 99, 12, 31, 23, 59, 59, 99)),
                   _mm_cmplt_epi16(pairs, _mm_setr_epi16(0, 0, 1, 1, 0, 0, 0, 0)));
  if (_mm_movemask_epi8(out_of_range)) return false;
  // year, -, hh * 60 + mm, ss * 1000 + the first two digits of mmm * 10
  const __m128i sums = _mm_madd_epi16(pairs, _mm_setr_epi16(100, 1, 0, 0, 60, 1, 1000, 10));
  const int64_t tod = static_cast<int64_t>(_mm_extract_epi32(sums, 2)) * 60000 + _mm_extract_epi32(sums, 3) +
                      (t[22] - '0');
  uint64_t ymd;  // "YYYY-MM-" and "DD": the date in two loads
  uint16_t dd;
  std::memcpy(&ymd, t, 8);
  std::memcpy(&dd, t + 8, 2);
  if (ymd != date_ymd_ || dd != date_dd_) {
    const int year = _mm_cvtsi128_si32(sums), mon = _mm_extract_epi16(pairs, 2), day = _mm_extract_epi16(pairs, 3);
    if (day > kDaysInMonth[mon - 1] + (mon == 2 && leap(year))) return false;
    date_ymd_ = ymd;
    date_dd_ = dd;
    day_ms_ = days_from_civil(year, static_cast<unsigned>(mon), static_cast<unsigned>(day)) * 86400000;
  }
  epoch_ms = day_ms_ + tod;
  return true;
}
#else
bool CanonicalTimeReader::read(const char* t, int64_t& epoch_ms) {
  if (!canonical_layout(t)) return false;
  const int64_t tod = canonical_time_of_day(t);
  if (tod < 0) return false;
  uint64_t ymd;  // "YYYY-MM-" and "DD": the date in two loads
  uint16_t dd;
  std::memcpy(&ymd, t, 8);
  std::memcpy(&dd, t + 8, 2);
  if (ymd != date_ymd_ || dd != date_dd_) {
    int64_t days;
    if (!canonical_day(t, days)) return false;
    date_ymd_ = ymd;
    date_dd_ = dd;
    day_ms_ = days * 86400000;
  }
  epoch_ms = day_ms_ + tod;
  return true;
}
#endif

std::string_view format_rfc3339_ms(int64_t epoch_ms, char (&buf)[32]) {
  epoch_ms = std::clamp(epoch_ms, kMinRfc3339Ms, kMaxRfc3339Ms);
  int64_t days = epoch_ms >= 0 ? epoch_ms / 86400000 : (epoch_ms - 86399999) / 86400000;
  int64_t rem = epoch_ms - days * 86400000;
  int64_t y;
  unsigned m, d;
  civil_from_days(days, y, m, d);
  // "YYYY-MM-DDTHH:MM:SS.mmmZ", digits written in place (the year is 0..9999).
  auto put = [&buf](size_t at, int64_t v, int width) {
    for (int i = width - 1; i >= 0; --i, v /= 10) buf[at + static_cast<size_t>(i)] = static_cast<char>('0' + v % 10);
  };
  put(0, y, 4);
  buf[4] = '-';
  put(5, m, 2);
  buf[7] = '-';
  put(8, d, 2);
  buf[10] = 'T';
  put(11, rem / 3600000, 2);
  buf[13] = ':';
  put(14, rem / 60000 % 60, 2);
  buf[16] = ':';
  put(17, rem / 1000 % 60, 2);
  buf[19] = '.';
  put(20, rem % 1000, 3);
  buf[23] = 'Z';
  buf[24] = '\0';
  return {buf, 24};
}

}  // namespace tocsin
