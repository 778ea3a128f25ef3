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

struct WorkerStats {
  std::array<Counter, kStreamCount> consumed{};
  std::array<Counter, kStreamCount> processed{};
  std::array<std::array<Counter, kDecodeErrorCount>, kStreamCount> failed{};
  std::array<Counter, kLatencyBucketsSeconds.size() + 1> latency_buckets{};  // last: +Inf
  Counter latency_sum_ns{};
  std::array<Counter, kStreamCount> late{};
  Counter alerts_out{};
  Counter dead_letters_out{};
  std::array<std::atomic<int64_t>, kStreamCount> last_event_time_ms{};

  void observe_latency_ns(uint64_t ns) {
    size_t b = 0;
    const double s = static_cast<double>(ns) * 1e-9;
    while (b < kLatencyBucketsSeconds.size() && s > kLatencyBucketsSeconds[b]) ++b;
    bump(latency_buckets[b]);
    bump(latency_sum_ns, ns);
  }
};

}  // namespace tocsin
