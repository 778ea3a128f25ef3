#pragma once
// The seams of the worker loop: where raw messages come from (EventSource),
// where outputs go (OutputSink) and who handles decoded events (EventHandler).
// Kafka implements the first two in connectors/; the rule engine the third.
#include <span>
#include <string_view>

#include "pipeline/event.h"

namespace tocsin {

// One consumed message. Views stay valid until the source's next poll().
struct RawMessage {
  Stream stream = Stream::kCalls;
  std::string_view payload;
  SourcePosition source;
  int64_t broker_time_ms = -1;  // message timestamp as stored by the broker, -1 if unknown
};

struct DeadLetter {
  std::string_view reason;  // closed set: reason_code(DecodeError) or "late"
  std::string_view detail;
  SourcePosition source;
};

// Where a worker's outputs go. Called only from the owning worker's thread.
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual void alert(std::string_view key, std::string_view json) = 0;
  // `payload` is the original message, unchanged.
  virtual void dead_letter(std::string_view payload, const DeadLetter& info) = 0;
  // A valid event older than its partition's watermark minus the allowed
  // lateness: routed, unchanged, to the late-events output. Sinks without
  // one keep it with the dead letters.
  virtual void late(std::string_view payload, const DeadLetter& info) { dead_letter(payload, info); }
};

// A batch-at-a-time source. Used only from the owning worker's thread.
class EventSource {
 public:
  virtual ~EventSource() = default;
  // Waits up to timeout_ms for messages; returns the batch (possibly empty).
  virtual std::span<const RawMessage> poll(int timeout_ms) = 0;
  // Every message of the last poll() was handled and its outputs were handed
  // to the OutputSink: the source may treat them as consumed once those
  // outputs are durable (at-least-once).
  virtual void batch_done() = 0;
};

// Receives each decoded event. One handler per worker; never shared.
class EventHandler {
 public:
  virtual ~EventHandler() = default;
  virtual void on_event(const Event& event) = 0;
  // Called at least every poll timeout with the wall clock, so timers fire
  // even when no event arrives.
  virtual void on_tick(int64_t now_ms) { (void)now_ms; }
};

}  // namespace tocsin
