#pragma once
// Per-worker hot-path counters. Each field has exactly one writer (the
// worker's thread), which bumps it with a relaxed load+store (no RMW, no lock);
// the metrics scrape reads them from another thread and sums over workers.
#include <array>
#include <atomic>
#include <cstdint>

#include "pipeline/decoder.h"
#include "pipeline/event.h"

namespace tocsin {

using Counter = std::atomic<uint64_t>;

inline void bump(Counter& c, uint64_t n = 1) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// Upper bounds (seconds) of the processing-latency histogram: on the SLO.
inline constexpr std::array<double, 10> kLatencyBucketsSeconds = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 0.5, 1.0};

// Stages of tocsin_stage_duration_seconds{stage}: decoding a message, the
// rules' evaluation of an event (less the time it spent producing alerts),
// one produce call (an alert, dead letter or late event handed to the
// producer; rdkafka queues it, so this is the enqueue, not the broker round trip).
enum class Stage : uint8_t { kDecode, kEvaluate, kProduce };
// Decode and evaluate are timed on the first message of every
// kStageSampleEvery, each observation counting for that many (buckets and
// sum), so that the stage clock is read once per message, not twice (a read
// is ~26 ns where it is the steady clock, e.g. on a kvm-clock VM). Produce
// calls are rare and each is timed.
inline constexpr uint32_t kStageSampleEvery = 16;
inline constexpr int kStageCount = 3;
inline constexpr const char* kStageNames[kStageCount] = {"decode", "evaluate", "produce"};
// Upper bounds (nanoseconds) of the stage histogram: 1 µs .. 100 ms.
inline constexpr std::array<uint64_t, 12> kStageBucketsNs = {
    1'000, 2'500, 5'000, 10'000, 25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000, 10'000'000, 100'000'000};
// Upper bounds (milliseconds) of tocsin_event_age_seconds, on the alerting
// SLO thresholds: 10 ms .. 10 min.
inline constexpr std::array<uint64_t, 14> kEventAgeBucketsMs = {
    10, 25, 50, 100, 250, 500, 1'000, 2'500, 5'000, 10'000, 30'000, 60'000, 300'000, 600'000};

// A histogram of plain single-writer counters: one bucket found by a linear
// search over N integer bounds and two relaxed load+stores per observation
// (no lock, no allocation). Buckets are not cumulative; the last is +Inf.
template <size_t N>
struct HistogramCounters {
  std::array<Counter, N + 1> buckets{};
  Counter sum{};  // in the bounds' unit

  // `weight`: how many observations of `v` this one stands for.
  void observe(const std::array<uint64_t, N>& upper, uint64_t v, uint64_t weight = 1) {
    size_t b = 0;
    while (b < N && v > upper[b]) ++b;
    bump(buckets[b], weight);
    bump(sum, v * weight);
  }
};

struct WorkerStats {
  std::array<Counter, kStreamCount> consumed{};
  std::array<Counter, kStreamCount> processed{};
  std::array<std::array<Counter, kDecodeErrorCount>, kStreamCount> failed{};
  // The decoder's path counts (Decoder::path_counts), copied after each batch.
  std::array<std::array<Counter, kDecodedByCount>, kStreamCount> decoded_by{};
  std::array<Counter, kLatencyBucketsSeconds.size() + 1> latency_buckets{};  // last: +Inf
  Counter latency_sum_ns{};
  std::array<Counter, kStreamCount> late{};
  Counter alerts_out{};
  Counter dead_letters_out{};
  std::array<std::atomic<int64_t>, kStreamCount> last_event_time_ms{};
  std::array<HistogramCounters<kStageBucketsNs.size()>, kStageCount> stage{};
  // Wall clock minus event time when the rules evaluate the event, by stream.
  std::array<HistogramCounters<kEventAgeBucketsMs.size()>, kStreamCount> event_age{};
  // Produce time spent inside the current event's evaluation (TimedOutputSink
  // adds, the worker takes it out of "evaluate"). Worker thread only: not
  // read by the scrape.
  uint64_t produce_ns_in_event = 0;

  void observe_latency_ns(uint64_t ns) {
    size_t b = 0;
    const double s = static_cast<double>(ns) * 1e-9;
    while (b < kLatencyBucketsSeconds.size() && s > kLatencyBucketsSeconds[b]) ++b;
    bump(latency_buckets[b]);
    bump(latency_sum_ns, ns);
  }
  void observe_stage_ns(Stage stage_, uint64_t ns, uint64_t weight = 1) {
    stage[static_cast<int>(stage_)].observe(kStageBucketsNs, ns, weight);
  }
  void observe_event_age_ms(int stream, int64_t ms) {
    event_age[static_cast<size_t>(stream)].observe(kEventAgeBucketsMs, ms > 0 ? static_cast<uint64_t>(ms) : 0);
  }
};

}  // namespace tocsin
