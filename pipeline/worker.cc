#include "pipeline/worker.h"

#include <algorithm>
#include <chrono>
#include <climits>

namespace tocsin {

Worker::Worker(EventSource& source, OutputSink& out, EventHandler& handler, const Clock& clock,
               const DecodeLimits& limits, WorkerStats& stats, int64_t allowed_lateness_ms)
    : source_(source), out_(out), handler_(handler), clock_(clock), decoder_(limits),
      stats_(stats), allowed_lateness_ms_(allowed_lateness_ms) {}

void Worker::process(const RawMessage& m) {
  const auto started = std::chrono::steady_clock::now();
  if (handle(m, clock_.now_ms()))
    stats_.observe_latency_ns(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count()));
}

bool Worker::handle(const RawMessage& m, int64_t now_ms) {
  const int s = static_cast<int>(m.stream);
  bump(stats_.consumed[s]);
  const DecodeResult r = decoder_.decode(m.stream, m.payload, now_ms, event_);
  if (!r.ok()) {
    bump(stats_.failed[s][static_cast<int>(r.error)]);
    bump(stats_.dead_letters_out);
    out_.dead_letter(m.payload, DeadLetter{reason_code(r.error), r.detail, m.source});
    return false;
  }
  event_.source = m.source;
  if (m.source.partition >= 0) {
    auto& marks = watermarks_[static_cast<size_t>(s)];
    const auto p = static_cast<size_t>(m.source.partition);
    if (p >= marks.size()) marks.resize(p + 1, INT64_MIN);  // once per new partition
    if (marks[p] != INT64_MIN && event_.time_ms < marks[p] - allowed_lateness_ms_) {
      bump(stats_.late[s]);
      late_detail_ = std::to_string((marks[p] - event_.time_ms) / 1000) + " s behind the partition watermark";
      out_.late(m.payload, DeadLetter{"late", late_detail_, m.source});
      return false;
    }
    marks[p] = std::max(marks[p], event_.time_ms);
  }
  handler_.on_event(event_);
  bump(stats_.processed[s]);
  stats_.last_event_time_ms[s].store(event_.time_ms, std::memory_order_relaxed);
  return true;
}

size_t Worker::run_once(int poll_timeout_ms) {
  const auto batch = source_.poll(poll_timeout_ms);
  // One wall-clock read per batch; one steady-clock read per event, each
  // event's latency running from the previous event's end.
  const int64_t now_ms = clock_.now_ms();
  auto prev = std::chrono::steady_clock::now();
  for (const RawMessage& m : batch) {
    const bool processed = handle(m, now_ms);
    const auto t = std::chrono::steady_clock::now();
    if (processed)
      stats_.observe_latency_ns(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t - prev).count()));
    prev = t;
  }
  handler_.on_tick(now_ms);
  if (!batch.empty()) source_.batch_done();
  return batch.size();
}

void Worker::run(const std::atomic<bool>& stop, int poll_timeout_ms) {
  while (!stop.load(std::memory_order_relaxed)) run_once(poll_timeout_ms);
}

}  // namespace tocsin
