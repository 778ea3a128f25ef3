#pragma once
// The worker loop: poll a batch, decode each message, hand good events to the
// handler and bad ones to the dead-letter output, then tell the source the
// batch is done. One worker per thread; it owns its decoder, handler state and
// stats, and shares nothing mutable with other workers.
//
// Invariant (tested): for every stream, consumed == processed + dead-lettered + late.
//
// Timing cost per message: one stage_now_ns() read after the rules (and one
// after decoding on the one message in kStageSampleEvery whose stages are
// timed), a few integer bucket searches and relaxed stores into WorkerStats
// (tocsin_event_processing_seconds, tocsin_event_age_seconds,
// tocsin_stage_duration_seconds). No lock, no allocation. The wall clock is
// read once per batch; an event's age adds the steady time elapsed since then.
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
  using Instant = uint64_t;  // stage_now_ns()
  // Handles one message that started at `started`; returns when it finished.
  Instant handle_timed(const RawMessage& message, Instant started);
  // Decodes and handles one message; true when it reached the handler.
  bool handle(const RawMessage& message, Instant started);
  // Copies the decoder's path counts into stats_ (once per batch: a scrape sees them a batch late).
  void publish_decode_paths();

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
  // The batch's wall clock and stage_now_ns() at that instant.
  int64_t batch_wall_ms_ = 0;
  Instant batch_steady_ = 0;
  Instant decoded_at_ = 0;  // set when split_
  uint32_t until_split_ = 1;  // messages until the next one whose stages are timed
  bool split_ = false;        // the current message's decode and evaluate are timed
};

// An OutputSink that times each call of `inner` as stage "produce" in
// `stats` and adds it to stats.produce_ns_in_event (so that the worker keeps
// it out of "evaluate"). Give it to the worker and to the rules' alert
// encoder of the same worker; used from that worker's thread only.
class TimedOutputSink final : public OutputSink {
 public:
  TimedOutputSink(OutputSink& inner, WorkerStats& stats) : inner_(inner), stats_(stats) {}
  void alert(std::string_view key, std::string_view json) override;
  void dead_letter(std::string_view payload, const DeadLetter& info) override;
  void late(std::string_view payload, const DeadLetter& info) override;

 private:
  template <class F>
  void timed(F&& produce);
  OutputSink& inner_;
  WorkerStats& stats_;
};

}  // namespace tocsin
