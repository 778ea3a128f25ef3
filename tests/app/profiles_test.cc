// The demo traffic's profiles (gen/, `tocsin gen`) against the fraud pack's fitted
// number-profile rule: the profiles planted with each fraud fan-out fire it, the
// ordinary subscribers' profiles never do.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "gen/generator.h"
#include "pipeline/decoder.h"
#include "rules/engine.h"
#include "rules/rule_set.h"

namespace tocsin {
namespace {

const std::string kSrc = TOCSIN_SOURCE_DIR;

class Numbers final : public rules::SignalSink {
 public:
  std::set<std::string> flagged;
  int64_t signals = 0;
  void on_signal(const rules::Signal& s) override {
    ++signals;
    flagged.emplace(s.event->at(schema_of(s.event->stream).key_slot).s);
  }
};

TEST(DemoProfiles, OnlyPlantedFraudNumbersScoreHigh) {
  const auto loaded = rules::load_rule_files({kSrc + "/examples/packs/fraud/profile_rule.yaml"});
  ASSERT_TRUE(loaded.ok());
  Numbers sink;
  rules::Engine engine(loaded.rules, sink);
  gen::Options o;
  o.seed = 23;
  o.start_time_ms = 1795701600000;  // 2026-11-26T14:00:00Z
  o.events_per_second = 5;  // hours of event time: each fan-out's profile follows it by minutes
  o.plant_every = 2000;
  gen::Generator g(o);
  gen::Message m;
  Decoder decoder;
  Event e;
  std::set<std::string> planted_callers;  // the callers of the planted fan-outs: 25+ calls within minutes
  std::map<std::string, int> calls_by_caller;
  int64_t profiles = 0, planted_profiles = 0;
  for (int i = 0; i < 200'000; ++i) {
    g.next(m);
    if (m.stream == Stream::kCalls) {
      if (++calls_by_caller[m.key] == 20) planted_callers.insert(m.key);
      continue;
    }
    if (m.stream != Stream::kProfiles) continue;
    ++profiles;
    planted_profiles += planted_callers.count(m.key) > 0;
    ASSERT_TRUE(decoder.decode(m.stream, m.json, m.time_ms, e).ok()) << m.json;
    engine.on_event(e);
  }
  ASSERT_GE(planted_profiles, 50);
  EXPECT_LE(planted_profiles, g.planted().fraud_profiles);  // the last ones may still be due
  EXPECT_GT(profiles, 1500);
  EXPECT_EQ(sink.signals, planted_profiles);  // every planted profile, nothing else
  for (const auto& n : sink.flagged) EXPECT_TRUE(planted_callers.count(n)) << n << " is not a planted fraud caller";
}

}  // namespace
}  // namespace tocsin
