#include "pipeline/worker.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include <string>
#include <vector>

namespace tocsin {
namespace {

class VectorSource final : public EventSource {
 public:
  std::vector<std::vector<RawMessage>> batches;
  size_t next = 0;
  int done = 0;
  std::span<const RawMessage> poll(int) override {
    if (next >= batches.size()) return {};
    return batches[next++];
  }
  void batch_done() override { ++done; }
};

class RecordingSink final : public OutputSink {
 public:
  std::vector<std::string> alerts, dead, reasons, lates;
  std::vector<int64_t> offsets;
  void alert(std::string_view, std::string_view json) override { alerts.emplace_back(json); }
  void dead_letter(std::string_view payload, const DeadLetter& info) override {
    dead.emplace_back(payload);
    reasons.emplace_back(info.reason);
    offsets.push_back(info.source.offset);
  }
  void late(std::string_view payload, const DeadLetter& info) override {
    lates.emplace_back(payload);
    reasons.emplace_back(info.reason);
  }
};

class CountingHandler final : public EventHandler {
 public:
  int events = 0, ticks = 0;
  std::vector<std::string> ids;
  void on_event(const Event& e) override { ++events; ids.emplace_back(e.id()); }
  void on_tick(int64_t) override { ++ticks; }
};

TEST(Worker, EveryMessageIsProcessedOrDeadLettered) {
  const std::vector<std::string> payloads = {
      R"({"call_id":"a","start_time":1000000000000,"caller":"1","callee":"2","duration_s":1,"answered":true})",
      "{broken",
      R"({"call_id":"b","start_time":1000000000000,"caller":"1","callee":"2","duration_s":1})",
      R"({"fault_id":"f","time":1000000000000,"kind":"opened","network_id":"N"})",
  };
  VectorSource src;
  src.batches.resize(2);
  for (size_t i = 0; i < payloads.size(); ++i) {
    RawMessage m;
    m.stream = i == 3 ? Stream::kFaults : Stream::kCalls;
    m.payload = payloads[i];
    m.source = {"calls", 0, static_cast<int64_t>(i)};
    src.batches[i < 2 ? 0 : 1].push_back(m);
  }
  RecordingSink sink;
  CountingHandler handler;
  ManualClock clock(1000000000000);
  WorkerStats stats;
  Worker w(src, sink, handler, clock, DecodeLimits{}, stats);
  EXPECT_EQ(w.run_once(0), 2u);
  EXPECT_EQ(w.run_once(0), 2u);
  EXPECT_EQ(w.run_once(0), 0u);  // empty poll still ticks, but is not a batch
  EXPECT_EQ(src.done, 2);
  EXPECT_EQ(handler.ticks, 3);
  EXPECT_EQ(handler.ids, (std::vector<std::string>{"a", "f"}));
  EXPECT_EQ(sink.dead, (std::vector<std::string>{"{broken", payloads[2]}));
  EXPECT_EQ(sink.reasons, (std::vector<std::string>{"invalid_json", "missing_field"}));
  EXPECT_EQ(sink.offsets, (std::vector<int64_t>{1, 2}));
  uint64_t consumed = 0, processed = 0, failed = 0;
  for (int s = 0; s < kStreamCount; ++s) {
    consumed += stats.consumed[s];
    processed += stats.processed[s];
    for (auto& f : stats.failed[s]) failed += f;
  }
  EXPECT_EQ(consumed, 4u);
  EXPECT_EQ(processed, 2u);
  EXPECT_EQ(failed, 2u);
  EXPECT_EQ(stats.failed[0][static_cast<int>(DecodeError::kInvalidJson)], 1u);
  // Each message counted once by the decoder path that decided it; rejections by simdjson.
  uint64_t decoded = 0, by_simdjson = 0;
  for (const auto& by : stats.decoded_by) {
    for (const auto& n : by) decoded += n;
    by_simdjson += by[static_cast<size_t>(DecodedBy::kSimdjson)];
  }
  EXPECT_EQ(decoded, consumed);
  EXPECT_EQ(by_simdjson, failed);
  uint64_t observed = 0;
  for (auto& b : stats.latency_buckets) observed += b;
  EXPECT_EQ(observed, processed);
}

}  // namespace
}  // namespace tocsin

namespace tocsin {
namespace {

TEST(Worker, EventsFarBehindTheirPartitionWatermarkAreRoutedLate) {
  auto call = [](const char* id, int64_t t) {
    return std::string(R"({"call_id":")") + id + R"(","start_time":)" + std::to_string(t) +
           R"(,"caller":"1","callee":"2","duration_s":1,"answered":true})";
  };
  const int64_t t0 = 1790000000000;
  const std::vector<std::string> p = {call("a", t0), call("b", t0 - 3600000), call("c", t0 - 3600001),
                                      call("d", t0 - 7200000)};
  VectorSource src;
  src.batches.resize(1);
  for (size_t i = 0; i < p.size(); ++i) {
    RawMessage m;
    m.payload = p[i];
    // d is on another partition, whose watermark it sets.
    m.source = {"calls", i == 3 ? 1 : 0, static_cast<int64_t>(i)};
    src.batches[0].push_back(m);
  }
  RecordingSink sink;
  CountingHandler handler;
  ManualClock clock(t0);
  WorkerStats stats;
  Worker w(src, sink, handler, clock, DecodeLimits{}, stats, 3600000);
  w.run_once(0);
  EXPECT_EQ(handler.ids, (std::vector<std::string>{"a", "b", "d"}));
  EXPECT_EQ(sink.lates, std::vector<std::string>{p[2]});
  EXPECT_EQ(sink.reasons, std::vector<std::string>{"late"});
  EXPECT_EQ(stats.late[0], 1u);
  EXPECT_EQ(stats.consumed[0], stats.processed[0] + stats.late[0]);
}

}  // namespace
}  // namespace tocsin

namespace tocsin {
namespace {

// A handler that raises one alert per event through the worker's sink, as the
// rule engine does through its alert encoder.
class AlertingHandler final : public EventHandler {
 public:
  explicit AlertingHandler(OutputSink& out) : out_(out) {}
  void on_event(const Event& e) override { out_.alert(e.id(), "{}"); }

 private:
  OutputSink& out_;
};

template <size_t N>
uint64_t count(const HistogramCounters<N>& h) {
  uint64_t n = 0;
  for (const auto& b : h.buckets) n += b;
  return n;
}

// The stage clock (the time-stamp counter where the kernel trusts it) never
// goes back and runs at the rate of steady_clock: over a 20 ms interval timed
// by both, they agree within 2 % (best of five intervals, so that being
// descheduled between two reads of one interval cannot fail the test).
TEST(StageClock, RunsAtTheRateOfTheSteadyClock) {
  using std::chrono::steady_clock;
  double best = 0;
  for (int attempt = 0; attempt < 5 && std::abs(best - 1.0) > 0.02; ++attempt) {
    const uint64_t s0 = stage_now_ns();
    const auto t0 = steady_clock::now();
    uint64_t last = s0;
    for (auto t = t0; t - t0 < std::chrono::milliseconds(20); t = steady_clock::now()) {
      const uint64_t now = stage_now_ns();
      ASSERT_GE(now, last);
      last = now;
    }
    const double stage = static_cast<double>(stage_now_ns() - s0);
    const double steady = static_cast<double>((steady_clock::now() - t0) / std::chrono::nanoseconds(1));
    if (std::abs(stage / steady - 1.0) < std::abs(best - 1.0)) best = stage / steady;
  }
  EXPECT_NEAR(best, 1.0, 0.02) << "stage clock ns per steady_clock ns";
}

TEST(Worker, StageDurationsAndEventAgesAreObserved) {
  const int64_t now = 1790000000000;
  auto call = [](const char* id, int64_t t) {
    return std::string(R"({"call_id":")") + id + R"(","start_time":)" + std::to_string(t) +
           R"(,"caller":"1","callee":"2","duration_s":1,"answered":true})";
  };
  // Ages: 0 s, 4 s, 20 min; one from 5 s in the future (clock skew: age 0); one undecodable.
  const std::vector<std::string> p = {call("a", now), call("b", now - 4000), call("c", now - 1200000),
                                      call("d", now + 5000), "{broken"};
  VectorSource src;
  src.batches.resize(1);
  for (size_t i = 0; i < p.size(); ++i) {
    RawMessage m;
    m.payload = p[i];
    m.source = {"calls", static_cast<int32_t>(i), 0};  // one partition each: no watermark in the way
    src.batches[0].push_back(m);
  }
  RecordingSink sink;
  WorkerStats stats;
  TimedOutputSink timed(sink, stats);
  AlertingHandler handler(timed);
  ManualClock clock(now);
  Worker w(src, timed, handler, clock, DecodeLimits{}, stats);
  w.run_once(0);
  ASSERT_EQ(sink.alerts.size(), 4u);
  ASSERT_EQ(sink.dead.size(), 1u);
  // Decode and evaluate: the first message of every 16 is timed, for 16 (StageTimingIsSampled).
  EXPECT_EQ(count(stats.stage[static_cast<int>(Stage::kDecode)]), kStageSampleEvery);
  EXPECT_EQ(count(stats.stage[static_cast<int>(Stage::kEvaluate)]), kStageSampleEvery);
  EXPECT_EQ(count(stats.stage[static_cast<int>(Stage::kProduce)]), 5u) << "4 alerts and 1 dead letter";
  uint64_t latencies = 0;
  for (const auto& b : stats.latency_buckets) latencies += b;
  EXPECT_EQ(latencies, 4u) << "every event reaching the rules";
  const auto& age = stats.event_age[static_cast<int>(Stream::kCalls)];
  EXPECT_EQ(count(age), 4u);
  EXPECT_EQ(age.buckets[0], 2u) << "now and from the future: <= 10 ms (the steady clock adds little)";
  EXPECT_EQ(age.buckets[8], 1u) << "4 s: in (2.5 s, 5 s]";
  EXPECT_EQ(age.buckets[kEventAgeBucketsMs.size()], 1u) << "20 min: above 10 min";
  EXPECT_GE(age.sum, 4000u + 1200000u);
}

// Decode and evaluate are timed on messages 1, 17, 33, … (one stage clock
// read per message saved on the others), each standing for kStageSampleEvery;
// a message that fails to decode is timed like any other.
TEST(Worker, StageTimingIsSampled) {
  const int64_t now = 1790000000000;
  VectorSource src;
  src.batches.resize(1);
  std::vector<std::string> payloads;
  for (int i = 0; i < 33; ++i)
    payloads.push_back(i == 16 ? std::string("{broken")
                               : R"({"call_id":"c)" + std::to_string(i) + R"(","start_time":)" + std::to_string(now) +
                                     R"(,"caller":"1","callee":"2","duration_s":1,"answered":true})");
  for (const std::string& p : payloads) {
    RawMessage m;
    m.payload = p;
    m.source = {"calls", 0, 0};
    src.batches[0].push_back(m);
  }
  RecordingSink sink;
  WorkerStats stats;
  AlertingHandler handler(sink);
  ManualClock clock(now);
  Worker w(src, sink, handler, clock, DecodeLimits{}, stats);
  w.run_once(0);
  ASSERT_EQ(sink.alerts.size(), 32u);
  EXPECT_EQ(count(stats.stage[static_cast<int>(Stage::kDecode)]), 3 * kStageSampleEvery) << "messages 1, 17 and 33";
  EXPECT_EQ(count(stats.stage[static_cast<int>(Stage::kEvaluate)]), 2 * kStageSampleEvery)
      << "message 17 did not decode: it never reached the rules";
  EXPECT_EQ(stats.stage[static_cast<int>(Stage::kDecode)].sum % kStageSampleEvery, 0u) << "sums are weighted too";
  uint64_t latencies = 0;
  for (const auto& b : stats.latency_buckets) latencies += b;
  EXPECT_EQ(latencies, 32u) << "latency stays per event";
}

}  // namespace
}  // namespace tocsin
