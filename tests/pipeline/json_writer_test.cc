#include "pipeline/json_writer.h"

#include <gtest/gtest.h>

#include <cinttypes>
#include <cstdio>
#include <limits>
#include <random>

#include "pipeline/decoder.h"

namespace tocsin {
namespace {

TEST(JsonWriter, WritesNestedStructures) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().key("a").num(int64_t{1}).key("b").begin_array().str("x\"y").boolean(true).null().end_array()
      .key("c").begin_object().key("t").time(0).end_object().key("d").num(0.5).end_object();
  EXPECT_EQ(out, R"({"a":1,"b":["x\"y",true,null],"c":{"t":"1970-01-01T00:00:00.000Z"},"d":0.5})");
}

// Numbers and times are written without printf, but must read exactly as
// printf("%lld"), printf("%.17g") and the RFC 3339 format always wrote them.
TEST(JsonWriter, NumbersAndTimesAsPrintfWroteThem) {
  const int64_t ints[] = {0, -1, 7, 1795702987000, std::numeric_limits<int64_t>::min(),
                          std::numeric_limits<int64_t>::max()};
  for (int64_t v : ints) {
    std::string out;
    JsonWriter(out).num(v);
    char want[32];
    std::snprintf(want, sizeof want, "%" PRId64, v);
    EXPECT_EQ(out, want);
  }
  const double doubles[] = {0.0, -0.0, 0.5, 0.1, 1.0 / 3, 71.5, -3.5, 1e21, 1e-7, 123456789012345678.0,
                            std::numeric_limits<double>::max(), std::numeric_limits<double>::denorm_min()};
  for (double v : doubles) {
    std::string out;
    JsonWriter(out).num(v);
    char want[40];
    std::snprintf(want, sizeof want, "%.17g", v);
    EXPECT_EQ(out, want);
  }
  const int64_t times[] = {0, -1, 1795702987123, kMinRfc3339Ms, kMaxRfc3339Ms, kMinRfc3339Ms - 5,
                           std::numeric_limits<int64_t>::max(), 951782400000 /* 2000-02-29 */};
  const char* want[] = {"1970-01-01T00:00:00.000Z", "1969-12-31T23:59:59.999Z", "2026-11-26T14:23:07.123Z",
                        "0000-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z", "0000-01-01T00:00:00.000Z",
                        "9999-12-31T23:59:59.999Z", "2000-02-29T00:00:00.000Z"};
  for (size_t i = 0; i < std::size(times); ++i) {
    char buf[32];
    EXPECT_EQ(format_rfc3339_ms(times[i], buf), want[i]) << times[i];
  }
}

TEST(JsonWriter, EscapesControlCharacters) {
  std::string out;
  append_json_escaped(out, std::string("a\nb\x01", 4));
  EXPECT_EQ(out, "a\\nb\\u0001");
}

// Plain runs are appended whole: escapes at the start, the end, side by side
// and between runs, checked against a character-at-a-time reference on random
// strings (and appended after what `out` already holds).
TEST(JsonWriter, EscapesLikeACharacterAtATimeReference) {
  const auto reference = [](std::string_view s) {
    std::string r;
    for (const char ch : s) {
      const auto c = static_cast<unsigned char>(ch);
      char buf[8];
      if (c == '"') r += "\\\"";
      else if (c == '\\') r += "\\\\";
      else if (c == '\n') r += "\\n";
      else if (c == '\r') r += "\\r";
      else if (c == '\t') r += "\\t";
      else if (c < 0x20) std::snprintf(buf, sizeof buf, "\\u%04x", c), r += buf;
      else r += ch;
    }
    return r;
  };
  EXPECT_EQ([] { std::string o = "x"; append_json_escaped(o, "\"ab\\\x1f"); return o; }(), "x\\\"ab\\\\\\u001f");
  std::mt19937 rng(3);
  const char alphabet[] = {'a', 'Z', ' ', '"', '\\', '\n', '\r', '\t', '\x01', '\x1f', '\x7f', static_cast<char>(0xe4)};
  for (int i = 0; i < 4000; ++i) {
    // Dense escapes, then sparse ones in strings long enough for 16-byte blocks.
    std::string s(rng() % (i < 2000 ? 40 : 100), ' ');
    for (char& c : s) c = i < 2000 || rng() % 16 == 0 ? alphabet[rng() % sizeof alphabet] : static_cast<char>('a' + rng() % 26);
    std::string out = "prefix";
    append_json_escaped(out, s);
    ASSERT_EQ(out, "prefix" + reference(s)) << s;
  }
}

TEST(Masking, KeepsThreeAndFourDigits) {
  EXPECT_EQ(mask_phone("13812348000"), "138****8000");
  EXPECT_EQ(mask_phone("+8613812348000"), "+861******8000");
  EXPECT_EQ(mask_phone("110"), "****");
  std::string out;
  append_masked_text(out, "caller 13812348000 called 25 numbers, 96110 too");
  EXPECT_EQ(out, "caller 138****8000 called 25 numbers, 96110 too");
}

}  // namespace
}  // namespace tocsin
