// Micro benchmarks of the per-event hot path, without Kafka:
//
//   BM_Decode/<stream>                   simdjson decoder alone, one stream's messages
//   BM_DecodeEvaluate_FirstSlice         decoder + rules::Engine over examples/rules/first_slice.yaml
//   BM_DecodeEvaluate_SingleFilterCount  decoder + one `where` filter and a windowed count()
//   BM_Worker_NoKafka                    tocsin::Worker (decode + rules + alert encoding + stats)
//                                        fed in batches of 1000 by an in-memory EventSource
//   BM_Worker_NoKafka_SingleFilterCount  the same with the single filter + count rule (calls)
//   BM_Worker_NoKafka_Mix50              the same with the 50-rule mix
//
// Input: 100k messages from tocsin::gen::Generator (seed 1), generated once and
// replayed in a cycle. So that event time keeps moving forward across cycles
// (otherwise a replay would be "late" for every windowed rule, or would pile up
// in the windows), the event-time field of every message is rewritten in place
// before each new cycle, shifted by the corpus span; the rewrite is not timed.
// The corpus is generated at 10 events/s of event time (a cycle spans ~2.8 h).
// Before the timed loop, enough cycles run that every sliding window has
// filled once (warmup_cycles: 1 + the longest sliding window over the span,
// 10 for the 50-rule mix's 24 h window), so what is timed is the steady state:
// every key exists and every window holds its usual number of events.
//
// Allocation check: this file replaces the global operator new/delete with
// counting wrappers around malloc/free. allocs_per_event_warmup counts the first
// cycle (which creates every window key), allocs_per_event the last warm-up
// cycle (steady state). Reported, never a failure.
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "alerts/alert_encoder.h"
#include "gen/generator.h"
#include "pipeline/clock.h"
#include "pipeline/decoder.h"
#include "pipeline/io.h"
#include "pipeline/stats.h"
#include "pipeline/worker.h"
#include "rules/engine.h"
#include "rules/tables.h"
#include "rules/rule_set.h"

#ifndef TOCSIN_SOURCE_DIR
#error "TOCSIN_SOURCE_DIR must be defined (see bench/CMakeLists.txt)"
#endif

// ---- counting allocator ------------------------------------------------------
// Not inlined: every allocation goes through the counter, and GCC does not
// pair an inlined malloc with a sized delete (-Wmismatched-new-delete).
#define NOINLINE __attribute__((noinline))

namespace {
std::atomic<uint64_t> g_allocs{0};

inline void* counted_alloc(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n ? n : 1);
}
inline void* counted_aligned_alloc(std::size_t n, std::align_val_t al) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  const std::size_t a = std::max(static_cast<std::size_t>(al), sizeof(void*));
  void* p = nullptr;
  if (posix_memalign(&p, a, n ? n : 1) != 0) return nullptr;
  return p;
}
}  // namespace

NOINLINE void* operator new(std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
NOINLINE void* operator new[](std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
NOINLINE void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
NOINLINE void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
NOINLINE void* operator new(std::size_t n, std::align_val_t al) {
  if (void* p = counted_aligned_alloc(n, al)) return p;
  throw std::bad_alloc();
}
NOINLINE void* operator new[](std::size_t n, std::align_val_t al) {
  if (void* p = counted_aligned_alloc(n, al)) return p;
  throw std::bad_alloc();
}
NOINLINE void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counted_aligned_alloc(n, al);
}
NOINLINE void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counted_aligned_alloc(n, al);
}
NOINLINE void operator delete(void* p) noexcept { std::free(p); }
NOINLINE void operator delete[](void* p) noexcept { std::free(p); }
NOINLINE void operator delete(void* p, std::size_t) noexcept { std::free(p); }
NOINLINE void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
NOINLINE void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
NOINLINE void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
NOINLINE void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
NOINLINE void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
NOINLINE void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
NOINLINE void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
NOINLINE void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
NOINLINE void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

using namespace tocsin;

uint64_t allocs() { return g_allocs.load(std::memory_order_relaxed); }

// TOCSIN_BENCH_ITERATIONS=N runs every per-event benchmark for exactly N
// iterations (bench/instructions.sh: instruction counts under cachegrind,
// which this VM's timing noise does not touch).
void fixed_iterations(benchmark::internal::Benchmark* b) {
  if (const char* n = std::getenv("TOCSIN_BENCH_ITERATIONS")) b->Iterations(std::atoll(n));
}
double heap_mib() { return static_cast<double>(mallinfo2().uordblks) / (1024.0 * 1024.0); }

// ---- corpus --------------------------------------------------------------------

constexpr int kCorpusSize = 100'000;
constexpr int64_t kStartMs = 1767225600000;     // 2026-01-01T00:00:00Z
constexpr double kEventTimeRate = 10;           // events per second of event time
// "now" for the decoder's future-skew check: far ahead of any event time the
// benchmarks reach (a cycle spans ~2.8 h of event time).
constexpr int64_t kFarFutureMs = kStartMs + 50LL * 365 * 86400 * 1000;

// Writes epoch ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars, years 1970..9999),
// the generator's format. Local, because format_rfc3339_ms goes through
// snprintf and the rewrite between cycles would dominate a profile.
void put_time(char* p, int64_t ms) {
  auto digits = [](char* at, int64_t v, int width) {
    for (int i = width - 1; i >= 0; --i, v /= 10) at[i] = static_cast<char>('0' + v % 10);
  };
  const int64_t days = ms / 86400000, rem = ms % 86400000;
  // civil_from_days (H. Hinnant), days since 1970-01-01 >= 0
  const int64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = yoe + era * 400 + (m <= 2);
  digits(p, y, 4);
  p[4] = '-';
  digits(p + 5, m, 2);
  p[7] = '-';
  digits(p + 8, d, 2);
  p[10] = 'T';
  digits(p + 11, rem / 3600000, 2);
  p[13] = ':';
  digits(p + 14, rem / 60000 % 60, 2);
  p[16] = ':';
  digits(p + 17, rem / 1000 % 60, 2);
  p[19] = '.';
  digits(p + 20, rem % 1000, 3);
  p[23] = 'Z';
}

// Pre-generated messages whose event-time text can be shifted in place.
class Corpus {
 public:
  // All streams (stream_filter < 0) or one stream's messages out of kCorpusSize generated.
  explicit Corpus(int stream_filter = -1) {
    gen::Options o;
    o.seed = 1;
    o.start_time_ms = kStartMs;
    o.events_per_second = kEventTimeRate;
    gen::Generator g(o);
    gen::Message m;
    for (int i = 0; i < kCorpusSize; ++i) {
      g.next(m);
      if (stream_filter >= 0 && static_cast<int>(m.stream) != stream_filter) continue;
      const StreamSchema& schema = schema_of(m.stream);
      std::string pattern(1, '"');  // "start_time":" or "time":"
      pattern.append(schema.fields[static_cast<size_t>(schema.time_slot)].name).append("\":\"");
      const size_t at = m.json.find(pattern);
      if (at == std::string::npos) throw std::runtime_error("generated message without event time");
      char check[24];
      put_time(check, m.time_ms);
      if (m.json.compare(at + pattern.size(), 24, check, 24) != 0)
        throw std::runtime_error("event time text differs from the expected format: " + m.json);
      // One arena, messages back to back, as a fetched Kafka message set holds them.
      offset_.push_back(arena_.size());
      arena_.append(m.json);
      time_ms_.push_back(m.time_ms);
      time_pos_.push_back(static_cast<uint32_t>(offset_.back() + at + pattern.size()));
      streams_.push_back(m.stream);
    }
    bytes_ = arena_.size();
    offset_.push_back(arena_.size());
    raw_.resize(streams_.size());
    for (size_t i = 0; i < raw_.size(); ++i) {
      raw_[i].stream = streams_[i];
      raw_[i].payload = std::string_view(arena_).substr(offset_[i], offset_[i + 1] - offset_[i]);
      raw_[i].source = {"bench", 0, static_cast<int64_t>(i)};
    }
    const int64_t span = time_ms_.back() - time_ms_.front();
    cycle_shift_ms_ = span + std::max<int64_t>(1, span / static_cast<int64_t>(time_ms_.size()));
    set_cycle(0);
  }

  size_t size() const { return raw_.size(); }
  size_t bytes() const { return bytes_; }
  const RawMessage& operator[](size_t i) const { return raw_[i]; }
  std::span<const RawMessage> slice(size_t from, size_t n) const {
    return {raw_.data() + from, std::min(n, raw_.size() - from)};
  }
  int64_t span_ms() const { return time_ms_.back() - time_ms_.front(); }
  int64_t cycle_ms() const { return cycle_shift_ms_; }

  // Rewrites every message's event time to its generated time + cycle * shift,
  // so cycle k+1 follows cycle k in event time. Views in RawMessage stay valid.
  void set_cycle(int64_t cycle) {
    if (cycle == cycle_) return;
    cycle_ = cycle;
    for (size_t i = 0; i < time_pos_.size(); ++i)
      put_time(arena_.data() + time_pos_[i], time_ms_[i] + cycle * cycle_shift_ms_);
  }
  void next_cycle() { set_cycle(cycle_ + 1); }

 private:
  std::string arena_;  // never resized after construction: RawMessage views point into it
  std::vector<size_t> offset_;
  std::vector<int64_t> time_ms_;
  std::vector<size_t> time_pos_;
  std::vector<Stream> streams_;
  std::vector<RawMessage> raw_;
  size_t bytes_ = 0;
  int64_t cycle_shift_ms_ = 0;
  int64_t cycle_ = -1;
};

// One corpus per stream filter, generated on first use and shared by every run.
Corpus& corpus(int stream_filter = -1) {
  static std::unique_ptr<Corpus> c[kStreamCount + 1];
  auto& slot = c[static_cast<size_t>(stream_filter + 1)];
  if (!slot) slot = std::make_unique<Corpus>(stream_filter);
  return *slot;
}

// ---- rules ---------------------------------------------------------------------

std::shared_ptr<const rules::RuleSet> load_or_throw(const rules::LoadResult& r) {
  if (!r.ok()) {
    std::string msg = "rules failed to load:";
    for (const auto& d : r.diagnostics) msg.append("\n").append(rules::format_text(d));
    throw std::runtime_error(msg);
  }
  return r.rules;
}

std::shared_ptr<const rules::RuleSet> first_slice_rules() {
  return load_or_throw(
      rules::load_rule_files({std::string(TOCSIN_SOURCE_DIR) + "/examples/rules/first_slice.yaml"}));
}

constexpr const char* kSingleFilterCount = R"(rules:
  - id: bench.single_filter_count
    stream: calls
    where: duration_s < 30
    window:
      group_by: [caller]
      size: 1h
    aggregates:
      n: count()
    having: n >= 1000000
    alert:
      type: bench.count
      severity: low
      title: "Caller {caller} made {n} short calls"
)";

std::shared_ptr<const rules::RuleSet> single_filter_count_rules() {
  return load_or_throw(rules::load_rules({rules::Source{"single_filter_count.yaml", kSingleFilterCount}}));
}

class CountingSignalSink final : public rules::SignalSink {
 public:
  void on_signal(const rules::Signal&) override { ++signals; }
  uint64_t signals = 0;
};

class NullOutputSink final : public OutputSink {
 public:
  void alert(std::string_view key, std::string_view json) override {
    ++alerts;
    benchmark::DoNotOptimize(key.data());
    benchmark::DoNotOptimize(json.data());
  }
  void dead_letter(std::string_view, const DeadLetter&) override { ++dead_letters; }
  uint64_t alerts = 0;
  uint64_t dead_letters = 0;
};

// ---- BM_Decode -----------------------------------------------------------------

void BM_Decode(benchmark::State& state, Stream stream) {
  Corpus& c = corpus(static_cast<int>(stream));
  c.set_cycle(0);
  Decoder decoder;
  Event event;
  uint64_t errors = 0;
  for (size_t i = 0; i < c.size(); ++i)  // warm-up; also proves the corpus decodes
    errors += !decoder.decode(c[i].stream, c[i].payload, kFarFutureMs, event).ok();
  if (errors) {
    state.SkipWithError("generated messages failed to decode");
    return;
  }
  const uint64_t a0 = allocs();
  size_t i = 0;
  for (auto _ : state) {
    const RawMessage& m = c[i];
    const DecodeResult r = decoder.decode(m.stream, m.payload, kFarFutureMs, event);
    errors += !r.ok();
    benchmark::DoNotOptimize(event);
    if (++i == c.size()) i = 0;
  }
  const auto n = static_cast<int64_t>(state.iterations());
  state.SetItemsProcessed(n);
  state.SetBytesProcessed(n * static_cast<int64_t>(c.bytes() / c.size()));
  state.counters["allocs_per_event"] = static_cast<double>(allocs() - a0) / static_cast<double>(n);
  state.counters["errors"] = static_cast<double>(errors);
  state.counters["corpus"] = static_cast<double>(c.size());
}
BENCHMARK_CAPTURE(BM_Decode, calls, Stream::kCalls)->Apply(fixed_iterations);
BENCHMARK_CAPTURE(BM_Decode, faults, Stream::kFaults)->Apply(fixed_iterations);
BENCHMARK_CAPTURE(BM_Decode, complaints, Stream::kComplaints)->Apply(fixed_iterations);

// ---- BM_DecodeEvaluate ------------------------------------------------------------

// Cycles to replay before timing: one to create the keys, then as many as it
// takes for the longest sliding window to fill with events of later cycles.
int warmup_cycles(const Corpus& c, const rules::RuleSet& rules) {
  int64_t longest = 0;
  for (const rules::Rule& r : rules.rules)
    if (r.kind == rules::RuleKind::kWindow && r.window_type == rules::WindowType::kSliding)
      longest = std::max(longest, r.window_ms);
  return 1 + static_cast<int>((longest + c.cycle_ms() - 1) / c.cycle_ms());
}

// Decodes and evaluates one message; returns false on a decode error.
// Ticks the engine every 1000 events with the event time as "now", as a worker
// does after each batch (timers fire, idle keys are swept).
inline bool decode_evaluate(Decoder& d, rules::Engine& engine, Event& event, const RawMessage& m) {
  if (!d.decode(m.stream, m.payload, kFarFutureMs, event).ok()) return false;
  event.source = m.source;
  engine.on_event(event);
  static thread_local uint32_t n = 0;
  if (++n % 1000 == 0) engine.on_tick(event.time_ms);
  return true;
}

void run_decode_evaluate(benchmark::State& state, Corpus& c,
                         std::shared_ptr<const rules::RuleSet> rules,
                         const rules::TableSource* tables = nullptr) {
  c.set_cycle(0);
  Decoder decoder;
  CountingSignalSink sink;
  rules::Engine engine(std::move(rules), sink, nullptr, tables);
  Event event;
  uint64_t errors = 0;
  const double heap0 = heap_mib();

  // Warm-up: the first cycle creates every key, the last is the steady state.
  const int warmup = warmup_cycles(c, engine.rule_set());
  uint64_t warmup_allocs = 0, steady_allocs = 0;
  for (int cycle = 0; cycle < warmup; ++cycle) {
    if (cycle > 0) c.next_cycle();
    const uint64_t a0 = allocs();
    for (size_t i = 0; i < c.size(); ++i) errors += !decode_evaluate(decoder, engine, event, c[i]);
    (cycle == 0 ? warmup_allocs : steady_allocs) = allocs() - a0;
  }
  if (errors) {
    state.SkipWithError("generated messages failed to decode");
    return;
  }
  const uint64_t signals_before = sink.signals;

  c.next_cycle();
  size_t i = 0;
  for (auto _ : state) {
    errors += !decode_evaluate(decoder, engine, event, c[i]);
    if (++i == c.size()) {
      state.PauseTiming();
      c.next_cycle();
      state.ResumeTiming();
      i = 0;
    }
  }
  const auto n = static_cast<int64_t>(state.iterations());
  state.SetItemsProcessed(n);
  state.counters["allocs_per_event"] = static_cast<double>(steady_allocs) / static_cast<double>(c.size());
  state.counters["allocs_per_event_warmup"] = static_cast<double>(warmup_allocs) / static_cast<double>(c.size());
  state.counters["warmup_cycles"] = warmup;
  state.counters["signals_per_Mev"] =
      static_cast<double>(sink.signals - signals_before) * 1e6 / static_cast<double>(n);
  int64_t keys = 0;
  uint64_t late = 0;
  for (const auto& rc : engine.counters()) {
    keys += rc.keys.load(std::memory_order_relaxed);
    late += rc.late.load(std::memory_order_relaxed);
  }
  state.counters["keys"] = static_cast<double>(keys);
  state.counters["late"] = static_cast<double>(late);  // must stay 0: event time moves forward
  state.counters["state_MiB"] = heap_mib() - heap0;
  state.counters["errors"] = static_cast<double>(errors);
}

void BM_DecodeEvaluate_FirstSlice(benchmark::State& state) {
  run_decode_evaluate(state, corpus(), first_slice_rules());
}
BENCHMARK(BM_DecodeEvaluate_FirstSlice)->Apply(fixed_iterations);

// The rule listens to calls only, so it is fed the calls of the corpus.
void BM_DecodeEvaluate_SingleFilterCount(benchmark::State& state) {
  run_decode_evaluate(state, corpus(static_cast<int>(Stream::kCalls)), single_filter_count_rules());
}
BENCHMARK(BM_DecodeEvaluate_SingleFilterCount)->Apply(fixed_iterations);

// ---- BM_DecodeEvaluate_Mix50 -------------------------------------------------------

// 50 rules of every kind over the three streams: 24 filters (lists, prefixes,
// arithmetic, time of day, one regular expression), 12 windows (sliding,
// tumbling, session; count, count_distinct, sum/avg/min/max, count_if, rate),
// 8 per-kind fault and complaint rules, a sequence, 3 absence clocks, a
// watch-list lookup and a score.
std::string mix50_text() {
  std::string r = "rules:\n";
  auto add = [&r](const std::string& body) { r += "  - " + body + "\n"; };
  for (int i = 0; i < 8; ++i)
    add("{id: f" + std::to_string(i) + ", stream: calls, where: 'duration_s > " + std::to_string(300 + i * 60) +
        " and not answered', alert: {severity: low}}");
  for (int i = 0; i < 6; ++i)
    add("{id: p" + std::to_string(i) + ", stream: calls, where: 'starts_with(callee, \"17" + std::to_string(i) +
        "\") and duration_s < 10', alert: {severity: low}}");
  for (int i = 0; i < 6; ++i)
    add("{id: c" + std::to_string(i) + ", stream: calls, where: 'caller_class in [\"virtual_170\", \"international\"] and duration_s > " +
        std::to_string(i * 100) + "', alert: {severity: medium}}");
  for (int i = 0; i < 3; ++i)
    add("{id: n" + std::to_string(i) + ", stream: calls, where: 'hour_of_day(start_time, 8h) < " + std::to_string(4 + i) +
        " and duration_s > 600', alert: {severity: low}}");
  add("{id: spoof, stream: calls, where: 'origin == \"international\" and matches(display_number, \"^95[0-9]{3}$\")', alert: {severity: critical}}");
  for (int i = 0; i < 4; ++i)
    add("{id: w" + std::to_string(i) + ", stream: calls, where: 'duration_s < 30', window: {group_by: [caller], size: " +
        std::to_string(1 + i) + "h}, aggregates: {s: count_distinct(callee), n: count()}, having: 's >= " + std::to_string(20 + i * 10) +
        "', alert: {severity: high}}");
  add("{id: w_avg, stream: calls, window: {group_by: [caller], size: 24h}, aggregates: {t: sum(duration_s), a: avg(duration_s), hi: max(duration_s)}, having: 'a < 5 and hi < 20', alert: {severity: low}}");
  add("{id: w_rate, stream: calls, window: {type: session, group_by: [caller], gap: 10m}, aggregates: {n: count(), u: count_if(not answered), r: rate()}, having: 'n >= 30 and u / n > 0.8', alert: {severity: medium}}");
  add("{id: w_tel, stream: faults, on: [telemetry], window: {type: tumbling, group_by: [network_id], size: 1h}, aggregates: {k: count(), lo: min(indoor_temp_c), m: avg(indoor_temp_c)}, having: 'k >= 3 and m < 18', alert: {severity: medium}}");
  add("{id: w_sup, stream: faults, on: [telemetry], window: {group_by: [network_id], size: 30m}, aggregates: {lo: min(supply_temp_c)}, having: 'lo < 70', alert: {severity: high}}");
  add("{id: w_cl, stream: complaints, on: [received], where: 'starts_with(category, \"heating.\")', window: {group_by: [building], size: 2h}, aggregates: {p: count_distinct(complainant)}, having: 'p >= 3', alert: {severity: high}}");
  add("{id: w_grid, stream: complaints, on: [received], window: {type: tumbling, group_by: [category, grid], size: 7d}, aggregates: {n: count()}, having: 'n >= 500', alert: {severity: low}}");
  add("{id: w_cd, stream: complaints, on: [received], window: {type: session, group_by: [district], gap: 1h}, aggregates: {n: count()}, having: 'n >= 100000', alert: {severity: low}}");
  add("{id: w_eng, stream: calls, window: {group_by: [cell_id], size: 1h}, aggregates: {n: count()}, having: 'n >= 100000', alert: {severity: low}}");
  const char* kinds[] = {"opened", "updated", "restored", "planned"};
  for (const char* k : kinds) add(std::string("{id: fk_") + k + ", stream: faults, on: [" + k + "], alert: {severity: medium}}");
  const char* statuses[] = {"escalated", "reopened", "returned", "extended"};
  for (const char* k : statuses) add(std::string("{id: cs_") + k + ", stream: complaints, on: [" + k + "], alert: {severity: low}}");
  add("{id: seq, sequence: {within: 2h, first: {stream: calls, where: 'caller_class == \"virtual_170\"', key: [callee]}, then: {stream: calls, where: 'duration_s > 600', key: [caller]}}, alert: {severity: critical}}");
  add("{id: sla_contact, stream: complaints, absence: {key: [ticket_id], start: {on: [signed]}, deadlines: [{name: contact, after: 1h, until: {on: [contacted]}}], cancel: {on: [closed]}}, alert: {severity: high}}");
  add("{id: sla_resolve, stream: complaints, absence: {key: [ticket_id], start: {on: [signed]}, deadlines: [{name: resolve, after: 24h, until: {on: [resolved, closed]}}]}, alert: {severity: high}}");
  add("{id: sla_sign, stream: complaints, absence: {key: [ticket_id], start: {on: [dispatched, returned]}, deadlines: [{name: sign, after: 2h, until: {on: [signed]}}]}, alert: {severity: medium}}");
  add("{id: watch, stream: calls, where: 'in_table(\"risky\", caller) and answered', alert: {severity: critical}}");
  add("{id: score, stream: calls, window: {group_by: [caller], size: 1h}, aggregates: {s: count_distinct(callee), a: avg(duration_s)}, "
      "score: {features: [{name: fan, value: s / 20, weight: 50}, {name: short, value: a < 30, weight: 30}, {name: virt, value: 'caller_class == \"virtual_170\"', weight: 20}], levels: {low: 0, high: 60}}, "
      "having: 'score >= 80', alert: {severity: from_score}}");
  return r;
}

rules::TableCatalog mix50_catalog() {
  rules::TableCatalog cat;
  cat.tables.push_back({"risky", {{"number", rules::Type::kString}, {"level", rules::Type::kInt}}, rules::KeyNormalization::kPhone});
  return cat;
}

// The 50 rules and their 10k-number watch-list; `rules` is null (and `error`
// says why) when the mix does not load.
struct Mix50 {
  std::shared_ptr<const rules::RuleSet> rules;
  std::unique_ptr<rules::TableRegistry> tables;
  std::string error;
};
Mix50 mix50() {
  Mix50 m;
  const rules::TableCatalog cat = mix50_catalog();
  const auto loaded = rules::load_rules({rules::Source{"mix50.yaml", mix50_text()}}, &cat);
  if (!loaded.ok()) {
    m.error = rules::format_text(loaded.diagnostics.front());
    return m;
  }
  if (loaded.rules->rules.size() != 50) {
    m.error = "the mix must have 50 rules";
    return m;
  }
  m.tables = std::make_unique<rules::TableRegistry>(cat);
  std::vector<rules::RowPtr> rows;
  for (int i = 0; i < 10000; ++i) {  // a 10k-number watch-list
    const std::string number = "1390000" + std::to_string(1000 + i);
    const Value cells[] = {Value::of_string(number), Value::of_int(3)};
    rows.push_back(rules::TableRow::make(cells));
  }
  m.tables->replace("risky", std::move(rows));
  m.rules = loaded.rules;
  return m;
}

// Runs `run(mix)`, or skips the benchmark with the reason when the mix does not load.
template <typename Run>
void with_mix50(benchmark::State& state, Run run) {
  const Mix50 m = mix50();
  if (!m.rules) return state.SkipWithError(m.error.c_str());
  run(m);
}

void BM_DecodeEvaluate_Mix50(benchmark::State& state) {
  with_mix50(state, [&state](const Mix50& m) {
    run_decode_evaluate(state, corpus(), m.rules, m.tables.get());
    state.counters["rules"] = 50;
  });
}
BENCHMARK(BM_DecodeEvaluate_Mix50)->Apply(fixed_iterations);

// ---- BM_PendingTimers ----------------------------------------------------------

// 10 M running service clocks (one 24 h deadline each, started by `signed`
// complaints with distinct ticket ids), then all fired. Reports the cost per
// start, the heap per pending timer and the cost per fired timer.
void BM_PendingTimers(benchmark::State& state) {
  const int64_t n = state.range(0);
  const auto loaded = rules::load_rules({rules::Source{"sla.yaml", R"(rules:
  - id: sla
    stream: complaints
    absence:
      key: [ticket_id]
      start: {on: [signed]}
      deadlines: [{name: resolve, after: 24h, until: {on: [resolved]}}]
    alert: {severity: high, title: "ticket {ticket_id} missed {deadline}"}
)"}});
  for (auto _ : state) {
    CountingSignalSink sink;
    rules::Engine engine(loaded.rules, sink);
    Decoder decoder;
    Event event;
    char json[160];
    const double heap0 = heap_mib();
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < n; ++i) {
      const int len = std::snprintf(json, sizeof json,
                                    R"({"ticket_id":"T%010lld","time":%lld,"status":"signed","category":"heating.no_heat"})",
                                    static_cast<long long>(i), static_cast<long long>(kStartMs + i));
      if (!decoder.decode(Stream::kComplaints, {json, static_cast<size_t>(len)}, kFarFutureMs, event).ok()) {
        state.SkipWithError("bad event");
        return;
      }
      engine.on_event(event);
    }
    const auto t1 = std::chrono::steady_clock::now();
    const double heap1 = heap_mib();
    engine.on_tick(kStartMs + n + 86400000);  // every deadline has passed
    const auto t2 = std::chrono::steady_clock::now();
    const double start_ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(n);
    state.counters["pending_timers"] = static_cast<double>(n);
    state.counters["ns_per_start"] = start_ns;
    state.counters["bytes_per_timer"] = (heap1 - heap0) * 1024 * 1024 / static_cast<double>(n);
    state.counters["ns_per_fire"] = std::chrono::duration<double, std::nano>(t2 - t1).count() / static_cast<double>(n);
    state.counters["fired"] = static_cast<double>(sink.signals);
    state.counters["heap_after_fire_MiB"] = heap_mib() - heap0;
  }
}
BENCHMARK(BM_PendingTimers)->Arg(10'000'000)->Iterations(1)->Unit(benchmark::kSecond);

// ---- BM_Worker_NoKafka -----------------------------------------------------------

// Replays the corpus in batches; a new cycle starts when the previous one was
// consumed (the caller rewrites event times between cycles).
class ReplaySource final : public EventSource {
 public:
  ReplaySource(const Corpus& c, size_t batch) : c_(c), batch_(batch) {}
  std::span<const RawMessage> poll(int) override {
    const auto s = c_.slice(pos_, batch_);
    pos_ += s.size();
    return s;
  }
  void batch_done() override {}
  bool at_end() const { return pos_ >= c_.size(); }
  void rewind() { pos_ = 0; }

 private:
  const Corpus& c_;
  size_t batch_;
  size_t pos_ = 0;
};

// Wall clock moved far ahead, so the decoder's future-skew check accepts the
// shifted event times while the engine's sweep timer still runs on real time.
class FarFutureClock final : public Clock {
 public:
  int64_t now_ms() const override { return wall_.now_ms() - wall_start_ + kFarFutureMs; }

 private:
  WallClock wall_;
  int64_t wall_start_ = wall_.now_ms();
};

void run_worker(benchmark::State& state, Corpus& c, std::shared_ptr<const rules::RuleSet> rules,
                const rules::TableSource* tables = nullptr) {
  constexpr size_t kBatch = 1000;
  c.set_cycle(0);
  FarFutureClock clock;
  NullOutputSink out;
  alerts::AlertEncoder encoder(out, clock);
  rules::Engine engine(std::move(rules), encoder, nullptr, tables);
  WorkerStats stats;
  ReplaySource source(c, kBatch);
  Worker worker(source, out, engine, clock, DecodeLimits{}, stats);
  auto one_cycle = [&] {
    while (!source.at_end()) worker.run_once(0);
    source.rewind();
    c.next_cycle();
  };

  // Warm-up as in run_decode_evaluate: the last cycle is the steady state.
  const int warmup = warmup_cycles(c, engine.rule_set());
  for (int cycle = 1; cycle < warmup; ++cycle) one_cycle();
  const uint64_t a0 = allocs();
  const uint64_t alerts0 = out.alerts;
  one_cycle();
  const uint64_t steady_allocs = allocs() - a0;
  const uint64_t steady_alerts = out.alerts - alerts0;

  int64_t items = 0;
  for (auto _ : state) {
    items += static_cast<int64_t>(worker.run_once(0));
    if (source.at_end()) {
      state.PauseTiming();
      source.rewind();
      c.next_cycle();
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(items);
  uint64_t processed = 0, failed = 0;
  for (int s = 0; s < kStreamCount; ++s) {
    processed += stats.processed[static_cast<size_t>(s)].load();
    for (const auto& f : stats.failed[static_cast<size_t>(s)]) failed += f.load();
  }
  state.counters["allocs_per_event"] = static_cast<double>(steady_allocs) / static_cast<double>(c.size());
  state.counters["alerts_per_cycle"] = static_cast<double>(steady_alerts);
  state.counters["warmup_cycles"] = warmup;
  state.counters["dead_letters"] = static_cast<double>(out.dead_letters);
  state.counters["failed"] = static_cast<double>(failed);
  benchmark::DoNotOptimize(processed);
}

void BM_Worker_NoKafka(benchmark::State& state) { run_worker(state, corpus(), first_slice_rules()); }
BENCHMARK(BM_Worker_NoKafka)->Apply(fixed_iterations);

// The issue's two targets through the real worker loop (stats, clock reads,
// alert encoding, the next message prefetched), rather than decode + on_event.
void BM_Worker_NoKafka_SingleFilterCount(benchmark::State& state) {
  run_worker(state, corpus(static_cast<int>(Stream::kCalls)), single_filter_count_rules());
}
BENCHMARK(BM_Worker_NoKafka_SingleFilterCount)->Apply(fixed_iterations);

void BM_Worker_NoKafka_Mix50(benchmark::State& state) {
  with_mix50(state, [&state](const Mix50& m) { run_worker(state, corpus(), m.rules, m.tables.get()); });
}
BENCHMARK(BM_Worker_NoKafka_Mix50)->Apply(fixed_iterations);

}  // namespace
