#include "pipeline/json_writer.h"

#include <bit>
#include <charconv>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "pipeline/decoder.h"

namespace tocsin {

JsonWriter& JsonWriter::key(std::string_view k) {
  sep();
  out_ += '"';
  append_json_escaped(out_, k);
  out_ += "\":";
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::str(std::string_view v) {
  sep();
  out_ += '"';
  append_json_escaped(out_, v);
  out_ += '"';
  return *this;
}

JsonWriter& JsonWriter::num(int64_t v) {
  sep();
  char buf[24];
  out_.append(buf, static_cast<size_t>(std::to_chars(buf, buf + sizeof buf, v).ptr - buf));
  return *this;
}

JsonWriter& JsonWriter::num(double v) {
  sep();
  char buf[32];  // as printf("%.17g"), without printf's locale and stream machinery
  out_.append(buf, static_cast<size_t>(std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general, 17).ptr - buf));
  return *this;
}

JsonWriter& JsonWriter::time(int64_t epoch_ms) {
  char buf[32];
  return str(format_rfc3339_ms(epoch_ms, buf));
}

namespace {

bool needs_escape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

#if defined(__SSE2__)
// A bit per byte of p[0, 16) that needs an escape.
unsigned escapes16(const char* p) {
  const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i printable = _mm_cmpeq_epi8(_mm_max_epu8(v, space), v);  // c >= 0x20
  const __m128i special = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
  return (~static_cast<unsigned>(_mm_movemask_epi8(printable)) & 0xffff) | static_cast<unsigned>(_mm_movemask_epi8(special));
}
#endif

// Bit 7 of byte k set where p[k] (k < 8, little-endian) needs an escape; the
// lowest such bit is exact, bits above it may be borrows (SWAR).
uint64_t escapes8(const char* p) {
  constexpr uint64_t kOnes = 0x0101010101010101, kHigh = 0x8080808080808080;
  uint64_t x;
  std::memcpy(&x, p, 8);
  const uint64_t q = x ^ (kOnes * '"'), b = x ^ (kOnes * '\\');
  return (((x - kOnes * 0x20) & ~x) | ((q - kOnes) & ~q) | ((b - kOnes) & ~b)) & kHigh;
}

// The first index at or after `i` whose character needs an escape, or s.size():
// 16 bytes at a time with SSE2, then 8; a tail of either width is read as the
// last full block, overlapping bytes already known plain, so that only strings
// shorter than 8 are scanned a character at a time.
size_t plain_until(std::string_view s, size_t i) {
  const char* p = s.data();
  const size_t n = s.size(), from = i;
#if defined(__SSE2__)
  for (; n - i >= 16; i += 16)
    if (const unsigned m = escapes16(p + i)) return i + static_cast<size_t>(__builtin_ctz(m));
  if (i == n) return n;
  if (n - from >= 16) {
    const unsigned m = escapes16(p + n - 16);
    return m ? n - 16 + static_cast<size_t>(__builtin_ctz(m)) : n;
  }
#endif
  if constexpr (std::endian::native == std::endian::little) {
    for (; n - i >= 8; i += 8)
      if (const uint64_t m = escapes8(p + i)) return i + static_cast<size_t>(__builtin_ctzll(m)) / 8;
    if (i == n) return n;
    if (n - from >= 8) {
      const uint64_t m = escapes8(p + n - 8);
      return m ? n - 8 + static_cast<size_t>(__builtin_ctzll(m)) / 8 : n;
    }
  }
  while (i < n && !needs_escape(static_cast<unsigned char>(p[i]))) ++i;
  return i;
}

}  // namespace

// Appends runs of characters that need no escape at once: an alert is
// mostly such runs, and appending them one character at a time cost the
// worker ~1000 instructions per event.
void append_json_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t run = 0;  // where the pending run of plain characters starts
  for (size_t i = plain_until(s, 0); i < s.size(); i = plain_until(s, run)) {
    out.append(s.data() + run, i - run);
    run = i + 1;
    const auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: {
        const char u[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        out.append(u, sizeof u);
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
}

std::string mask_phone(std::string_view number) {
  std::string out;
  size_t digits = 0;
  for (char c : number) digits += (c >= '0' && c <= '9');
  if (digits < 7) return "****";
  size_t seen = 0;
  for (char c : number) {
    if (c < '0' || c > '9') {
      out += c;
      continue;
    }
    out += (seen < 3 || seen >= digits - 4) ? c : '*';
    ++seen;
  }
  return out;
}

void append_masked_text(std::string& out, std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    if (text[j] == '+') ++j;
    size_t k = j;
    while (k < text.size() && text[k] >= '0' && text[k] <= '9') ++k;
    if (k - j >= 7) {
      out += mask_phone(text.substr(i, k - i));
      i = k;
    } else {
      out.append(text.substr(i, k > i ? k - i : 1));
      i = k > i ? k : i + 1;
    }
  }
}

}  // namespace tocsin
