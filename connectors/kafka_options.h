#pragma once
// Kafka settings shared by the source, the sinks and the tools. Any librdkafka
// property can be passed through `common`, `consumer` or `producer`; Tocsin's
// own defaults are applied first, so the config file can override them.
#include <array>
#include <map>
#include <string>

#include "pipeline/event.h"

typedef struct rd_kafka_conf_s rd_kafka_conf_t;

namespace tocsin::connectors {

struct Topics {
  std::array<std::string, kStreamCount> input{"calls", "faults", "complaints", "profiles"};
  std::string alerts = "alerts";
  std::string dead_letter = "tocsin.dlq";
  std::string late = "tocsin.late";
};

struct KafkaOptions {
  std::string bootstrap;  // bootstrap.servers
  std::string group_id = "tocsin";
  Topics topics;
  std::map<std::string, std::string> common;    // applied to consumer and producer
  std::map<std::string, std::string> consumer;  // consumer only
  std::map<std::string, std::string> producer;  // producer only
  int batch_size = 1000;                        // messages per poll
};

// librdkafka settings that make the embedded (mock) broker fast; see
// shared reference NOTES: the mock holds a fetch for the full wait, and
// rebalances wait for session.timeout.ms.
void apply_embedded_defaults(KafkaOptions& o);

enum class ClientRole { kConsumer, kProducer };
// Builds a librdkafka conf: Tocsin's defaults for the role, then `common`, then
// the role's map. Throws std::invalid_argument naming a bad property.
rd_kafka_conf_t* make_conf(const KafkaOptions& o, ClientRole role);
// Returns librdkafka's complaint about one property, or "" when it is valid.
std::string check_property(const std::string& name, const std::string& value);

}  // namespace tocsin::connectors
