#include "connectors/embedded_broker.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <sstream>
#include <stdexcept>
#include <vector>

namespace tocsin::connectors {

struct EmbeddedBroker::Impl {
  rd_kafka_t* host = nullptr;  // the client handle that owns the mock cluster
  rd_kafka_mock_cluster_t* cluster = nullptr;
};

EmbeddedBroker::EmbeddedBroker(int brokers) : impl_(std::make_unique<Impl>()), brokers_(brokers) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
  impl_->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!impl_->host) throw std::runtime_error(std::string("embedded broker: ") + err);
  impl_->cluster = rd_kafka_mock_cluster_new(impl_->host, brokers);
  if (!impl_->cluster) {
    rd_kafka_destroy(impl_->host);
    throw std::runtime_error("embedded broker: cannot start the mock cluster");
  }
  bootstrap_ = rd_kafka_mock_cluster_bootstraps(impl_->cluster);
}

EmbeddedBroker::~EmbeddedBroker() {
  rd_kafka_mock_cluster_destroy(impl_->cluster);
  rd_kafka_destroy(impl_->host);
}

void EmbeddedBroker::create_topic(const std::string& name, int partitions) {
  const auto err = rd_kafka_mock_topic_create(impl_->cluster, name.c_str(), partitions, 1);
  if (err) throw std::runtime_error("cannot create topic '" + name + "': " + rd_kafka_err2str(err));
}

void EmbeddedBroker::set_down(int id) { rd_kafka_mock_broker_set_down(impl_->cluster, id); }
void EmbeddedBroker::set_up(int id) { rd_kafka_mock_broker_set_up(impl_->cluster, id); }
void EmbeddedBroker::set_rtt(int id, int ms) { rd_kafka_mock_broker_set_rtt(impl_->cluster, id, ms); }

void EmbeddedBroker::push_request_errors(int api_key, int count, const std::string& error_name) {
  const struct rd_kafka_err_desc* descs;
  size_t n;
  rd_kafka_get_err_descs(&descs, &n);
  for (size_t i = 0; i < n; ++i) {
    if (descs[i].name && error_name == descs[i].name) {
      std::vector<rd_kafka_resp_err_t> errs(static_cast<size_t>(count), descs[i].code);
      rd_kafka_mock_push_request_errors_array(impl_->cluster, static_cast<int16_t>(api_key),
                                              errs.size(), errs.data());
      return;
    }
  }
  throw std::invalid_argument("unknown Kafka error name '" + error_name + "'");
}

std::string EmbeddedBroker::command(const std::string& line) {
  std::istringstream in(line);
  std::string verb;
  in >> verb;
  auto broker_id = [&](int& id) {
    if (!(in >> id) || id < 1 || id > brokers_) throw std::invalid_argument("broker id must be 1.." + std::to_string(brokers_));
  };
  try {
    if (verb == "down" || verb == "up") {
      int id;
      broker_id(id);
      verb == "down" ? set_down(id) : set_up(id);
    } else if (verb == "rtt") {
      int id, ms;
      broker_id(id);
      if (!(in >> ms) || ms < 0) return "usage: rtt BROKER_ID MILLISECONDS";
      set_rtt(id, ms);
    } else if (verb == "errors") {
      int api, count;
      std::string name;
      if (!(in >> api >> count >> name) || count < 1) return "usage: errors API_KEY COUNT ERROR_NAME";
      push_request_errors(api, count, name);
    } else if (verb == "topic") {
      std::string name;
      int partitions;
      if (!(in >> name >> partitions) || partitions < 1) return "usage: topic NAME PARTITIONS";
      create_topic(name, partitions);
    } else {
      return "unknown command '" + verb + "' (down, up, rtt, errors, topic)";
    }
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace tocsin::connectors
