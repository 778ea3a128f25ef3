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
