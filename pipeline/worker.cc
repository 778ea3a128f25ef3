#include "pipeline/worker.h"

#include <algorithm>
#include <climits>

namespace tocsin {

Worker::Worker(EventSource& source, OutputSink& out, EventHandler& handler, const Clock& clock,
               const DecodeLimits& limits, WorkerStats& stats, int64_t allowed_lateness_ms)
    : source_(source), out_(out), handler_(handler), clock_(clock), decoder_(limits),
      stats_(stats), allowed_lateness_ms_(allowed_lateness_ms) {}

namespace {

uint64_t ns_between(uint64_t a_ns, uint64_t b_ns) { return b_ns > a_ns ? b_ns - a_ns : 0; }

}  // namespace

void Worker::process(const RawMessage& m) {
  batch_steady_ = stage_now_ns();
  batch_wall_ms_ = clock_.now_ms();
  handle_timed(m, batch_steady_);
  publish_decode_paths();
}

void Worker::publish_decode_paths() {
  const DecodePathCounts& counts = decoder_.path_counts();
  for (size_t s = 0; s < counts.size(); ++s)
    for (size_t by = 0; by < counts[s].size(); ++by)
      stats_.decoded_by[s][by].store(counts[s][by], std::memory_order_relaxed);
}

Worker::Instant Worker::handle_timed(const RawMessage& m, Instant started) {
  stats_.produce_ns_in_event = 0;
  split_ = --until_split_ == 0;
  if (split_) until_split_ = kStageSampleEvery;
  const bool processed = handle(m, started);
  const Instant done = stage_now_ns();
  if (processed) {
    stats_.observe_latency_ns(ns_between(started, done));
    if (split_) {
      const uint64_t evaluated = ns_between(decoded_at_, done);
      const uint64_t produced = stats_.produce_ns_in_event;
      stats_.observe_stage_ns(Stage::kEvaluate, evaluated > produced ? evaluated - produced : 0, kStageSampleEvery);
    }
  }
  return done;
}

bool Worker::handle(const RawMessage& m, Instant started) {
  const int s = static_cast<int>(m.stream);
  bump(stats_.consumed[s]);
  const DecodeResult r = decoder_.decode(m.stream, m.payload, batch_wall_ms_, event_);
  if (split_) {
    decoded_at_ = stage_now_ns();
    stats_.observe_stage_ns(Stage::kDecode, ns_between(started, decoded_at_), kStageSampleEvery);
  }
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
  const int64_t now_ms = batch_wall_ms_ + static_cast<int64_t>(ns_between(batch_steady_, started) / 1'000'000);
  stats_.observe_event_age_ms(s, now_ms - event_.time_ms);
  handler_.on_event(event_);
  bump(stats_.processed[s]);
  stats_.last_event_time_ms[s].store(event_.time_ms, std::memory_order_relaxed);
  return true;
}

size_t Worker::run_once(int poll_timeout_ms) {
  const auto batch = source_.poll(poll_timeout_ms);
  // One wall-clock read per batch; one stage_now_ns() read per event (done;
  // and when decoded on the events whose stages are timed), each event's
  // latency running from the previous event's end.
  batch_wall_ms_ = clock_.now_ms();
  batch_steady_ = stage_now_ns();
  Instant prev = batch_steady_;
  for (size_t i = 0; i < batch.size(); ++i) {
    // Start loading the next message (up to 512 bytes) while this one is
    // decoded and evaluated: its first read is otherwise a cache miss.
    if (i + 1 < batch.size()) {
      const std::string_view next = batch[i + 1].payload;
      for (size_t at = 0; at < next.size() && at < 512; at += 64) __builtin_prefetch(next.data() + at);
    }
    prev = handle_timed(batch[i], prev);
  }
  handler_.on_tick(batch_wall_ms_);
  if (!batch.empty()) {
    publish_decode_paths();
    source_.batch_done();
  }
  return batch.size();
}

void Worker::run(const std::atomic<bool>& stop, int poll_timeout_ms) {
  while (!stop.load(std::memory_order_relaxed)) run_once(poll_timeout_ms);
}

template <class F>
void TimedOutputSink::timed(F&& produce) {
  const auto started = stage_now_ns();
  produce();
  const uint64_t ns = ns_between(started, stage_now_ns());
  stats_.observe_stage_ns(Stage::kProduce, ns);
  stats_.produce_ns_in_event += ns;
}

void TimedOutputSink::alert(std::string_view key, std::string_view json) {
  timed([&] { inner_.alert(key, json); });
}
void TimedOutputSink::dead_letter(std::string_view payload, const DeadLetter& info) {
  timed([&] { inner_.dead_letter(payload, info); });
}
void TimedOutputSink::late(std::string_view payload, const DeadLetter& info) {
  timed([&] { inner_.late(payload, info); });
}

}  // namespace tocsin
