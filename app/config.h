#pragma once
// The daemon's configuration: one YAML file (see examples/tocsin.yaml) read
// into typed structs. validate() collects every error, each with its YAML path
// and line, so `tocsin check` can report them all at once.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "connectors/console.h"
#include "connectors/kafka_options.h"
#include "pipeline/decoder.h"
#include "rules/tables.h"

namespace tocsin::app {

struct EmbeddedConfig {
  int brokers = 3;
  int partitions = 8;
  std::string bootstrap_file;  // write the bootstrap servers here, if set
};

struct DemoConfig {
  bool enabled = true;  // generate demo traffic (only with the embedded broker unless forced)
  double rate = 200;    // events per second
  uint64_t seed = 42;
};

struct PipelineConfig {
  int workers = 1;  // more only when every keyed rule uses its stream's partition key
  DecodeLimits limits;
  int poll_timeout_ms = 100;
  int64_t allowed_lateness_ms = 3600 * 1000;  // behind the partition watermark: routed late
  bool timers_follow_event_time = false;      // `timers: event` for replays; `wall` live
};

// One reference table (tables: in the config; docs/tables.md).
struct TableConfig {
  rules::TableSchema schema;  // name, columns (column 0 the key), key normalisation
  std::string file;           // CSV or JSONL, resolved against the config file's directory; "" for none
  std::string topic;          // Kafka topic followed into the table; "" for none
  bool reload = false;        // reload the file when it changes
};

// alerting: the alert desk (docs/alerting.md). Off unless `file` is set.
struct SmsGatewayConfig {
  std::string sendsms_url;  // Kannel smsbox, e.g. http://127.0.0.1:13013/cgi-bin/sendsms; "" = no SMS gateway
  std::string username, password;
  std::string from = "12110";
  std::string smsc;  // force a Kannel route ("" = Kannel's routing)
  int dlr_mask = 31;
  int64_t timeout_ms = 5000;
  int max_parts = 10;
};

struct AlertingSetup {
  std::string file;                          // the alerting rules (policies, templates, ...); "" = desk off
  std::string state_dir = "var/tocsin-state";  // durable alerts and outbox (RocksDB)
  std::string public_url;                    // how gateways reach our HTTP server; default http://<http.listen>
  SmsGatewayConfig sms;
  std::map<std::string, std::string> webhooks;  // name -> http:// URL
  int64_t webhook_timeout_ms = 5000;
  int64_t tick_ms = 100;                     // how often timers and the dispatcher run
};

struct Config {
  std::string path;  // the file it was read from ("" for defaults)
  connectors::KafkaOptions kafka;
  EmbeddedConfig embedded;
  DemoConfig demo;
  PipelineConfig pipeline;
  std::vector<std::string> rule_paths{"examples/rules"};
  bool rules_watch = true;                 // rules.watch: reload when the rule files change
  int64_t rules_watch_interval_ms = 1000;  // rules.watch_interval: how often the files are polled
  std::string http_listen = "127.0.0.1:9464";
  std::string http_tls_cert, http_tls_key;  // http.tls: serve HTTPS with these PEM files
  std::string log_level = "info";
  std::vector<TableConfig> tables;  // tables: reference tables the rules may look up
  AlertingSetup alerting;
  connectors::ConsoleConfig console;

  bool embedded_broker() const { return kafka.bootstrap.empty(); }
};

struct ConfigError {
  std::string path;  // YAML path, e.g. "pipeline.workers"
  int line = 0;      // 1-based, 0 if unknown
  int column = 0;
  std::string message;  // says what is wrong and how to fix it
};

std::string format(const ConfigError& e, const std::string& file);

// Parses `text` (the content of `file`). Relative rule paths are resolved
// against the file's directory. Returns the errors; `out` is usable only when
// the list is empty.
std::vector<ConfigError> parse_config(const std::string& text, const std::string& file, Config& out);
// Reads and parses a file; a missing file is an error.
std::vector<ConfigError> load_config(const std::string& file, Config& out);

// Splits "host:port"; returns false when malformed.
bool split_host_port(const std::string& s, std::string& host, uint16_t& port);

// The declared tables in config order (a table's id is its position), for
// the rule compiler and the TableRegistry.
rules::TableCatalog table_catalog(const Config& c);

}  // namespace tocsin::app
