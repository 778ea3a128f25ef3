// Golden tests of the rule language: every directory under tests/rules/golden/
// is one case (rules.yaml + events.jsonl + expected.jsonl, or rules.yaml +
// expected_errors.txt), run through the same runner as `tocsin rules test`.
// The cases are listed when the binary starts, so a new directory needs no
// code. See docs/rules.md, "Testing rules".
//
// A case whose directory holds known_issue.txt documents a disagreement
// between the engine and docs/rules.md: it is reported as skipped while it
// fails, and fails once it passes (so the file gets removed with the fix).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "rules/rule_test.h"

namespace {

namespace fs = std::filesystem;

fs::path golden_dir() { return fs::path(TOCSIN_SOURCE_DIR) / "tests" / "rules" / "golden"; }

std::vector<std::string> cases() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(golden_dir(), ec))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, Case) {
  const fs::path dir = golden_dir() / GetParam();
  const auto result = tocsin::rules::run_golden_case(dir.string());
  std::string report;
  for (const auto& e : result.load_errors) report += e + "\n";
  for (const auto& t : result.tests)
    if (!t.passed) report += t.report;
  const bool passed = result.loaded() && !result.tests.empty() && result.failed() == 0;
  if (fs::exists(dir / "known_issue.txt")) {
    if (passed) FAIL() << GetParam() << " passes now: delete " << (dir / "known_issue.txt").string();
    GTEST_SKIP() << "known issue: " << read(dir / "known_issue.txt") << report;
  }
  EXPECT_TRUE(passed) << dir.string() << "\n" << report;
}

INSTANTIATE_TEST_SUITE_P(Rules, Golden, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// Every diagnostic code in docs/rules.md's table has an error case named
// NNN_<CODE>_<what>, so a new code comes with its golden test (or a line in
// golden/uncovered_codes.txt saying why it cannot have one).
TEST(GoldenCoverage, EveryDocumentedDiagnosticCodeHasACase) {
  const std::string doc = read(fs::path(TOCSIN_SOURCE_DIR) / "docs" / "rules.md");
  ASSERT_FALSE(doc.empty());
  std::set<std::string> codes;
  const std::regex row(R"(\n\| ([EW][0-9]{3}) \|)");
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), row); it != std::sregex_iterator(); ++it)
    codes.insert((*it)[1]);
  ASSERT_FALSE(codes.empty()) << "no diagnostic table found in docs/rules.md";
  // Codes no single rules.yaml can produce are listed, with the reason, in uncovered_codes.txt.
  std::istringstream exempt(read(golden_dir() / "uncovered_codes.txt"));
  for (std::string line; std::getline(exempt, line);)
    if (!line.empty() && line[0] != '#') codes.erase(line.substr(0, line.find(' ')));
  const auto names = cases();
  for (const auto& code : codes) {
    const bool covered = std::any_of(names.begin(), names.end(), [&](const std::string& n) {
      return n.find("_" + code + "_") != std::string::npos && fs::exists(golden_dir() / n / "expected_errors.txt");
    });
    EXPECT_TRUE(covered) << "no golden error case for " << code << " (add tests/rules/golden/NNN_" << code
                         << "_what/{rules.yaml,expected_errors.txt})";
  }
}

}  // namespace
