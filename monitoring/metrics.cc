#include "monitoring/metrics.h"

#include <prometheus/gauge.h>
#include <prometheus/text_serializer.h>

#include <limits>

#include <sstream>

#include "rules/engine.h"

namespace tocsin::monitoring {

using prometheus::MetricType;

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {}

void Metrics::add_collector(Collector c) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(c));
}

std::string Metrics::render() const {
  Families families = registry_->Collect();
  {
    std::lock_guard lock(mu_);
    for (const auto& c : collectors_) c(families);
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

prometheus::MetricFamily make_family(std::string name, std::string help, MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void add_sample(prometheus::MetricFamily& f, std::vector<prometheus::ClientMetric::Label> labels, double value) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  switch (f.type) {
    case MetricType::Counter: m.counter.value = value; break;
    case MetricType::Gauge: m.gauge.value = value; break;
    default: m.untyped.value = value;
  }
  f.metric.push_back(std::move(m));
}

void add_build_info(Metrics& m, const std::string& version) {
  auto& fam = prometheus::BuildGauge()
                  .Name("tocsin_build_info")
                  .Help("Tocsin build; the value is always 1")
                  .Register(m.registry());
  fam.Add({{"version", version}}).Set(1);
}

namespace {

// One histogram sample from per-worker HistogramCounters (bounds in a unit
// that `scale` turns into seconds), summed over the workers.
template <size_t N, class Get>
prometheus::ClientMetric histogram_sample(const std::vector<const WorkerStats*>& workers, const std::array<uint64_t, N>& upper,
                                          double scale, Get get, std::vector<prometheus::ClientMetric::Label> labels) {
  prometheus::ClientMetric h;
  h.label = std::move(labels);
  uint64_t cumulative = 0, sum = 0;
  for (size_t b = 0; b <= N; ++b) {
    for (const WorkerStats* w : workers) cumulative += get(*w).buckets[b].load(std::memory_order_relaxed);
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = b < N ? static_cast<double>(upper[b]) * scale : std::numeric_limits<double>::infinity();
    h.histogram.bucket.push_back(bucket);
  }
  for (const WorkerStats* w : workers) sum += get(*w).sum.load(std::memory_order_relaxed);
  h.histogram.sample_count = cumulative;
  h.histogram.sample_sum = static_cast<double>(sum) * scale;
  return h;
}

}  // namespace

Metrics::Collector pipeline_collector(std::vector<const WorkerStats*> workers,
                                      std::array<std::string, kStreamCount> topics) {
  return [workers = std::move(workers), topics = std::move(topics)](Families& out) {
    auto sum = [&](auto get) {
      double v = 0;
      for (const WorkerStats* w : workers) v += static_cast<double>(get(*w));
      return v;
    };
    auto consumed = make_family("tocsin_events_consumed_total", "Messages read from the input topics", MetricType::Counter);
    auto processed = make_family("tocsin_events_processed_total", "Messages decoded and evaluated by the rules", MetricType::Counter);
    auto failed = make_family("tocsin_events_failed_total", "Messages rejected and sent to the dead-letter topic, by stage and reason", MetricType::Counter);
    auto decoded = make_family("tocsin_events_decoded_total",
                               "Messages by the decoder path that decided them: shape (the topic's learnt key order, "
                               "compact JSON), flat (one pass over a flat object), simdjson (anything else, and every "
                               "rejection but an oversized message, which is not read). A producer that leaves the "
                               "first two costs CPU, not correctness",
                               MetricType::Counter);
    auto late = make_family("tocsin_events_late_total", "Valid events older than their partition's watermark minus the allowed lateness, routed to the late-events topic", MetricType::Counter);
    auto last = make_family("tocsin_last_event_time_seconds", "Event time of the newest processed event, by topic", MetricType::Gauge);
    for (int s = 0; s < kStreamCount; ++s) {
      const std::string& topic = topics[static_cast<size_t>(s)];
      add_sample(consumed, {{"topic", topic}}, sum([s](const WorkerStats& w) { return w.consumed[s].load(std::memory_order_relaxed); }));
      add_sample(processed, {{"topic", topic}}, sum([s](const WorkerStats& w) { return w.processed[s].load(std::memory_order_relaxed); }));
      add_sample(late, {{"topic", topic}}, sum([s](const WorkerStats& w) { return w.late[s].load(std::memory_order_relaxed); }));
      for (int by = 0; by < kDecodedByCount; ++by)
        add_sample(decoded, {{"topic", topic}, {"path", std::string(to_string(static_cast<DecodedBy>(by)))}},
                   sum([s, by](const WorkerStats& w) { return w.decoded_by[s][by].load(std::memory_order_relaxed); }));
      int64_t newest = 0;
      for (const WorkerStats* w : workers) newest = std::max(newest, w->last_event_time_ms[s].load(std::memory_order_relaxed));
      add_sample(last, {{"topic", topic}}, static_cast<double>(newest) / 1000.0);
    }
    for (int r = 1; r < kDecodeErrorCount; ++r) {
      const double v = sum([r](const WorkerStats& w) {
        uint64_t n = 0;
        for (int s = 0; s < kStreamCount; ++s) n += w.failed[s][r].load(std::memory_order_relaxed);
        return n;
      });
      add_sample(failed, {{"stage", "decode"}, {"reason", std::string(reason_code(static_cast<DecodeError>(r)))}}, v);
    }
    auto hist = make_family("tocsin_event_processing_seconds", "Time to decode one event and evaluate the rules on it", MetricType::Histogram);
    prometheus::ClientMetric h;
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= kLatencyBucketsSeconds.size(); ++b) {
      cumulative += static_cast<uint64_t>(sum([b](const WorkerStats& w) { return w.latency_buckets[b].load(std::memory_order_relaxed); }));
      prometheus::ClientMetric::Bucket bucket;
      bucket.cumulative_count = cumulative;
      bucket.upper_bound = b < kLatencyBucketsSeconds.size() ? kLatencyBucketsSeconds[b] : std::numeric_limits<double>::infinity();
      h.histogram.bucket.push_back(bucket);
    }
    h.histogram.sample_count = cumulative;
    h.histogram.sample_sum = sum([](const WorkerStats& w) { return w.latency_sum_ns.load(std::memory_order_relaxed); }) * 1e-9;
    hist.metric.push_back(std::move(h));
    auto stages = make_family("tocsin_stage_duration_seconds",
                              "Time of one pipeline stage in a worker: decode (a message), evaluate (the rules on an event, "
                              "without producing), produce (handing one output to the Kafka producer); decode and evaluate "
                              "are sampled, one message in " + std::to_string(kStageSampleEvery) + " counting for " +
                                  std::to_string(kStageSampleEvery),
                              MetricType::Histogram);
    for (int st = 0; st < kStageCount; ++st)
      stages.metric.push_back(histogram_sample(workers, kStageBucketsNs, 1e-9, [st](const WorkerStats& w) -> const auto& {
        return w.stage[static_cast<size_t>(st)];
      }, {{"stage", kStageNames[st]}}));
    auto age = make_family("tocsin_event_age_seconds",
                           "Wall clock minus event time when the rules evaluate an event, by topic", MetricType::Histogram);
    for (int st = 0; st < kStreamCount; ++st)
      age.metric.push_back(histogram_sample(workers, kEventAgeBucketsMs, 1e-3, [st](const WorkerStats& w) -> const auto& {
        return w.event_age[static_cast<size_t>(st)];
      }, {{"topic", topics[static_cast<size_t>(st)]}}));
    for (auto* f : {&consumed, &processed, &failed, &decoded, &late, &last, &hist, &stages, &age})
      out.push_back(std::move(*f));
  };
}

Metrics::Collector rules_collector(std::vector<const rules::Engine*> engines) {
  return [engines = std::move(engines)](Families& out) {
    if (engines.empty()) return;
    std::vector<rules::EngineSnapshot> snaps;
    for (const rules::Engine* e : engines) snaps.push_back(e->snapshot());
    const rules::RuleSet& set = *snaps.front().rules;  // workers converge on one version
    auto evals = make_family("tocsin_rule_evaluations_total", "Events offered to a rule", MetricType::Counter);
    auto matches = make_family("tocsin_rule_matches_total", "Events that passed a rule's where clause", MetricType::Counter);
    auto alerts = make_family("tocsin_alerts_emitted_total", "Alerts raised, by rule and severity", MetricType::Counter);
    auto late = make_family("tocsin_rule_late_events_total", "Events too old for a rule's window (not aggregated)", MetricType::Counter);
    auto keys = make_family("tocsin_rule_state_keys", "Live keys held by a rule: windows, pending sequences, running clocks", MetricType::Gauge);
    auto timers = make_family("tocsin_rule_pending_timers", "Deadline timers waiting to fire, by rule", MetricType::Gauge);
    auto rules_loaded = make_family("tocsin_rules_loaded", "Rules in the active rule set, labelled with its version", MetricType::Gauge);
    add_sample(rules_loaded, {{"rule_set_version", set.version}}, static_cast<double>(set.rules.size()));
    // Info metric (value 1): join on it, or alert on changes(count by (version) ...).
    auto active = make_family("tocsin_rules_active_info", "The active rule-set version; the value is always 1", MetricType::Gauge);
    add_sample(active, {{"version", set.version}}, 1);
    for (size_t i = 0; i < set.rules.size(); ++i) {
      const std::string& id = set.rules[i].id;
      double e = 0, m = 0, a = 0, l = 0, k = 0, t = 0;
      for (const auto& snap : snaps) {
        // A worker may still run the previous version: find the rule by id.
        for (size_t j = 0; j < snap.rules->rules.size(); ++j) {
          if (snap.rules->rules[j].id != id) continue;
          const auto& c = snap.counters[j];
          e += static_cast<double>(c.evaluations.load(std::memory_order_relaxed));
          m += static_cast<double>(c.matches.load(std::memory_order_relaxed));
          a += static_cast<double>(c.signals.load(std::memory_order_relaxed));
          l += static_cast<double>(c.late.load(std::memory_order_relaxed));
          k += static_cast<double>(c.keys.load(std::memory_order_relaxed));
          t += static_cast<double>(c.timers.load(std::memory_order_relaxed));
          break;
        }
      }
      add_sample(evals, {{"rule", id}}, e);
      add_sample(matches, {{"rule", id}}, m);
      add_sample(alerts, {{"rule", id}, {"severity", set.rules[i].severity}}, a);
      add_sample(late, {{"rule", id}}, l);
      add_sample(keys, {{"rule", id}}, k);
      add_sample(timers, {{"rule", id}}, t);
    }
    for (auto* f : {&rules_loaded, &active, &evals, &matches, &alerts, &late, &keys, &timers}) out.push_back(std::move(*f));
  };
}

}  // namespace tocsin::monitoring
