#include "connectors/kafka_metrics.h"

namespace tocsin::connectors {

using prometheus::MetricType;

monitoring::Metrics::Collector kafka_collector(std::vector<const KafkaIOStats*> workers,
                                               std::array<std::string, kStreamCount> topics) {
  return [workers = std::move(workers), topics = std::move(topics)](monitoring::Families& out) {
    auto sum = [&](auto get) {
      double v = 0;
      for (const KafkaIOStats* w : workers) v += static_cast<double>(get(*w));
      return v;
    };
    using monitoring::make_family;
    using monitoring::add_sample;
    auto lag = make_family("tocsin_consumer_lag_messages", "Messages behind the partition end, summed over assigned partitions (librdkafka statistics)", MetricType::Gauge);
    for (int s = 0; s < kStreamCount; ++s)
      add_sample(lag, {{"topic", topics[static_cast<size_t>(s)]}}, sum([s](const KafkaIOStats& w) { return w.consumer_lag[static_cast<size_t>(s)].load(std::memory_order_relaxed); }));
    out.push_back(std::move(lag));
    auto scalar = [&](const char* name, const char* help, MetricType type, double v) {
      auto f = make_family(name, help, type);
      add_sample(f, {}, v);
      out.push_back(std::move(f));
    };
    scalar("tocsin_alerts_produced_total", "Alert messages handed to the alerts topic producer", MetricType::Counter,
           sum([](const KafkaIOStats& w) { return w.alerts_produced.load(std::memory_order_relaxed); }));
    scalar("tocsin_dead_letters_produced_total", "Messages written to the dead-letter topic", MetricType::Counter,
           sum([](const KafkaIOStats& w) { return w.dead_letters_produced.load(std::memory_order_relaxed); }));
    scalar("tocsin_late_events_produced_total", "Late events written to the late-events topic", MetricType::Counter,
           sum([](const KafkaIOStats& w) { return w.late_produced.load(std::memory_order_relaxed); }));
    scalar("tocsin_producer_delivery_failures_total", "Delivery reports with an error; each message is produced again", MetricType::Counter,
           sum([](const KafkaIOStats& w) { return w.delivery_failures.load(std::memory_order_relaxed); }));
    scalar("tocsin_consumer_rebalances_total", "Partition assignments and revocations seen by the workers", MetricType::Counter,
           sum([](const KafkaIOStats& w) { return w.rebalances.load(std::memory_order_relaxed); }));
    scalar("tocsin_producer_queue_messages", "Messages waiting in the producer queues", MetricType::Gauge,
           sum([](const KafkaIOStats& w) { return w.producer_queue.load(std::memory_order_relaxed); }));
    scalar("tocsin_unacknowledged_batches", "Consumed batches whose outputs are not yet acknowledged (offsets not stored)", MetricType::Gauge,
           sum([](const KafkaIOStats& w) { return w.pending_batches.load(std::memory_order_relaxed); }));
  };
}

}  // namespace tocsin::connectors
