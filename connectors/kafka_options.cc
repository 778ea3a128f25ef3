#include "connectors/kafka_options.h"

#include <librdkafka/rdkafka.h>

#include <stdexcept>

namespace tocsin::connectors {

void apply_embedded_defaults(KafkaOptions& o) {
  o.consumer.emplace("fetch.wait.max.ms", "5");
  o.consumer.emplace("session.timeout.ms", "6000");
  o.consumer.emplace("heartbeat.interval.ms", "500");
  o.producer.emplace("linger.ms", "5");
}

rd_kafka_conf_t* make_conf(const KafkaOptions& o, ClientRole role) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  auto set = [&](const std::string& k, const std::string& v) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      throw std::invalid_argument("kafka property '" + k + "': " + err);
    }
  };
  if (!o.bootstrap.empty()) set("bootstrap.servers", o.bootstrap);
  set("client.id", "tocsin");
  if (role == ClientRole::kConsumer) {
    set("group.id", o.group_id);
    set("enable.auto.offset.store", "false");  // offsets stored only after outputs are acked
    set("enable.auto.commit", "false");  // KafkaIO commits stored offsets itself (every second, and on drain)
    set("auto.offset.reset", "earliest");
    set("statistics.interval.ms", "5000");
    // librdkafka 2.0.2 stops fetching once this many messages are queued and
    // looks again only a second later: a consumer catching up on a backlog
    // stalls for most of every second at the default (100000). Keep about a
    // second of a worker's rate queued, bounded in memory.
    set("queued.min.messages", "1000000");
    set("queued.max.messages.kbytes", "131072");
  } else {
    set("enable.idempotence", "true");
    set("acks", "all");
    set("linger.ms", "5");
    set("compression.type", "lz4");
  }
  for (const auto& [k, v] : o.common) set(k, v);
  for (const auto& [k, v] : role == ClientRole::kConsumer ? o.consumer : o.producer) set(k, v);
  return conf;
}

std::string check_property(const std::string& name, const std::string& value) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  const bool ok = rd_kafka_conf_set(conf, name.c_str(), value.c_str(), err, sizeof err) == RD_KAFKA_CONF_OK;
  rd_kafka_conf_destroy(conf);
  return ok ? "" : err;
}

}  // namespace tocsin::connectors
