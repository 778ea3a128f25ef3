// Window types, aggregates, sequences, absence clocks and scoring, driven
// event by event with explicit times and a virtual clock for timers.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "pipeline/decoder.h"
#include "rules/engine.h"

namespace tocsin::rules {
namespace {

constexpr int64_t kT0 = 1790000000000;  // 2026-09-21T14:13:20Z

struct Fired {
  std::string rule, title, severity, deadline, level, first_id, last_id;
  std::vector<std::string> key;
  std::vector<double> values;
  int64_t start, end, instance;
  uint64_t count;
  bool resolved = false;
};

class Recorder final : public SignalSink {
 public:
  std::vector<Fired> got;
  void on_signal(const Signal& s) override {
    Fired f{s.rule->id, std::string(s.title), std::string(s.severity), std::string(s.deadline), std::string(s.level),
            std::string(s.first_event_id), std::string(s.event->id()), {}, {}, s.window_start_ms, s.window_end_ms,
            s.instance_ms, s.count};
    for (auto k : s.key) f.key.emplace_back(k);
    f.values.assign(s.values.begin(), s.values.end());
    f.resolved = s.resolved;
    got.push_back(f);
  }
};

class Harness {
 public:
  explicit Harness(const std::string& rules, EngineOptions o = {}) {
    auto r = load_rules({{"t.yaml", rules}});
    if (!r.ok()) ADD_FAILURE() << format_text(r.diagnostics[0]);
    set = r.rules;
    engine = std::make_unique<Engine>(set, rec, nullptr, nullptr, o);
  }
  // Feeds an event given as JSON without its time field; `t_s` seconds after kT0.
  void event(Stream s, const std::string& fields, int64_t t_s) {
    const std::string time_field = std::string(schema_of(s).fields[static_cast<size_t>(schema_of(s).time_slot)].name);
    const std::string j = "{\"" + time_field + "\":" + std::to_string(kT0 + t_s * 1000) + "," + fields + "}";
    ASSERT_TRUE(dec.decode(s, j, kT0 + 365LL * 86400000, ev).ok()) << j;
    engine->on_event(ev);
  }
  void call(const std::string& id, const std::string& caller, const std::string& callee, int dur, int64_t t_s,
            const std::string& extra = "") {
    event(Stream::kCalls, "\"call_id\":\"" + id + "\",\"caller\":\"" + caller + "\",\"callee\":\"" + callee +
                              "\",\"duration_s\":" + std::to_string(dur) + ",\"answered\":true" + extra, t_s);
  }
  void ticket(const std::string& id, const std::string& status, int64_t t_s, const std::string& extra = "") {
    event(Stream::kComplaints, "\"ticket_id\":\"" + id + "\",\"status\":\"" + status + "\"" + extra, t_s);
  }
  void tick(int64_t t_s) { engine->on_tick(kT0 + t_s * 1000); }
  std::shared_ptr<const RuleSet> set;
  Recorder rec;
  std::unique_ptr<Engine> engine;
  Decoder dec;
  Event ev;
};

TEST(TumblingWindow, OneAlertPerBucketAlignedToTheEpoch) {
  Harness h(R"(rules:
  - id: busy
    stream: calls
    window: {type: tumbling, group_by: [caller], size: 10m}
    aggregates: {n: count(), longest: max(duration_s), shortest: min(duration_s), per_s: rate()}
    having: n >= 3
    alert: {severity: low, title: "{n} calls"}
)");
  // kT0 is 14:13:20; the bucket is [14:10, 14:20).
  h.call("a", "1", "x", 10, 0);
  h.call("b", "1", "x", 50, 60);
  h.call("c", "1", "x", 30, 120);
  ASSERT_EQ(h.rec.got.size(), 1u);
  const Fired& f = h.rec.got[0];
  EXPECT_EQ(f.start, kT0 - 200000);
  EXPECT_EQ(f.end, kT0 + 400000);
  EXPECT_EQ(f.instance, f.start);
  EXPECT_EQ(f.values[1], 50);
  EXPECT_EQ(f.values[2], 10);
  EXPECT_DOUBLE_EQ(f.values[3], 3.0 / 600);
  EXPECT_EQ(f.first_id, "a");
  h.call("d", "1", "x", 30, 180);
  EXPECT_EQ(h.rec.got.size(), 1u) << "at most once per bucket";
  // The next bucket starts empty: two calls are not enough, the third fires.
  h.call("e", "1", "x", 5, 400);
  h.call("f", "1", "x", 5, 410);
  EXPECT_EQ(h.rec.got.size(), 1u);
  h.call("g", "1", "x", 5, 420);
  ASSERT_EQ(h.rec.got.size(), 2u);
  EXPECT_EQ(h.rec.got[1].start, kT0 + 400000);
  // An event for the closed bucket is late.
  h.call("h", "1", "x", 5, 100);
  EXPECT_EQ(h.engine->counters()[0].late, 1u);
}

TEST(SessionWindow, GapClosesTheSession) {
  Harness h(R"(rules:
  - id: burst
    stream: calls
    window: {type: session, group_by: [caller], gap: 5m}
    aggregates: {n: count(), answered_short: count_if(duration_s < 20)}
    having: answered_short >= 2
    alert: {severity: medium}
)");
  h.call("a", "1", "x", 10, 0);
  h.call("b", "1", "x", 100, 200);   // within the gap
  h.call("c", "1", "x", 15, 400);    // within the gap: 2 short -> fires
  ASSERT_EQ(h.rec.got.size(), 1u);
  EXPECT_EQ(h.rec.got[0].instance, kT0);
  EXPECT_EQ(h.rec.got[0].values[0], 3);
  h.call("d", "1", "x", 15, 1000);   // 600 s gap: new session
  h.call("e", "1", "x", 15, 1100);
  ASSERT_EQ(h.rec.got.size(), 2u);
  EXPECT_EQ(h.rec.got[1].instance, kT0 + 1000000);
  EXPECT_EQ(h.rec.got[1].values[0], 2);
}

// Sums, averages and count_if restart from zero in a new bucket, a new
// session and a recycled key slot (each zeroes only its rule's accumulators;
// a swept sliding key still holds the sums of its last events).
TEST(TumblingWindow, SumsAndAveragesStartAtZeroInEveryBucketSessionAndRecycledKey) {
  Harness h(R"(rules:
  - id: bucket
    stream: calls
    window: {type: tumbling, group_by: [caller], size: 10m}
    aggregates: {n: count(), total: sum(duration_s), mean: avg(duration_s), short: count_if(duration_s < 8), r: rate()}
    having: n >= 2
    alert: {severity: low}
  - id: session
    stream: calls
    window: {type: session, group_by: [caller], gap: 5m}
    aggregates: {r: rate(), n: count(), total: sum(duration_s)}
    having: n >= 2
    alert: {severity: low}
  - id: sliding
    stream: calls
    window: {group_by: [caller], size: 10m}
    aggregates: {n: count(), total: sum(duration_s)}
    having: n >= 2
    alert: {severity: low}
)");
  auto last = [&](const std::string& rule) {
    for (auto it = h.rec.got.rbegin(); it != h.rec.got.rend(); ++it)
      if (it->rule == rule) return it->values;
    return std::vector<double>{};
  };
  h.call("a", "1", "x", 10, 0);
  h.call("b", "1", "x", 20, 60);
  EXPECT_EQ(last("bucket"), (std::vector<double>{2, 30, 15, 0, 2.0 / 600}));
  EXPECT_EQ(last("session")[2], 30);
  h.call("c", "1", "x", 5, 400);  // the next bucket; 340 s later: a new session
  h.call("d", "1", "x", 7, 410);
  EXPECT_EQ(last("bucket"), (std::vector<double>{2, 12, 6, 2, 2.0 / 600}));
  EXPECT_EQ(last("session")[2], 12);
  // Hours later caller 1's keys are swept (caller 3's lone calls move event
  // time and pay for the sweep), and caller 2 gets caller 1's recycled slot.
  const size_t fired = h.rec.got.size();
  for (int i = 0; i < 3; ++i) h.call("z" + std::to_string(i), "3", "x", 60, 20000 + 1000 * i);
  h.tick(22000);
  h.call("e", "2", "x", 1, 22000);
  h.call("f", "2", "x", 2, 22001);
  ASSERT_EQ(h.rec.got.size(), fired + 3);
  EXPECT_EQ(last("bucket"), (std::vector<double>{2, 3, 1.5, 2, 2.0 / 600}));
  EXPECT_EQ(last("session")[2], 3);
  EXPECT_EQ(last("sliding"), (std::vector<double>{2, 3}));
}

// A distinct counter that outgrew its inline values keeps its table when a
// new bucket empties it, and reuses it (emptied) when the bucket outgrows
// inline again. Rule u<v> fires when a caller's distinct callees in the
// bucket reach v: checked against a brute-force count over random calls.
TEST(TumblingWindow, DistinctCountsStartEmptyInEveryBucket) {
  std::string rules = "rules:\n";
  for (int v = 1; v <= 14; ++v)
    rules += "  - {id: u" + std::to_string(v) + ", stream: calls, window: {type: tumbling, group_by: [caller], size: 1m}, " +
             "aggregates: {u: count_distinct(callee)}, having: u == " + std::to_string(v) + ", alert: {severity: low}}\n";
  Harness h(rules);
  std::mt19937 rng(17);
  std::map<std::pair<std::string, int64_t>, std::set<std::string>> bucket;  // (caller, bucket start): callees
  std::vector<std::pair<std::string, std::string>> want;                     // (rule, caller)
  int64_t t = 0;
  for (int i = 0; i < 3000; ++i) {
    t += static_cast<int64_t>(rng() % 3);
    const std::string caller = std::to_string(rng() % 2), callee = "p" + std::to_string(rng() % (i % 500 < 250 ? 20 : 3));
    auto& seen = bucket[{caller, (kT0 + t * 1000) / 60000}];
    if (seen.insert(callee).second && seen.size() <= 14) want.emplace_back("u" + std::to_string(seen.size()), caller);
    h.call("c" + std::to_string(i), caller, callee, 5, t);
  }
  std::vector<std::pair<std::string, std::string>> got;
  for (const Fired& f : h.rec.got) got.emplace_back(f.rule, f.key.at(0));
  EXPECT_GT(want.size(), 800u);
  EXPECT_EQ(got, want);
}

TEST(SlidingWindow, MinMaxFollowEviction) {
  Harness h(R"(rules:
  - id: m
    stream: calls
    window: {group_by: [caller], size: 1m}
    aggregates: {n: count(), hi: max(duration_s), lo: min(duration_s)}
    having: n >= 2 and hi - lo < 5
    alert: {severity: low}
)");
  h.call("a", "1", "x", 100, 0);
  h.call("b", "1", "x", 10, 30);  // hi - lo = 90
  EXPECT_TRUE(h.rec.got.empty());
  h.call("c", "1", "x", 12, 70);  // a left the window: hi 12, lo 10
  ASSERT_EQ(h.rec.got.size(), 1u);
  EXPECT_EQ(h.rec.got[0].values[1], 12);
  EXPECT_EQ(h.rec.got[0].values[2], 10);
}

// A sliding window keeps its events' ids in slots as wide as the longest id
// so far: a longer id widens them, keeping the ids already there. The alert
// names the oldest event in the window, short or long.
TEST(SlidingWindow, FirstEventIdSurvivesALongerIdWideningTheRing) {
  Harness h(R"(rules:
  - id: w
    stream: calls
    window: {group_by: [caller], size: 1m}
    aggregates: {n: count(), lo: min(duration_s)}
    having: n >= 2 and lo > 5
    alert: {severity: low}
)");
  const std::string long_a(33, 'a'), long_b(40, 'b');
  // Caller 1: two short ids, then a long one; the first leaves, the second fires.
  h.call("e1", "1", "x", 1, 0);
  h.call("e2", "1", "x", 10, 5);
  h.call(long_a, "1", "x", 10, 30);
  h.call("e4", "1", "x", 10, 61);
  // Caller 2: a short id, then a long one that is the oldest when the rule
  // fires, and a short one that makes the ring grow while the long one is in it.
  h.call("f1", "2", "x", 1, 100);
  h.call(long_b + "-cut", "2", "x", 10, 130);
  h.call("f3", "2", "x", 10, 131);
  h.call("f4", "2", "x", 10, 161);
  // Caller 3: a long id that arrives when the ring is full, so it grows and
  // widens at once.
  const std::string long_c = "caller-3-long-call-id";
  h.call("g1", "3", "x", 1, 200);
  h.call("g2", "3", "x", 1, 201);
  h.call(long_c, "3", "x", 10, 230);
  h.call("g4", "3", "x", 10, 262);
  ASSERT_EQ(h.rec.got.size(), 3u);
  EXPECT_EQ(h.rec.got[0].first_id, "e2");
  EXPECT_EQ(h.rec.got[1].first_id, long_b) << "ids are kept up to 40 bytes";
  EXPECT_EQ(h.rec.got[2].first_id, long_c);
}

// The ring copies ids in fixed-size moves chosen by length: every length up to
// the cut, and past it, comes back whole (or cut at 40 bytes).
TEST(SlidingWindow, FirstEventIdsOfEveryLengthComeBackWhole) {
  Harness h(R"(rules:
  - id: w
    stream: calls
    window: {group_by: [caller], size: 1m}
    aggregates: {n: count()}
    having: n >= 1
    alert: {severity: low}
)");
  std::vector<std::string> want;
  for (size_t len = 1; len <= 45; ++len) {
    std::string id(len, ' ');
    for (size_t i = 0; i < len; ++i) id[i] = static_cast<char>('A' + (i * 7 + len) % 26);
    h.call(id, "c" + std::to_string(len), "x", 10, static_cast<int64_t>(len));
    want.push_back(id.substr(0, 40));
  }
  std::vector<std::string> got;
  for (const Fired& f : h.rec.got) got.push_back(f.first_id);
  EXPECT_EQ(got, want);
}

// Two count_distinct aggregates in one rule: the first's counter lives in the
// key's state, the second's beside it; each counts its own field, and both
// forget what leaves the window.
TEST(SlidingWindow, TwoDistinctCountsInOneRuleAreKeptApart) {
  Harness h(R"(rules:
  - id: two
    stream: calls
    window: {group_by: [caller], size: 1m}
    aggregates: {people: count_distinct(callee), cells: count_distinct(cell_id)}
    having: people >= 3 or cells >= 3
    alert: {severity: low}
)");
  h.call("a", "1", "p1", 5, 0, R"(,"cell_id":"A")");
  h.call("b", "1", "p2", 5, 10, R"(,"cell_id":"A")");
  h.call("c", "1", "p1", 5, 20, R"(,"cell_id":"B")");
  EXPECT_TRUE(h.rec.got.empty());  // 2 people, 2 cells
  h.call("d", "1", "p3", 5, 30, R"(,"cell_id":"A")");
  ASSERT_EQ(h.rec.got.size(), 1u);  // 3 people, 2 cells
  EXPECT_EQ(h.rec.got[0].values[0], 3);
  EXPECT_EQ(h.rec.got[0].values[1], 2);
  // Everything above leaves the window; one person on three cells fires on the second counter.
  h.call("f", "1", "p4", 5, 95, R"(,"cell_id":"B")");
  h.call("g", "1", "p4", 5, 96, R"(,"cell_id":"C")");
  EXPECT_EQ(h.rec.got.size(), 1u);
  h.call("h", "1", "p4", 5, 97, R"(,"cell_id":"D")");
  ASSERT_EQ(h.rec.got.size(), 2u);
  EXPECT_EQ(h.rec.got[1].values[0], 1);
  EXPECT_EQ(h.rec.got[1].values[1], 3);
}

// count_distinct keeps a key's first few values in the key's state and moves
// them to a table when there are more: checked against a brute-force count of
// a sliding window over random calls. Rule d<v> fires when a caller's distinct
// callees become exactly v (a sliding rule fires when its condition turns true).
TEST(SlidingWindow, DistinctCountMatchesABruteForceCountAsSetsGrowAndShrink) {
  std::string rules = "rules:\n";
  for (int v = 1; v <= 6; ++v)
    rules += "  - {id: d" + std::to_string(v) + ", stream: calls, window: {group_by: [caller], size: 1m}, " +
             "aggregates: {people: count_distinct(callee)}, having: people == " + std::to_string(v) +
             ", alert: {severity: low}}\n";
  Harness h(rules);
  std::mt19937 rng(11);
  std::map<std::string, std::vector<std::pair<int64_t, std::string>>> window;  // per caller: (time, callee)
  std::map<std::pair<std::string, int>, bool> hit;                             // (caller, v): condition held
  std::vector<std::pair<std::string, std::string>> want;                       // (rule, caller)
  int64_t t = 0;
  for (int i = 0; i < 3000; ++i) {
    t += static_cast<int64_t>(rng() % 12);
    const std::string caller = std::to_string(rng() % 3), callee = "p" + std::to_string(rng() % 8);
    auto& w = window[caller];
    std::erase_if(w, [&](const auto& e) { return e.first <= t - 60; });
    w.emplace_back(t, callee);
    std::set<std::string> people;
    for (const auto& e : w) people.insert(e.second);
    for (int v = 1; v <= 6; ++v) {
      const bool now = static_cast<int>(people.size()) == v;
      if (now && !hit[{caller, v}]) want.emplace_back("d" + std::to_string(v), caller);
      hit[{caller, v}] = now;
    }
    h.call("c" + std::to_string(i), caller, callee, 5, t);
  }
  std::vector<std::pair<std::string, std::string>> got;
  for (const Fired& f : h.rec.got) got.emplace_back(f.rule, f.key.at(0));
  EXPECT_GT(want.size(), 500u);
  EXPECT_EQ(got, want);
}

// Sliding min and max keep the extreme as events arrive and rescan the window
// only when an event that may have been the extreme leaves it: checked
// against a brute-force scan over random calls. Rule hi<v> (lo<v>) fires when
// a caller's longest (shortest) call in the last minute becomes exactly v s.
TEST(SlidingWindow, MinAndMaxMatchABruteForceScanAsExtremesLeave) {
  std::string rules = "rules:\n";
  for (int v = 1; v <= 8; ++v)
    for (const char* agg : {"max", "min"})
      rules += std::string("  - {id: ") + (agg[1] == 'a' ? "hi" : "lo") + std::to_string(v) +
               ", stream: calls, window: {group_by: [caller], size: 1m}, aggregates: {x: " + agg +
               "(duration_s)}, having: x == " + std::to_string(v) + ", alert: {severity: low}}\n";
  Harness h(rules);
  std::mt19937 rng(5);
  std::map<std::string, std::vector<std::pair<int64_t, int>>> window;  // per caller: (time, duration)
  std::map<std::pair<std::string, std::string>, bool> hit;            // (caller, rule): condition held
  std::vector<std::pair<std::string, std::string>> want;              // (rule, caller)
  int64_t t = 0;
  for (int i = 0; i < 3000; ++i) {
    t += static_cast<int64_t>(rng() % 12);
    const std::string caller = std::to_string(rng() % 3);
    const int duration = 1 + static_cast<int>(rng() % 8);
    auto& w = window[caller];
    std::erase_if(w, [&](const auto& e) { return e.first <= t - 60; });
    w.emplace_back(t, duration);
    int hi = 0, lo = 100;
    for (const auto& e : w) hi = std::max(hi, e.second), lo = std::min(lo, e.second);
    for (int v = 1; v <= 8; ++v)
      for (const auto& [rule, now] : {std::pair{"hi" + std::to_string(v), hi == v}, std::pair{"lo" + std::to_string(v), lo == v}}) {
        if (now && !hit[{caller, rule}]) want.emplace_back(rule, caller);
        hit[{caller, rule}] = now;
      }
    h.call("c" + std::to_string(i), caller, "p", duration, t);
  }
  std::vector<std::pair<std::string, std::string>> got;
  for (const Fired& f : h.rec.got) got.emplace_back(f.rule, f.key.at(0));
  EXPECT_GT(want.size(), 500u);
  EXPECT_EQ(got, want);
}

// A sliding window stores one column per field and kind of value: sum, avg,
// max and min of duration_s share one, count_distinct(duration_s) and each
// count_if have their own. Every value of every alert is checked against a
// brute-force computation over the window's calls.
TEST(SlidingWindow, AggregatesSharingAColumnMatchABruteForceComputation) {
  const std::string aggregates =
      "{s: sum(duration_s), a: avg(duration_s), hi: max(duration_s), n: count(), lo: min(duration_s), "
      "u: count_distinct(callee), k: count_if(duration_s > 4), d: count_distinct(duration_s)}";
  std::string rules = "rules:\n";
  for (int v = 1; v <= 8; ++v)
    for (const char* on : {"hi", "u", "d"})
      rules += std::string("  - {id: ") + on + std::to_string(v) + ", stream: calls, window: {group_by: [caller], size: 1m}, " +
               "aggregates: " + aggregates + ", having: " + on + " == " + std::to_string(v) + ", alert: {severity: low}}\n";
  Harness h(rules);
  std::mt19937 rng(23);
  std::map<std::string, std::vector<std::tuple<int64_t, int, std::string>>> window;  // per caller: (time, duration, callee)
  std::map<std::pair<std::string, std::string>, bool> hit;                         // (caller, rule): condition held
  std::vector<std::tuple<std::string, std::string, std::vector<double>>> want;     // (rule, caller, values)
  int64_t t = 0;
  for (int i = 0; i < 2000; ++i) {
    t += static_cast<int64_t>(rng() % 12);
    const std::string caller = std::to_string(rng() % 3), callee = "p" + std::to_string(rng() % 8);
    const int duration = 1 + static_cast<int>(rng() % 8);
    auto& w = window[caller];
    std::erase_if(w, [&](const auto& e) { return std::get<0>(e) <= t - 60; });
    w.emplace_back(t, duration, callee);
    double sum = 0, hi = 0, lo = 100, k = 0;
    std::set<std::string> people;
    std::set<int> durations;
    for (const auto& [time, d, p] : w) {
      sum += d, hi = std::max<double>(hi, d), lo = std::min<double>(lo, d), k += d > 4;
      people.insert(p), durations.insert(d);
    }
    const double n = static_cast<double>(w.size()), u = static_cast<double>(people.size()),
                 dd = static_cast<double>(durations.size());
    const std::vector<double> values{sum, sum / n, hi, n, lo, u, k, dd};
    for (int v = 1; v <= 8; ++v)
      for (const auto& [rule, now] : {std::pair{"hi" + std::to_string(v), hi == v}, std::pair{"u" + std::to_string(v), u == v},
                                      std::pair{"d" + std::to_string(v), dd == v}}) {
        if (now && !hit[{caller, rule}]) want.emplace_back(rule, caller, values);
        hit[{caller, rule}] = now;
      }
    h.call("c" + std::to_string(i), caller, callee, duration, t);
  }
  std::vector<std::tuple<std::string, std::string, std::vector<double>>> got;
  for (const Fired& f : h.rec.got) got.emplace_back(f.rule, f.key.at(0), f.values);
  EXPECT_GT(want.size(), 500u);
  EXPECT_EQ(got, want);
}

const char* kSequence = R"(rules:
  - id: victim_long_call
    sequence:
      within: 2h
      first: {stream: calls, where: 'caller_class == "virtual_170"', key: [callee]}
      then: {stream: calls, where: "duration_s > 600 and callee != first.caller", key: [caller]}
    alert: {severity: critical, title: "{caller} talked {duration_s} s after a call from {callee}"}
)";

TEST(Sequence, ThenRelatesToFirstOnTheSameKey) {
  Harness h(kSequence);
  h.call("r1", "17012345678", "13900001111", 40, 0, ",\"caller_class\":\"virtual_170\"");
  h.call("x", "13900002222", "13700000000", 900, 60);    // another caller: no match
  h.call("y", "13900001111", "13700000000", 300, 120);   // too short
  EXPECT_TRUE(h.rec.got.empty());
  h.call("z", "13900001111", "13700000000", 900, 600);
  ASSERT_EQ(h.rec.got.size(), 1u);
  const Fired& f = h.rec.got[0];
  EXPECT_EQ(f.key, std::vector<std::string>{"13900001111"});
  EXPECT_EQ(f.first_id, "r1");
  EXPECT_EQ(f.last_id, "z");
  EXPECT_EQ(f.instance, kT0);
  EXPECT_EQ(f.title, "139****1111 talked 900 s after a call from 137****0000");
  h.call("z2", "13900001111", "13700000000", 900, 700);
  EXPECT_EQ(h.rec.got.size(), 1u) << "one match per first event";
}

TEST(Sequence, WithinBoundsTheGapAndTheFirstMayRefer) {
  Harness h(kSequence);
  h.call("r1", "17012345678", "13900001111", 40, 0, ",\"caller_class\":\"virtual_170\"");
  h.call("late", "13900001111", "13700000000", 900, 7300);  // 2h 1m 40s later
  EXPECT_TRUE(h.rec.got.empty());
  h.call("r2", "17012345678", "13900003333", 40, 8000, ",\"caller_class\":\"virtual_170\"");
  h.call("back", "13900003333", "17012345678", 900, 8100);  // calls the fraudster back: excluded by first.caller
  EXPECT_TRUE(h.rec.got.empty());
}

TEST(Sequence, StateSurvivesSnapshotAndRestore) {
  Harness a(kSequence);
  a.call("r1", "17012345678", "13900001111", 40, 0, ",\"caller_class\":\"virtual_170\"");
  auto store = make_memory_state_store();
  a.engine->snapshot_state(*store);
  EXPECT_EQ(store->size("sequence/victim_long_call"), 1u);
  Harness b(kSequence);
  b.engine->restore_state(*store);
  b.call("z", "13900001111", "13700000000", 900, 600);
  ASSERT_EQ(b.rec.got.size(), 1u);
  EXPECT_EQ(b.rec.got[0].first_id, "r1");
}

const char* kSla = R"(rules:
  - id: hotline.sla
    stream: complaints
    absence:
      key: [ticket_id]
      start: {on: [signed]}
      deadlines:
        - {name: contact, after: 1h, until: {on: [contacted]}}
        - {name: resolve, after: 24h, until: {on: [resolved, closed]}, severity: critical}
      cancel: {on: [closed]}
    alert: {severity: high, title: "ticket {ticket_id} ({category}) missed its {deadline} deadline"}
)";

TEST(Absence, FiresAtTheDeadlineWithNoFurtherEvent) {
  Harness h(kSla);
  h.ticket("T1", "signed", 0, ",\"category\":\"heating.no_heat\",\"complainant\":\"13811112222\"");
  EXPECT_EQ(h.engine->counters()[0].timers.load(), 2);
  h.tick(3599);
  EXPECT_TRUE(h.rec.got.empty());
  h.tick(3600);  // the wall clock reaches the deadline: no event needed
  ASSERT_EQ(h.rec.got.size(), 1u);
  const Fired& f = h.rec.got[0];
  EXPECT_EQ(f.rule, "hotline.sla");
  EXPECT_EQ(f.deadline, "contact");
  EXPECT_EQ(f.severity, "high");
  EXPECT_EQ(f.key, std::vector<std::string>{"T1"});
  EXPECT_EQ(f.title, "ticket T1 (heating.no_heat) missed its contact deadline");
  EXPECT_EQ(f.end, kT0 + 3600000);
  EXPECT_EQ(f.first_id, "T1");
  h.tick(7200);
  EXPECT_EQ(h.rec.got.size(), 1u) << "a deadline fires once";
  h.tick(86400);
  ASSERT_EQ(h.rec.got.size(), 2u);
  EXPECT_EQ(h.rec.got[1].deadline, "resolve");
  EXPECT_EQ(h.rec.got[1].severity, "critical");
  EXPECT_NE(h.rec.got[0].instance, h.rec.got[1].instance) << "distinct alert ids per deadline";
  EXPECT_EQ(h.engine->counters()[0].timers.load(), 0);
  EXPECT_EQ(h.engine->counters()[0].keys.load(), 0) << "finished clocks are freed";
}

TEST(Absence, MetDeadlinesAndCancelDoNotFire) {
  Harness h(kSla);
  h.ticket("T1", "signed", 0);
  h.ticket("T1", "contacted", 1800);
  h.ticket("T2", "signed", 0);
  h.ticket("T2", "closed", 600);  // cancels both clocks
  h.ticket("T3", "contacted", 10);  // no clock running: ignored
  h.tick(90000);
  ASSERT_EQ(h.rec.got.size(), 1u);
  EXPECT_EQ(h.rec.got[0].key[0], "T1");
  EXPECT_EQ(h.rec.got[0].deadline, "resolve");
}

TEST(Absence, ANewStartRestartsTheClocks) {
  Harness h(kSla);
  h.ticket("T1", "signed", 0);
  h.ticket("T1", "signed", 3000);  // e.g. returned and signed again
  h.tick(3600);
  EXPECT_TRUE(h.rec.got.empty()) << "the first contact clock was replaced";
  h.tick(6600);
  ASSERT_EQ(h.rec.got.size(), 1u);
  EXPECT_EQ(h.rec.got[0].start, kT0 + 3000000);
}

TEST(Absence, EventTimeTimersForReplay) {
  Harness h(kSla, EngineOptions{.timers_follow_event_time = true});
  h.ticket("T1", "signed", 0);
  h.tick(999999);  // wall clock far ahead: ignored in event-time mode
  EXPECT_TRUE(h.rec.got.empty());
  h.ticket("T9", "received", 3600);  // event time reaches the deadline
  h.tick(0);
  ASSERT_EQ(h.rec.got.size(), 1u);
  EXPECT_EQ(h.rec.got[0].deadline, "contact");
}

TEST(Absence, ClocksSurviveSnapshotAndRestore) {
  Harness a(kSla);
  a.ticket("T1", "signed", 0, ",\"category\":\"water.outage\"");
  a.ticket("T1", "contacted", 100);
  a.ticket("T2", "signed", 0);
  auto store = make_memory_state_store();
  a.engine->snapshot_state(*store);
  EXPECT_EQ(store->size("absence/hotline.sla"), 2u);
  Harness b(kSla);
  b.engine->restore_state(*store);
  EXPECT_EQ(b.engine->counters()[0].timers.load(), 3) << "T1 resolve, T2 contact and resolve";
  b.tick(86400);
  ASSERT_EQ(b.rec.got.size(), 3u);
  std::map<std::string, int> by;
  for (const auto& f : b.rec.got) ++by[f.key[0] + "/" + f.deadline];
  EXPECT_EQ(by, (std::map<std::string, int>{{"T1/resolve", 1}, {"T2/contact", 1}, {"T2/resolve", 1}}));
  for (const auto& f : b.rec.got)
    if (f.key[0] == "T1") {
      EXPECT_EQ(f.title, "ticket T1 (water.outage) missed its resolve deadline");
    }
}

TEST(Absence, ExtendedDeadlinesSurviveSnapshotAndRestore) {
  const char* rules = R"(rules:
  - id: resolve
    stream: complaints
    absence:
      key: [ticket_id]
      start: {on: [signed]}
      deadlines:
        - {name: resolve, after: 1h, until: {on: [resolved]}, extend: {on: [extended], to: deadline_at}}
    alert: {severity: high, title: "ticket {ticket_id}"}
)";
  Harness a(rules);
  a.ticket("T1", "signed", 0);
  a.ticket("T1", "extended", 60, ",\"deadline_at\":" + std::to_string(kT0 + 5 * 3600 * 1000));
  a.ticket("T2", "signed", 0);
  auto store = make_memory_state_store();
  a.engine->snapshot_state(*store);
  EXPECT_EQ(store->size("absence-moved/resolve"), 1u);
  Harness b(rules);
  b.engine->restore_state(*store);
  b.tick(3600);
  ASSERT_EQ(b.rec.got.size(), 1u) << "only T2 is due at 1h";
  EXPECT_EQ(b.rec.got[0].key[0], "T2");
  b.tick(5 * 3600 - 1);
  EXPECT_EQ(b.rec.got.size(), 1u);
  b.tick(5 * 3600);
  ASSERT_EQ(b.rec.got.size(), 2u) << "T1 at its extended deadline";
  EXPECT_EQ(b.rec.got[1].key[0], "T1");
  EXPECT_EQ(b.rec.got[1].end, kT0 + 5 * 3600 * 1000);
  EXPECT_EQ(b.engine->counters()[0].timers.load(), 0);
}

TEST(Absence, ClockBoardShowsTheNextDeadlineOfEachOpenClockOnDemand) {
  ClockBoard board(1);
  Harness h(kSla, EngineOptions{.clock_board = &board});
  h.ticket("T1", "signed", 0, ",\"category\":\"water.outage\",\"complainant\":\"13811112222\"");
  h.ticket("T2", "signed", 600);
  h.ticket("T3", "signed", 0);
  h.ticket("T3", "contacted", 60);
  h.ticket("T4", "signed", 0);
  h.ticket("T4", "closed", 60);
  h.tick(100);
  EXPECT_TRUE(board.read(kT0 + 100'000, 10).empty()) << "nothing is published before anyone asks";
  h.tick(130);  // wanted now: the engine publishes on its tick
  int64_t published = 0;
  const auto clocks = board.read(kT0 + 130'000, 10, &published);
  EXPECT_EQ(published, kT0 + 130'000);
  ASSERT_EQ(clocks.size(), 3u) << "T1 and T2 wait for contact, T3 for resolve; T4 is closed";
  EXPECT_EQ(clocks[0].key, (std::vector<std::pair<std::string, std::string>>{{"ticket_id", "T1"}}));
  EXPECT_EQ(clocks[0].deadline, "contact");
  EXPECT_EQ(clocks[0].due_ms, kT0 + 3600'000);
  EXPECT_EQ(clocks[0].started_ms, kT0);
  EXPECT_EQ(clocks[0].title, "ticket T1 (water.outage) missed its contact deadline");
  EXPECT_EQ(clocks[1].key[0].second, "T2");
  EXPECT_EQ(clocks[1].due_ms, kT0 + 4200'000);
  EXPECT_EQ(clocks[2].key[0].second, "T3");
  EXPECT_EQ(clocks[2].deadline, "resolve");
  EXPECT_EQ(clocks[2].severity, "critical");
  EXPECT_EQ(clocks[2].due_ms, kT0 + 86400'000);
  // After T1's contact deadline fires, its next deadline is resolve. The board is still
  // wanted only while someone reads it (ClockBoard::kWantedForMs).
  board.read(kT0 + 3590'000, 10);
  h.tick(3602);
  const auto later = board.read(kT0 + 3602'000, 10);
  ASSERT_EQ(later.size(), 3u);
  EXPECT_EQ(later[0].key[0].second, "T2");
  EXPECT_EQ(later[1].key[0].second, "T1");
  EXPECT_EQ(later[1].deadline, "resolve");
}

TEST(Absence, AFiredDeadlineMetLateIsResolvedWithTheSameInstanceAndTitle) {
  std::string rules = kSla;
  rules.replace(rules.find("      cancel: {on: [closed]}"), 0, "      resolve_within: 1d\n");
  Harness h(rules);
  h.ticket("T1", "signed", 0, ",\"category\":\"water.outage\"");
  h.tick(3600);
  ASSERT_EQ(h.rec.got.size(), 1u);
  h.ticket("T1", "contacted", 4000);
  ASSERT_EQ(h.rec.got.size(), 2u);
  const Fired& fired = h.rec.got[0];
  const Fired& over = h.rec.got[1];
  EXPECT_FALSE(fired.resolved);
  EXPECT_TRUE(over.resolved);
  EXPECT_EQ(over.instance, fired.instance) << "the same alert id";
  EXPECT_EQ(over.key, fired.key);
  EXPECT_EQ(over.deadline, "contact");
  EXPECT_EQ(over.title, fired.title) << "as it fired, from the start event";
  h.ticket("T1", "contacted", 4100);
  EXPECT_EQ(h.rec.got.size(), 2u) << "resolved once";
  h.ticket("T1", "closed", 5000);
  EXPECT_EQ(h.rec.got.size(), 2u) << "the resolve deadline had not fired: nothing to resolve";
  h.tick(86400);  // the cancelled resolve timer comes due and is dropped, and so is the clock
  EXPECT_EQ(h.rec.got.size(), 2u);
  EXPECT_EQ(h.engine->counters()[0].keys.load(), 0) << "the clock is gone";
}

TEST(Scoring, FeaturesContributeAndLevelsSetSeverity) {
  Harness h(R"Y(rules:
  - id: caller_risk
    stream: calls
    window: {group_by: [caller], size: 1h}
    aggregates: {strangers: count_distinct(callee), calls: count(), talk: avg(duration_s)}
    score:
      features:
        - {name: fan_out, value: strangers / 20, weight: 40, label: fan_out}
        - {name: short_calls, value: talk < 30, weight: 30, label: short_calls}
        - {name: virtual, value: 'caller_class == "virtual_170"', weight: 30, label: virtual_operator}
      levels: {low: 0, medium: 30, high: 60, critical: 90}
    having: score >= 60
    alert: {severity: from_score, title: "{caller} risk {score} ({level})"}
)Y");
  for (int i = 0; i < 9; ++i) h.call("c" + std::to_string(i), "17011112222", "1390000" + std::to_string(1000 + i), 10, i);
  EXPECT_TRUE(h.rec.got.empty()) << "9/20 * 40 + 30 = 48";
  h.call("c9", "17011112222", "13900001009", 10, 9, ",\"caller_class\":\"virtual_170\"");
  ASSERT_EQ(h.rec.got.size(), 1u);  // 10/20*40 + 30 + 30 = 80
  const Fired& f = h.rec.got[0];
  ASSERT_EQ(f.values.size(), 3u + 3u + 1u);
  EXPECT_DOUBLE_EQ(f.values[3], 0.5);
  EXPECT_DOUBLE_EQ(f.values[4], 1);
  EXPECT_DOUBLE_EQ(f.values[5], 1);
  EXPECT_DOUBLE_EQ(f.values[6], 80);
  EXPECT_EQ(f.level, "high");
  EXPECT_EQ(f.severity, "high");
  EXPECT_EQ(f.title, "170****2222 risk 80 (high)");
}

TEST(Scoring, PerEventScoreWithCap) {
  Harness h(R"(rules:
  - id: long_night_call
    stream: calls
    score:
      features:
        - {name: long, value: duration_s / 60, cap: 10, weight: 50}
        - {name: night, value: 'hour_of_day(start_time, 8h) < 6', weight: 50}
      levels: {medium: 50, critical: 90}
    having: score >= 50
    alert: {severity: from_score}
)");
  h.call("a", "1", "2", 300, 0);   // 14:13 UTC = 22:13 Beijing; 5 min of 10 -> 25
  EXPECT_TRUE(h.rec.got.empty());
  h.call("b", "1", "2", 3600, 0);  // capped at 10 min -> 50
  ASSERT_EQ(h.rec.got.size(), 1u);
  EXPECT_DOUBLE_EQ(h.rec.got[0].values[2], 50);
  EXPECT_EQ(h.rec.got[0].severity, "medium");
}

}  // namespace
}  // namespace tocsin::rules

namespace tocsin::rules {
namespace {

TEST(ApproxDistinct, EstimatesWithinErrorBound) {
  Harness h(R"(rules:
  - id: approx
    stream: calls
    window: {group_by: [caller], size: 1h}
    aggregates: {exact: count_distinct(callee), approx: approx_count_distinct(callee)}
    having: exact >= 20000
    alert: {severity: low}
)");
  for (int i = 0; i < 20000; ++i) h.call("c" + std::to_string(i), "1", std::to_string(13900000000LL + i), 5, i / 20);
  ASSERT_EQ(h.rec.got.size(), 1u);
  EXPECT_NEAR(h.rec.got[0].values[1], 20000, 20000 * 0.15) << "512 registers: standard error ~4.6%";
}

TEST(ApproxDistinct, OldSlicesAgeOutOfASlidingWindow) {
  Harness h(R"(rules:
  - id: approx
    stream: calls
    window: {group_by: [caller], size: 1h}
    aggregates: {approx: approx_count_distinct(callee)}
    having: approx < 10
    alert: {severity: low}
)");
  for (int i = 0; i < 5000; ++i) h.call("c" + std::to_string(i), "1", std::to_string(13900000000LL + i), 5, i / 10);
  ASSERT_EQ(h.rec.got.size(), 1u) << "fires while the first few callees are counted, then stays quiet";
  h.call("x", "1", "19999999999", 5, 2 * 3600);  // two hours on: only the new callee is in the window
  ASSERT_EQ(h.rec.got.size(), 2u);
  EXPECT_EQ(h.rec.got[1].values[0], 1);
}

}  // namespace
}  // namespace tocsin::rules
