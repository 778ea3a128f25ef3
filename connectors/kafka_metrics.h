#pragma once
// Scrape-time collector for the Kafka I/O of every worker.
#include <vector>

#include "connectors/kafka_io.h"
#include "monitoring/metrics.h"

namespace tocsin::connectors {

monitoring::Metrics::Collector kafka_collector(std::vector<const KafkaIOStats*> workers,
                                               std::array<std::string, kStreamCount> topics);

}  // namespace tocsin::connectors
