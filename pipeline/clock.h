#pragma once
// Time sources. Everything that reads time takes a Clock, so tests run on a
// ManualClock and never sleep.
#include <atomic>
#include <chrono>
#include <cstdint>

namespace tocsin {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch. Thread-safe.
  virtual int64_t now_ms() const = 0;
};

class WallClock final : public Clock {
 public:
  int64_t now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

// Nanoseconds on a monotonic clock, for timing the stages of one event:
// only differences between two readings mean anything. Reads the CPU's
// time-stamp counter when the kernel itself keeps time with it (clocksource
// "tsc": invariant and synchronised across cores), scaled by a rate measured
// once against steady_clock; ~18 ns a read on the CI VM, where
// steady_clock::now() through the vDSO takes ~48 ns. Elsewhere steady_clock.
struct TscScale {
  double ns_per_tick = 0;  // 0: no usable time-stamp counter
  uint64_t base = 0;       // the counter when measured
};
TscScale measure_tsc();  // spins ~2 ms; clock.cc
inline uint64_t stage_now_ns() {
#if defined(__x86_64__)
  static const TscScale tsc = measure_tsc();
  if (tsc.ns_per_tick > 0)
    return static_cast<uint64_t>(static_cast<double>(__builtin_ia32_rdtsc() - tsc.base) * tsc.ns_per_tick);
#endif
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

// A clock that moves only when told to. Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 0) : now_(start_ms) {}
  int64_t now_ms() const override { return now_.load(std::memory_order_acquire); }
  void set(int64_t ms) { now_.store(ms, std::memory_order_release); }
  void advance(int64_t ms) { now_.fetch_add(ms, std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace tocsin
