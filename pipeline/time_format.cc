#include <algorithm>

#if defined(__SSE2__)
#include <emmintrin.h>
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

#if defined(__SSE2__)
// The canonical form producers write, "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 bytes), of
// a time that exists and is not a leap second: its epoch milliseconds, checked
// with two 16-byte compares instead of byte by byte. False for anything else
// (the general parser then decides); true only where it would give the same.
bool canonical_rfc3339(const char* t, int64_t& epoch_ms) {
  // Bytes 0..15 and 8..23: the separators where the layout has them, digits elsewhere.
  static constexpr char kLow[] = "0000-00-00T00:00", kHigh[] = "00T00:00:00.000Z";
  constexpr unsigned kLowSep = 1u << 4 | 1u << 7 | 1u << 10 | 1u << 13;  // of bytes 0..15
  constexpr unsigned kHighSep = 1u << 2 | 1u << 5 | 1u << 8 | 1u << 11 | 1u << 15;  // of bytes 8..23
  const __m128i zero = _mm_set1_epi8('0'), nine = _mm_set1_epi8(9);
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t));
  const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t + 8));
  auto digits = [&](__m128i v) {  // bit i: byte i is '0'..'9'
    const __m128i d = _mm_sub_epi8(v, zero);
    return static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(d, nine), d)));
  };
  auto equal = [](__m128i v, const char* pattern) {  // bit i: byte i is pattern[i]
    return static_cast<unsigned>(
        _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(pattern)))));
  };
  const unsigned lo_ok = (digits(lo) & ~kLowSep) | (equal(lo, kLow) & kLowSep);
  const unsigned hi_ok = (digits(hi) & ~kHighSep) | (equal(hi, kHigh) & kHighSep);
  if (lo_ok != 0xffff || hi_ok != 0xffff) return false;
  auto num = [t](int at, int n) {
    int v = 0;
    for (int i = 0; i < n; ++i) v = v * 10 + (t[at + i] - '0');
    return v;
  };
  const int year = num(0, 4), mon = num(5, 2), day = num(8, 2), hh = num(11, 2), mm = num(14, 2),
            ss = num(17, 2);
  if (mon < 1 || mon > 12 || day < 1 || hh > 23 || mm > 59 || ss > 59 ||
      day > kDaysInMonth[mon - 1] + (mon == 2 && leap(year)))
    return false;
  const int64_t days = days_from_civil(year, static_cast<unsigned>(mon), static_cast<unsigned>(day));
  epoch_ms = ((days * 24 + hh) * 60 + mm) * 60000LL + ss * 1000LL + num(20, 3);
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
#if defined(__SSE2__)
  if (s.size() == 24 && canonical_rfc3339(s.data(), epoch_ms)) return DecodeError::kOk;
#endif
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
