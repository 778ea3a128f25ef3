// tocsin: the single executable. Subcommands: run, check, rules check, rules test, broker, gen, replay.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <unistd.h>

#include "alerts/alerting_config.h"
#include "app/config.h"
#include "connectors/console.h"
#include "app/daemon.h"
#include "app/replay.h"
#include "connectors/embedded_broker.h"
#include "connectors/kafka_io.h"
#include "gen/generator.h"
#include "pipeline/decoder.h"
#include "rules/rule_set.h"
#include "rules/rule_test.h"

namespace {

using namespace tocsin;

int print_config_errors(const std::vector<app::ConfigError>& errors, const std::string& file) {
  for (const auto& e : errors) std::cerr << app::format(e, file) << "\n";
  std::cerr << "tocsin: " << errors.size() << " configuration error" << (errors.size() == 1 ? "" : "s")
            << "; nothing was started\n";
  return 2;
}

int cmd_check(const std::string& file) {
  app::Config cfg;
  const auto errors = app::load_config(file, cfg);
  if (!errors.empty()) return print_config_errors(errors, file);
  // Table files are read as the daemon would; rules compile against the declared tables.
  const rules::TableCatalog catalog = app::table_catalog(cfg);
  rules::TableRegistry tables(catalog);
  bool tables_ok = true;
  for (const auto& t : cfg.tables)
    if (!t.file.empty())
      for (const auto& e : tables.load_file(t.schema.name, t.file)) {
        std::cerr << e << "\n";
        tables_ok = false;
      }
  const auto loaded = rules::load_rule_files(cfg.rule_paths, &catalog);
  for (const auto& d : loaded.diagnostics) std::cerr << rules::format_text(d) << "\n";
  bool alerting_ok = true;
  alerts::AlertingConfig alerting;
  if (!cfg.alerting.file.empty())
    for (const auto& d : alerts::load_alerting_config(cfg.alerting.file, &catalog, alerting)) {
      std::cerr << rules::format_text(d) << "\n";
      alerting_ok &= d.level != rules::Diagnostic::Level::kError;
    }
  if (!loaded.ok() || !tables_ok || !alerting_ok) return 1;
  // Targets that would name nobody for the alerts of these rules: warnings.
  for (const auto& d : alerts::check_targets(alerting, *loaded.rules)) std::cerr << rules::format_text(d) << "\n";
  std::cout << file << ": OK (" << loaded.rules->rules.size() << " rules, version " << loaded.rules->version
            << (cfg.alerting.file.empty() ? "" : ", " + std::to_string(alerting.policies.size()) + " escalation policies")
            << (cfg.tables.empty() ? "" : ", " + std::to_string(cfg.tables.size()) + (cfg.tables.size() == 1 ? " table" : " tables"))
            << ", " << (cfg.embedded_broker() ? "embedded broker" : "brokers " + cfg.kafka.bootstrap) << ")\n";
  return 0;
}

int cmd_rules_check(const std::vector<std::string>& files, const std::string& format) {
  const auto loaded = rules::load_rule_files(files);
  if (format == "json") {
    std::cout << rules::format_json(loaded.diagnostics) << "\n";
  } else {
    for (const auto& d : loaded.diagnostics) std::cerr << rules::format_text(d) << "\n";
    if (loaded.ok()) std::cout << "OK: " << loaded.rules->rules.size() << " rules, version " << loaded.rules->version << "\n";
  }
  return loaded.ok() ? 0 : 1;
}

struct BrokerArgs {
  int brokers = 3;
  int partitions = 8;
  std::vector<std::string> topics{"calls", "faults", "complaints", "profiles", "alerts", "tocsin.dlq"};
  std::string bootstrap_file;
};

// Runs the embedded broker until SIGINT/SIGTERM or end of input; each stdin
// line is a fault-injection command answered with "ok" or "error: ...".
int cmd_broker(const BrokerArgs& a, std::atomic<bool>& stop) {
  connectors::EmbeddedBroker broker(a.brokers);
  for (const auto& t : a.topics) {
    const auto colon = t.find(':');
    broker.create_topic(t.substr(0, colon), colon == std::string::npos ? a.partitions : std::stoi(t.substr(colon + 1)));
  }
  if (!a.bootstrap_file.empty()) {
    const std::string tmp = a.bootstrap_file + ".tmp";
    std::ofstream(tmp) << broker.bootstrap() << "\n";
    std::filesystem::rename(tmp, a.bootstrap_file);  // readers never see a partial file
  }
  std::cout << "bootstrap.servers=" << broker.bootstrap() << "\n"
            << "commands on stdin: down ID | up ID | rtt ID MS | errors API_KEY COUNT ERROR_NAME | topic NAME PARTITIONS\n"
            << std::flush;
  std::thread([&broker, &stop] {
    for (std::string line; std::getline(std::cin, line);) {
      if (line.empty()) continue;
      const std::string err = broker.command(line);
      std::cout << (err.empty() ? "ok" : "error: " + err) << "\n" << std::flush;
    }
  }).detach();
  while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  return 0;
}

struct GenArgs {
  std::string bootstrap;
  std::string out_dir;
  double rate = 0;  // 0: as fast as possible
  int64_t count = 10000;
  uint64_t seed = 42;
  int64_t start_ms = 0;
  int64_t plant_every = 5000;
  connectors::Topics topics;
};

int cmd_gen(const GenArgs& a, const std::atomic<bool>& stop) {
  gen::Options o;
  o.seed = a.seed;
  o.start_time_ms = a.start_ms;
  o.plant_every = a.plant_every;
  if (a.rate > 0) o.events_per_second = a.rate;
  gen::Generator g(o);
  gen::Message m;
  std::unique_ptr<connectors::KafkaProducer> producer;
  std::array<std::ofstream, kStreamCount> files;
  if (!a.bootstrap.empty()) {
    connectors::KafkaOptions k;
    k.bootstrap = a.bootstrap;
    k.producer["linger.ms"] = "5";
    producer = std::make_unique<connectors::KafkaProducer>(k);
  } else {
    std::filesystem::create_directories(a.out_dir);
    for (int s = 0; s < kStreamCount; ++s)
      files[static_cast<size_t>(s)].open(std::filesystem::path(a.out_dir) / (std::string(to_string(static_cast<Stream>(s))) + ".jsonl"));
  }
  const auto start = std::chrono::steady_clock::now();
  int64_t i = 0;
  for (; i < a.count && !stop.load(std::memory_order_relaxed); ++i) {
    g.next(m);
    if (producer) producer->produce(a.topics.input[static_cast<size_t>(m.stream)], m.key, m.json);
    else files[static_cast<size_t>(m.stream)] << m.json << '\n';
    if (a.rate > 0) {
      const auto due = start + std::chrono::microseconds(static_cast<int64_t>(static_cast<double>(i) * 1e6 / a.rate));
      if (due > std::chrono::steady_clock::now() + std::chrono::milliseconds(2)) std::this_thread::sleep_until(due);
    }
  }
  int64_t failed = 0;
  if (producer) failed = producer->flush(30000);
  const auto& p = g.planted();
  std::cerr << "generated " << i << " events (planted: " << p.fraud_fan_out << " fraud fan-outs, " << p.heating_outages
            << " heating outages, " << p.late_tickets << " late tickets)" << (failed ? ", " + std::to_string(failed) + " NOT delivered" : "") << "\n";
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::atomic<bool> stop{false};
  app::install_stop_signals(stop);
  spdlog::set_default_logger(spdlog::stderr_color_mt("tocsin"));

  CLI::App cli{"Tocsin: real-time alerting and must-reach warnings for city control rooms"};
  cli.require_subcommand(1);

  std::string config_file;
  auto* run = cli.add_subcommand("run", "Run the pipeline (embedded broker and demo traffic when no bootstrap.servers is set)");
  run->add_option("-c,--config", config_file, "Config file (YAML); see examples/tocsin.yaml");
  std::string web_root;
  run->add_option("--web-root", web_root, "Serve the console's files from DIR instead of the built-in copy (development; as console.web_root)")
      ->check(CLI::ExistingDirectory);

  std::string check_file;
  auto* check = cli.add_subcommand("check", "Validate a config file and its rules without starting anything");
  check->add_option("config", check_file, "Config file")->required();

  auto* rules_cmd = cli.add_subcommand("rules", "Rule tools");
  rules_cmd->require_subcommand(1);
  std::vector<std::string> rule_files;
  std::string rule_format = "text";
  auto* rules_check = rules_cmd->add_subcommand("check", "Check rule files; exit 0 when they can go live");
  rules_check->add_option("files", rule_files, "Rule files or directories")->required();
  rules_check->add_option("--format", rule_format, "text or json")->check(CLI::IsMember({"text", "json"}));
  std::vector<std::string> rule_test_files;
  auto* rules_test = rules_cmd->add_subcommand("test", "Run rule unit tests (docs/rules.md, Testing rules); exit 0 when all pass, 1 on a failure, 2 on a load error");
  rules_test->add_option("files", rule_test_files, "Rule test files (*.test.yaml)")->required();

  BrokerArgs ba;
  auto* broker = cli.add_subcommand("broker", "Run the embedded Kafka-protocol broker alone (for tests and tools)");
  broker->add_option("--brokers", ba.brokers, "Number of brokers")->check(CLI::Range(1, 16));
  broker->add_option("--partitions", ba.partitions, "Default partitions per topic")->check(CLI::Range(1, 1024));
  broker->add_option("--topic", ba.topics, "Topic to create, NAME or NAME:PARTITIONS (repeatable; replaces the defaults)");
  broker->add_option("--bootstrap-file", ba.bootstrap_file, "Write the bootstrap servers to this file");

  GenArgs ga;
  auto* gen_cmd = cli.add_subcommand("gen", "Generate seeded demo traffic to Kafka or JSONL files");
  auto* dest = gen_cmd->add_option_group("destination");
  dest->add_option("-b,--bootstrap", ga.bootstrap, "Kafka bootstrap servers");
  dest->add_option("-o,--out", ga.out_dir, "Directory for calls.jsonl, faults.jsonl, complaints.jsonl");
  dest->require_option(1);
  gen_cmd->add_option("--rate", ga.rate, "Events per second (default: as fast as possible)");
  gen_cmd->add_option("-n,--count", ga.count, "Number of events");
  gen_cmd->add_option("--seed", ga.seed, "Random seed");
  gen_cmd->add_option("--start-ms", ga.start_ms, "Event time of the first event, epoch ms (default: now)");
  gen_cmd->add_option("--plant-every", ga.plant_every, "Planted scenarios every N background events (0: none)");

  app::ReplayOptions ra;
  bool no_jitter = false;
  std::string replay_to = "inprocess", replay_speed = "max";
  std::vector<std::string> replay_properties;
  int replay_connect_timeout_s = 10;
  auto* replay_cmd = cli.add_subcommand("replay", "Replay recorded data (CSV/JSONL) in event-time order through the rules in-process "
                                                  "(timers on event time) or to Kafka, as fast as possible or paced; print a summary");
  replay_cmd->add_option("files", ra.inputs, "Input files (CSV for nyc311/heatseek/sichuan/--mapping-file, JSONL for jsonl)")->required();
  auto* mapping_opt = replay_cmd->add_option("--mapping", ra.mapping, "Built-in mapping: nyc311 | heatseek | sichuan | jsonl")
                          ->check(CLI::IsMember({"nyc311", "heatseek", "sichuan", "jsonl"}));
  std::string replay_as_of;
  replay_cmd->add_option("--as-of", replay_as_of, "sichuan: event time of every profile (RFC 3339; default 2020-04-01T00:00:00+08:00)")
      ->check([](const std::string& v) { int64_t ms; return parse_rfc3339_ms(v, ms) == DecodeError::kOk ? std::string() : "must be an RFC 3339 time"; });
  replay_cmd->add_option("--mapping-file", ra.mapping_file, "YAML mapping for other CSV files (docs/replay.md)")->excludes(mapping_opt);
  replay_cmd->add_option("-r,--rules", ra.rule_files, "In-process: rule file or directory (repeatable)")->allow_extra_args(false);
  replay_cmd->add_option("--to", replay_to, "Where events go: inprocess (default) or kafka")->check(CLI::IsMember({"inprocess", "kafka"}));
  replay_cmd->add_option("-b,--brokers", ra.brokers, "Kafka: bootstrap servers HOST:PORT[,HOST:PORT...]");
  replay_cmd->add_option("--topic-prefix", ra.topic_prefix, "Kafka: prefix for every topic name");
  for (int i = 0; i < kStreamCount; ++i) {
    const std::string name(to_string(static_cast<Stream>(i)));
    replay_cmd->add_option("--" + name + "-topic", ra.topics.input[static_cast<size_t>(i)],
                           "Kafka: topic of the " + name + " stream (default " + name + ", as kafka.topics." + name + ")");
  }
  replay_cmd->add_option("-X,--property", replay_properties, "Kafka: librdkafka producer property KEY=VALUE (repeatable)");
  replay_cmd->add_option("--connect-timeout", replay_connect_timeout_s, "Kafka: seconds to wait for a broker to answer")
      ->check(CLI::Range(1, 3600));
  replay_cmd->add_option("--speed", replay_speed, "max (default: as fast as possible), 1 (real time: event-time gaps "
                                                  "reproduced) or N (N times real time, e.g. 60)")
      ->check([](const std::string& v) { return app::parse_speed(v) ? std::string() : "must be max or a positive number such as 1 or 60"; });
  replay_cmd->add_option("--stream", ra.stream, "jsonl: the stream of every line (default: from the file name)");
  replay_cmd->add_option("--jitter-seed", ra.jitter_seed, "nyc311: seed spreading times truncated to midnight over the day");
  replay_cmd->add_flag("--no-jitter", no_jitter, "nyc311: keep times truncated to midnight");
  replay_cmd->add_option("--inferred-type", ra.inferred_type_prefix, "Alert-type prefix counted as inferred outages in the summary");
  replay_cmd->add_option("--progress-every", ra.progress_every, "Without a terminal: a progress line every N events (0: only at the end)");
  replay_cmd->add_flag("--print-alerts", ra.print_alerts, "In-process: print every alert (time, rule, severity, title) to stderr");

  std::string secret;
  bool as_token = false;
  auto* hash_cmd = cli.add_subcommand("hash-password", "Print the hash of a console password (or, with --token, an API token) for the config");
  hash_cmd->add_option("secret", secret, "The password or token")->required();
  hash_cmd->add_flag("--token", as_token, "Hash an API token (console.tokens[].token_hash)");

  CLI11_PARSE(cli, argc, argv);
  try {
    if (*run) {
      app::Config cfg;
      if (!config_file.empty()) {
        const auto errors = app::load_config(config_file, cfg);
        if (!errors.empty()) return print_config_errors(errors, config_file);
      }
      if (!web_root.empty()) cfg.console.web_root = std::filesystem::absolute(web_root).lexically_normal().string();
      return app::run_daemon(std::move(cfg), stop, std::cout);
    }
    if (*check) return cmd_check(check_file);
    if (*hash_cmd) {
      std::cout << (as_token ? "sha256$" + connectors::sha256_hex(secret) : connectors::hash_password(secret)) << "\n";
      return 0;
    }
    if (*rules_check) return cmd_rules_check(rule_files, rule_format);
    if (*rules_test) return rules::run_rule_test_cli(rule_test_files, std::cout, std::cerr);
    if (*broker) return cmd_broker(ba, stop);
    if (*gen_cmd) return cmd_gen(ga, stop);
    if (*replay_cmd) {
      ra.jitter = !no_jitter;
      ra.to = replay_to == "kafka" ? app::ReplayOptions::Target::kKafka : app::ReplayOptions::Target::kInProcess;
      ra.speed = *app::parse_speed(replay_speed);
      ra.connect_timeout_ms = replay_connect_timeout_s * 1000;
      if (!replay_as_of.empty()) parse_rfc3339_ms(replay_as_of, ra.as_of_ms);
      for (const auto& p : replay_properties) {
        const auto eq = p.find('=');
        if (eq == std::string::npos || eq == 0) {
          std::cerr << "tocsin replay: -X " << p << ": expected KEY=VALUE (a librdkafka property)\n";
          return 2;
        }
        ra.kafka_properties[p.substr(0, eq)] = p.substr(eq + 1);
      }
      ra.progress_bar = isatty(STDERR_FILENO) != 0;
      ra.stop = &stop;
      return app::replay_main(ra, std::cout, std::cerr);
    }
  } catch (const std::exception& e) {
    std::cerr << "tocsin: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
