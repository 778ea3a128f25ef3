#include "rules/engine.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "pipeline/decoder.h"

namespace tocsin::rules {
namespace {

const char* kRules = R"(rules:
  - id: fan_out
    stream: calls
    where: duration_s < 30
    window: {group_by: [caller], size: 1h}
    aggregates:
      strangers: count_distinct(callee)
      talk: sum(duration_s)
      mean: avg(duration_s)
    having: strangers >= 20
    alert: {type: fraud.fan_out, severity: high, title: "{caller} called {strangers} numbers"}
  - id: opened
    stream: faults
    on: opened
    alert: {type: heating.outage, severity: critical, title: "outage on {network_id}"}
)";

struct Recorded {
  std::string rule, title, first_id, last_id;
  std::vector<std::string> key;
  std::vector<double> aggs;
  int64_t start, end;
  uint64_t count;
};

class Recorder final : public SignalSink {
 public:
  std::vector<Recorded> got;
  void on_signal(const Signal& s) override {
    Recorded r{s.rule->id, std::string(s.title), std::string(s.first_event_id), std::string(s.event->id()), {}, {}, s.window_start_ms, s.window_end_ms, s.count};
    for (auto k : s.key) r.key.emplace_back(k);
    r.aggs.assign(s.values.begin(), s.values.end());
    got.push_back(r);
  }
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = load_rules({{"t.yaml", kRules}});
    ASSERT_TRUE(r.ok()) << format_text(r.diagnostics[0]);
    engine = std::make_unique<Engine>(r.rules, rec);
  }
  void call(const std::string& caller, const std::string& callee, int64_t t_s, int dur = 10) {
    const std::string j = R"({"call_id":"c)" + std::to_string(seq++) + R"(","start_time":)" + std::to_string(kT0 + t_s * 1000) +
                          R"(,"caller":")" + caller + R"(","callee":")" + callee + R"(","duration_s":)" + std::to_string(dur) + R"(,"answered":true})";
    ASSERT_TRUE(dec.decode(Stream::kCalls, j, kT0 + 86400000, ev).ok()) << j;
    engine->on_event(ev);
  }
  static constexpr int64_t kT0 = 1790000000000;
  Decoder dec;
  Event ev;
  Recorder rec;
  std::unique_ptr<Engine> engine;
  int seq = 0;
};

TEST_F(EngineTest, FiresOnceWhenDistinctCountReachesThreshold) {
  for (int i = 0; i < 19; ++i) call("13800000001", "139000000" + std::to_string(10 + i), i * 60);
  call("13800000001", "13900000010", 19 * 60);  // repeat callee: still 19 distinct
  EXPECT_TRUE(rec.got.empty());
  call("13800000001", "13900000099", 20 * 60);
  ASSERT_EQ(rec.got.size(), 1u);
  const auto& a = rec.got[0];
  EXPECT_EQ(a.rule, "fan_out");
  EXPECT_EQ(a.key, std::vector<std::string>{"13800000001"});
  EXPECT_EQ(a.title, "138****0001 called 20 numbers");
  EXPECT_EQ(a.count, 21u);
  EXPECT_EQ(a.aggs[0], 20);
  EXPECT_EQ(a.aggs[1], 210);
  EXPECT_EQ(a.aggs[2], 10);
  EXPECT_EQ(a.first_id, "c0");
  EXPECT_EQ(a.last_id, "c20");
  EXPECT_EQ(a.end - a.start, 3600000);
  // Still above the threshold: no second alert for the same episode.
  call("13800000001", "13900000100", 21 * 60);
  EXPECT_EQ(rec.got.size(), 1u);
  const auto& c = engine->counters()[0];
  EXPECT_EQ(c.evaluations, 22u);
  EXPECT_EQ(c.matches, 22u);
  EXPECT_EQ(c.signals, 1u);
}

TEST_F(EngineTest, WhereFilterAndWindowExpiry) {
  // Long calls do not count; calls spread over more than an hour never reach 20 at once.
  for (int i = 0; i < 30; ++i) call("13800000002", "1390000" + std::to_string(1000 + i), i * 60, 120);
  for (int i = 0; i < 30; ++i) call("13800000002", "1390000" + std::to_string(2000 + i), 10000 + i * 400);
  EXPECT_TRUE(rec.got.empty());
  EXPECT_EQ(engine->counters()[0].matches, 30u);
}

TEST_F(EngineTest, KeysAreSeparateAndRefireAfterTheEpisodeEnds) {
  for (int i = 0; i < 20; ++i) {
    call("A0000000001", "1390000" + std::to_string(1000 + i), i);
    call("B0000000002", "1390000" + std::to_string(1000 + i), i);
  }
  ASSERT_EQ(rec.got.size(), 2u);
  EXPECT_EQ(rec.got[1].key[0], "B0000000002");
  // Two hours later the window has emptied; a new burst is a new alert.
  for (int i = 0; i < 20; ++i) call("A0000000001", "1390000" + std::to_string(3000 + i), 7200 + i);
  ASSERT_EQ(rec.got.size(), 3u);
  EXPECT_NE(rec.got[2].end, rec.got[0].end);
}

TEST_F(EngineTest, LateEventsAreCountedNotAggregated) {
  call("13800000003", "13900000001", 7200);
  call("13800000003", "13900000002", 0);  // two hours older than the rule's newest event
  EXPECT_EQ(engine->counters()[0].late, 1u);
}

TEST_F(EngineTest, IdleKeysAreSwept) {
  call("13800000004", "13900000001", 0);
  call("13800000005", "13900000001", 10);
  EXPECT_EQ(engine->counters()[0].keys.load(), 2);
  call("13800000006", "13900000001", 4 * 3600);
  engine->on_tick(kT0 + 100000);
  EXPECT_EQ(engine->counters()[0].keys.load(), 1);
}

// An engine over its own rules, fed calls of caller `caller`, for tests that
// need other rules than the fixture's.
struct OwnRules {
  static constexpr int64_t kT0 = 1790000000000;
  Recorder rec;
  std::unique_ptr<Engine> engine;
  Decoder dec;
  Event ev;
  int seq = 0;
  explicit OwnRules(const char* yaml) {
    auto r = load_rules({{"t.yaml", yaml}});
    EXPECT_TRUE(r.ok()) << format_text(r.diagnostics[0]);
    if (r.ok()) engine = std::make_unique<Engine>(r.rules, rec);
  }
  void call(const std::string& caller, int64_t t_ms, int duration_s) {
    const std::string j = R"({"call_id":"h)" + std::to_string(seq++) + R"(","start_time":)" + std::to_string(kT0 + t_ms) +
                          R"(,"caller":")" + caller + R"(","callee":"1","duration_s":)" + std::to_string(duration_s) +
                          R"(,"answered":true})";
    ASSERT_TRUE(dec.decode(Stream::kCalls, j, kT0 + 86400000, ev).ok()) << j;
    engine->on_event(ev);
  }
};

// The sweep reads a cache line per state it visits: every rule's state of
// every key, live or not. It waits for as many events as that, so that it
// costs at most about one line per event.
TEST(EngineSweep, WaitsForAsManyEventsAsStatesItVisits) {
  OwnRules h(R"(rules:
  - {id: all, stream: calls, window: {group_by: [caller], size: 1h}, aggregates: {n: count()}, having: n >= 1000, alert: {severity: low}}
  - {id: long, stream: calls, where: duration_s > 1000, window: {group_by: [caller], size: 1h}, aggregates: {n: count()}, having: n >= 1000, alert: {severity: low}}
)");
  ASSERT_TRUE(h.engine);
  for (int i = 0; i < 10; ++i) h.call("1380000000" + std::to_string(i), i * 1000, 5);
  h.call("13900000000", 4 * 3600 * 1000, 5);  // the first ten are idle now
  // 11 events, 11 live keys, but 22 states to visit (`long` has one per key, never live).
  h.engine->on_tick(h.kT0 + 4 * 3600 * 1000 + 20000);
  EXPECT_EQ(h.engine->counters()[0].keys.load(), 11) << "swept before as many events as states visited";
  for (int i = 0; i < 11; ++i) h.call("13900000000", (4 * 3600 + 1 + i) * 1000, 5);
  h.engine->on_tick(h.kT0 + 4 * 3600 * 1000 + 40000);
  EXPECT_EQ(h.engine->counters()[0].keys.load(), 1) << "not swept after 22 events";
}

// Rules that share a condition (RuleSet::conditions) fire exactly as they
// would alone: it is tested afresh for every event, a run of rules is skipped
// only while it fails, and skipped rules still count the event as offered.
TEST(EngineConditions, SharedConditionsSkipOnlyTheRulesThatShareThem) {
  OwnRules h(R"(rules:
  - {id: r1, stream: calls, where: 'duration_s < 30 and caller == "1380"', alert: {severity: low}}
  - {id: r2, stream: calls, where: 'duration_s < 30 and caller == "1390"', alert: {severity: low}}
  - {id: r3, stream: calls, where: 'duration_s < 30 and not (caller == "1380")', alert: {severity: low}}
  - {id: r4, stream: calls, where: 'duration_s >= 30 and caller == "1380"', alert: {severity: low}}
  - {id: r5, stream: calls, alert: {severity: low}}
)");
  ASSERT_TRUE(h.engine);
  const auto& triggers = h.engine->rule_set().rules_for(Stream::kCalls, -1);
  ASSERT_EQ(triggers.size(), 5u);
  EXPECT_EQ(triggers[0].condition_run, 3) << "r1..r3 share duration_s < 30";
  EXPECT_GE(triggers[3].condition, 0) << "r4 shares caller == \"1380\" with r1";
  const auto fired = [&h](const std::string& caller, int t_s, int duration_s) {
    h.rec.got.clear();
    h.call(caller, t_s * 1000, duration_s);
    std::string ids;
    for (const Recorded& r : h.rec.got) ids += r.rule + " ";
    return ids;
  };
  EXPECT_EQ(fired("1390", 1, 50), "r5 ");
  EXPECT_EQ(fired("1380", 2, 10), "r1 r5 ") << "the condition is tested again for each event";
  EXPECT_EQ(fired("1380", 3, 50), "r4 r5 ") << "the skip stops at the end of the run";
  EXPECT_EQ(fired("1390", 4, 5), "r2 r3 r5 ");
  const auto counters = h.engine->counters();
  const uint64_t matches[] = {1, 1, 1, 1, 4};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(counters[i].evaluations.load(), 4u) << "rule r" << i + 1;
    EXPECT_EQ(counters[i].matches.load(), matches[i]) << "rule r" << i + 1;
  }
}

// Evaluations are counted once per event and trigger list, and reach the
// rules' counters on a tick (snapshots) or when read on the owner thread.
TEST(EngineCounters, EvaluationsPerTriggerListReachEveryRuleOfIt) {
  OwnRules h(R"(rules:
  - {id: any_fault, stream: faults, where: 'households > 1000', alert: {severity: low}}
  - {id: opened, stream: faults, on: [opened], alert: {severity: low}}
  - {id: short, stream: calls, where: duration_s < 30, alert: {severity: low}}
)");
  ASSERT_TRUE(h.engine);
  const auto fault = [&h](const char* kind) {
    const std::string j = std::string(R"({"fault_id":"f1","time":1790000000000,"network_id":"N7","kind":")") + kind + "\"}";
    ASSERT_TRUE(h.dec.decode(Stream::kFaults, j, OwnRules::kT0 + 1000, h.ev).ok());
    h.engine->on_event(h.ev);
  };
  fault("opened");
  fault("updated");
  fault("updated");
  for (int i = 0; i < 5; ++i) h.call("1380", i * 1000, 50);
  const auto evaluations = [](const EngineSnapshot& s) {
    std::vector<uint64_t> v;
    for (size_t i = 0; i < s.rules->rules.size(); ++i) v.push_back(s.counters[i].evaluations.load());
    return v;
  };
  EXPECT_EQ(evaluations(h.engine->snapshot()), (std::vector<uint64_t>{0, 0, 0})) << "not before a tick";
  h.engine->on_tick(OwnRules::kT0);
  EXPECT_EQ(evaluations(h.engine->snapshot()), (std::vector<uint64_t>{3, 1, 5}));
  h.call("1380", 6000, 50);
  EXPECT_EQ(h.engine->counters()[2].evaluations.load(), 6u) << "the owner thread reads them up to date";

  // A new rule set carries each rule's count by id, including events since the last tick.
  h.call("1380", 7000, 50);
  auto next = load_rules({{"t.yaml", R"(rules:
  - {id: short, stream: calls, where: duration_s < 20, alert: {severity: low}}
  - {id: opened, stream: faults, on: [opened], alert: {severity: low}}
)"}});
  ASSERT_TRUE(next.ok());
  h.engine->replace_rules(next.rules);
  h.call("1380", 8000, 50);
  h.engine->on_tick(OwnRules::kT0);
  EXPECT_EQ(evaluations(h.engine->snapshot()), (std::vector<uint64_t>{8, 1}));
}

// A hot key (a busy cell, a call centre's trunk number) can hold far more events
// in its sliding window than the ring's first sizes: 70 000 in one hour here.
TEST(EngineHotKey, SlidingWindowHoldsMoreThan65536EventsOfOneKey) {
  OwnRules h(R"(rules:
  - id: busy
    stream: calls
    window: {group_by: [caller], size: 1h}
    aggregates: {n: count(), talk: sum(duration_s)}
    having: n >= 70000
    alert: {severity: low}
)");
  ASSERT_TRUE(h.engine);
  for (int i = 0; i < 70000; ++i) h.call("95588", i * 50, 2);
  ASSERT_EQ(h.rec.got.size(), 1u);
  EXPECT_EQ(h.rec.got[0].count, 70000u);
  EXPECT_EQ(h.rec.got[0].aggs[1], 140000.0);
  EXPECT_EQ(h.rec.got[0].first_id, "h0");
}

TEST_F(EngineTest, PerEventRulesMatchOnlyTheirKind) {
  const auto now = kT0 + 1000;
  ASSERT_TRUE(dec.decode(Stream::kFaults, R"({"fault_id":"f1","time":1790000000000,"kind":"updated","network_id":"N7"})", now, ev).ok());
  engine->on_event(ev);
  EXPECT_TRUE(rec.got.empty());
  ASSERT_TRUE(dec.decode(Stream::kFaults, R"({"fault_id":"f1","time":1790000000000,"kind":"opened","network_id":"N7"})", now, ev).ok());
  engine->on_event(ev);
  ASSERT_EQ(rec.got.size(), 1u);
  EXPECT_EQ(rec.got[0].title, "outage on N7");
  EXPECT_EQ(engine->counters()[1].evaluations, 1u);
}

}  // namespace
}  // namespace tocsin::rules

namespace tocsin::rules {
namespace {

TEST_F(EngineTest, ReplaceRulesKeepsStateOfUnchangedRulesOnly) {
  for (int i = 0; i < 19; ++i) call("13800000007", "1390000" + std::to_string(4000 + i), i);
  // Same fan_out rule, a changed per-event rule: fan_out keeps its 19 callees.
  std::string changed(kRules);
  changed.replace(changed.find("outage on {network_id}"), 22, "outage: {network_id}");
  auto next = load_rules({{"t.yaml", changed}});
  ASSERT_TRUE(next.ok());
  engine->replace_rules(next.rules);
  EXPECT_EQ(engine->counters()[0].matches, 19u) << "counter values carry over";
  call("13800000007", "13900009999", 20);
  ASSERT_EQ(rec.got.size(), 1u) << "the 20th callee completes the window kept across the reload";

  // A changed definition starts empty.
  std::string lowered(kRules);
  lowered.replace(lowered.find("strangers >= 20"), 15, "strangers >= 21");
  auto third = load_rules({{"t.yaml", lowered}});
  ASSERT_TRUE(third.ok());
  engine->replace_rules(third.rules);
  EXPECT_EQ(engine->counters()[0].keys.load(), 0);
  const auto snap = engine->snapshot();
  EXPECT_EQ(snap.rules->version, third.rules->version);
  EXPECT_EQ(snap.counters[0].signals.load(), 1u);
}

class StaticFeed final : public RuleFeed {
 public:
  std::atomic<uint64_t> v{1};
  std::shared_ptr<const RuleSet> set;
  uint64_t version() const override { return v.load(); }
  std::shared_ptr<const RuleSet> current() const override { return set; }
};

TEST(EngineFeed, PicksUpANewVersionOnTick) {
  auto first = load_rules({{"a.yaml", kRules}});
  auto second = load_rules({{"b.yaml", "rules:\n  - id: only\n    stream: calls\n    alert: {severity: low}\n"}});
  ASSERT_TRUE(first.ok() && second.ok());
  StaticFeed feed;
  feed.set = first.rules;
  Recorder rec;
  Engine engine(first.rules, rec, &feed);
  engine.on_tick(1);
  EXPECT_EQ(engine.rule_set().version, first.rules->version);
  feed.set = second.rules;
  feed.v = 2;
  engine.on_tick(2);
  EXPECT_EQ(engine.rule_set().version, second.rules->version);
  EXPECT_EQ(engine.counters().size(), 1u);
}

}  // namespace
}  // namespace tocsin::rules
