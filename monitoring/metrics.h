#pragma once
// Metrics exposition. Hot-path counters stay in per-worker structs (plain
// single-writer atomics); collectors registered here read and sum them only
// when /metrics is scraped. Low-rate metrics may use the prometheus-cpp
// registry directly. Thread-safe: render() may run concurrently with workers.
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pipeline/event.h"
#include "pipeline/stats.h"

namespace tocsin::rules {
class Engine;
}

namespace tocsin::monitoring {

using Families = std::vector<prometheus::MetricFamily>;

class Metrics {
 public:
  using Collector = std::function<void(Families&)>;
  Metrics();
  prometheus::Registry& registry() { return *registry_; }
  void add_collector(Collector c);
  // The Prometheus text exposition format (version 0.0.4).
  std::string render() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  mutable std::mutex mu_;
  std::vector<Collector> collectors_;
};

// Helpers for collectors.
prometheus::MetricFamily make_family(std::string name, std::string help, prometheus::MetricType type);
void add_sample(prometheus::MetricFamily& f, std::vector<prometheus::ClientMetric::Label> labels,
                double value);

// tocsin_build_info{version=...} 1
void add_build_info(Metrics& m, const std::string& version);

// Events consumed / processed / failed by topic and reason, processing latency,
// last event time: summed over `workers` at scrape time.
Metrics::Collector pipeline_collector(std::vector<const WorkerStats*> workers,
                                      std::array<std::string, kStreamCount> topics);
// Per-rule evaluations, matches, alerts (by rule and the rule's own severity:
// a deadline's or score level's severity is not split out), late events, keys,
// timers; the active rule-set version (tocsin_rules_active_info{version} 1).
Metrics::Collector rules_collector(std::vector<const rules::Engine*> engines);

}  // namespace tocsin::monitoring
