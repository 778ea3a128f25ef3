#include "gen/generator.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <ctime>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace tocsin::gen {
namespace {

constexpr int64_t kStart = 1795701600000;  // 2026-11-26T14:00:00Z
constexpr int64_t kMinute = 60'000;
constexpr int64_t kHour = 60 * kMinute;

Options options(uint64_t seed = 42) {
  Options o;
  o.seed = seed;
  o.start_time_ms = kStart;
  return o;
}

std::vector<Message> generate(const Options& o, size_t n) {
  Generator g(o);
  std::vector<Message> out(n);
  for (auto& m : out) g.next(m);
  return out;
}

// Parses "YYYY-MM-DDTHH:MM:SS.mmmZ" to epoch milliseconds; -1 when malformed.
int64_t parse_time(std::string_view s) {
  if (s.size() != 24 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
      s[19] != '.' || s[23] != 'Z')
    return -1;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22})
    if (s[i] < '0' || s[i] > '9') return -1;
  auto num = [&](size_t pos, size_t len) { return std::stoi(std::string(s.substr(pos, len))); };
  std::tm tm{};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(5, 2) - 1;
  tm.tm_mday = num(8, 2);
  tm.tm_hour = num(11, 2);
  tm.tm_min = num(14, 2);
  tm.tm_sec = num(17, 2);
  return static_cast<int64_t>(timegm(&tm)) * 1000 + num(20, 3);
}

bool is_phone(std::string_view s) {
  return s.size() == 11 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The fields of one message, as strings (numbers and bools in their JSON text).
using Fields = std::map<std::string, std::string, std::less<>>;

// Checks `m` against its stream's schema and returns its fields.
::testing::AssertionResult conforms(simdjson::ondemand::parser& parser, const Message& m, Fields* fields) {
  const StreamSchema& schema = schema_of(m.stream);
  simdjson::padded_string json(m.json);
  simdjson::ondemand::document doc;
  if (parser.iterate(json).get(doc)) return ::testing::AssertionFailure() << "not JSON: " << m.json;
  simdjson::ondemand::object obj;
  if (doc.get_object().get(obj)) return ::testing::AssertionFailure() << "not an object: " << m.json;
  std::vector<bool> seen(schema.fields.size(), false);
  Fields local;
  Fields& f = fields ? *fields : local;
  f.clear();
  for (auto field : obj) {
    std::string_view key;
    if (field.unescaped_key().get(key)) return ::testing::AssertionFailure() << "bad key: " << m.json;
    const int slot = schema.slot_of(key);
    if (slot < 0) return ::testing::AssertionFailure() << "unknown field " << key << ": " << m.json;
    if (seen[static_cast<size_t>(slot)]) return ::testing::AssertionFailure() << "duplicate " << key;
    seen[static_cast<size_t>(slot)] = true;
    const FieldDef& def = schema.fields[static_cast<size_t>(slot)];
    simdjson::ondemand::value v = field.value();
    simdjson::ondemand::json_type type;
    if (v.type().get(type)) return ::testing::AssertionFailure() << "bad value for " << key;
    std::string text;
    bool ok = false;
    switch (def.type) {
      case FieldType::kString:
      case FieldType::kTime: {
        std::string_view s;
        ok = type == simdjson::ondemand::json_type::string && !v.get_string().get(s);
        text = std::string(s);
        if (ok && def.type == FieldType::kTime) ok = parse_time(s) >= 0;
        break;
      }
      case FieldType::kInt: {
        simdjson::ondemand::number_type nt;
        int64_t i = 0;
        ok = type == simdjson::ondemand::json_type::number && !v.get_number_type().get(nt) &&
             nt == simdjson::ondemand::number_type::signed_integer && !v.get_int64().get(i);
        text = std::to_string(i);
        break;
      }
      case FieldType::kDouble: {
        double d = 0;
        ok = type == simdjson::ondemand::json_type::number && !v.get_double().get(d);
        text = std::to_string(d);
        break;
      }
      case FieldType::kBool: {
        bool b = false;
        ok = type == simdjson::ondemand::json_type::boolean && !v.get_bool().get(b);
        text = b ? "true" : "false";
        break;
      }
    }
    if (!ok)
      return ::testing::AssertionFailure() << "field " << key << " is not a " << to_string(def.type) << ": "
                                           << m.json;
    f.emplace(std::string(key), std::move(text));
  }
  for (size_t i = 0; i < seen.size(); ++i)
    if (schema.fields[i].required && !seen[i])
      return ::testing::AssertionFailure() << "missing " << schema.fields[i].name << ": " << m.json;
  const std::string_view time_field = schema.fields[static_cast<size_t>(schema.time_slot)].name;
  if (parse_time(f.find(time_field)->second) != m.time_ms)
    return ::testing::AssertionFailure() << "time_ms " << m.time_ms << " differs from " << m.json;
  if (schema.kind_slot >= 0) {
    const auto& kind = f.find(schema.fields[static_cast<size_t>(schema.kind_slot)].name)->second;
    if (schema.kind_index(kind) < 0) return ::testing::AssertionFailure() << "bad kind " << kind;
  }
  const std::string_view key_field = schema.fields[static_cast<size_t>(schema.key_slot)].name;
  if (f.find(key_field)->second != m.key)
    return ::testing::AssertionFailure() << "key " << m.key << " is not " << key_field << ": " << m.json;
  return ::testing::AssertionSuccess();
}

// A call reduced to what the fan-out rule looks at.
struct Call {
  uint64_t caller;
  uint64_t callee;
  int64_t duration_s;
  int64_t time_ms;
};

// Greatest number of distinct callees of short (< 30 s) calls within any 1 h
// window, per caller. Calls must be in time order.
std::unordered_map<uint64_t, size_t> fan_out(const std::vector<Call>& calls) {
  std::unordered_map<uint64_t, std::vector<const Call*>> by_caller;
  for (const Call& c : calls)
    if (c.duration_s < 30) by_caller[c.caller].push_back(&c);
  std::unordered_map<uint64_t, size_t> best;
  for (const auto& [caller, list] : by_caller) {
    size_t b = 0;
    for (size_t i = 0; i < list.size() && list.size() - i > b; ++i) {
      std::set<uint64_t> distinct;
      for (size_t j = i; j < list.size() && list[j]->time_ms < list[i]->time_ms + kHour; ++j)
        distinct.insert(list[j]->callee);
      b = std::max(b, distinct.size());
    }
    best[caller] = b;
  }
  return best;
}

// Reads the calls among the next `n` messages (schema checks are elsewhere).
std::vector<Call> collect_calls(Generator& g, size_t n) {
  simdjson::ondemand::parser parser;
  std::vector<Call> calls;
  Message m;
  for (size_t i = 0; i < n; ++i) {
    g.next(m);
    if (m.stream != Stream::kCalls) continue;
    m.json.reserve(m.json.size() + simdjson::SIMDJSON_PADDING);
    auto doc = parser.iterate(simdjson::padded_string_view(m.json.data(), m.json.size(), m.json.capacity()));
    auto number = [](std::string_view s) {
      uint64_t v = 0;
      std::from_chars(s.data(), s.data() + s.size(), v);
      return v;
    };
    Call c;
    c.caller = number(doc["caller"]);
    c.callee = number(doc["callee"]);
    c.duration_s = int64_t(doc["duration_s"]);
    c.time_ms = m.time_ms;
    calls.push_back(c);
  }
  return calls;
}

TEST(Generator, SameSeedGivesSameSequence) {
  const auto a = generate(options(7), 10'000);
  const auto b = generate(options(7), 10'000);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].stream, b[i].stream) << i;
    ASSERT_EQ(a[i].key, b[i].key) << i;
    ASSERT_EQ(a[i].json, b[i].json) << i;
    ASSERT_EQ(a[i].time_ms, b[i].time_ms) << i;
  }
}

TEST(Generator, DifferentSeedGivesDifferentSequence) {
  const auto a = generate(options(7), 1'000);
  const auto b = generate(options(8), 1'000);
  size_t differing = 0;
  for (size_t i = 0; i < a.size(); ++i) differing += a[i].json != b[i].json;
  EXPECT_GT(differing, 900u);
}

TEST(Generator, TimeStartsAtStartAndAdvancesAtTheConfiguredRate) {
  Options o = options();
  o.events_per_second = 1000;
  const auto msgs = generate(o, 200'000);
  EXPECT_EQ(msgs.front().time_ms, kStart);
  for (size_t i = 1; i < msgs.size(); ++i) ASSERT_LE(msgs[i - 1].time_ms, msgs[i].time_ms) << i;
  const double seconds = static_cast<double>(msgs.back().time_ms - kStart) / 1000;
  EXPECT_NEAR(seconds, 200.0, 10.0);
}

TEST(Generator, ZeroStartTimeMeansNow) {
  Options o = options();
  o.start_time_ms = 0;
  Generator g(o);
  Message m;
  g.next(m);
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  EXPECT_NEAR(static_cast<double>(m.time_ms), static_cast<double>(now), 60'000.0);
}

TEST(Generator, EveryMessageConformsToItsSchema) {
  Options o = options(3);
  o.events_per_second = 5;  // long enough in event time for whole lifecycles
  o.plant_every = 500;
  Generator g(o);
  simdjson::ondemand::parser parser;
  Message m;
  Fields f;
  std::set<std::string> kinds[kStreamCount];
  std::set<std::string> categories, urgencies, classes;
  int profiles = 0;
  for (int i = 0; i < 60'000; ++i) {
    g.next(m);
    ASSERT_TRUE(conforms(parser, m, &f)) << i;
    const auto s = static_cast<size_t>(m.stream);
    if (m.stream == Stream::kCalls) {
      ASSERT_TRUE(is_phone(f["caller"]) && is_phone(f["callee"])) << m.json;
      ASSERT_EQ(f["answered"] == "false", f["duration_s"] == "0") << m.json;
      classes.insert(f["caller_class"]);
    } else if (m.stream == Stream::kFaults) {
      kinds[s].insert(f["kind"]);
    } else if (m.stream == Stream::kProfiles) {
      ++profiles;
      ASSERT_TRUE(is_phone(f["number"])) << m.json;
      // Every field of the schema is written: the fitted score reads a missing one as 0.
      ASSERT_EQ(f.size(), schema_of(Stream::kProfiles).fields.size()) << m.json;
      ASSERT_LE(std::stoi(f["opposite_unique"]), std::stoi(f["opposite_count"])) << m.json;
      ASSERT_LE(std::stoi(f["sms_nunique"]), std::stoi(f["sms_count"])) << m.json;
      const double share = std::stod(f["voc_calltype1"]);
      ASSERT_TRUE(share >= 0 && share <= 1) << m.json;
      ASSERT_TRUE(std::stoi(f["voc_day_nunique"]) <= 31 && std::stoi(f["voc_hour_nunique"]) <= 24) << m.json;
    } else {
      kinds[s].insert(f["status"]);
      categories.insert(f["category"]);
      urgencies.insert(f["urgency"]);
      if (f["status"] == "received") {
        ASSERT_TRUE(is_phone(f["complainant"])) << m.json;
      }
    }
  }
  EXPECT_EQ(kinds[1], (std::set<std::string>{"opened", "updated", "restored", "planned", "telemetry"}));
  EXPECT_EQ(kinds[2], (std::set<std::string>{"received", "dispatched", "signed", "contacted", "resolved",
                                             "rated", "closed"}));
  EXPECT_EQ(urgencies, (std::set<std::string>{"emergency", "utility", "general", "complex"}));
  EXPECT_TRUE(categories.count("heating.no_heat") && categories.count("water.outage") &&
              categories.count("noise.construction") && categories.count("road.pothole"));
  EXPECT_EQ(classes, (std::set<std::string>{"mobile", "fixed", "virtual_170"}));
  EXPECT_GT(profiles, 300);  // 1% of the traffic, plus the planted fraud numbers' profiles
}

TEST(Generator, TelemetryReadingsAreInRange) {
  Options o = options();
  o.plant_every = 0;
  Generator g(o);
  simdjson::ondemand::parser parser;
  Message m;
  Fields f;
  std::set<std::string> networks;
  int telemetry = 0;
  for (int i = 0; i < 100'000; ++i) {
    g.next(m);
    if (m.stream != Stream::kFaults) continue;
    ASSERT_TRUE(conforms(parser, m, &f));
    if (f["kind"] != "telemetry") continue;
    ++telemetry;
    networks.insert(f["network_id"]);
    EXPECT_GE(std::stod(f["supply_temp_c"]), 85);
    EXPECT_LE(std::stod(f["supply_temp_c"]), 95);
    EXPECT_GE(std::stod(f["return_temp_c"]), 45);
    EXPECT_LE(std::stod(f["return_temp_c"]), 55);
    EXPECT_GE(std::stod(f["indoor_temp_c"]), 19);
    EXPECT_LE(std::stod(f["indoor_temp_c"]), 23);
  }
  EXPECT_GT(telemetry, 4000);
  EXPECT_EQ(networks.size(), 50u);
}

TEST(Generator, StreamSharesMatchOptions) {
  for (const auto& [calls, faults, complaints, profiles] :
       {std::array<double, 4>{0.79, 0.05, 0.15, 0.01}, std::array<double, 4>{0.5, 0.2, 0.2, 0.1},
        std::array<double, 4>{0.8, 0.05, 0.15, 0.0}}) {
    Options o = options();
    o.plant_every = 0;
    o.calls_share = calls;
    o.faults_share = faults;
    o.complaints_share = complaints;
    o.profiles_share = profiles;
    Generator g(o);
    Message m;
    constexpr int kN = 200'000;
    int counts[kStreamCount] = {};
    for (int i = 0; i < kN; ++i) {
      g.next(m);
      ++counts[static_cast<int>(m.stream)];
    }
    EXPECT_NEAR(counts[0] / double(kN), calls, 0.02);
    EXPECT_NEAR(counts[1] / double(kN), faults, 0.02);
    EXPECT_NEAR(counts[2] / double(kN), complaints, 0.02);
    EXPECT_NEAR(counts[3] / double(kN), profiles, 0.005);
    if (profiles == 0) {
      EXPECT_EQ(counts[3], 0);
    }
  }
}

TEST(Generator, PlantsEachScenarioEveryPlantEveryBackgroundEvents) {
  Options o = options();
  o.plant_every = 1000;
  Generator g(o);
  Message m;
  for (int i = 0; i < 50'000; ++i) g.next(m);
  const auto& p = g.planted();
  EXPECT_GE(p.fraud_fan_out, 35);
  EXPECT_LE(p.fraud_fan_out, 50);
  EXPECT_EQ(p.heating_outages, p.fraud_fan_out);
  EXPECT_EQ(p.late_tickets, p.fraud_fan_out);
  EXPECT_EQ(p.fraud_profiles, p.fraud_fan_out);

  o.plant_every = 0;
  Generator none(o);
  for (int i = 0; i < 50'000; ++i) none.next(m);
  EXPECT_EQ(none.planted().fraud_fan_out + none.planted().heating_outages + none.planted().late_tickets, 0);
}

TEST(Generator, PlantedFraudFanOutIsFound) {
  Options o = options(11);
  o.events_per_second = 5;
  o.plant_every = 5000;
  Generator g(o);
  const auto calls = collect_calls(g, 20'000);
  ASSERT_GE(g.planted().fraud_fan_out, 1);
  size_t flagged = 0;
  for (const auto& [caller, n] : fan_out(calls)) flagged += n >= 20;
  EXPECT_GE(flagged, 1u);
  EXPECT_LE(flagged, static_cast<size_t>(g.planted().fraud_fan_out));
}

TEST(Generator, BackgroundCallersStayBelowFanOutThreshold) {
  Options o = options(5);
  o.plant_every = 0;
  Generator g(o);
  // An hour and ten minutes of event time at the default rate.
  const auto calls = collect_calls(g, 4'200'000);
  ASSERT_GT(calls.back().time_ms - calls.front().time_ms, kHour);
  size_t worst = 0;
  std::unordered_set<uint64_t> callers;
  for (const auto& c : calls) callers.insert(c.caller);
  for (const auto& [caller, n] : fan_out(calls)) worst = std::max(worst, n);
  EXPECT_LT(worst, 15u);  // well below the fraud rule's 20
  EXPECT_GT(callers.size(), 150'000u);
  EXPECT_LT(calls.size() / callers.size(), 12u);  // few calls per caller
}

TEST(Generator, PlantedHeatingOutageIsFollowedByComplaintBurst) {
  Options o = options(13);
  o.events_per_second = 5;
  o.plant_every = 5000;
  Generator g(o);
  simdjson::ondemand::parser parser;
  Message m;
  Fields f;
  struct Complaint {
    int64_t time_ms;
    std::string complainant;
  };
  std::map<std::string, std::vector<Complaint>> no_heat;  // by building
  std::map<std::string, std::vector<int64_t>> opened;     // substation community -> times
  std::set<std::string> restored;
  for (int i = 0; i < 80'000; ++i) {
    g.next(m);
    if (m.stream == Stream::kCalls) continue;
    ASSERT_TRUE(conforms(parser, m, &f));
    if (m.stream == Stream::kFaults && f["asset_type"] == "substation" && f["kind"] == "opened") {
      EXPECT_GE(std::stoi(f["households"]), 100);
      EXPECT_LE(std::stoi(f["households"]), 800);
      EXPECT_TRUE(f.count("district") && f.count("street") && f.count("grid"));
      opened[f["community"]].push_back(m.time_ms);
    }
    if (m.stream == Stream::kFaults && f["asset_type"] == "substation" && f["kind"] == "restored")
      restored.insert(f["community"]);
    if (m.stream == Stream::kComplaints && f["status"] == "received" && f["category"] == "heating.no_heat")
      no_heat[f["building"]].push_back({m.time_ms, f["complainant"]});
  }
  ASSERT_GE(g.planted().heating_outages, 1);
  int bursts = 0;
  for (const auto& [building, list] : no_heat) {
    for (size_t i = 0; i < list.size(); ++i) {
      std::set<std::string> who;
      size_t j = i;
      for (; j < list.size() && list[j].time_ms < list[i].time_ms + 2 * kHour; ++j)
        who.insert(list[j].complainant);
      if (who.size() < 3) continue;
      ++bursts;
      // Building "B-<community>-NN": the community's substation failed shortly
      // before, i.e. background complaints alone never form a burst.
      const std::string community = building.substr(2, building.size() - 5);
      const auto& times = opened[community];
      const int64_t first = list[i].time_ms, last = list[j - 1].time_ms;
      EXPECT_TRUE(std::any_of(times.begin(), times.end(),
                              [&](int64_t t) { return t + 2 * kHour >= first && t <= last; }))
          << building;
      break;
    }
  }
  EXPECT_GE(bursts, 1);
  EXPECT_FALSE(restored.empty());
}

TEST(Generator, PlantedLateTicketsAreContactedLateOrNever) {
  Options o = options(17);
  o.events_per_second = 5;
  o.plant_every = 5000;
  Generator g(o);
  simdjson::ondemand::parser parser;
  Message m;
  Fields f;
  std::map<std::string, int64_t> signed_at;
  std::map<std::string, int64_t> contacted_at;
  int64_t last = 0;
  for (int i = 0; i < 80'000; ++i) {
    g.next(m);
    last = m.time_ms;
    if (m.stream != Stream::kComplaints) continue;
    ASSERT_TRUE(conforms(parser, m, &f));
    if (f["status"] == "signed") signed_at[f["ticket_id"]] = m.time_ms;
    if (f["status"] == "contacted") contacted_at[f["ticket_id"]] = m.time_ms;
  }
  ASSERT_GE(g.planted().late_tickets, 1);
  int on_time = 0, late = 0, never = 0;
  for (const auto& [ticket, t] : signed_at) {
    auto c = contacted_at.find(ticket);
    if (c == contacted_at.end()) {
      never += t + 2 * kHour < last;
      continue;
    }
    const int64_t gap = c->second - t;
    EXPECT_GE(gap, 10 * kMinute);
    if (gap <= 50 * kMinute) {
      ++on_time;
    } else {
      EXPECT_GE(gap, 70 * kMinute);
      EXPECT_LE(gap, 120 * kMinute);
      ++late;
    }
  }
  EXPECT_GT(on_time, 1000);
  EXPECT_GE(late + never, 1);
  EXPECT_LE(late + never, g.planted().late_tickets);
}

}  // namespace
}  // namespace tocsin::gen
