#include "connectors/table_topic.h"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace tocsin::connectors {

// ---------------------------------------------------------------------------
// TableTopicReader

struct TableTopicReader::Impl {
  TableTopicReader& owner;
  rules::TableRegistry& registry;
  const rules::TableSchema& schema;
  rd_kafka_t* rk = nullptr;
  rd_kafka_queue_t* queue = nullptr;
  std::thread thread;
  std::atomic<bool> stopping{false};
  mutable std::mutex mu;
  mutable std::condition_variable cv;  // stop requests and catch-up
  int partitions = 0;                  // assigned
  std::vector<bool> at_end;            // partition reached its end at least once
  std::vector<rules::TableChange> changes;
  std::vector<int32_t> ends;  // partitions that reached their end in this poll

  Impl(TableTopicReader& o, rules::TableRegistry& r, const rules::TableSchema& s) : owner(o), registry(r), schema(s) {}

  // Waits up to `d` unless stopping; returns false when stopping.
  bool pause(std::chrono::milliseconds d) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, d, [&] { return stopping.load(); });
    return !stopping.load();
  }

  // Partitions of the topic, or -1 when the topic is unknown or the metadata
  // cannot be read (the reason goes to `why`).
  int partition_count(std::string& why) {
    rd_kafka_topic_t* rkt = rd_kafka_topic_new(rk, owner.topic_.c_str(), nullptr);
    const rd_kafka_metadata_t* md = nullptr;
    const rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
    rd_kafka_topic_destroy(rkt);
    if (err) {
      why = rd_kafka_err2str(err);
      return -1;
    }
    int n = -1;
    if (md->topic_cnt == 1) {
      if (md->topics[0].err) why = rd_kafka_err2str(md->topics[0].err);
      else if (md->topics[0].partition_cnt == 0) why = "no partitions";
      else n = md->topics[0].partition_cnt;
    } else {
      why = "no metadata for the topic";
    }
    rd_kafka_metadata_destroy(md);
    return n;
  }

  // Assigns partitions [0, n): the ones already assigned keep their position,
  // new ones start at the beginning.
  bool assign(int n) {
    rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; ++p) rd_kafka_topic_partition_list_add(list, owner.topic_.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    if (partitions > 0) {  // keep the position of the partitions read so far
      rd_kafka_topic_partition_list_t* known = rd_kafka_topic_partition_list_new(partitions);
      for (int p = 0; p < partitions; ++p) rd_kafka_topic_partition_list_add(known, owner.topic_.c_str(), p);
      rd_kafka_position(rk, known);
      for (int p = 0; p < partitions && p < n; ++p)
        if (known->elems[p].offset >= 0) list->elems[p].offset = known->elems[p].offset;
      rd_kafka_topic_partition_list_destroy(known);
    }
    const rd_kafka_resp_err_t err = rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (err) {
      spdlog::error("tables: cannot assign topic {} to table {}: {}", owner.topic_, owner.table_, rd_kafka_err2str(err));
      return false;
    }
    {
      std::lock_guard lock(mu);
      at_end.resize(static_cast<size_t>(n), false);
      partitions = n;
    }
    return true;
  }

  void bad_record(const rd_kafka_message_t* m, const std::string& why) {
    bump(owner.stats_.bad_records);
    const uint64_t n = owner.stats_.bad_records.load(std::memory_order_relaxed);
    if (n <= 100 || n % 1000 == 0)
      spdlog::warn("tables: {} [{}] offset {}: record skipped: {} ({} bad records so far)", owner.topic_, m->partition,
                   m->offset, why, n);
  }

  void reached_end(int32_t partition) {
    std::lock_guard lock(mu);
    if (partition < 0 || static_cast<size_t>(partition) >= at_end.size() || at_end[static_cast<size_t>(partition)]) return;
    at_end[static_cast<size_t>(partition)] = true;
    for (bool e : at_end)
      if (!e) return;
    if (!owner.stats_.caught_up.exchange(true)) {
      spdlog::info("tables: table {} caught up with topic {}: {} rows", owner.table_, owner.topic_,
                   registry.snapshot()->size(registry.catalog().index_of(owner.table_)));
      cv.notify_all();
    }
  }

  void handle(const rd_kafka_message_t* m) {
    if (m->err) {
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return ends.push_back(m->partition);  // after the flush
      spdlog::warn("tables: topic {}: {}", owner.topic_, rd_kafka_message_errstr(m));
      return;
    }
    bump(owner.stats_.records);
    if (!m->key || m->key_len == 0) return bad_record(m, "the record has no key");
    const std::string_view key(static_cast<const char*>(m->key), m->key_len);
    if (!m->payload || m->len == 0) {  // tombstone
      changes.push_back({std::string(key), nullptr});
      bump(owner.stats_.tombstones);
      return;
    }
    std::string error;
    rules::RowPtr row = rules::parse_json_row(schema, key, {static_cast<const char*>(m->payload), m->len}, error);
    if (!row) return bad_record(m, error);
    changes.push_back({std::string(row->key()), std::move(row)});
    bump(owner.stats_.upserts);
  }

  void flush() {
    if (changes.empty()) return;
    if (const std::string err = registry.apply(owner.table_, changes); !err.empty()) {
      // Not expected (rows were checked when parsed): apply one by one so one bad change costs only itself.
      for (const auto& c : changes)
        if (const std::string e = registry.apply(owner.table_, {&c, 1}); !e.empty()) {
          bump(owner.stats_.bad_records);
          spdlog::warn("tables: topic {}: change not applied: {}", owner.topic_, e);
        }
    }
    changes.clear();
  }

  void run() {
    std::string why, last_why;
    int n = -1;
    while ((n = partition_count(why)) < 0) {
      if (why != last_why) spdlog::warn("tables: topic {} for table {} is not readable yet ({}); retrying", owner.topic_, owner.table_, why);
      last_why = why;
      if (!pause(std::chrono::seconds(1))) return;
    }
    if (!assign(n)) return;
    spdlog::info("tables: reading topic {} ({} partitions) into table {}", owner.topic_, n, owner.table_);
    auto next_metadata = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    rd_kafka_message_t* msgs[500];
    while (!stopping.load(std::memory_order_relaxed)) {
      const ssize_t got = rd_kafka_consume_batch_queue(queue, 100, msgs, std::size(msgs));
      for (ssize_t i = 0; i < got; ++i) {
        handle(msgs[i]);
        rd_kafka_message_destroy(msgs[i]);
      }
      flush();
      for (int32_t p : ends) reached_end(p);
      ends.clear();
      if (std::chrono::steady_clock::now() >= next_metadata) {
        next_metadata = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        const int now = partition_count(why);
        if (now > partitions) {
          spdlog::info("tables: topic {} grew to {} partitions", owner.topic_, now);
          assign(now);
        }
      }
    }
  }
};

TableTopicReader::TableTopicReader(const KafkaOptions& kafka, std::string topic, std::string table,
                                   rules::TableRegistry& registry)
    : topic_(std::move(topic)), table_(std::move(table)) {
  const rules::TableSchema* schema = registry.schema(table_);
  if (!schema) throw std::invalid_argument("table topic " + topic_ + ": unknown table '" + table_ + "'");
  impl_ = std::make_unique<Impl>(*this, registry, *schema);
  KafkaOptions o = kafka;
  o.group_id = kafka.group_id + ".tables";  // required by librdkafka; never joined (assign only, no commits)
  rd_kafka_conf_t* conf = make_conf(o, ClientRole::kConsumer);
  char err[512];
  for (const auto& [k, v] : {std::pair{"enable.partition.eof", "true"}, {"statistics.interval.ms", "0"}})
    if (rd_kafka_conf_set(conf, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      throw std::invalid_argument(std::string("kafka property '") + k + "': " + err);
    }
  impl_->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  if (!impl_->rk) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(std::string("table topic reader: ") + err);
  }
  rd_kafka_poll_set_consumer(impl_->rk);
  impl_->queue = rd_kafka_queue_get_consumer(impl_->rk);
}

TableTopicReader::~TableTopicReader() {
  stop();
  rd_kafka_queue_destroy(impl_->queue);
  rd_kafka_consumer_close(impl_->rk);
  rd_kafka_destroy(impl_->rk);
}

void TableTopicReader::start() {
  if (impl_->thread.joinable()) return;
  impl_->stopping = false;
  impl_->thread = std::thread([this] { impl_->run(); });
}

void TableTopicReader::stop() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

bool TableTopicReader::wait_caught_up(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mu);
  return impl_->cv.wait_for(lock, timeout, [&] { return stats_.caught_up.load(); });
}

// ---------------------------------------------------------------------------
// TableFileWatcher

namespace {

struct Stamp {
  bool exists = false;
  std::filesystem::file_time_type mtime{};
  uintmax_t size = 0;
  bool operator==(const Stamp&) const = default;
};

Stamp stamp_of(const std::string& path) {
  std::error_code ec;
  Stamp s;
  s.mtime = std::filesystem::last_write_time(path, ec);
  if (ec) return {};
  s.size = std::filesystem::file_size(path, ec);
  if (ec) return {};
  s.exists = true;
  return s;
}

}  // namespace

struct TableFileWatcher::Impl {
  struct File {
    WatchedTableFile file;
    Stamp loaded;   // what the table holds
    Stamp pending;  // a change seen once, applied when seen again unchanged
    bool has_pending = false;
    bool missing_reported = false;
  };
  Impl(rules::TableRegistry& r, std::chrono::milliseconds i) : registry(r), interval(i) {}
  rules::TableRegistry& registry;
  std::vector<File> files;
  std::chrono::milliseconds interval;
  std::thread thread;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;

  void poll(TableFileWatcher& w) {
    for (File& f : files) {
      const Stamp now = stamp_of(f.file.path);
      if (!now.exists) {
        if (!f.missing_reported) spdlog::warn("tables: {} is missing; table {} keeps its contents", f.file.path, f.file.table);
        f.missing_reported = true;
        f.has_pending = false;
        continue;
      }
      f.missing_reported = false;
      if (now == f.loaded) {
        f.has_pending = false;
        continue;
      }
      if (!f.has_pending || !(now == f.pending)) {  // changed: wait one more poll for it to settle
        f.pending = now;
        f.has_pending = true;
        continue;
      }
      f.has_pending = false;
      f.loaded = now;  // also when bad: not retried until the file changes again
      const auto errors = registry.load_file(f.file.table, f.file.path);
      if (errors.empty()) {
        w.reloads_.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("tables: reloaded table {} from {}: {} rows", f.file.table, f.file.path,
                     registry.snapshot()->size(registry.catalog().index_of(f.file.table)));
      } else {
        w.failures_.fetch_add(1, std::memory_order_relaxed);
        for (const auto& e : errors) spdlog::error("tables: {}", e);
        spdlog::error("tables: {} has errors; table {} keeps its previous contents", f.file.path, f.file.table);
      }
    }
  }
};

TableFileWatcher::TableFileWatcher(rules::TableRegistry& registry, std::vector<WatchedTableFile> files,
                                   std::chrono::milliseconds interval)
    : impl_(std::make_unique<Impl>(registry, interval)) {
  for (auto& f : files) {
    Impl::File x;
    x.file = std::move(f);
    x.loaded = stamp_of(x.file.path);
    impl_->files.push_back(std::move(x));
  }
}

TableFileWatcher::~TableFileWatcher() { stop(); }

void TableFileWatcher::start() {
  if (impl_->thread.joinable() || impl_->files.empty()) return;
  impl_->stopping = false;
  impl_->thread = std::thread([this] {
    std::unique_lock lock(impl_->mu);
    while (!impl_->cv.wait_for(lock, impl_->interval, [&] { return impl_->stopping; })) {
      lock.unlock();
      impl_->poll(*this);
      lock.lock();
    }
  });
}

void TableFileWatcher::stop() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace tocsin::connectors
