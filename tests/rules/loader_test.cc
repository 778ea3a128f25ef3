#include <gtest/gtest.h>

#include "rules/rule_set.h"

namespace tocsin::rules {
namespace {

const char* kGood = R"(rules:
  - id: fraud.fan_out_1h
    stream: calls
    where: duration_s < 30
    window:
      group_by: [caller]
      size: 1h
    aggregates:
      strangers: count_distinct(callee)
      calls: count()
    having: strangers >= 20
    alert:
      type: fraud.fan_out
      severity: high
      title: "Caller {caller} called {strangers} numbers"
  - id: heating.fault_opened
    stream: faults
    on: [opened]
    alert: {type: heating.outage, severity: critical}
)";

LoadResult load(const std::string& text) { return load_rules({{"r.yaml", text}}); }

TEST(Loader, CompilesAndIndexesRules) {
  const auto r = load(kGood);
  ASSERT_TRUE(r.ok()) << (r.diagnostics.empty() ? "" : format_text(r.diagnostics[0]));
  const RuleSet& s = *r.rules;
  ASSERT_EQ(s.rules.size(), 2u);
  EXPECT_EQ(s.version.size(), 16u);
  const Rule& fan = s.rules[0];
  EXPECT_TRUE(fan.windowed());
  EXPECT_EQ(fan.window_ms, 3600000);
  ASSERT_EQ(fan.aggregates.size(), 2u);
  EXPECT_EQ(fan.aggregates[0].kind, AggregateKind::kCountDistinct);
  EXPECT_EQ(s.rules_for(Stream::kCalls, -1), (std::vector<Trigger>{Trigger{Trigger::kMain, 0, -1}}));
  const int opened = schema_of(Stream::kFaults).kind_index("opened");
  EXPECT_EQ(s.rules_for(Stream::kFaults, opened), (std::vector<Trigger>{Trigger{Trigger::kMain, 1, -1}}));
  EXPECT_TRUE(s.rules_for(Stream::kFaults, schema_of(Stream::kFaults).kind_index("restored")).empty());
  EXPECT_TRUE(s.rules_for(Stream::kComplaints, 0).empty());
}

// Rules of one trigger list whose `where` have a condition in common share
// it: the engine tests it once per event and skips a run of them when it fails.
TEST(Loader, SharesConditionsBetweenRulesOfOneList) {
  const auto r = load(R"(rules:
  - {id: a, stream: calls, where: 'duration_s > 300 and not answered', alert: {severity: low}}
  - {id: b, stream: calls, where: 'not answered and duration_s > 600', alert: {severity: low}}
  - {id: c, stream: calls, where: 'duration_s > 600 or answered', alert: {severity: low}}
  - {id: d, stream: calls, where: 'starts_with(callee, "170") and not answered', alert: {severity: low}}
  - {id: e, stream: calls, where: 'duration_s > 300', alert: {severity: low}}
  - {id: f, stream: calls, alert: {severity: low}}
  - {id: g, stream: faults, on: [opened], where: 'households > 10', alert: {severity: low}}
)");
  ASSERT_TRUE(r.ok()) << (r.diagnostics.empty() ? "" : format_text(r.diagnostics[0]));
  const RuleSet& s = *r.rules;
  const auto& calls = s.rules_for(Stream::kCalls, -1);
  ASSERT_EQ(calls.size(), 6u);
  // `not answered` is in three rules, `duration_s > 300` in two, `duration_s > 600` in b only
  // (c's is no condition: `or`): a, b and d take `not answered`, e `duration_s > 300`.
  ASSERT_EQ(s.conditions.size(), 2u);
  EXPECT_EQ(calls[0].condition, 0);
  EXPECT_EQ(calls[1].condition, 0);
  EXPECT_EQ(calls[2].condition, -1);
  EXPECT_EQ(calls[3].condition, 0);
  EXPECT_EQ(calls[4].condition, 1);
  EXPECT_EQ(calls[5].condition, -1);
  // Runs: a and b are next to each other; d and e each stand alone.
  EXPECT_EQ(calls[0].condition_run, 2);
  EXPECT_EQ(calls[1].condition_run, 1);
  EXPECT_EQ(calls[3].condition_run, 1);
  EXPECT_EQ(calls[4].condition_run, 1);
  const int opened = schema_of(Stream::kFaults).kind_index("opened");
  EXPECT_EQ(s.rules_for(Stream::kFaults, opened)[0].condition, -1) << "no other rule to share with";
  Event answered, silent;
  answered.slots[static_cast<size_t>(schema_of(Stream::kCalls).slot_of("answered"))] = Value::of_bool(true);
  silent.slots[static_cast<size_t>(schema_of(Stream::kCalls).slot_of("answered"))] = Value::of_bool(false);
  EXPECT_FALSE(s.conditions[0].test(EvalContext{&answered}));
  EXPECT_TRUE(s.conditions[0].test(EvalContext{&silent}));
}

TEST(Loader, VersionChangesWithContent) {
  EXPECT_NE(load(kGood).rules->version, load(std::string(kGood) + "\n# changed\n").rules->version);
}

struct ErrorCase {
  const char* name;
  std::string text;
  const char* code;
  int line;
  int column;
};

class LoaderErrors : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(LoaderErrors, NameFileLineColumnAndNeverGoLive) {
  const auto& c = GetParam();
  const auto r = load(c.text);
  EXPECT_FALSE(r.ok());
  ASSERT_FALSE(r.diagnostics.empty());
  const Diagnostic& d = r.diagnostics[0];
  EXPECT_EQ(d.code, c.code) << format_text(d);
  EXPECT_EQ(d.file, "r.yaml");
  EXPECT_EQ(d.line, c.line) << format_text(d);
  EXPECT_EQ(d.column, c.column) << format_text(d);
  EXPECT_EQ(format_text(d).rfind("r.yaml:" + std::to_string(c.line) + ":" + std::to_string(c.column) + ": error " + c.code, 0), 0u);
}

const std::string kHead = "rules:\n  - id: x\n    stream: calls\n";
const std::string kAlert = "    alert: {severity: high}\n";

INSTANTIATE_TEST_SUITE_P(
    Loader, LoaderErrors,
    ::testing::Values(
        ErrorCase{"yaml_syntax", "rules:\n  - id: [x\n", "E001", 3, 1},
        ErrorCase{"not_a_map", "- a\n- b\n", "E002", 1, 1},
        ErrorCase{"unknown_key", kHead + "    wher: duration_s > 1\n" + kAlert, "E004", 4, 5},
        ErrorCase{"duplicate_id", kHead + kAlert + "  - id: x\n    stream: calls\n" + kAlert, "E005", 5, 9},
        ErrorCase{"unknown_stream", "rules:\n  - id: x\n    stream: sms\n" + kAlert, "E006", 3, 13},
        ErrorCase{"unknown_kind", "rules:\n  - id: x\n    stream: faults\n    on: [exploded]\n" + kAlert, "E007", 4, 10},
        ErrorCase{"bad_duration", kHead + "    window: {group_by: [caller], size: 1y}\n    having: count > 1\n" + kAlert, "E008", 4, 40},
        ErrorCase{"expr_syntax", kHead + "    where: duration_s <\n" + kAlert, "E102", 4, 24},
        ErrorCase{"expr_type", kHead + "    where: caller > 5\n" + kAlert, "E201", 4, 19},
        ErrorCase{"expr_type_quoted", kHead + "    where: \"caller > 5\"\n" + kAlert, "E201", 4, 20},
        ErrorCase{"unknown_field", kHead + "    where: callr == \"1\"\n" + kAlert, "E203", 4, 12},
        ErrorCase{"not_bool", kHead + "    where: duration_s + 1\n" + kAlert, "E201", 4, 12},
        ErrorCase{"bad_aggregate", kHead + "    window: {group_by: [caller], size: 1h}\n    aggregates: {x: median(duration_s)}\n    having: x > 1\n" + kAlert, "E010", 5, 21},
        ErrorCase{"sum_of_string", kHead + "    window: {group_by: [caller], size: 1h}\n    aggregates: {x: sum(callee)}\n    having: x > 1\n" + kAlert, "E201", 5, 21},
        ErrorCase{"no_having", kHead + "    window: {group_by: [caller], size: 1h}\n" + kAlert, "E003", 2, 5},
        ErrorCase{"bad_window_type", kHead + "    window: {group_by: [caller], size: 1h, type: hopping}\n    having: count > 1\n" + kAlert, "E009", 4, 50},
        ErrorCase{"two_shapes", kHead + "    window: {group_by: [caller], size: 1h}\n    absence: {}\n    having: count > 1\n" + kAlert, "E013", 2, 5},
        ErrorCase{"sequence_key_mismatch", "rules:\n  - id: x\n    stream: calls\n    sequence:\n      within: 1h\n      first: {key: [callee]}\n      then: {key: [caller, callee]}\n" + kAlert, "E014", 5, 7},
        ErrorCase{"unknown_prior_field", "rules:\n  - id: x\n    stream: calls\n    sequence:\n      within: 1h\n      first: {key: [callee]}\n      then: {key: [caller], where: first.nope > 1}\n" + kAlert, "E203", 7, 36},
        ErrorCase{"feature_not_a_number", kHead + "    score:\n      features: [{name: f, value: caller}]\n    having: score > 1\n" + kAlert, "E201", 5, 35},
        ErrorCase{"bad_weight", kHead + "    score:\n      features: [{name: f, value: answered, weight: heavy}]\n    having: score > 1\n" + kAlert, "E015", 5, 53},
        ErrorCase{"absence_without_deadlines", kHead + "    absence: {key: [caller], start: {}}\n" + kAlert, "E003", 4, 14},
        ErrorCase{"bad_severity", kHead + "    alert: {severity: urgent}\n", "E011", 4, 23},
        ErrorCase{"bad_title_name", kHead + "    alert: {severity: high, title: \"a {nope} b\"}\n", "E012", 4, 40}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Loader, JsonDiagnostics) {
  const auto r = load(kHead + "    where: caller > 5\n" + kAlert);
  const std::string j = format_json(r.diagnostics);
  EXPECT_NE(j.find(R"("code":"E201")"), std::string::npos) << j;
  EXPECT_NE(j.find(R"("line":4)"), std::string::npos) << j;
}

TEST(Loader, MissingFileIsAnError) {
  const auto r = load_rule_files({"/nonexistent/rules.yaml"});
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(r.diagnostics[0].code, "E000");
}

}  // namespace
}  // namespace tocsin::rules

namespace tocsin::rules {
namespace {

TEST(Loader, DirectoriesSkipRuleTests) {
  const auto r = load_rule_files({TOCSIN_SOURCE_DIR "/examples/rules"});
  ASSERT_TRUE(r.ok()) << (r.diagnostics.empty() ? "" : format_text(r.diagnostics[0]));
  for (const auto& f : r.rules->files) EXPECT_FALSE(f.ends_with(".test.yaml")) << f;
}

}  // namespace
}  // namespace tocsin::rules

namespace tocsin::rules {
namespace {

TEST(Loader, AtMostSixteenScoreFeatures) {
  std::string r = "rules:\n  - id: x\n    stream: calls\n    score:\n      features:\n";
  for (int i = 0; i < 17; ++i) r += "        - {name: f" + std::to_string(i) + ", value: answered}\n";
  r += "    having: score > 1\n    alert: {severity: low}\n";
  const auto loaded = load_rules({{"r.yaml", r}});
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.diagnostics[0].code, "E010");
}

}  // namespace
}  // namespace tocsin::rules
