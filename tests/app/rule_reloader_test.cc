#include "app/rule_reloader.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "app/config.h"
#include "rules/engine.h"

namespace tocsin::app {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const char* kRuleA = R"(rules:
  - id: a.short_call
    stream: calls
    where: duration_s < 30
    alert: {type: a, severity: low, title: "short call by {caller}"}
)";

const char* kRuleB = R"(  - id: b.long_call
    stream: calls
    where: duration_s > 3600
    alert: {type: b, severity: medium, title: "long call by {caller}"}
)";

// Line 4: the where clause compares a string with a number (E201).
const char* kBroken = R"(rules:
  - id: a.short_call
    stream: calls
    where: caller > 5
    alert: {type: a, severity: low, title: "short call by {caller}"}
)";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tocsin-reload-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

// Polls `done` until it holds or the deadline passes.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds deadline = 10s) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

std::vector<std::string> ids(const rules::RuleSet& set) {
  std::vector<std::string> out;
  for (const auto& r : set.rules) out.push_back(r.id);
  return out;
}

double metric(prometheus::Registry& reg, const std::string& name, const std::string& result = "") {
  for (const auto& f : reg.Collect()) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      bool match = result.empty();
      for (const auto& l : m.label) match |= l.name == "result" && l.value == result;
      if (match) return f.type == prometheus::MetricType::Gauge ? m.gauge.value : m.counter.value;
    }
  }
  return -1;
}

class RuleReloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    file = dir.path() / "rules.yaml";
    write_file(file, kRuleA);
    auto loaded = rules::load_rule_files({file.string()});
    ASSERT_TRUE(loaded.ok()) << rules::format_text(loaded.diagnostics.at(0));
    initial = loaded.rules;
    reloader = std::make_unique<RuleReloader>(std::vector<std::string>{file.string()}, initial, nullptr, &registry);
  }

  TempDir dir;
  fs::path file;
  prometheus::Registry registry;
  std::shared_ptr<const rules::RuleSet> initial;
  std::unique_ptr<RuleReloader> reloader;
};

TEST_F(RuleReloaderTest, StartsWithTheInitialSet) {
  EXPECT_EQ(reloader->current(), initial);
  const auto s = reloader->last_reload();
  EXPECT_EQ(s.trigger, "startup");
  EXPECT_TRUE(s.ok);
  EXPECT_EQ(s.version, initial->version);
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_total", "success"), 0);
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_total", "failure"), 0);
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_failures_total"), 0);
  EXPECT_GT(metric(registry, "tocsin_rules_last_reload_success_timestamp_seconds"), 1.6e9);
}

TEST_F(RuleReloaderTest, GoodChangeGoesLiveAndBumpsTheVersion) {
  const uint64_t v0 = reloader->version();
  write_file(file, std::string(kRuleA) + kRuleB);
  const auto s = reloader->reload("test");
  EXPECT_TRUE(s.ok);
  EXPECT_TRUE(s.changed);
  EXPECT_TRUE(s.diagnostics.empty());
  EXPECT_EQ(reloader->version(), v0 + 1);
  const auto now = reloader->current();
  ASSERT_NE(now, nullptr);
  EXPECT_NE(now->version, initial->version);
  EXPECT_EQ(s.version, now->version);
  EXPECT_EQ(s.rule_count, 2u);
  EXPECT_EQ(ids(*now), (std::vector<std::string>{"a.short_call", "b.long_call"}));
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_total", "success"), 1);
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_failures_total"), 0);
  const std::string json = reloader->rules_json();
  EXPECT_NE(json.find(R"("rules":["a.short_call","b.long_call"])"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("trigger":"test")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("version":")" + now->version + '"'), std::string::npos) << json;
}

// The daemon's checker (alerts::check_targets) runs on every reload: its
// warnings join the reload's diagnostics and /-/rules, and never block it.
TEST_F(RuleReloaderTest, CheckerWarningsAreReportedWithoutBlockingTheReload) {
  reloader->set_checker([](const rules::RuleSet& set) {
    std::vector<rules::Diagnostic> out;
    for (const auto& r : set.rules)
      if (r.match.key.empty())
        out.push_back({rules::Diagnostic::Level::kWarning, "A101", "alerting.yaml", 7, 37, "rule " + r.id + " has no key", ""});
    return out;
  });
  write_file(file, std::string(kRuleA) + kRuleB);
  const auto s = reloader->reload("test");
  EXPECT_TRUE(s.ok);
  EXPECT_TRUE(s.changed);
  ASSERT_EQ(s.diagnostics.size(), 2u);
  EXPECT_EQ(s.diagnostics[1].message, "rule b.long_call has no key");
  EXPECT_EQ(reloader->current()->rules.size(), 2u);
  EXPECT_NE(reloader->rules_json().find("A101"), std::string::npos) << reloader->rules_json();
  // A set with errors is rejected before the checker is asked.
  write_file(file, kBroken);
  const auto bad = reloader->reload("test");
  EXPECT_FALSE(bad.ok);
  for (const auto& d : bad.diagnostics) EXPECT_NE(d.code, "A101");
}

TEST_F(RuleReloaderTest, BadChangeNeverGoesLive) {
  const uint64_t v0 = reloader->version();
  write_file(file, kBroken);
  const auto s = reloader->reload("test");
  EXPECT_FALSE(s.ok);
  EXPECT_FALSE(s.changed);
  EXPECT_EQ(reloader->version(), v0);
  EXPECT_EQ(reloader->current(), initial) << "the old set keeps running";
  EXPECT_EQ(s.version, initial->version);
  ASSERT_FALSE(s.diagnostics.empty());
  const auto& d = s.diagnostics[0];
  EXPECT_EQ(d.level, rules::Diagnostic::Level::kError);
  EXPECT_EQ(d.code, "E201");
  EXPECT_EQ(d.file, file.string());
  EXPECT_EQ(d.line, 4);
  EXPECT_GT(d.column, 0);
  EXPECT_NE(rules::format_text(d).find(file.string() + ":4:" + std::to_string(d.column) + ": error E201"), std::string::npos)
      << rules::format_text(d);
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_total", "failure"), 1);
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_failures_total"), 1);
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_total", "success"), 0);

  // The failure stays visible until the next attempt.
  const auto last = reloader->last_reload();
  EXPECT_FALSE(last.ok);
  EXPECT_EQ(last.diagnostics.size(), s.diagnostics.size());
  const std::string json = reloader->rules_json();
  EXPECT_NE(json.find(R"("ok":false)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("code":"E201")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("line":4)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("rules":["a.short_call"])"), std::string::npos) << json;

  // Fixed: the next reload goes live.
  write_file(file, std::string(kRuleA) + kRuleB);
  EXPECT_TRUE(reloader->reload("test").changed);
  EXPECT_EQ(reloader->version(), v0 + 1);
  EXPECT_TRUE(reloader->last_reload().ok);
}

TEST_F(RuleReloaderTest, MissingFileIsAFailure) {
  fs::remove(file);
  const auto s = reloader->reload("test");
  EXPECT_FALSE(s.ok);
  ASSERT_FALSE(s.diagnostics.empty());
  EXPECT_EQ(s.diagnostics[0].code, "E000");
  EXPECT_EQ(reloader->current(), initial);
}

TEST_F(RuleReloaderTest, AReloadNeverRemovesEveryRule) {
  const uint64_t v0 = reloader->version();
  write_file(file, "");  // e.g. a deploy that truncated the file before writing it
  const auto s = reloader->reload("test");
  EXPECT_FALSE(s.ok);
  ASSERT_FALSE(s.diagnostics.empty());
  EXPECT_EQ(s.diagnostics.back().code, "E016");
  EXPECT_EQ(reloader->version(), v0);
  EXPECT_EQ(reloader->current(), initial);
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_failures_total"), 1);
}

TEST_F(RuleReloaderTest, SameContentDoesNotBumpTheVersion) {
  const uint64_t v0 = reloader->version();
  write_file(file, kRuleA);  // rewritten, same bytes
  const auto s = reloader->reload("test");
  EXPECT_TRUE(s.ok);
  EXPECT_FALSE(s.changed);
  EXPECT_EQ(reloader->version(), v0);
  EXPECT_EQ(reloader->current(), initial);
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_total", "success"), 1);
}

TEST_F(RuleReloaderTest, EngineFollowsTheFeedOnTick) {
  struct NullSink final : rules::SignalSink {
    void on_signal(const rules::Signal&) override {}
  } sink;
  rules::Engine engine(initial, sink, reloader.get());
  write_file(file, std::string(kRuleA) + kRuleB);
  ASSERT_TRUE(reloader->reload("test").changed);
  EXPECT_EQ(engine.snapshot().rules, initial) << "picked up between batches, not at once";
  engine.on_tick(1);
  EXPECT_EQ(engine.snapshot().rules, reloader->current());
}

TEST_F(RuleReloaderTest, WatcherPicksUpAChange) {
  const uint64_t v0 = reloader->version();
  reloader->start({true, 10ms});
  write_file(file, std::string(kRuleA) + kRuleB);
  ASSERT_TRUE(eventually([&] { return reloader->version() != v0; })) << "no reload within the deadline";
  EXPECT_EQ(ids(*reloader->current()), (std::vector<std::string>{"a.short_call", "b.long_call"}));
  EXPECT_EQ(reloader->last_reload().trigger, "watch");

  // A broken file is reported once, not at every poll.
  write_file(file, kBroken);
  ASSERT_TRUE(eventually([&] { return metric(registry, "tocsin_rules_reload_failures_total") >= 1; }));
  EXPECT_EQ(reloader->version(), v0 + 1);
  const auto after_failure = std::chrono::steady_clock::now();
  // Not a synchronisation sleep: the condition is that nothing happens for a while.
  while (std::chrono::steady_clock::now() - after_failure < 200ms) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(metric(registry, "tocsin_rules_reload_failures_total"), 1);
  reloader->stop();
}

TEST(RuleReloader, WatchesTheYamlEntriesOfADirectory) {
  TempDir dir;
  write_file(dir.path() / "a.yaml", kRuleA);
  auto loaded = rules::load_rule_files({dir.path().string()});
  ASSERT_TRUE(loaded.ok());
  RuleReloader reloader({dir.path().string()}, loaded.rules);
  reloader.start({true, 10ms});
  write_file(dir.path() / "notes.txt", "not a rule file");
  write_file(dir.path() / "b.yml", std::string("rules:\n") + kRuleB);
  ASSERT_TRUE(eventually([&] { return reloader.version() != 1; }));
  EXPECT_EQ(ids(*reloader.current()), (std::vector<std::string>{"a.short_call", "b.long_call"}));
  fs::remove(dir.path() / "b.yml");
  ASSERT_TRUE(eventually([&] { return reloader.version() == 3; }));
  EXPECT_EQ(ids(*reloader.current()), (std::vector<std::string>{"a.short_call"}));
}

TEST_F(RuleReloaderTest, RequestedReloadRunsOnTheThreadWithWatchingOff) {
  const uint64_t v0 = reloader->version();
  reloader->start({false, 10ms});
  write_file(file, std::string(kRuleA) + kRuleB);
  reloader->request_reload("sighup");
  ASSERT_TRUE(eventually([&] { return reloader->version() != v0; }));
  EXPECT_EQ(reloader->last_reload().trigger, "sighup");
}

TEST_F(RuleReloaderTest, RequestedReloadRunsInlineWithoutTheThread) {
  write_file(file, std::string(kRuleA) + kRuleB);
  reloader->request_reload("sighup");
  EXPECT_EQ(reloader->current()->rules.size(), 2u);
}

TEST_F(RuleReloaderTest, StopIsImmediate) {
  reloader->start({true, std::chrono::milliseconds(3'600'000)});
  const auto t0 = std::chrono::steady_clock::now();
  reloader->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

TEST(RuleReloader, ConcurrentReloadsAreSerialised) {
  TempDir dir;
  const auto file = dir.path() / "rules.yaml";
  write_file(file, kRuleA);
  auto loaded = rules::load_rule_files({file.string()});
  RuleReloader reloader({file.string()}, loaded.rules);
  write_file(file, std::string(kRuleA) + kRuleB);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&] { reloader.reload("test"); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(reloader.version(), 2u) << "one change, one new version";
}

TEST(RuleReloaderConfig, WatchSettings) {
  Config c;
  EXPECT_TRUE(c.rules_watch);
  EXPECT_EQ(c.rules_watch_interval_ms, 1000);
  auto errors = parse_config("rules: {watch: false, watch_interval: 250ms}\n", "", c);
  ASSERT_TRUE(errors.empty()) << format(errors[0], "x");
  EXPECT_FALSE(c.rules_watch);
  EXPECT_EQ(c.rules_watch_interval_ms, 250);

  Config bad;
  errors = parse_config("rules:\n  watch: sometimes\n  watch_interval: 1ms\n", "t.yaml", bad);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].path, "rules.watch");
  EXPECT_EQ(errors[0].line, 2);
  EXPECT_EQ(errors[1].path, "rules.watch_interval");
  EXPECT_EQ(errors[1].line, 3);
  EXPECT_NE(errors[1].message.find("10ms"), std::string::npos);

  Config typo;
  errors = parse_config("rules: {watch_intervall: 1s}\n", "", typo);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].message.find("watch_interval"), std::string::npos);
  Config unit;
  errors = parse_config("rules: {watch_interval: 2}\n", "", unit);
  ASSERT_EQ(errors.size(), 1u);
}

}  // namespace
}  // namespace tocsin::app
