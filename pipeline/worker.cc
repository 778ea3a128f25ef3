#include "pipeline/worker.h"

#include <chrono>

namespace tocsin {

Worker::Worker(EventSource& source, OutputSink& out, EventHandler& handler, const Clock& clock,
               const DecodeLimits& limits, WorkerStats& stats)
    : source_(source), out_(out), handler_(handler), clock_(clock), decoder_(limits),
      stats_(stats) {}

void Worker::process(const RawMessage& m) {
  const auto started = std::chrono::steady_clock::now();
  const int s = static_cast<int>(m.stream);
  bump(stats_.consumed[s]);
  const DecodeResult r = decoder_.decode(m.stream, m.payload, clock_.now_ms(), event_);
  if (!r.ok()) {
    bump(stats_.failed[s][static_cast<int>(r.error)]);
    bump(stats_.dead_letters_out);
    out_.dead_letter(m.payload, DeadLetter{reason_code(r.error), r.detail, m.source});
    return;
  }
  event_.source = m.source;
  handler_.on_event(event_);
  bump(stats_.processed[s]);
  stats_.last_event_time_ms[s].store(event_.time_ms, std::memory_order_relaxed);
  stats_.observe_latency_ns(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                           started)
          .count()));
}

size_t Worker::run_once(int poll_timeout_ms) {
  const auto batch = source_.poll(poll_timeout_ms);
  for (const RawMessage& m : batch) process(m);
  handler_.on_tick(clock_.now_ms());
  if (!batch.empty()) source_.batch_done();
  return batch.size();
}

void Worker::run(const std::atomic<bool>& stop, int poll_timeout_ms) {
  while (!stop.load(std::memory_order_relaxed)) run_once(poll_timeout_ms);
}

}  // namespace tocsin
