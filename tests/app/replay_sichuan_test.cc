// The Sichuan users file -> profiles events (app/replay_sichuan.h), on a small
// project-owned fixture (synthetic numbers and values, the data's header), and
// the fraud pack's fitted rule on those events. When the real data is there
// (/work/shared/data or $TOCSIN_DATA_DIR), the whole users_train.csv replayed
// through the shipped rule flags exactly the rows the fit script says it does.
#include "app/replay_sichuan.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "pipeline/decoder.h"
#include "rules/engine.h"
#include "rules/rule_set.h"

namespace tocsin::app {
namespace {

const std::string kSrc = TOCSIN_SOURCE_DIR;
const std::string kFixture = kSrc + "/tests/app/fixtures/sichuan_users_sample.csv";
const std::string kProfileRule = kSrc + "/examples/packs/fraud/profile_rule.yaml";
const std::string kWeights = kSrc + "/examples/packs/fraud/profile_weights.yaml";

struct Fired {
  std::string rule, number, title, level, profile_id;
  double score = 0;
};

class Collect final : public rules::SignalSink {
 public:
  std::vector<Fired> fired;
  void on_signal(const rules::Signal& s) override {
    Fired f{std::string(s.rule->id), "", std::string(s.title), std::string(s.level), std::string(s.first_event_id)};
    const StreamSchema& schema = schema_of(s.event->stream);
    f.number = std::string(s.event->at(schema.key_slot).s);
    if (!s.values.empty()) f.score = s.values.back();
    fired.push_back(std::move(f));
  }
};

// Decodes every event (as the pipeline would) and runs it through the rules.
std::vector<Fired> run(const std::vector<ReplayEvent>& events, const std::vector<std::string>& rule_files,
                       int64_t* rejected = nullptr) {
  const auto loaded = rules::load_rule_files(rule_files);
  EXPECT_TRUE(loaded.ok());
  if (!loaded.ok()) {
    for (const auto& d : loaded.diagnostics) ADD_FAILURE() << rules::format_text(d);
    return {};
  }
  Collect sink;
  rules::Engine engine(loaded.rules, sink);
  Decoder decoder;
  Event e;
  int64_t bad = 0;
  for (const ReplayEvent& ev : events) {
    if (!decoder.decode(ev.stream, ev.json, ev.time_ms + 1000, e).ok()) {
      ++bad;
      continue;
    }
    engine.on_event(e);
  }
  if (rejected) *rejected = bad;
  return sink.fired;
}

std::vector<ReplayEvent> read_fixture(MapStats& stats, const SichuanOptions& o = {}) {
  std::ifstream in(kFixture);
  EXPECT_TRUE(in) << kFixture;
  std::vector<ReplayEvent> events;
  std::string error;
  EXPECT_TRUE(read_sichuan_users(in, o, events, stats, error)) << error;
  return events;
}

TEST(ReplaySichuan, MapsRowsToProfiles) {
  MapStats stats;
  const auto events = read_fixture(stats);
  EXPECT_EQ(stats.rows, 6);
  EXPECT_EQ(stats.mapped, 4);
  EXPECT_EQ(stats.invalid, 2);  // no phone_no_m; imeis "two"
  ASSERT_EQ(events.size(), 4u);
  Decoder decoder;
  const StreamSchema& schema = schema_of(Stream::kProfiles);
  auto field = [&](const Event& e, std::string_view name) -> const Value& { return e.at(schema.slot_of(name)); };

  // An ordinary subscriber: counts written as 270.0 become ints, the label is not mapped.
  Event e;
  ASSERT_EQ(events[0].stream, Stream::kProfiles);
  ASSERT_TRUE(decoder.decode(Stream::kProfiles, events[0].json, kSichuanDefaultAsOfMs, e).ok()) << events[0].json;
  EXPECT_EQ(e.time_ms, kSichuanDefaultAsOfMs);
  EXPECT_EQ(events[0].time_ms, kSichuanDefaultAsOfMs);
  EXPECT_EQ(e.id(), "sichuan-1");
  EXPECT_EQ(field(e, "number").s, "5f3c0a9e7d1b2c4e8a6f0d3b9c7e1a2d");
  EXPECT_EQ(field(e, "opposite_count").i, 270);
  EXPECT_EQ(field(e, "opposite_unique").i, 60);
  EXPECT_EQ(field(e, "imeis").i, 1);
  EXPECT_DOUBLE_EQ(field(e, "voc_calltype1").d, 0.5);
  EXPECT_DOUBLE_EQ(field(e, "call_dur_median").d, 48.0);
  EXPECT_EQ(field(e, "busi_count").i, 150);
  EXPECT_EQ(field(e, "month_ids").i, 8);
  EXPECT_DOUBLE_EQ(field(e, "arpu_mean").d, 58.0);
  EXPECT_EQ(events[0].json.find("label"), std::string::npos);
  EXPECT_EQ(events[0].json.find("city_name_call"), std::string::npos);  // not a profile field

  // Missing SMS counts are 0 (the model's reading); a missing arpu_mean is left out.
  ASSERT_TRUE(decoder.decode(Stream::kProfiles, events[1].json, kSichuanDefaultAsOfMs, e).ok()) << events[1].json;
  EXPECT_EQ(e.id(), "sichuan-2");
  EXPECT_TRUE(field(e, "sms_count").present);
  EXPECT_EQ(field(e, "sms_count").i, 0);
  EXPECT_EQ(field(e, "sms_nunique").i, 0);
  EXPECT_FALSE(field(e, "arpu_mean").present);

  // A number without calls: every voice feature 0; a negative revenue stays.
  ASSERT_TRUE(decoder.decode(Stream::kProfiles, events[2].json, kSichuanDefaultAsOfMs, e).ok()) << events[2].json;
  EXPECT_EQ(field(e, "opposite_unique").i, 0);
  EXPECT_EQ(field(e, "imeis").i, 0);
  EXPECT_DOUBLE_EQ(field(e, "phone2opposite_mean").d, 0.0);
  EXPECT_EQ(field(e, "voc_day_nunique").i, 0);
  EXPECT_DOUBLE_EQ(field(e, "arpu_mean").d, -3.5);

  // The 6th data row (the 4th and 5th are invalid): a fractional count is rounded, doubles
  // keep every bit.
  ASSERT_TRUE(decoder.decode(Stream::kProfiles, events[3].json, kSichuanDefaultAsOfMs, e).ok()) << events[3].json;
  EXPECT_EQ(e.id(), "sichuan-6");
  EXPECT_EQ(field(e, "imeis").i, 4);
  EXPECT_EQ(field(e, "phone2opposite_mean").d, 7.123456789012345);
  EXPECT_EQ(field(e, "flow_sum").d, 1e-05);
}

TEST(ReplaySichuan, OptionsSetTimeAndIds) {
  MapStats stats;
  SichuanOptions o;
  o.as_of_ms = 1700000000000;
  o.id_prefix = "users-\"q\"-";
  const auto events = read_fixture(stats, o);
  ASSERT_FALSE(events.empty());
  Decoder decoder;
  Event e;
  ASSERT_TRUE(decoder.decode(Stream::kProfiles, events[0].json, o.as_of_ms, e).ok()) << events[0].json;
  EXPECT_EQ(e.time_ms, 1700000000000);
  EXPECT_EQ(e.id(), "users-\"q\"-1");
}

TEST(ReplaySichuan, RejectsAFileWithoutPhoneNumbers) {
  std::istringstream in("a,b\n1,2\n");
  std::vector<ReplayEvent> events;
  MapStats stats;
  std::string error;
  EXPECT_FALSE(read_sichuan_users(in, {}, events, stats, error));
  EXPECT_NE(error.find("phone_no_m"), std::string::npos);
  std::istringstream empty("");
  EXPECT_TRUE(read_sichuan_users(empty, {}, events, stats, error));
  EXPECT_TRUE(events.empty());
}

TEST(ReplaySichuan, FraudPackScoresTheFixture) {
  MapStats stats;
  const auto events = read_fixture(stats);
  int64_t rejected = -1;
  const auto fired = run(events, {kProfileRule}, &rejected);
  EXPECT_EQ(rejected, 0);
  ASSERT_EQ(fired.size(), 1u);  // the fraud-like row only
  EXPECT_EQ(fired[0].rule, "fraud.number_profile");
  EXPECT_EQ(fired[0].number, "c0ffee00fraud0001");
  EXPECT_EQ(fired[0].profile_id, "sichuan-2");
  EXPECT_EQ(fired[0].level, "critical");
  EXPECT_NEAR(fired[0].score, 55.76, 0.01);  // as the pack's test "a fraud-like profile" (sms 4 there, 0 here)
}

// users_train.csv through the shipped rule: exactly the counts profile_weights.yaml records
// (rule_in_sample, computed by tools/fit_fraud_profile.py with the written parameters).
TEST(ReplaySichuan, RealDataMatchesTheFitScript) {
  std::filesystem::path dir;
  if (const char* env = std::getenv("TOCSIN_DATA_DIR"); env && *env) dir = env;
  else dir = std::filesystem::path(kSrc) / ".." / "shared" / "data";
  const auto file = dir / "sichuan-fraud" / "users_train.csv";
  if (!std::filesystem::exists(file))
    GTEST_SKIP() << "shared data not found at " << file.string()
                 << " (set TOCSIN_DATA_DIR to the folder holding sichuan-fraud/users_train.csv)";

  std::ifstream weights(kWeights);
  std::stringstream ws;
  ws << weights.rdbuf();
  std::smatch m;
  const std::string wtext = ws.str();
  ASSERT_TRUE(std::regex_search(wtext, m, std::regex(R"(rule_in_sample: \{rows: (\d+), flagged: (\d+), tp: (\d+), fp: (\d+), fn: (\d+)\})")))
      << "profile_weights.yaml has no rule_in_sample line";
  const int64_t rows = std::stoll(m[1]), flagged = std::stoll(m[2]), tp = std::stoll(m[3]), fp = std::stoll(m[4]);

  std::ifstream in(file);
  std::vector<ReplayEvent> events;
  MapStats stats;
  std::string error;
  ASSERT_TRUE(read_sichuan_users(in, {}, events, stats, error)) << error;
  EXPECT_EQ(stats.rows, rows);
  EXPECT_EQ(stats.mapped, rows);
  EXPECT_EQ(stats.invalid, 0);

  // Labels by number, read on the side: the mapping never carries them.
  std::map<std::string, int> label;
  {
    std::ifstream again(file);
    CsvReader csv(again);
    std::vector<std::string> row;
    ASSERT_TRUE(csv.next(row));
    const CsvHeader h(row);
    while (csv.next(row)) label[std::string(h.get(row, "phone_no_m"))] = std::stoi(std::string(h.get(row, "label")));
  }
  int64_t rejected = -1;
  const auto fired = run(events, {kProfileRule}, &rejected);
  EXPECT_EQ(rejected, 0);
  int64_t got_tp = 0, got_fp = 0;
  for (const auto& f : fired) (label.at(f.number) == 1 ? got_tp : got_fp) += 1;
  EXPECT_EQ(static_cast<int64_t>(fired.size()), flagged);
  EXPECT_EQ(got_tp, tp);
  EXPECT_EQ(got_fp, fp);
}

}  // namespace
}  // namespace tocsin::app
