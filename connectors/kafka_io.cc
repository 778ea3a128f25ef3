#include "connectors/kafka_io.h"

#include <librdkafka/rdkafka.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <vector>

namespace tocsin::connectors {
namespace {

// Outputs of one polled batch and where its input ended per partition.
struct Batch {
  int64_t outstanding = 0;  // produced, not yet acknowledged
  bool sealed = false;      // batch_done() was called
  std::vector<std::pair<rd_kafka_topic_t*, std::pair<int32_t, int64_t>>> next_offsets;
  void reset() {
    outstanding = 0;
    sealed = false;
    next_offsets.clear();
  }
};

rd_kafka_t* new_client(rd_kafka_type_t type, rd_kafka_conf_t* conf) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(std::string("kafka client: ") + err);
  }
  return rk;
}

}  // namespace

struct KafkaIO::Impl {
  KafkaOptions options;
  KafkaIOStats* stats = nullptr;
  rd_kafka_t* consumer = nullptr;
  rd_kafka_t* producer = nullptr;
  rd_kafka_queue_t* queue = nullptr;
  rd_kafka_topic_t* alerts_topic = nullptr;
  rd_kafka_topic_t* dlq_topic = nullptr;
  rd_kafka_topic_t* late_topic = nullptr;
  std::vector<rd_kafka_message_t*> polled;
  std::vector<RawMessage> batch;
  std::deque<Batch*> open_batches;  // oldest first
  std::vector<Batch*> free_batches;
  Batch* current = nullptr;
  bool drained = false;
  bool uncommitted = false;  // offsets stored since the last commit
  std::chrono::steady_clock::time_point last_commit = std::chrono::steady_clock::now();
  std::array<rd_kafka_topic_t*, kStreamCount> input_handles{};  // learnt from messages
  simdjson::dom::parser stats_parser;

  Stream stream_of(rd_kafka_topic_t* rkt) {
    for (int s = 0; s < kStreamCount; ++s)
      if (input_handles[static_cast<size_t>(s)] == rkt) return static_cast<Stream>(s);
    const char* name = rd_kafka_topic_name(rkt);
    for (int s = 0; s < kStreamCount; ++s)
      if (options.topics.input[static_cast<size_t>(s)] == name) {
        input_handles[static_cast<size_t>(s)] = rkt;
        return static_cast<Stream>(s);
      }
    return Stream::kCalls;  // unreachable: we subscribe to the input topics only
  }

  Batch* new_batch() {
    Batch* b;
    if (free_batches.empty()) {
      b = new Batch;
    } else {
      b = free_batches.back();
      free_batches.pop_back();
    }
    b->reset();
    open_batches.push_back(b);
    stats->pending_batches.store(static_cast<int64_t>(open_batches.size()), std::memory_order_relaxed);
    return b;
  }

  // Stores the offsets of every leading batch that is sealed and fully acked.
  void store_completed() {
    while (!open_batches.empty() && open_batches.front()->sealed && open_batches.front()->outstanding == 0) {
      Batch* b = open_batches.front();
      open_batches.pop_front();
      if (!b->next_offsets.empty()) {
        rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(static_cast<int>(b->next_offsets.size()));
        for (const auto& [rkt, po] : b->next_offsets)
          rd_kafka_topic_partition_list_add(list, rd_kafka_topic_name(rkt), po.first)->offset = po.second;
        const auto err = rd_kafka_offsets_store(consumer, list);
        uncommitted = true;
        if (err && err != RD_KAFKA_RESP_ERR__STATE)  // __STATE: partition was revoked meanwhile
          spdlog::warn("kafka: storing offsets failed: {}", rd_kafka_err2str(err));
        rd_kafka_topic_partition_list_destroy(list);
      }
      free_batches.push_back(b);
    }
    stats->pending_batches.store(static_cast<int64_t>(open_batches.size()), std::memory_order_relaxed);
  }

  // Serves delivery reports for up to timeout_ms and stores the offsets of
  // every batch whose outputs are all acknowledged.
  void complete_outputs(int timeout_ms) {
    rd_kafka_flush(producer, timeout_ms);
    rd_kafka_poll(producer, 0);
    store_completed();
  }

  // The original message to a side topic, with why and where it came from in headers.
  void produce_routed(rd_kafka_topic_t* topic, std::string_view payload, const DeadLetter& info) {
    if (!current) current = new_batch();
    rd_kafka_headers_t* h = rd_kafka_headers_new(5);
    char partition[16], offset[24];
    const int pn = std::snprintf(partition, sizeof partition, "%d", info.source.partition);
    const int on = std::snprintf(offset, sizeof offset, "%lld", static_cast<long long>(info.source.offset));
    rd_kafka_header_add(h, "tocsin.reason", -1, info.reason.data(), static_cast<ssize_t>(info.reason.size()));
    rd_kafka_header_add(h, "tocsin.detail", -1, info.detail.data(), static_cast<ssize_t>(info.detail.size()));
    rd_kafka_header_add(h, "tocsin.source.topic", -1, info.source.topic.data(), static_cast<ssize_t>(info.source.topic.size()));
    rd_kafka_header_add(h, "tocsin.source.partition", -1, partition, pn);
    rd_kafka_header_add(h, "tocsin.source.offset", -1, offset, on);
    produce(topic, {}, payload, h, current);
    rd_kafka_headers_destroy(h);
  }

  void release_polled() {
    for (auto* m : polled) rd_kafka_message_destroy(m);
    polled.clear();
    batch.clear();
  }

  // Produces with back-pressure: on a full local queue, serve delivery reports and retry.
  void produce(rd_kafka_topic_t* topic, std::string_view key, std::string_view value,
               rd_kafka_headers_t* headers, Batch* owner) {
    ++owner->outstanding;
    for (;;) {
      rd_kafka_headers_t* h = headers ? rd_kafka_headers_copy(headers) : nullptr;
      const rd_kafka_resp_err_t err = rd_kafka_producev(
          producer, RD_KAFKA_V_RKT(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_KEY(key.data(), key.size()), RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
          RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(owner), RD_KAFKA_V_END);
      if (!err) return;
      if (h) rd_kafka_headers_destroy(h);
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(producer, 10);
        continue;
      }
      spdlog::error("kafka: cannot produce to {}: {}; retrying", rd_kafka_topic_name(topic), rd_kafka_err2str(err));
      bump(stats->delivery_failures);
      rd_kafka_poll(producer, 100);
    }
  }

  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    auto* owner = static_cast<Batch*>(m->_private);
    if (m->err) {
      // Never dropped: count, log and produce again; the batch stays open.
      bump(self->stats->delivery_failures);
      spdlog::warn("kafka: delivery to {} failed ({}); producing again", rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
      rd_kafka_headers_t* headers = nullptr;
      rd_kafka_message_headers(m, &headers);
      --owner->outstanding;
      self->produce(m->rkt, {static_cast<const char*>(m->key), m->key_len},
                    {static_cast<const char*>(m->payload), m->len}, headers, owner);
      return;
    }
    --owner->outstanding;
  }

  static void on_rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    bump(self->stats->rebalances);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      spdlog::info("kafka: assigned {} partitions", parts->cnt);
      if (!strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE")) rd_kafka_incremental_assign(rk, parts);
      else rd_kafka_assign(rk, parts);
    } else {
      spdlog::info("kafka: revoked {} partitions", parts->cnt);
      // Commit what is done before the partitions move. Real brokers accept
      // this; the embedded mock refuses it with eager assignment, and the new
      // owner then re-reads from the last commit (at-least-once).
      self->complete_outputs(1000);
      if (const auto e = rd_kafka_commit(rk, nullptr, 0); e && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        spdlog::debug("kafka: commit on revoke refused: {}", rd_kafka_err2str(e));
      if (!strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE")) rd_kafka_incremental_unassign(rk, parts);
      else rd_kafka_assign(rk, nullptr);
    }
  }

  static int on_stats(rd_kafka_t*, char* json, size_t len, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    simdjson::dom::element doc;
    if (self->stats_parser.parse(json, len).get(doc)) return 0;
    simdjson::dom::object topics;
    if (doc["topics"].get(topics)) return 0;
    for (int s = 0; s < kStreamCount; ++s) {
      simdjson::dom::object parts;
      if (topics[self->options.topics.input[static_cast<size_t>(s)]]["partitions"].get(parts)) continue;
      int64_t lag = 0;
      for (auto [id, p] : parts) {
        int64_t l;
        if (id == "-1" || p["consumer_lag"].get(l) || l < 0) continue;
        lag += l;
      }
      self->stats->consumer_lag[static_cast<size_t>(s)].store(lag, std::memory_order_relaxed);
    }
    return 0;  // librdkafka frees json
  }
};

KafkaIO::KafkaIO(const KafkaOptions& options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.options = options;
  m.stats = &stats_;
  rd_kafka_conf_t* cc = make_conf(options, ClientRole::kConsumer);
  rd_kafka_conf_set_opaque(cc, &m);
  rd_kafka_conf_set_rebalance_cb(cc, &Impl::on_rebalance);
  rd_kafka_conf_set_stats_cb(cc, &Impl::on_stats);
  rd_kafka_conf_t* pc = make_conf(options, ClientRole::kProducer);
  rd_kafka_conf_set_opaque(pc, &m);
  rd_kafka_conf_set_dr_msg_cb(pc, &Impl::on_delivery);
  m.consumer = new_client(RD_KAFKA_CONSUMER, cc);
  try {
    m.producer = new_client(RD_KAFKA_PRODUCER, pc);
  } catch (...) {
    rd_kafka_destroy(m.consumer);
    throw;
  }
  rd_kafka_poll_set_consumer(m.consumer);
  m.queue = rd_kafka_queue_get_consumer(m.consumer);
  m.alerts_topic = rd_kafka_topic_new(m.producer, options.topics.alerts.c_str(), nullptr);
  m.dlq_topic = rd_kafka_topic_new(m.producer, options.topics.dead_letter.c_str(), nullptr);
  m.late_topic = rd_kafka_topic_new(m.producer, options.topics.late.c_str(), nullptr);
  rd_kafka_topic_partition_list_t* subs = rd_kafka_topic_partition_list_new(kStreamCount);
  for (const auto& t : options.topics.input) rd_kafka_topic_partition_list_add(subs, t.c_str(), RD_KAFKA_PARTITION_UA);
  const auto err = rd_kafka_subscribe(m.consumer, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  if (err) throw std::runtime_error(std::string("kafka subscribe: ") + rd_kafka_err2str(err));
  m.polled.reserve(static_cast<size_t>(options.batch_size));
  m.batch.reserve(static_cast<size_t>(options.batch_size));
}

KafkaIO::~KafkaIO() {
  Impl& m = *impl_;
  if (m.consumer) close(10000);
  for (auto* b : m.open_batches) delete b;
  for (auto* b : m.free_batches) delete b;
}

std::span<const RawMessage> KafkaIO::poll(int timeout_ms) {
  Impl& m = *impl_;
  m.release_polled();
  rd_kafka_poll(m.producer, 0);  // serve delivery reports
  m.store_completed();
  stats_.producer_queue.store(rd_kafka_outq_len(m.producer), std::memory_order_relaxed);
  if (m.uncommitted && std::chrono::steady_clock::now() - m.last_commit > std::chrono::seconds(1)) {
    rd_kafka_commit(m.consumer, nullptr, 1);  // async; errors are retried on the next commit
    m.uncommitted = false;
    m.last_commit = std::chrono::steady_clock::now();
  }
  m.polled.resize(static_cast<size_t>(m.options.batch_size));
  const ssize_t n = rd_kafka_consume_batch_queue(m.queue, timeout_ms, m.polled.data(), m.polled.size());
  m.polled.resize(n > 0 ? static_cast<size_t>(n) : 0);
  if (m.polled.empty()) return {};
  m.current = m.new_batch();
  for (rd_kafka_message_t* msg : m.polled) {
    if (msg->err) {
      if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        spdlog::warn("kafka: consume error: {}", rd_kafka_message_errstr(msg));
      continue;
    }
    RawMessage r;
    r.stream = m.stream_of(msg->rkt);
    r.payload = {static_cast<const char*>(msg->payload), msg->len};
    r.source = {m.options.topics.input[static_cast<size_t>(r.stream)], msg->partition, msg->offset};
    r.broker_time_ms = rd_kafka_message_timestamp(msg, nullptr);
    m.batch.push_back(r);
    auto& offs = m.current->next_offsets;
    bool found = false;
    for (auto& [rkt, po] : offs)
      if (rkt == msg->rkt && po.first == msg->partition) {
        po.second = msg->offset + 1;
        found = true;
        break;
      }
    if (!found) offs.push_back({msg->rkt, {msg->partition, msg->offset + 1}});
  }
  return m.batch;
}

void KafkaIO::batch_done() {
  Impl& m = *impl_;
  if (!m.current) return;
  m.current->sealed = true;
  m.current = nullptr;
  m.store_completed();
}

void KafkaIO::alert(std::string_view key, std::string_view json) {
  Impl& m = *impl_;
  if (!m.current) m.current = m.new_batch();  // outputs from timers belong to a batch of their own
  m.produce(m.alerts_topic, key, json, nullptr, m.current);
  bump(stats_.alerts_produced);
}

void KafkaIO::dead_letter(std::string_view payload, const DeadLetter& info) {
  impl_->produce_routed(impl_->dlq_topic, payload, info);
  bump(stats_.dead_letters_produced);
}

void KafkaIO::late(std::string_view payload, const DeadLetter& info) {
  impl_->produce_routed(impl_->late_topic, payload, info);
  bump(stats_.late_produced);
}

bool KafkaIO::drain(int timeout_ms) {
  Impl& m = *impl_;
  if (!m.consumer || m.drained) return m.open_batches.empty();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  m.release_polled();
  if (m.current) batch_done();
  m.complete_outputs(timeout_ms);
  const bool all_acked = m.open_batches.empty();
  if (!all_acked) spdlog::warn("kafka: {} batches not acknowledged; they will be consumed again", m.open_batches.size());
  // A commit is refused while the group rebalances (e.g. another worker is
  // leaving): keep serving the rebalance, without processing, and retry.
  for (;;) {
    const auto err = rd_kafka_commit(m.consumer, nullptr, 0);
    if (!err || err == RD_KAFKA_RESP_ERR__NO_OFFSET) break;
    if (err != RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS || std::chrono::steady_clock::now() > deadline) {
      spdlog::warn("kafka: final offset commit failed: {}", rd_kafka_err2str(err));
      break;
    }
    rd_kafka_message_t* msgs[64];
    const ssize_t n = rd_kafka_consume_batch_queue(m.queue, 100, msgs, 64);
    for (ssize_t i = 0; i < n; ++i) rd_kafka_message_destroy(msgs[i]);  // not processed: re-read later
  }
  m.drained = true;
  return all_acked;
}

void KafkaIO::close(int timeout_ms) {
  Impl& m = *impl_;
  if (!m.consumer) return;
  if (!m.drained) drain(timeout_ms);
  rd_kafka_queue_destroy(m.queue);
  rd_kafka_consumer_close(m.consumer);
  rd_kafka_destroy(m.consumer);
  m.consumer = nullptr;
  rd_kafka_topic_destroy(m.alerts_topic);
  rd_kafka_topic_destroy(m.dlq_topic);
  rd_kafka_topic_destroy(m.late_topic);
  rd_kafka_destroy(m.producer);
}

struct KafkaProducer::Impl {
  rd_kafka_t* rk = nullptr;
  int64_t delivered = 0, failed = 0;
  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* self = static_cast<Impl*>(opaque);
    if (m->err) {
      // The first few are logged; a lost broker would otherwise log every queued message.
      if (++self->failed <= 5)
        spdlog::error("kafka: delivery to {} failed: {}{}", rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err),
                      self->failed == 5 ? " (further failures are counted, not logged)" : "");
    } else {
      ++self->delivered;
    }
  }
};

KafkaProducer::KafkaProducer(const KafkaOptions& options) : impl_(std::make_unique<Impl>()) {
  rd_kafka_conf_t* conf = make_conf(options, ClientRole::kProducer);
  rd_kafka_conf_set_opaque(conf, impl_.get());
  rd_kafka_conf_set_dr_msg_cb(conf, &Impl::on_delivery);
  impl_->rk = new_client(RD_KAFKA_PRODUCER, conf);
}

KafkaProducer::~KafkaProducer() {
  flush(10000);
  rd_kafka_destroy(impl_->rk);
}

void KafkaProducer::produce(const std::string& topic, std::string_view key, std::string_view value) {
  for (;;) {
    const auto err = rd_kafka_producev(impl_->rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_KEY(key.data(), key.size()),
                                       RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_END);
    if (!err) break;
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) throw std::runtime_error(std::string("produce: ") + rd_kafka_err2str(err));
    rd_kafka_poll(impl_->rk, 10);
  }
  rd_kafka_poll(impl_->rk, 0);
}

std::string KafkaProducer::check_cluster(int timeout_ms, const std::vector<std::string>& topics,
                                         std::vector<std::string>& missing) {
  const rd_kafka_metadata_t* md = nullptr;
  if (const auto err = rd_kafka_metadata(impl_->rk, 1, nullptr, &md, timeout_ms)) return rd_kafka_err2str(err);
  for (const auto& t : topics) {
    bool found = false;
    for (int i = 0; i < md->topic_cnt && !found; ++i)
      found = md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR && t == md->topics[i].topic;
    if (!found) missing.push_back(t);
  }
  rd_kafka_metadata_destroy(md);
  return {};
}

int64_t KafkaProducer::flush(int timeout_ms) {
  rd_kafka_flush(impl_->rk, timeout_ms);
  return impl_->failed + rd_kafka_outq_len(impl_->rk);
}

int64_t KafkaProducer::delivered() const { return impl_->delivered; }
int64_t KafkaProducer::failed() const { return impl_->failed; }

}  // namespace tocsin::connectors
