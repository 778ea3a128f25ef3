#pragma once
// The worker loop: poll a batch, decode each message, hand good events to the
// handler and bad ones to the dead-letter output, then tell the source the
// batch is done. One worker per thread; it owns its decoder, handler state and
// stats, and shares nothing mutable with other workers.
//
// Invariant (tested): for every stream, consumed == processed + dead-lettered + late.
#include <array>
#include <atomic>
#include <string>
#include <vector>

#include "pipeline/clock.h"
#include "pipeline/decoder.h"
#include "pipeline/io.h"
#include "pipeline/stats.h"

namespace tocsin {

class Worker {
 public:
  // Events more than `allowed_lateness_ms` older than the newest event seen on
  // their partition are routed to OutputSink::late instead of the handler.
  Worker(EventSource& source, OutputSink& out, EventHandler& handler, const Clock& clock,
         const DecodeLimits& limits, WorkerStats& stats, int64_t allowed_lateness_ms = 3600 * 1000);

  // Runs batches until `stop` becomes true.
  void run(const std::atomic<bool>& stop, int poll_timeout_ms = 100);
  // Polls and processes one batch; returns its size.
  size_t run_once(int poll_timeout_ms);
  // Decodes and handles one message (used by run_once, replay and benchmarks).
  void process(const RawMessage& message);

 private:
  // Decodes and handles one message; true when it reached the handler.
  bool handle(const RawMessage& message, int64_t now_ms);

  EventSource& source_;
  OutputSink& out_;
  EventHandler& handler_;
  const Clock& clock_;
  Decoder decoder_;
  WorkerStats& stats_;
  int64_t allowed_lateness_ms_;
  // Per-partition watermark (newest event time), by stream then partition.
  std::array<std::vector<int64_t>, kStreamCount> watermarks_;
  std::string late_detail_;
  Event event_;
};

}  // namespace tocsin
