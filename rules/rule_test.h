#pragma once
// `tocsin rules test`: unit tests for rule files, in the spirit of
// `promtool test rules`. A test gives input events with their times, advances
// of a virtual clock and the exact alerts expected; the runner drives the real
// Decoder, Engine and AlertEncoder on a ManualClock and compares the alert
// JSON they produce with the expectation. The format is documented in
// docs/rules.md ("Testing rules").
//
// The same runner serves the CLI (run_rule_test_cli), the golden tests in
// tests/rules/golden/ (run_golden_case) and unit tests.
//
// Layering: this is a tool above alerts/ (it needs the AlertEncoder), so it is
// its own library, tocsin_rule_test, not part of tocsin_rules.
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pipeline/event.h"
#include "rules/rule_set.h"
#include "rules/tables.h"

namespace tocsin::rules {

// A JSON-like value read from YAML, a JSON line or an alert: what expectations
// are written in and compared against.
struct TestValue {
  enum Kind : uint8_t { kNull, kScalar, kList, kMap } kind = kNull;
  std::string text;     // kScalar
  bool quoted = false;  // kScalar written as a quoted string (never a number, bool or null)
  std::vector<TestValue> items;                          // kList
  std::vector<std::pair<std::string, TestValue>> fields;  // kMap, in written order
  std::vector<std::pair<int, int>> key_positions;         // kMap: line and column of each key
  int line = 0;  // 1-based position in its file; 0 when unknown
  int column = 0;

  const TestValue* find(std::string_view key) const;
};

// Parses YAML or JSON text (JSON is read as YAML flow style) into a value.
// Returns nullopt and sets `error` ("line:column: message") on a syntax error.
std::optional<TestValue> parse_test_value(const std::string& text, std::string& error);

// One step of a test's input.
struct TestStep {
  enum Kind : uint8_t { kEvent, kAdvance } kind = kEvent;
  int line = 0;  // where the step was written
  // kEvent
  Stream stream = Stream::kCalls;
  std::optional<int64_t> at_ms;  // offset from the test's start; absent: the event carries its own time
  TestValue event;               // the event's fields as written (a mapping)
  // kAdvance
  int64_t advance_ms = 0;
};

struct RuleTestCase {
  std::string name;
  std::string file;      // where the test was written (input items name their lines in it)
  std::string location;  // "file:line" of the test
  int64_t start_ms = 0;  // virtual clock start
  std::vector<TestStep> input;
  std::vector<TestValue> expect;  // each a mapping of alert fields (partial match)
};

// A reference table declared by a test file: its schema and its rows, given
// inline (each a mapping of column -> value) or read from a CSV/JSONL file.
struct TestTable {
  TableSchema schema;
  std::vector<TestValue> rows;
  std::string file;  // resolved against the test file's directory; empty: none
  int line = 0;
};

struct RuleTestFile {
  std::string file;
  std::vector<std::string> rule_files;  // resolved against the test file's directory
  std::vector<TestTable> tables;        // declared before the rules are compiled
  int64_t start_ms = 0;
  int64_t tick_ms = 1000;  // the virtual worker calls Engine::on_tick at this period
  std::vector<RuleTestCase> tests;
};

// The start used when a file does not give one: 2026-11-26T00:00:00Z (a Thursday).
inline constexpr int64_t kDefaultTestStartMs = 1795651200000;

// Reads a test file. On failure returns false with messages ("file:line:col: ...").
bool load_rule_test_file(const std::string& path, RuleTestFile& out, std::vector<std::string>& errors);
// The same from text; relative rule_files are resolved against `base_dir`.
bool parse_rule_test_file(const std::string& name, const std::string& text, const std::string& base_dir,
                          RuleTestFile& out, std::vector<std::string>& errors);

struct RuleTestResult {
  std::string name;
  bool passed = false;
  std::string report;               // why it failed: the diff or the error; empty when passed
  std::vector<std::string> alerts;  // the alert JSON produced, in order
};

// Builds the registry holding a file's tables (null when it declares none).
// Errors ("file:line: message") leave the result null.
std::unique_ptr<TableRegistry> make_test_tables(const RuleTestFile& file, std::vector<std::string>& errors);

// Runs one test on a fresh engine over `rules` (and `tables`, when given).
RuleTestResult run_rule_test(std::shared_ptr<const RuleSet> rules, const RuleTestCase& test,
                             int64_t tick_ms = 1000, const TableSource* tables = nullptr);

struct RuleTestFileResult {
  std::string file;
  std::vector<std::string> load_errors;  // the test file or its rules could not be loaded
  std::vector<RuleTestResult> tests;
  bool loaded() const { return load_errors.empty(); }
  int passed() const;
  int failed() const;
};

// Loads a test file and its rules and runs every test.
RuleTestFileResult run_rule_test_file(const std::string& path);

// A golden case: a directory with rules.yaml and either events.jsonl +
// expected.jsonl (the alerts) or expected_errors.txt (the diagnostics, one
// "CODE LINE:COLUMN" per line), and optionally tables.yaml (a `tables:`
// section as in a test file). One test named after the directory.
RuleTestFileResult run_golden_case(const std::string& dir);

// Parses a duration or offset: "10m", "3m10s", "1h30m", "500ms", "-5m",
// or a plain integer of milliseconds.
std::optional<int64_t> parse_test_offset(std::string_view text);
// Formats milliseconds the way parse_test_offset reads them ("1h2m3s", "0s").
std::string format_test_offset(int64_t ms);

// `tocsin rules test FILES...`: prints PASS/FAIL per test, diffs and a summary
// line. Returns 0 when all pass, 1 on a failure, 2 when a file cannot be loaded.
int run_rule_test_cli(const std::vector<std::string>& files, std::ostream& out, std::ostream& err);

}  // namespace tocsin::rules
