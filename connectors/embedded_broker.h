#pragma once
// The embedded broker: librdkafka's mock cluster, a real Kafka-protocol server
// on 127.0.0.1 inside this process (ephemeral ports). Used by `tocsin run` when
// no bootstrap.servers is configured, by `tocsin broker`, and by tests.
// Thread-safe (the mock cluster runs on its own thread).
#include <memory>
#include <string>

namespace tocsin::connectors {

class EmbeddedBroker {
 public:
  explicit EmbeddedBroker(int brokers = 3);
  ~EmbeddedBroker();
  EmbeddedBroker(const EmbeddedBroker&) = delete;
  EmbeddedBroker& operator=(const EmbeddedBroker&) = delete;

  const std::string& bootstrap() const { return bootstrap_; }
  int brokers() const { return brokers_; }
  // Creates a topic (replication factor 1). Throws on failure.
  void create_topic(const std::string& name, int partitions);

  // Fault injection. Broker ids are 1..brokers().
  void set_down(int broker_id);
  void set_up(int broker_id);
  void set_rtt(int broker_id, int rtt_ms);
  // The next `count` requests of Kafka API `api_key` (0 = Produce, 1 = Fetch, ...)
  // fail with the named error (e.g. "NOT_LEADER_FOR_PARTITION").
  void push_request_errors(int api_key, int count, const std::string& error_name);

  // Executes one text command: "down ID", "up ID", "rtt ID MS",
  // "errors API_KEY COUNT ERROR_NAME", "topic NAME PARTITIONS". Returns "" on
  // success or an error message.
  std::string command(const std::string& line);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string bootstrap_;
  int brokers_;
};

}  // namespace tocsin::connectors
