#pragma once
// Keeps reference tables live (rules/tables.h): TableTopicReader follows a
// Kafka topic into a table of a TableRegistry; TableFileWatcher reloads table
// files when they change. Both run on a thread of their own and never stop on
// bad data: a bad record or file is logged, counted and skipped.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "connectors/kafka_options.h"
#include "pipeline/stats.h"
#include "rules/tables.h"

namespace tocsin::connectors {

struct TableTopicStats {
  Counter records{};      // records read
  Counter upserts{};      // rows applied
  Counter tombstones{};   // null values: keys erased
  Counter bad_records{};  // skipped: no key, a value that is not a row of the table
  std::atomic<bool> caught_up{false};  // every partition has been read to its end once
};

// Reads one topic from the beginning into one table and keeps following it:
// record key = the table key, value = a JSON object of columns
// (rules::parse_json_row), null value = tombstone (the key is erased). The
// latest record per key wins, as with a compacted topic. A plain consumer:
// it assigns every partition from the topic's metadata (no consumer group, no
// offset commits) and checks the metadata every 30 s for added partitions.
// The records of each poll are applied as one registry change.
//
// Thread-safe: stats() and wait_caught_up() may be called from any thread.
class TableTopicReader {
 public:
  // Throws std::invalid_argument for a table that `registry` does not
  // declare or a bad librdkafka property, std::runtime_error when the client
  // cannot start. Nothing is read before start().
  TableTopicReader(const KafkaOptions& kafka, std::string topic, std::string table,
                   rules::TableRegistry& registry);
  ~TableTopicReader();  // stops
  TableTopicReader(const TableTopicReader&) = delete;
  TableTopicReader& operator=(const TableTopicReader&) = delete;

  void start();
  void stop();  // returns within ~100 ms
  // Waits until every partition has been read to its end once (the table is
  // as complete as the topic was at start-up); false on timeout.
  bool wait_caught_up(std::chrono::milliseconds timeout) const;

  const TableTopicStats& stats() const { return stats_; }
  const std::string& topic() const { return topic_; }
  const std::string& table() const { return table_; }

 private:
  struct Impl;
  std::string topic_;
  std::string table_;
  TableTopicStats stats_;
  std::unique_ptr<Impl> impl_;
};

struct WatchedTableFile {
  std::string table;
  std::string path;
};

// Polls the files' modification time and size every `interval` and reloads a
// changed file into its table (TableRegistry::load_file) once it has looked the
// same for two polls in a row, so a file caught half-written is not loaded. A
// file with errors keeps the table's previous contents; its errors are logged
// with file:line. The files are assumed loaded already when start() is called.
class TableFileWatcher {
 public:
  TableFileWatcher(rules::TableRegistry& registry, std::vector<WatchedTableFile> files,
                   std::chrono::milliseconds interval = std::chrono::seconds(1));
  ~TableFileWatcher();  // stops
  TableFileWatcher(const TableFileWatcher&) = delete;
  TableFileWatcher& operator=(const TableFileWatcher&) = delete;

  void start();
  void stop();  // immediate: the thread waits on a condition variable

  uint64_t reloads() const { return reloads_.load(std::memory_order_relaxed); }
  uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<uint64_t> reloads_{0};
  std::atomic<uint64_t> failures_{0};
};

}  // namespace tocsin::connectors
