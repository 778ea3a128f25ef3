#pragma once
// The alerts topic as the alert desk uses it: a consumer-group member
// ("<group_id>.desk") reading the alerts the rule engine raised, and a
// producer writing every lifecycle change back to the same topic (header
// tocsin-record: lifecycle, key = alert id), which the reader skips.
//
// At-least-once: commit() stores the offsets of everything poll() returned,
// so call it only after the desk has persisted those alerts; a restart
// re-reads the rest and the desk deduplicates by alert id. One thread.
#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "connectors/kafka_options.h"
#include "pipeline/stats.h"

namespace tocsin::connectors {

struct AlertTopicStats {
  Counter raised_read{};         // raised alerts handed to the desk
  Counter lifecycle_written{};   // lifecycle records acknowledged by the broker
  Counter lifecycle_failed{};    // delivery errors (each produced again)
};

class AlertTopic {
 public:
  // Throws std::invalid_argument on a bad property, std::runtime_error when
  // a client cannot start.
  explicit AlertTopic(const KafkaOptions& options);
  ~AlertTopic();
  AlertTopic(const AlertTopic&) = delete;
  AlertTopic& operator=(const AlertTopic&) = delete;

  // Raised alerts (payloads) read within timeout_ms; lifecycle records are
  // skipped. Views are valid until the next poll().
  std::vector<std::string_view> poll(int timeout_ms);
  // Commits the offsets of every message poll() has returned (synchronously).
  void commit();
  // Produces one lifecycle record; a failed delivery is produced again.
  void publish(std::string_view alert_id, std::string_view json);
  // Serves delivery reports; call regularly.
  void serve();
  // Waits for outstanding lifecycle records, commits, leaves the group.
  void close(int timeout_ms);
  const AlertTopicStats& stats() const { return stats_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  AlertTopicStats stats_;
};

}  // namespace tocsin::connectors
