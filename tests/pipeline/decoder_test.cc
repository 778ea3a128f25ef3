#include "pipeline/decoder.h"

#include <gtest/gtest.h>

#include <bit>
#include <random>
#include <string>
#include <vector>

namespace tocsin {
namespace {

constexpr int64_t kNow = 1795000000000;  // 2026-11-18

const char* kCall =
    R"({"call_id":"c1","start_time":"2026-11-17T10:00:00.250Z","caller":"13800138000",)"
    R"("callee":"13900139000","duration_s":17,"answered":true,"caller_class":"mobile",)"
    R"("sim_activated_at":1690000000000,"extra":{"ignored":[1,2,3]}})";

class DecoderTest : public ::testing::Test {
 protected:
  DecodeResult decode(Stream s, std::string_view json) { return d.decode(s, json, kNow, e); }
  Decoder d;
  Event e;
};

TEST_F(DecoderTest, DecodesEveryFieldType) {
  ASSERT_TRUE(decode(Stream::kCalls, kCall).ok());
  const auto& sc = schema_of(Stream::kCalls);
  EXPECT_EQ(e.at(sc.slot_of("call_id")).s, "c1");
  EXPECT_EQ(e.at(sc.slot_of("caller")).s, "13800138000");
  EXPECT_EQ(e.at(sc.slot_of("duration_s")).i, 17);
  EXPECT_TRUE(e.at(sc.slot_of("answered")).b);
  EXPECT_EQ(e.time_ms, 1794909600250);
  EXPECT_EQ(e.at(sc.slot_of("sim_activated_at")).i, 1690000000000);
  EXPECT_FALSE(e.at(sc.slot_of("cell_id")).present);
  EXPECT_EQ(e.id(), "c1");

  const char* fault =
      R"({"fault_id":"f1","time":"2026-11-17T18:00:00+08:00","kind":"opened","network_id":"N1",)"
      R"("households":320,"supply_temp_c":71.5,"asset_type":null})";
  ASSERT_TRUE(decode(Stream::kFaults, fault).ok());
  const auto& sf = schema_of(Stream::kFaults);
  EXPECT_EQ(e.time_ms, 1794909600000);  // 10:00Z
  EXPECT_EQ(e.kind, sf.kind_index("opened"));
  EXPECT_EQ(e.at(sf.slot_of("households")).i, 320);
  EXPECT_DOUBLE_EQ(e.at(sf.slot_of("supply_temp_c")).d, 71.5);
  EXPECT_FALSE(e.at(sf.slot_of("asset_type")).present);
}

// The decoder guesses each field from its position in the previous message:
// reordered, renamed, escaped and prefix-sharing keys must still resolve exactly.
TEST_F(DecoderTest, FieldOrderChangesAndEscapedKeys) {
  const auto& sc = schema_of(Stream::kCalls);
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(decode(Stream::kCalls, kCall).ok());
    EXPECT_EQ(e.at(sc.slot_of("caller")).s, "13800138000");
    ASSERT_TRUE(decode(Stream::kCalls,
        R"({"start_time":1794909600000,"call_id":"c2","c\u0061ller":"1","callee":"2","caller_class":"fixed",)"
        R"("duration_s":5,"answered":false,"callerx":"ignored","call":"ignored"})").ok());
    EXPECT_EQ(e.id(), "c2");
    EXPECT_EQ(e.at(sc.slot_of("caller")).s, "1");
    EXPECT_EQ(e.at(sc.slot_of("callee")).s, "2");
    EXPECT_EQ(e.at(sc.slot_of("caller_class")).s, "fixed");
    EXPECT_EQ(e.at(sc.slot_of("duration_s")).i, 5);
    // Same positions as kCall, but one key is only a prefix of the guessed name.
    EXPECT_EQ(decode(Stream::kCalls,
        R"({"call_id":"c1","start_time":"2026-11-17T10:00:00.250Z","calle":"13800138000",)"
        R"("callee":"13900139000","duration_s":17,"answered":true})").error, DecodeError::kMissingField);
  }
}

TEST_F(DecoderTest, DecodesProfiles) {
  const char* profile =
      R"({"profile_id":"p1","time":"2026-11-17T00:00:00+08:00","number":"17000000011","opposite_count":1440,)"
      R"("opposite_unique":1200,"phone2opposite_mean":1.2,"voc_calltype1":1,"imeis":6,"call_dur_median":12.5,)"
      R"("sms_count":0,"arpu_mean":-3.5,"flow_sum":null,"label":1})";
  ASSERT_TRUE(decode(Stream::kProfiles, profile).ok());
  const auto& sp = schema_of(Stream::kProfiles);
  EXPECT_EQ(e.stream, Stream::kProfiles);
  EXPECT_EQ(e.kind, -1);
  EXPECT_EQ(e.id(), "p1");
  EXPECT_EQ(e.time_ms, 1794844800000);  // 2026-11-16T16:00Z
  EXPECT_EQ(e.at(sp.key_slot).s, "17000000011");
  EXPECT_EQ(e.at(sp.slot_of("opposite_unique")).i, 1200);
  EXPECT_DOUBLE_EQ(e.at(sp.slot_of("phone2opposite_mean")).d, 1.2);
  EXPECT_DOUBLE_EQ(e.at(sp.slot_of("voc_calltype1")).d, 1.0);  // an integer for a double
  EXPECT_EQ(e.at(sp.slot_of("sms_count")).i, 0);
  EXPECT_TRUE(e.at(sp.slot_of("sms_count")).present);
  EXPECT_DOUBLE_EQ(e.at(sp.slot_of("arpu_mean")).d, -3.5);
  EXPECT_FALSE(e.at(sp.slot_of("flow_sum")).present);
  EXPECT_FALSE(e.at(sp.slot_of("busi_count")).present);
  // Interleaved with other streams, each keeps its own field-order guesses.
  ASSERT_TRUE(decode(Stream::kCalls, kCall).ok());
  ASSERT_TRUE(decode(Stream::kProfiles, R"({"number":"+85251230005","time":1794996000000,"profile_id":"p2","imeis":2})").ok());
  EXPECT_EQ(e.at(sp.slot_of("number")).s, "+85251230005");
  EXPECT_EQ(e.at(sp.slot_of("imeis")).i, 2);
  EXPECT_FALSE(e.at(sp.slot_of("opposite_unique")).present);
}

TEST(StreamSchemas, NamesKeysAndSlots) {
  EXPECT_EQ(stream_names(), "calls, faults, complaints or profiles");
  const char* keys[kStreamCount] = {"caller", "network_id", "ticket_id", "number"};
  const char* times[kStreamCount] = {"start_time", "time", "time", "time"};
  for (int i = 0; i < kStreamCount; ++i) {
    const auto s = static_cast<Stream>(i);
    const StreamSchema& schema = schema_of(s);
    EXPECT_EQ(schema.stream, s);
    EXPECT_EQ(stream_from_string(schema.name), s);
    EXPECT_EQ(to_string(s), schema.name);
    EXPECT_LE(schema.fields.size(), static_cast<size_t>(kMaxSlots));
    EXPECT_EQ(schema.fields[static_cast<size_t>(schema.key_slot)].name, keys[i]) << schema.name;
    EXPECT_TRUE(schema.fields[static_cast<size_t>(schema.key_slot)].required) << schema.name;
    EXPECT_EQ(schema.fields[static_cast<size_t>(schema.time_slot)].name, times[i]) << schema.name;
    EXPECT_EQ(schema.fields[static_cast<size_t>(schema.time_slot)].type, FieldType::kTime) << schema.name;
    EXPECT_EQ(schema.fields[static_cast<size_t>(schema.id_slot)].type, FieldType::kString) << schema.name;
  }
  EXPECT_EQ(stream_from_string("profiles"), Stream::kProfiles);
  EXPECT_FALSE(stream_from_string("profile"));
}

TEST_F(DecoderTest, DoubleFieldAcceptsIntegers) {
  ASSERT_TRUE(decode(Stream::kFaults, R"({"fault_id":"f","time":1794996000000,"kind":"telemetry","network_id":"N","indoor_temp_c":17})").ok());
  EXPECT_DOUBLE_EQ(e.at(schema_of(Stream::kFaults).slot_of("indoor_temp_c")).d, 17.0);
}

TEST_F(DecoderTest, UnescapesStrings) {
  ASSERT_TRUE(decode(Stream::kComplaints, R"({"ticket_id":"t\"1","time":1794996000000,"status":"received","text":"\u6ca1\u6709\u6696\u6c14"})").ok());
  EXPECT_EQ(e.id(), "t\"1");
  EXPECT_EQ(e.at(schema_of(Stream::kComplaints).slot_of("text")).s, "没有暖气");
}

struct BadCase {
  const char* name;
  Stream stream;
  std::string json;
  DecodeError want;
  const char* detail;
};

class BadInputTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadInputTest, GivesTheRightReason) {
  Decoder d(DecodeLimits{.max_event_bytes = 1024});
  Event e;
  const auto& c = GetParam();
  const auto r = d.decode(c.stream, c.json, kNow, e);
  EXPECT_EQ(reason_code(r.error), reason_code(c.want)) << c.json;
  if (c.detail) {
    EXPECT_EQ(r.detail, c.detail);
  }
  // The decoder recovers: a good message right after decodes.
  EXPECT_TRUE(d.decode(Stream::kCalls, kCall, kNow, e).ok());
}

const std::string kBase = R"("call_id":"c","start_time":1794996000000,"caller":"1","callee":"2","duration_s":1,"answered":false)";

INSTANTIATE_TEST_SUITE_P(
    Decoder, BadInputTest,
    ::testing::Values(
        BadCase{"truncated", Stream::kCalls, "{\"call_id\":\"c\",\"caller\":", DecodeError::kInvalidJson, nullptr},
        BadCase{"garbage", Stream::kCalls, "hello world", DecodeError::kInvalidJson, nullptr},
        BadCase{"empty", Stream::kCalls, "", DecodeError::kInvalidJson, nullptr},
        BadCase{"trailing", Stream::kCalls, "{" + kBase + "} x", DecodeError::kInvalidJson, nullptr},
        BadCase{"unquoted_key", Stream::kCalls, "{call_id:1}", DecodeError::kInvalidJson, nullptr},
        BadCase{"bad_unknown_value", Stream::kCalls, "{" + kBase + ",\"x\":[1,}", DecodeError::kInvalidJson, nullptr},
        BadCase{"array", Stream::kCalls, "[1,2]", DecodeError::kNotObject, nullptr},
        BadCase{"number", Stream::kCalls, "42", DecodeError::kNotObject, nullptr},
        BadCase{"missing", Stream::kCalls, R"({"call_id":"c","start_time":1794996000000,"caller":"1","callee":"2","answered":true})", DecodeError::kMissingField, "duration_s"},
        BadCase{"null_required", Stream::kCalls, R"({"call_id":"c","start_time":1794996000000,"caller":null,"callee":"2","duration_s":1,"answered":true})", DecodeError::kMissingField, "caller"},
        BadCase{"string_for_int", Stream::kCalls, R"({"call_id":"c","start_time":1794996000000,"caller":"1","callee":"2","duration_s":"17","answered":true})", DecodeError::kWrongType, "duration_s"},
        BadCase{"float_for_int", Stream::kCalls, R"({"call_id":"c","start_time":1794996000000,"caller":"1","callee":"2","duration_s":1.5,"answered":true})", DecodeError::kWrongType, "duration_s"},
        BadCase{"number_for_phone", Stream::kCalls, R"({"call_id":"c","start_time":1794996000000,"caller":13800138000,"callee":"2","duration_s":1,"answered":true})", DecodeError::kWrongType, "caller"},
        BadCase{"int_for_bool", Stream::kCalls, R"({"call_id":"c","start_time":1794996000000,"caller":"1","callee":"2","duration_s":1,"answered":1})", DecodeError::kWrongType, "answered"},
        BadCase{"time_not_a_time", Stream::kCalls, R"({"call_id":"c","start_time":"yesterday","caller":"1","callee":"2","duration_s":1,"answered":true})", DecodeError::kWrongType, "start_time"},
        BadCase{"bad_kind", Stream::kFaults, R"({"fault_id":"f","time":1794996000000,"kind":"exploded","network_id":"N"})", DecodeError::kInvalidValue, "kind"},
        BadCase{"oversized", Stream::kCalls, "{" + kBase + ",\"pad\":\"" + std::string(2000, 'x') + "\"}", DecodeError::kOversized, nullptr},
        BadCase{"invalid_utf8", Stream::kCalls, "{" + kBase + ",\"city\":\"\xff\xfe\"}", DecodeError::kInvalidUtf8, nullptr},
        BadCase{"month_13", Stream::kCalls, R"({"call_id":"c","start_time":"2026-13-01T00:00:00Z","caller":"1","callee":"2","duration_s":1,"answered":true})", DecodeError::kImpossibleTime, "start_time"},
        BadCase{"feb_30", Stream::kCalls, R"({"call_id":"c","start_time":"2026-02-30T00:00:00Z","caller":"1","callee":"2","duration_s":1,"answered":true})", DecodeError::kImpossibleTime, "start_time"},
        BadCase{"before_2000", Stream::kCalls, R"({"call_id":"c","start_time":"1999-12-31T23:59:59Z","caller":"1","callee":"2","duration_s":1,"answered":true})", DecodeError::kImpossibleTime, "start_time"},
        BadCase{"far_future", Stream::kCalls, R"({"call_id":"c","start_time":"2027-06-01T00:00:00Z","caller":"1","callee":"2","duration_s":1,"answered":true})", DecodeError::kImpossibleTime, "start_time"},
        BadCase{"broken_null_unknown_field", Stream::kCalls, "{" + kBase + ",\"x\":nul}", DecodeError::kInvalidJson, nullptr},
        BadCase{"broken_null_nested", Stream::kCalls, "{" + kBase + ",\"x\":[1,nullu]}", DecodeError::kInvalidJson, nullptr},
        BadCase{"broken_null_known_field", Stream::kCalls, "{" + kBase + ",\"city\":nulx}", DecodeError::kInvalidJson, "city"},
        BadCase{"unwritable_offset_time", Stream::kComplaints, R"({"ticket_id":"t","time":1794996000000,"status":"extended","deadline_at":"9999-12-31T23:59:59-23:59"})", DecodeError::kImpossibleTime, "deadline_at"},
        BadCase{"int64_min_time", Stream::kComplaints, R"({"ticket_id":"t","time":1794996000000,"status":"extended","deadline_at":-9223372036854775808})", DecodeError::kImpossibleTime, "deadline_at"},
        BadCase{"profile_missing_number", Stream::kProfiles, R"({"profile_id":"p","time":1794996000000,"imeis":2})", DecodeError::kMissingField, "number"},
        BadCase{"profile_decimal_count", Stream::kProfiles, R"({"profile_id":"p","time":1794996000000,"number":"1","opposite_count":1258.0})", DecodeError::kWrongType, "opposite_count"},
        BadCase{"profile_string_share", Stream::kProfiles, R"({"profile_id":"p","time":1794996000000,"number":"1","voc_calltype1":"0.5"})", DecodeError::kWrongType, "voc_calltype1"},
        BadCase{"profile_future", Stream::kProfiles, R"({"profile_id":"p","time":"2027-06-01T00:00:00Z","number":"1"})", DecodeError::kImpossibleTime, "time"},
        BadCase{"epoch_seconds", Stream::kCalls, R"({"call_id":"c","start_time":1794996000,"caller":"1","callee":"2","duration_s":1,"answered":true})", DecodeError::kImpossibleTime, "start_time"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(DecoderLimits, FutureDeadlineIsNotAnImpossibleTime) {
  Decoder d;
  Event e;
  // deadline_at lies days ahead: only the event time is range-checked.
  EXPECT_TRUE(d.decode(Stream::kComplaints, R"({"ticket_id":"t","time":1794996000000,"status":"extended","deadline_at":"2027-01-01T00:00:00Z"})", kNow, e).ok());
}

TEST(Rfc3339, ParsesAndFormats) {
  int64_t ms = 0;
  EXPECT_EQ(parse_rfc3339_ms("2024-02-29T23:59:59.5Z", ms), DecodeError::kOk);
  char buf[32];
  EXPECT_EQ(format_rfc3339_ms(ms, buf), "2024-02-29T23:59:59.500Z");
  EXPECT_EQ(parse_rfc3339_ms("2023-02-29T00:00:00Z", ms), DecodeError::kImpossibleTime);
  EXPECT_EQ(parse_rfc3339_ms("2023-01-01T00:00:00", ms), DecodeError::kWrongType);
  EXPECT_EQ(parse_rfc3339_ms("2023-01-01T08:00:00+08:00", ms), DecodeError::kOk);
  EXPECT_EQ(format_rfc3339_ms(ms, buf), "2023-01-01T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339_ms(0, buf), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339_ms(INT64_MIN, buf), "0000-01-01T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339_ms(INT64_MAX, buf), "9999-12-31T23:59:59.999Z");
  EXPECT_EQ(parse_rfc3339_ms("0000-01-01T00:00:00+00:01", ms), DecodeError::kImpossibleTime);
}

// The canonical 24-byte form has its own fast path: it must agree with the
// general parser, which reads the same text with "+00:00" instead of "Z".
TEST(Rfc3339, CanonicalFormAgreesWithTheGeneralParser) {
  std::mt19937_64 rng(7);
  std::vector<int64_t> times = {0, -1, kMinRfc3339Ms, kMaxRfc3339Ms, 951782400000 /* 2000-02-29 */};
  for (int64_t year_start : {-2208988800000LL, 946684800000LL, 1704067200000LL})  // 1900, 2000, 2024
    for (int64_t day = 0; day < 366; ++day) times.push_back(year_start + day * 86400000 - 1);
  std::uniform_int_distribution<int64_t> any(kMinRfc3339Ms, kMaxRfc3339Ms);
  for (int i = 0; i < 20000; ++i) times.push_back(any(rng));
  const std::string alphabet = "0123456789-:T.Zt z/+\x80";
  for (int64_t t : times) {
    char buf[32];
    const std::string text(format_rfc3339_ms(t, buf));
    int64_t ms = 0;
    ASSERT_EQ(parse_rfc3339_ms(text, ms), DecodeError::kOk) << text;
    ASSERT_EQ(ms, t) << text;
    // One byte changed (all but the final 'Z'): the same verdict and value as the general parser.
    std::uniform_int_distribution<size_t> pos(0, 22), pick(0, alphabet.size() - 1);
    std::string bad = text;
    bad[pos(rng)] = alphabet[pick(rng)];
    std::string general = bad.substr(0, 23) + "+00:00";
    int64_t a = 0, b = 0;
    const DecodeError ea = parse_rfc3339_ms(bad, a), eb = parse_rfc3339_ms(general, b);
    ASSERT_EQ(ea, eb) << bad;
    if (ea == DecodeError::kOk) {
      ASSERT_EQ(a, b) << bad;
    }
  }
}

// ---- The fast path against simdjson -------------------------------------------
//
// DecodePath::kFast must give exactly what DecodePath::kSimdjson gives: the same
// reason and detail for a rejected message, the same slots for an accepted one.
// Checked on hand-picked edge cases and on 40 000 seeded mutations of valid
// messages (the fuzz_decoder target runs the same comparison on its inputs).

void expect_same_event(const Event& a, const Event& b, Stream s, const std::string& json) {
  const StreamSchema& schema = schema_of(s);
  EXPECT_EQ(a.kind, b.kind) << json;
  EXPECT_EQ(a.time_ms, b.time_ms) << json;
  for (size_t i = 0; i < schema.fields.size(); ++i) {
    const Value& x = a.slots[i];
    const Value& y = b.slots[i];
    ASSERT_EQ(x.present, y.present) << schema.fields[i].name << " in " << json;
    if (!x.present) continue;
    ASSERT_EQ(x.type, y.type) << schema.fields[i].name << " in " << json;
    switch (x.type) {
      case FieldType::kString: EXPECT_EQ(x.s, y.s) << schema.fields[i].name << " in " << json; break;
      case FieldType::kInt:
      case FieldType::kTime: EXPECT_EQ(x.i, y.i) << schema.fields[i].name << " in " << json; break;
      case FieldType::kBool: EXPECT_EQ(x.b, y.b) << schema.fields[i].name << " in " << json; break;
      case FieldType::kDouble:  // bit for bit: -0.0 and 0.0 differ
        EXPECT_EQ(std::bit_cast<uint64_t>(x.d), std::bit_cast<uint64_t>(y.d))
            << schema.fields[i].name << " = " << x.d << " vs " << y.d << " in " << json;
        break;
    }
  }
}

struct BothPaths {
  Decoder fast{DecodeLimits{.max_event_bytes = 2048}, DecodePath::kFast};
  Decoder slow{DecodeLimits{.max_event_bytes = 2048}, DecodePath::kSimdjson};
  Event a, b;
  // Decodes with both; returns whether they accepted (after checking they agree).
  bool check(Stream s, const std::string& json) {
    const DecodeResult ra = fast.decode(s, json, kNow, a);
    const DecodeResult rb = slow.decode(s, json, kNow, b);
    EXPECT_EQ(reason_code(ra.error), reason_code(rb.error)) << json;
    EXPECT_EQ(ra.detail, rb.detail) << json;
    if (ra.ok() && rb.ok()) expect_same_event(a, b, s, json);
    return ra.ok() && rb.ok();
  }
};

TEST(DecoderFastPath, AgreesWithSimdjsonOnEdgeCases) {
  BothPaths both;
  const std::string head = R"({"call_id":"c","start_time":1794996000000,"caller":"1","callee":"2","answered":false,)";
  const std::vector<std::string> numbers = {
      "0", "-0", "7", "-7", "1.5", "-0.0", "0.1", "0.30000000000000004", "123456789012345",
      "1234567890123456", "999999999999999999", "9223372036854775807", "9223372036854775808",
      "-9223372036854775808", "1e3", "1E-2", "2.", ".5", "01", "-", "1.0", "00", "+1", "0x10",
      "1.25e+2", "18446744073709551616", "3.141592653589793", "1.7976931348623157e308"};
  int accepted = 0;
  for (const std::string& n : numbers) {
    accepted += both.check(Stream::kCalls, head + R"("duration_s":)" + n + "}");
    accepted += both.check(Stream::kCalls, head + R"("duration_s":1,"extra":)" + n + "}");
    accepted += both.check(Stream::kFaults, R"({"fault_id":"f","time":1794996000000,"kind":"telemetry","network_id":"N","supply_temp_c":)" + n + "}");
  }
  const std::vector<std::string> strings = {
      "", "a", "\\\"", "\\u0041", "\\n", "caf\xc3\xa9", "\xe6\xb2\xa1\xe6\x9c\x89\xe6\x9a\x96\xe6\xb0\x94",
      "\xff", "\xc3", "\xed\xa0\x80", "tab\there", "\x7f", std::string(40, 'x') + "\xc3\xa9" + std::string(20, 'y'),
      std::string(15, 'q'), std::string(16, 'q'), std::string(17, 'q')};
  for (const std::string& v : strings) {
    accepted += both.check(Stream::kCalls, head + R"("duration_s":1,"city":")" + v + "\"}");
    accepted += both.check(Stream::kCalls, head + R"("duration_s":1,")" + v + "\":1}");
    accepted += both.check(Stream::kComplaints, R"({"ticket_id":")" + v + R"(","time":1794996000000,"status":"received"})");
  }
  const std::vector<std::string> shapes = {
      " \t\r\n{" + head.substr(1) + "\"duration_s\" : 1 } \n",
      head + R"("duration_s":1,"duration_s":2})",
      // Keys as the position guess sees them: a space before the colon, a
      // longer key that starts with the guessed name, a shorter one.
      R"({"call_id" :"c","start_time" :1794996000000,"caller":"1","callee":"2","duration_s":1})",
      R"({"call_idx":"c","call_id":"c","start_time":1794996000000,"caller_class":"x","caller":"1","callee":"2","duration_s":1})",
      R"({"call_i":"c","call_id":"c","start_time":1794996000000,"caller":"1","calle":"2","callee":"2","duration_s":1})",
      head + R"("duration_s":1,"caller":null})",
      head + R"("duration_s":1,"city":null})",
      head + R"("duration_s":1,"x":{"a":[1,{"b":null}]}})",
      head + R"("duration_s":1,"x":[]})",
      head + R"("duration_s":1})" + std::string(1, '\0'),
      head + R"("duration_s":1}})",
      head + R"("duration_s":1,})",
      head + R"("duration_s":1 "x":1})",
      head + R"("duration_s":1,"answered":true})",
      head + R"("duration_s":1,"answered":tru})",
      head + R"("duration_s":1,"answered":truex})",
      head + R"("duration_s":1,"answered":nul})",
      head + R"("duration_s":1,"start_time":"2026-11-17T10:00:00.25+08:00"})",
      head + R"("duration_s":1,"start_time":"2026-11-17 10:00:00Z"})",
      head + R"("duration_s":1,"start_time":"2026-11-17T10:00:00\u005a"})",
      head + R"("duration_s":1,"sim_activated_at":"0001-01-01T00:00:00Z"})",
      R"({"fault_id":"f","time":1794996000000,"kind":"opened","network_id":"N"})",
      R"({"fault_id":"f","time":1794996000000,"kind":"open","network_id":"N"})",
      R"({"fault_id":"f","time":1794996000000,"kind":"opened\u0000","network_id":"N"})",
      "{}", "", " ", "{\"call_id\"", "{\"call_id\":", "{\"call_id\":\"c\"", "null", "[]", "\"x\"",
      kCall, std::string(kCall) + "{}"};
  for (const std::string& j : shapes)
    for (int s = 0; s < kStreamCount; ++s) accepted += both.check(static_cast<Stream>(s), j);
  // Canonical times on one date: the fast path remembers the date's epoch day.
  const std::vector<std::string> times = {
      "2026-11-17T10:00:00.250Z",
      "2026-11-17T23:59:59.999Z",
      "2026-11-17T23:59:60.000Z",
      "2026-11-17T24:00:00.000Z",
      "2026-11-17T10:60:00.000Z",
      "2026-11-17T10:00:00.000z",
      "2026-11-17T10:00:00.0000Z",
      "2026-11-17T1a:00:00.000Z",
      "2026-11-17T10:00:00.00aZ",
      "2026-11-18T00:00:00.000Z",
      "2026-02-29T00:00:00.000Z"};
  for (const std::string& t : times)
    accepted += both.check(Stream::kCalls, head + R"("duration_s":1,"sim_activated_at":")" + t + "\"}");
  EXPECT_GT(accepted, 50);  // both paths really accept: the comparison is not only of errors
}

TEST(DecoderFastPath, AgreesWithSimdjsonOnMutatedMessages) {
  const std::vector<std::pair<Stream, std::string>> seeds = {
      {Stream::kCalls, R"({"call_id":"CDR000000000002","start_time":"2026-11-17T03:20:15.480Z","caller":"13167615420","callee":"18728285282","duration_s":588,"answered":true,"direction":"outgoing","caller_class":"mobile","callee_class":"mobile","origin":"domestic","cell_id":"CD-01816","city":"Chengdu","imei_hash":"14cd722378d2a61f","sim_activated_at":"2022-08-01T18:52:33.693Z"})"},
      {Stream::kCalls, kCall},
      {Stream::kFaults, R"({"fault_id":"f1","time":"2026-11-17T18:00:00+08:00","kind":"opened","network_id":"N1","households":320,"supply_temp_c":71.5,"asset_type":null})"},
      {Stream::kComplaints, R"({"ticket_id":"TK0000251117","time":"2026-11-17T03:20:15.490Z","status":"contacted","category":"noise.construction","urgency":"general","district":"D4","street":"D4-S4","community":"D4-S4-C1","grid":"G246","building":"B-D4-S4-C1-08","text":"没有暖气"})"},
      {Stream::kProfiles, R"({"profile_id":"p1","time":"2026-11-17T00:00:00+08:00","number":"17000000011","opposite_count":1440,"opposite_unique":1200,"phone2opposite_mean":1.2,"voc_calltype1":1,"imeis":6,"call_dur_median":12.5,"sms_count":0,"arpu_mean":-3.5,"flow_sum":null,"label":1})"}};
  const std::string alphabet = std::string("\"\\{}[],: .-+eE0123456789tfnul\t\n", 32) +
                               std::string("\x00\x1f\x7f\x80\xc3\xa9\xe6\xff", 8);
  std::mt19937 rng(20261127);
  BothPaths both;
  int accepted = 0, total = 0;
  for (int round = 0; round < 8000; ++round) {
    for (const auto& [stream, seed] : seeds) {
      std::string m = seed;
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int k = 0; k < edits && !m.empty(); ++k) {
        const size_t at = rng() % m.size();
        const char c = alphabet[rng() % alphabet.size()];
        switch (rng() % 5) {
          case 0: m[at] = c; break;
          case 1: m.insert(m.begin() + static_cast<std::ptrdiff_t>(at), c); break;
          case 2: m.erase(at, 1 + rng() % 4); break;
          case 3: m.resize(at); break;
          case 4: m.insert(at, m.substr(rng() % m.size(), 1 + rng() % 12)); break;
        }
      }
      accepted += both.check(stream, m);
      ++total;
      if (::testing::Test::HasFailure()) return;  // one mismatch is enough to read
    }
  }
  EXPECT_GT(accepted, total / 20) << "too few mutants decode: the comparison would only see errors";
  uint64_t by_shape = 0;
  for (const auto& by : both.fast.path_counts()) by_shape += by[static_cast<size_t>(DecodedBy::kShape)];
  EXPECT_GT(by_shape, static_cast<uint64_t>(total / 50))
      << "too few mutants take the shape path: it would not be compared";
}

// ---- The shape path: key orders learnt from earlier messages ------------------
//
// After a message decodes on the flat path, later messages with its key order
// (or that order with optional fields left out) are read against it. Every
// message here is also compared with simdjson; the path counts show which path
// decided, so a shape path that stopped accepting would fail too.

struct ShapeCase {
  std::string json;
  bool accepted;
  uint64_t shape, flat, simdjson;  // the fast decoder's path counts after it
};

TEST(DecoderShapePath, AgreesWithSimdjsonAndTakesTheLearntOrders) {
  BothPaths both;
  const std::string a = R"({"call_id":"c1","start_time":"2026-11-17T10:00:00.250Z","caller":"13800138000",)"
                        R"("callee":"13900139000","duration_s":17,"answered":true,"city":"Chengdu",)"
                        R"("imei_hash":"ab12","sim_activated_at":"2022-08-01T18:52:33.693Z"})";
  const std::string b = R"({"call_id":"c2","start_time":"2026-11-17T10:00:01.000Z","caller":"13800138001",)"
                        R"("callee":"13900139001","duration_s":0,"answered":false,"city":"Chengdu",)"
                        R"("imei_hash":"cd34","sim_activated_at":"2023-01-01T00:00:00.000Z"})";
  const std::vector<ShapeCase> cases = {
      {a, true, 0, 1, 0},  // learns a's order
      {b, true, 1, 1, 0},
      // Optional fields left out: the same shape, and the slots they had in b are cleared.
      {R"({"call_id":"c3","start_time":"2026-11-17T10:00:02.000Z","caller":"1","callee":"2","duration_s":3,"answered":true})",
       true, 2, 1, 0},
      // Null in an optional field: absent; in a required one: rejected by every path.
      {R"({"call_id":"c4","start_time":"2026-11-17T10:00:03.000Z","caller":"1","callee":"2","duration_s":3,"answered":true,"city":null})",
       true, 3, 1, 0},
      {R"({"call_id":"c5","start_time":"2026-11-17T10:00:03.000Z","caller":null,"callee":"2","duration_s":3,"answered":true})",
       false, 3, 1, 1},
      // A required field left out: missing_field, from simdjson.
      {R"({"call_id":"c6","start_time":"2026-11-17T10:00:03.000Z","callee":"2","duration_s":3,"answered":true})",
       false, 3, 1, 2},
      // A key that starts with a learnt name is another key.
      {R"({"call_id":"c7","start_time":"2026-11-17T10:00:03.000Z","caller":"1","callee":"2","duration_s":3,"answered":true,"cityx":"X"})",
       true, 3, 2, 2},
      // Another order: the flat path reads it and it becomes a second shape ...
      {R"({"start_time":"2026-11-17T10:00:04.000Z","call_id":"c8","caller":"1","callee":"2","duration_s":3,"answered":true})",
       true, 3, 3, 2},
      {R"({"start_time":"2026-11-17T10:00:05.000Z","call_id":"c9","caller":"1","callee":"2","duration_s":3,"answered":true})",
       true, 4, 3, 2},
      // ... while the first one still reads its own.
      {b, true, 5, 3, 2},
      // Whitespace, an escape, an exponent, trailing bytes, a repeated key:
      // not the shape path's to read; the other paths decide.
      {R"({"call_id": "c10","start_time":"2026-11-17T10:00:06.000Z","caller":"1","callee":"2","duration_s":3,"answered":true})",
       true, 5, 4, 2},
      {R"({"call_id":"c\u0031","start_time":"2026-11-17T10:00:06.000Z","caller":"1","callee":"2","duration_s":3,"answered":true})",
       true, 5, 4, 3},
      {R"({"call_id":"c12","start_time":"2026-11-17T10:00:06.000Z","caller":"1","callee":"2","duration_s":3e1,"answered":true})",
       false, 5, 4, 4},
      {R"({"call_id":"c13","start_time":"2026-11-17T10:00:06.000Z","caller":"1","callee":"2","duration_s":3,"answered":true} )",
       true, 5, 5, 4},
      {R"({"call_id":"c14","start_time":"2026-11-17T10:00:06.000Z","caller":"1","callee":"2","duration_s":3,"answered":true}x)",
       false, 5, 5, 5},
      {R"({"call_id":"c15","start_time":"2026-11-17T10:00:06.000Z","caller":"1","caller":"3","callee":"2","duration_s":3,"answered":true})",
       true, 5, 6, 5},
      // A bad value in the learnt order: rejected, with simdjson's reason.
      {R"({"call_id":"c16","start_time":"2026-11-17T10:00:06.000Z","caller":"1","callee":2,"duration_s":3,"answered":true})",
       false, 5, 6, 6},
      {R"({"call_id":"c17","start_time":"2026-11-17T10:00:06.000Z","caller":"1","callee":"2","duration_s":3,"answered":tru})",
       false, 5, 6, 7},
      {R"({"call_id":"c18","start_time":"2026-11-17T10:00:06.000Z","caller":"1","callee":"2","duration_s":3,"answered":true)",
       false, 5, 6, 8},
      // The first key is never skipped: a message without it is the flat path's.
      {R"({"caller":"1","callee":"2","duration_s":3,"answered":true})", false, 5, 6, 9},
  };
  for (const ShapeCase& c : cases) {
    EXPECT_EQ(both.check(Stream::kCalls, c.json), c.accepted) << c.json;
    const auto& n = both.fast.path_counts()[static_cast<size_t>(Stream::kCalls)];
    EXPECT_EQ(n[static_cast<size_t>(DecodedBy::kShape)], c.shape) << c.json;
    EXPECT_EQ(n[static_cast<size_t>(DecodedBy::kFlat)], c.flat) << c.json;
    EXPECT_EQ(n[static_cast<size_t>(DecodedBy::kSimdjson)], c.simdjson) << c.json;
  }
}

// Messages the shape path cannot read (an unknown key here) must not push out
// the orders it can: before, each one took the next of the four shapes.
TEST(DecoderShapePath, KeepsItsShapesThroughMessagesItCannotLearn) {
  BothPaths both;
  const std::string known =
      R"({"call_id":"c1","start_time":"2026-11-17T10:00:00.250Z","caller":"1","callee":"2","duration_s":3,"answered":true})";
  const std::string unknown =
      R"({"call_id":"c2","start_time":"2026-11-17T10:00:00.250Z","caller":"1","callee":"2","duration_s":3,"answered":true,"x":1})";
  ASSERT_TRUE(both.check(Stream::kCalls, known));
  for (int i = 0; i < 2 * 4; ++i) ASSERT_TRUE(both.check(Stream::kCalls, unknown));
  ASSERT_TRUE(both.check(Stream::kCalls, known));
  const auto& n = both.fast.path_counts()[static_cast<size_t>(Stream::kCalls)];
  EXPECT_EQ(n[static_cast<size_t>(DecodedBy::kShape)], 1u);
  EXPECT_EQ(n[static_cast<size_t>(DecodedBy::kFlat)], 9u);
}

}  // namespace
}  // namespace tocsin
