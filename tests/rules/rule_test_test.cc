// Unit tests of the rule test runner itself (`tocsin rules test`).
#include "rules/rule_test.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tocsin::rules {
namespace {

namespace fs = std::filesystem;

const char* kRules = R"(rules:
  - id: fan
    stream: calls
    where: duration_s < 30
    window: {group_by: [caller], size: 10m}
    aggregates: {strangers: count_distinct(callee), calls: count()}
    having: strangers >= 2
    alert: {type: fraud.fan_out, severity: high, title: "{caller} called {strangers} numbers"}
  - id: opened
    stream: faults
    on: opened
    alert: {severity: critical, title: "outage on {network_id}"}
)";

// A scratch directory with the rules above as rules.yaml.
class RuleTestRunner : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tocsin_rule_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    write("rules.yaml", kRules);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  RuleTestFileResult run(const std::string& test_yaml) { return run_rule_test_file(write("t.test.yaml", test_yaml)); }

  fs::path dir_;
};

const char* kTwoCalls = R"(
      - {stream: calls, at: 0s, event: {call_id: c1, caller: "13800138000", callee: "13900000001", duration_s: 5, answered: true}}
      - {stream: calls, at: 2m, event: {call_id: c2, caller: "13800138000", callee: "13900000002", duration_s: 5, answered: true}}
)";

TEST_F(RuleTestRunner, PassingFilePasses) {
  const auto r = run(std::string(R"(rule_files: [rules.yaml]
start: "2026-11-26T08:00:00Z"
tests:
  - name: fan-out fires once
    input:)") + kTwoCalls + R"(
    expect:
      - {rule: fan, key: {caller: "13800138000"}, severity: high, type: fraud.fan_out,
         title: "138****8000 called 2 numbers", at: 2m, count: 2, distinct: 2,
         evidence: {first_event_id: c1, last_event_id: c2, first_event_time: 0s},
         window: {start: -8m, end: "2026-11-26T08:02:00Z", size_ms: 600000}, aggregates: {calls: 2}}
  - name: nothing without input
    expect: []
)");
  ASSERT_TRUE(r.loaded()) << r.load_errors[0];
  ASSERT_EQ(r.tests.size(), 2u);
  for (const auto& t : r.tests) EXPECT_TRUE(t.passed) << t.name << "\n" << t.report;
  EXPECT_EQ(r.tests[0].alerts.size(), 1u);
  EXPECT_EQ(r.passed(), 2);
  EXPECT_EQ(r.failed(), 0);
}

TEST_F(RuleTestRunner, WrongExpectationFailsWithADiffNamingTheField) {
  const auto r = run(std::string(R"(rule_files: [rules.yaml]
tests:
  - name: wrong severity
    input:)") + kTwoCalls + R"(
    expect:
      - {rule: fan, severity: low, at: 2m}
)");
  ASSERT_TRUE(r.loaded()) << r.load_errors[0];
  ASSERT_EQ(r.tests.size(), 1u);
  const auto& t = r.tests[0];
  EXPECT_FALSE(t.passed);
  EXPECT_NE(t.report.find("expected 1 alert, got 1"), std::string::npos) << t.report;
  EXPECT_NE(t.report.find("~ expected {rule: fan, severity: low, at: 2m}"), std::string::npos) << t.report;
  EXPECT_NE(t.report.find("severity: expected low, got high"), std::string::npos) << t.report;
  EXPECT_EQ(t.report.find("at: expected"), std::string::npos) << "only differing fields are listed\n" << t.report;
}

TEST_F(RuleTestRunner, MissingAndUnexpectedAlertsAreMarked) {
  const auto r = run(std::string(R"(rule_files: [rules.yaml]
tests:
  - name: mixed
    input:)") + kTwoCalls + R"(
      - {stream: faults, at: 3m, event: {fault_id: f1, kind: opened, network_id: N7}}
    expect:
      - {rule: fan, at: 2m}
      - {rule: never_fires}
)");
  ASSERT_TRUE(r.loaded()) << r.load_errors[0];
  const auto& t = r.tests[0];
  EXPECT_FALSE(t.passed);
  EXPECT_NE(t.report.find("expected 2 alerts, got 2"), std::string::npos) << t.report;
  EXPECT_NE(t.report.find("  = {rule: fan, type: fraud.fan_out, key: {caller: \"13800138000\"}"), std::string::npos) << t.report;
  EXPECT_NE(t.report.find("  - {rule: never_fires}"), std::string::npos) << t.report;
  EXPECT_NE(t.report.find("  + {rule: opened, severity: critical, title: \"outage on N7\", at: 3m, count: 1}"), std::string::npos) << t.report;
}

TEST_F(RuleTestRunner, TheKeyIsComparedWhole) {
  write("two_keys.yaml", R"(rules:
  - id: pair
    stream: calls
    window: {group_by: [caller, callee], size: 10m}
    aggregates: {n: count()}
    having: n >= 1
    alert: {severity: low}
)");
  const auto r = run(R"(rule_files: [two_keys.yaml]
tests:
  - name: partial key
    input:
      - {stream: calls, at: 0s, event: {call_id: c1, caller: "1", callee: "2", duration_s: 5, answered: true}}
    expect:
      - {rule: pair, key: {caller: "1"}}
)");
  ASSERT_TRUE(r.loaded()) << r.load_errors[0];
  EXPECT_FALSE(r.tests[0].passed);
  EXPECT_NE(r.tests[0].report.find("key.callee: not expected, got \"2\""), std::string::npos) << r.tests[0].report;
}

TEST_F(RuleTestRunner, AnUnknownRuleFileIsALoadError) {
  const std::string path = write("t.test.yaml", R"(rule_files: [no_such_rules.yaml]
tests:
  - name: x
    expect: []
)");
  const auto r = run_rule_test_file(path);
  EXPECT_FALSE(r.loaded());
  ASSERT_FALSE(r.load_errors.empty());
  EXPECT_NE(r.load_errors[0].find("E000"), std::string::npos) << r.load_errors[0];
  EXPECT_NE(r.load_errors[0].find("no_such_rules.yaml"), std::string::npos) << r.load_errors[0];
  std::ostringstream out, err;
  EXPECT_EQ(run_rule_test_cli({path}, out, err), 2);
  EXPECT_NE(err.str().find("no_such_rules.yaml"), std::string::npos) << err.str();
}

TEST_F(RuleTestRunner, MistakesInTheTestFileAreLoadErrorsWithPositions) {
  const auto r = run(R"(rule_files: [rules.yaml]
tests:
  - name: typo
    input:
      - {stream: calls, at: 1x, event: {call_id: c1}}
      - {advance: 0s}
      - {stream: sms, at: 0s, event: {}}
    expect:
      - {rule: fan, severty: high}
)");
  ASSERT_FALSE(r.loaded());
  std::string all;
  for (const auto& e : r.load_errors) all += e + "\n";
  EXPECT_NE(all.find("t.test.yaml:5:29: at: bad duration '1x'"), std::string::npos) << all;
  EXPECT_NE(all.find("t.test.yaml:6:19: advance must move the clock forward"), std::string::npos) << all;
  EXPECT_NE(all.find("t.test.yaml:7:18: unknown stream 'sms'"), std::string::npos) << all;
  EXPECT_NE(all.find("t.test.yaml:9:21: unknown key 'severty' in an expected alert"), std::string::npos) << all;
}

TEST_F(RuleTestRunner, ARejectedEventFailsTheTestNamingItsLine) {
  const auto r = run(R"(rule_files: [rules.yaml]
tests:
  - name: unquoted number
    input:
      - {stream: calls, at: 0s, event: {call_id: c1, caller: 13800138000, callee: "2", duration_s: 5, answered: true}}
    expect: []
)");
  ASSERT_TRUE(r.loaded()) << r.load_errors[0];
  EXPECT_FALSE(r.tests[0].passed);
  EXPECT_NE(r.tests[0].report.find("t.test.yaml:5: input item 1: the decoder rejected the event (wrong_type: caller)"),
            std::string::npos)
      << r.tests[0].report;
}

// The clock only moves forward: an event's `at` moves it to the event time when
// that is later; `advance` adds to wherever it is. Alerts carry the clock in
// emitted_at and the event time in evidence.last_event_time.
TEST_F(RuleTestRunner, ClockAdvancesInOrder) {
  const auto r = run(R"(rule_files: [rules.yaml]
tests:
  - name: ordering
    input:
      - {advance: 10m}
      - {stream: faults, at: 1m, event: {fault_id: f1, kind: opened, network_id: N1}}
      - {stream: faults, at: 15m, event: {fault_id: f2, kind: opened, network_id: N1}}
      - {advance: 5m}
      - {advance: 30s}
      - {stream: faults, at: 12m, event: {fault_id: f3, kind: opened, network_id: N1}}
      - {stream: faults, event: {fault_id: f4, kind: opened, network_id: N1, time: "2026-11-26T00:21:00Z"}}
    expect:
      - {evidence: {last_event_id: f1, last_event_time: 1m}, emitted_at: 10m}
      - {evidence: {last_event_id: f2, last_event_time: 15m}, emitted_at: 15m}
      - {evidence: {last_event_id: f3, last_event_time: 12m}, emitted_at: 20m30s}
      - {evidence: {last_event_id: f4, last_event_time: 21m}, emitted_at: 21m}
)");
  ASSERT_TRUE(r.loaded()) << r.load_errors[0];
  EXPECT_TRUE(r.tests[0].passed) << r.tests[0].report;
}

TEST_F(RuleTestRunner, CliPrintsPassFailAndASummary) {
  const std::string path = write("t.test.yaml", std::string(R"(rule_files: [rules.yaml]
tests:
  - name: good
    input:)") + kTwoCalls + R"(
    expect:
      - {rule: fan}
  - name: bad
    input:)" + kTwoCalls + R"(
    expect: []
)");
  std::ostringstream out, err;
  EXPECT_EQ(run_rule_test_cli({path}, out, err), 1);
  const std::string s = out.str();
  EXPECT_NE(s.find("PASS good\n"), std::string::npos) << s;
  EXPECT_NE(s.find("FAIL bad\n"), std::string::npos) << s;
  EXPECT_NE(s.find("    + {rule: fan"), std::string::npos) << s;
  EXPECT_NE(s.find("1 passed, 1 failed\n"), std::string::npos) << s;
  EXPECT_TRUE(err.str().empty()) << err.str();
}

TEST_F(RuleTestRunner, TablesAreLoadedForTheRules) {
  write("watch.yaml", R"(rules:
  - id: watched
    stream: calls
    where: in_table("watchlist", caller)
    alert: {severity: high, title: "{caller}"}
)");
  const auto r = run(R"(rule_files: [watch.yaml]
tables:
  - name: watchlist
    key_normalization: phone
    columns:
      - {name: number, type: string}
      - {name: risk, type: int}
    reload: true
    rows:
      - {number: "+86 138 0013 8000", risk: 3}
tests:
  - name: only the listed caller
    input:
      - {stream: calls, at: 0s, event: {call_id: c1, caller: "13800138000", callee: "2", duration_s: 5, answered: true}}
      - {stream: calls, at: 1s, event: {call_id: c2, caller: "13800138001", callee: "2", duration_s: 5, answered: true}}
    expect:
      - {rule: watched, evidence: {last_event_id: c1}}
)");
  ASSERT_TRUE(r.loaded()) << r.load_errors[0];
  EXPECT_TRUE(r.tests[0].passed) << r.tests[0].report;
}

TEST(RuleTestOffsets, ParseAndFormat) {
  EXPECT_EQ(parse_test_offset("0s"), 0);
  EXPECT_EQ(parse_test_offset("3m10s"), 190000);
  EXPECT_EQ(parse_test_offset("1h30m"), 5400000);
  EXPECT_EQ(parse_test_offset("500ms"), 500);
  EXPECT_EQ(parse_test_offset("1500"), 1500);
  EXPECT_EQ(parse_test_offset("-5m"), -300000);
  EXPECT_EQ(parse_test_offset("2d"), 172800000);
  EXPECT_EQ(parse_test_offset("1w"), 604800000);
  EXPECT_FALSE(parse_test_offset(""));
  EXPECT_FALSE(parse_test_offset("m"));
  EXPECT_FALSE(parse_test_offset("5y"));
  EXPECT_FALSE(parse_test_offset("5m3"));
  EXPECT_EQ(format_test_offset(0), "0s");
  EXPECT_EQ(format_test_offset(190000), "3m10s");
  EXPECT_EQ(format_test_offset(-300000), "-5m");
  EXPECT_EQ(format_test_offset(90061001), "1d1h1m1s1ms");
}

TEST(RuleTestGolden, ADiagnosticMismatchIsReported) {
  const fs::path dir = fs::temp_directory_path() / ("tocsin_golden_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "rules.yaml") << "rules:\n  - id: x\n    stream: sms\n    alert: {severity: high}\n";
  std::ofstream(dir / "expected_errors.txt") << "# wrong on purpose\nE006 3:12\n";
  const auto r = run_golden_case(dir.string());
  fs::remove_all(dir);
  ASSERT_TRUE(r.loaded());
  ASSERT_EQ(r.tests.size(), 1u);
  EXPECT_FALSE(r.tests[0].passed);
  EXPECT_NE(r.tests[0].report.find("  - E006 3:12\n  + E006 3:13\n"), std::string::npos) << r.tests[0].report;
}

}  // namespace
}  // namespace tocsin::rules
