#pragma once
// Kafka I/O of one worker: a consumer-group member reading the input topics in
// batches (EventSource) and an idempotent producer for alerts and dead letters
// (OutputSink).
//
// At-least-once: the offsets of a batch are stored (and later auto-committed)
// only when every output emitted while handling that batch has been
// acknowledged by the broker, in batch order. A failed delivery is counted and
// produced again; it is never dropped. Used only from its worker's thread,
// except stats(), which any thread may read.
#include <atomic>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "connectors/kafka_options.h"
#include "pipeline/io.h"
#include "pipeline/stats.h"

namespace tocsin::connectors {

struct KafkaIOStats {
  Counter alerts_produced{};
  Counter dead_letters_produced{};
  Counter late_produced{};
  Counter delivery_failures{};  // delivery reports with an error (each re-produced)
  Counter rebalances{};
  std::array<std::atomic<int64_t>, kStreamCount> consumer_lag{};  // from librdkafka statistics
  std::atomic<int64_t> pending_batches{0};
  std::atomic<int64_t> producer_queue{0};
};

class KafkaIO final : public EventSource, public OutputSink {
 public:
  // Subscribes to options.topics.input. Throws std::invalid_argument on a bad
  // librdkafka property and std::runtime_error when a client cannot start.
  explicit KafkaIO(const KafkaOptions& options);
  ~KafkaIO() override;

  std::span<const RawMessage> poll(int timeout_ms) override;
  void batch_done() override;
  void alert(std::string_view key, std::string_view json) override;
  void dead_letter(std::string_view payload, const DeadLetter& info) override;
  void late(std::string_view payload, const DeadLetter& info) override;

  // Waits up to timeout_ms for every produced message to be acknowledged,
  // stores the offsets of completed batches and commits them synchronously.
  // Returns false if some outputs were still unacknowledged (their input will
  // be consumed again). Call drain() on every worker (each in its own thread,
  // concurrently) before close() on any: a commit refused because the group
  // is rebalancing is retried while the rebalance is served.
  bool drain(int timeout_ms);
  // Drains if not yet drained, then leaves the group and frees the clients.
  void close(int timeout_ms);
  const KafkaIOStats& stats() const { return stats_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  KafkaIOStats stats_;
};

// A plain producer for tools and tests (generator, replay): copies payloads,
// waits for acknowledgements in flush(). Not thread-safe.
class KafkaProducer {
 public:
  explicit KafkaProducer(const KafkaOptions& options);
  ~KafkaProducer();
  void produce(const std::string& topic, std::string_view key, std::string_view value);
  // Asks the cluster for its metadata: "" when a broker answered within
  // timeout_ms, else librdkafka's reason. The topics of `topics` that the
  // cluster does not list go to `missing` (a broker may still create them).
  std::string check_cluster(int timeout_ms, const std::vector<std::string>& topics, std::vector<std::string>& missing);
  // Waits until every message is acknowledged; returns the number that failed.
  int64_t flush(int timeout_ms);
  int64_t delivered() const;
  int64_t failed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tocsin::connectors
