#include "connectors/alert_topic.h"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <stdexcept>

namespace tocsin::connectors {
namespace {
constexpr char kRecordHeader[] = "tocsin-record";
constexpr char kLifecycle[] = "lifecycle";

rd_kafka_t* make_client(rd_kafka_type_t type, rd_kafka_conf_t* conf) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    throw std::runtime_error(std::string("kafka: cannot create the alert desk's client: ") + err);
  }
  return rk;
}
}  // namespace

struct AlertTopic::Impl {
  std::string topic;
  rd_kafka_t* consumer = nullptr;
  rd_kafka_t* producer = nullptr;
  std::vector<rd_kafka_message_t*> batch;  // held until the next poll, so views stay valid
  bool closed = false;
  AlertTopicStats* stats = nullptr;

  struct Owned {
    Impl* impl;
    std::string key, value;
  };

  void produce(std::string_view key, std::string_view value) {
    auto* own = new Owned{this, std::string(key), std::string(value)};
    rd_kafka_headers_t* h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, kRecordHeader, -1, kLifecycle, -1);
    for (;;) {
      const auto err = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(own->key.data(), own->key.size()),
                                         RD_KAFKA_V_VALUE(own->value.data(), own->value.size()), RD_KAFKA_V_HEADERS(h),
                                         RD_KAFKA_V_OPAQUE(own), RD_KAFKA_V_END);
      if (!err) return;
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        spdlog::error("alerts topic: cannot produce a lifecycle record: {}", rd_kafka_err2str(err));
        rd_kafka_headers_destroy(h);
        delete own;
        return;
      }
      rd_kafka_poll(producer, 10);  // back-pressure: serve deliveries, then try again
    }
  }

  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
    auto* own = static_cast<Owned*>(m->_private);
    if (!own) return;
    if (m->err) {
      own->impl->stats->lifecycle_failed.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("alerts topic: lifecycle record not delivered ({}); producing it again", rd_kafka_err2str(m->err));
      if (!own->impl->closed) own->impl->produce(own->key, own->value);
    } else {
      own->impl->stats->lifecycle_written.fetch_add(1, std::memory_order_relaxed);
    }
    delete own;
  }

  void release() {
    for (auto* m : batch) rd_kafka_message_destroy(m);
    batch.clear();
  }
};

AlertTopic::AlertTopic(const KafkaOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->topic = options.topics.alerts;
  impl_->stats = &stats_;
  KafkaOptions o = options;
  o.group_id = options.group_id + ".desk";
  rd_kafka_conf_t* cc = make_conf(o, ClientRole::kConsumer);
  impl_->consumer = make_client(RD_KAFKA_CONSUMER, cc);
  rd_kafka_poll_set_consumer(impl_->consumer);
  rd_kafka_topic_partition_list_t* subs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subs, impl_->topic.c_str(), RD_KAFKA_PARTITION_UA);
  const auto err = rd_kafka_subscribe(impl_->consumer, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  if (err) throw std::runtime_error(std::string("kafka: cannot subscribe to ") + impl_->topic + ": " + rd_kafka_err2str(err));
  rd_kafka_conf_t* pc = make_conf(o, ClientRole::kProducer);
  rd_kafka_conf_set_dr_msg_cb(pc, &Impl::on_delivery);
  impl_->producer = make_client(RD_KAFKA_PRODUCER, pc);
}

AlertTopic::~AlertTopic() { close(5000); }

std::vector<std::string_view> AlertTopic::poll(int timeout_ms) {
  impl_->release();
  std::vector<std::string_view> out;
  for (int i = 0; i < 500; ++i) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(impl_->consumer, i == 0 ? timeout_ms : 0);
    if (!m) break;
    if (m->err) {
      if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) spdlog::warn("alerts topic: {}", rd_kafka_message_errstr(m));
      rd_kafka_message_destroy(m);
      continue;
    }
    impl_->batch.push_back(m);
    rd_kafka_headers_t* h = nullptr;
    const void* v = nullptr;
    size_t n = 0;
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(h, kRecordHeader, &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR)
      continue;  // a record of ours, not a raised alert
    out.emplace_back(static_cast<const char*>(m->payload), m->len);
  }
  stats_.raised_read.fetch_add(out.size(), std::memory_order_relaxed);
  return out;
}

void AlertTopic::commit() {
  if (impl_->batch.empty()) return;
  rd_kafka_topic_partition_list_t* offsets = rd_kafka_topic_partition_list_new(static_cast<int>(impl_->batch.size()));
  for (auto* m : impl_->batch)
    rd_kafka_topic_partition_list_add(offsets, rd_kafka_topic_name(m->rkt), m->partition)->offset = m->offset + 1;
  if (const auto err = rd_kafka_commit(impl_->consumer, offsets, 0); err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
    spdlog::warn("alerts topic: commit failed ({}); the alerts will be read again and deduplicated", rd_kafka_err2str(err));
  rd_kafka_topic_partition_list_destroy(offsets);
  impl_->release();
}

void AlertTopic::publish(std::string_view alert_id, std::string_view json) {
  impl_->produce(alert_id, json);
  rd_kafka_poll(impl_->producer, 0);
}

void AlertTopic::serve() { rd_kafka_poll(impl_->producer, 0); }

void AlertTopic::close(int timeout_ms) {
  if (!impl_ || impl_->closed) return;
  rd_kafka_flush(impl_->producer, timeout_ms);
  impl_->closed = true;
  commit();
  rd_kafka_consumer_close(impl_->consumer);
  rd_kafka_destroy(impl_->consumer);
  rd_kafka_destroy(impl_->producer);
}

}  // namespace tocsin::connectors
