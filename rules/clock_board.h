#pragma once
// The running service clocks for the console's SLA board: what each open ticket
// waits for next and when it is due.
//
// Engines own their clocks and are single-threaded, so the board works on
// demand: a reader (any thread) marks it wanted; each engine, on its next tick
// while it is wanted, publishes its soonest pending deadlines (at most
// kPerWorker, at most every kPublishEveryMs); the reader gets the latest
// publication of every worker, merged and sorted by due time. Nothing is
// collected while nobody looks.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace tocsin::rules {

struct ClockEntry {
  std::string rule;
  std::string alert_type;
  std::vector<std::pair<std::string, std::string>> key;  // key field -> value (unmasked)
  std::string deadline;  // the next pending deadline of the clock
  std::string severity;  // that deadline's (or the rule's)
  std::vector<std::pair<std::string, std::string>> labels;  // the rule's and the deadline's
  std::string title;     // the alert title it would raise, phone numbers masked
  int64_t started_ms = 0;
  int64_t due_ms = 0;
};

class ClockBoard {
 public:
  static constexpr size_t kPerWorker = 200;
  static constexpr int64_t kPublishEveryMs = 2000;
  static constexpr int64_t kWantedForMs = 60'000;

  explicit ClockBoard(size_t workers) : published_(workers), published_at_(workers) {}

  // Any thread: marks the board wanted and returns the latest entries, soonest first.
  // `published_ms` is the oldest publication among them (0 when none yet).
  std::vector<ClockEntry> read(int64_t now_ms, size_t limit, int64_t* published_ms = nullptr);
  // Engine side: whether worker `w` should publish now.
  bool wanted(size_t w, int64_t now_ms) const;
  void publish(size_t w, int64_t now_ms, std::vector<ClockEntry> entries);

 private:
  std::atomic<int64_t> wanted_at_{INT64_MIN / 2};
  mutable std::mutex mu_;
  std::vector<std::vector<ClockEntry>> published_;
  std::vector<int64_t> published_at_;
};

}  // namespace tocsin::rules
