#include "app/daemon.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "alerts/alert_encoder.h"
#include "alerts/alerting_config.h"
#include "app/alert_service.h"
#include "app/rule_reloader.h"
#include "connectors/embedded_broker.h"
#include "connectors/http_server.h"
#include "connectors/kafka_io.h"
#include "connectors/kafka_metrics.h"
#include "connectors/table_topic.h"
#include "gen/generator.h"
#include "monitoring/metrics.h"
#include "pipeline/worker.h"
#include "rules/clock_board.h"
#include "rules/engine.h"

#ifndef TOCSIN_VERSION
#define TOCSIN_VERSION "dev"
#endif

namespace tocsin::app {
namespace {

struct WorkerSlot {
  std::unique_ptr<connectors::KafkaIO> io;
  std::unique_ptr<WorkerStats> stats;
  std::unique_ptr<TimedOutputSink> out;  // io's outputs, timed (stage "produce")
  std::unique_ptr<alerts::AlertEncoder> encoder;
  std::unique_ptr<rules::Engine> engine;
  std::unique_ptr<Worker> worker;
  std::thread thread;
};

// Produces demo traffic at `rate` events per second until stop.
void demo_traffic(const connectors::KafkaOptions& kafka, const DemoConfig& demo, const std::atomic<bool>& stop) {
  connectors::KafkaProducer producer(kafka);
  gen::Options o;
  o.seed = demo.seed;
  o.events_per_second = demo.rate;
  gen::Generator g(o);
  gen::Message m;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
    g.next(m);
    producer.produce(kafka.topics.input[static_cast<size_t>(m.stream)], m.key, m.json);
    const auto due = start + std::chrono::microseconds(static_cast<int64_t>(static_cast<double>(i) * 1e6 / demo.rate));
    if (due > std::chrono::steady_clock::now() + std::chrono::milliseconds(2)) std::this_thread::sleep_until(due);
  }
}

}  // namespace

namespace {
// Never destroyed: the detached signal thread may use them until exit.
std::mutex& reload_signal_mu() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::function<void()>& reload_signal_handler() {
  static auto* handler = new std::function<void()>;
  return *handler;
}
}  // namespace

void set_reload_signal_handler(std::function<void()> handler) {
  // Under nohup SIGHUP is ignored, and an ignored signal is discarded even
  // while blocked; with a handler it is wanted (it stays blocked, so the
  // default action never runs: the signal thread takes it).
  if (handler) signal(SIGHUP, SIG_DFL);
  std::lock_guard lk(reload_signal_mu());
  reload_signal_handler() = std::move(handler);
}

std::vector<std::string> partition_warnings(const rules::RuleSet& set) {
  std::vector<std::string> out;
  for (const auto& r : set.rules) {
    if (r.kind == rules::RuleKind::kPerEvent) continue;  // no state: any worker may see any event
    const std::vector<int>* key = &r.alert_match().key;
    if (key->empty()) continue;
    const Stream s = r.alert_match().stream;
    const StreamSchema& schema = schema_of(s);
    const bool by_partition_key = std::any_of(key->begin(), key->end(), [&](int slot) { return slot == schema.key_slot; });
    const bool cross_stream = r.kind == rules::RuleKind::kSequence && r.match.stream != r.then.stream;
    if (by_partition_key && !cross_stream) continue;
    out.push_back(r.file + ":" + std::to_string(r.line) + ": rule '" + r.id + "' keys " + std::string(schema.name) +
                  " events by a field other than their partition key (" + std::string(schema.fields[static_cast<size_t>(schema.key_slot)].name) +
                  (cross_stream ? ") across streams" : ")") +
                  ": with several workers or instances, each sees only part of a key. Run pipeline.workers: 1 on one "
                  "instance, or key the topic by that field upstream.");
  }
  return out;
}

void install_stop_signals(std::atomic<bool>& stop) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set, &stop] {
    int sig = 0;
    while (sigwait(&set, &sig) == 0) {
      if (sig == SIGHUP) {
        std::lock_guard lk(reload_signal_mu());
        if (const auto& handler = reload_signal_handler()) {
          spdlog::info("SIGHUP received: reloading the rules");
          handler();
          continue;
        }
      }
      stop.store(true);
      spdlog::info("{} received: stopping", sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP");
      return;
    }
  }).detach();
}

int run_daemon(Config cfg, const std::atomic<bool>& stop, std::ostream& banner) {
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  // Reference tables (docs/tables.md): declared in the config, filled from
  // their files now and from their topics before the workers start.
  const rules::TableCatalog catalog = table_catalog(cfg);
  rules::TableRegistry tables(catalog);
  for (const auto& t : cfg.tables) {
    if (t.file.empty()) continue;
    const auto errors = tables.load_file(t.schema.name, t.file);
    for (const auto& e : errors) std::cerr << e << "\n";
    if (!errors.empty()) {
      std::cerr << "tocsin: table '" << t.schema.name << "' has errors and nothing was started; fix the file and check with `tocsin check`\n";
      return 2;
    }
  }
  const auto loaded = rules::load_rule_files(cfg.rule_paths, &catalog);
  for (const auto& d : loaded.diagnostics) std::cerr << rules::format_text(d) << "\n";
  if (!loaded.ok()) {
    std::cerr << "tocsin: the rules have errors and were not started; fix them and check with `tocsin rules check`\n";
    return 2;
  }

  std::unique_ptr<connectors::EmbeddedBroker> broker;
  if (cfg.embedded_broker()) {
    broker = std::make_unique<connectors::EmbeddedBroker>(cfg.embedded.brokers);
    for (const auto& t : cfg.kafka.topics.input) broker->create_topic(t, cfg.embedded.partitions);
    broker->create_topic(cfg.kafka.topics.alerts, cfg.embedded.partitions);
    broker->create_topic(cfg.kafka.topics.dead_letter, cfg.embedded.partitions);
    broker->create_topic(cfg.kafka.topics.late, cfg.embedded.partitions);
    for (const auto& t : cfg.tables)
      if (!t.topic.empty()) broker->create_topic(t.topic, 1);  // table topics: small, compacted in production
    cfg.kafka.bootstrap = broker->bootstrap();
    connectors::apply_embedded_defaults(cfg.kafka);
    if (!cfg.embedded.bootstrap_file.empty()) std::ofstream(cfg.embedded.bootstrap_file) << cfg.kafka.bootstrap << "\n";
  }

  WallClock wall_clock;
  monitoring::Metrics metrics;
  monitoring::add_build_info(metrics, TOCSIN_VERSION);
  // Hot reload: the engines follow this feed (declared before the HTTP server
  // and the workers, so it outlives both).
  RuleReloader reloader(cfg.rule_paths, loaded.rules, &catalog, &metrics.registry());
  if (cfg.pipeline.workers > 1)
    for (const std::string& w : partition_warnings(*loaded.rules)) spdlog::warn("{}", w);
  struct ReloadSignalGuard {
    ~ReloadSignalGuard() { set_reload_signal_handler({}); }
  } reload_signal_guard;
  std::string host;
  uint16_t port = 0;
  split_host_port(cfg.http_listen, host, port);
  const connectors::HttpTls tls{cfg.http_tls_cert, cfg.http_tls_key};
  const bool https = !cfg.http_tls_cert.empty();
  const std::string scheme = https ? "https://" : "http://";
  std::unique_ptr<connectors::HttpServer> http_server;
  try {
    http_server = std::make_unique<connectors::HttpServer>(host, port, https ? &tls : nullptr);
  } catch (const std::exception& e) {
    std::cerr << "tocsin: " << e.what() << " (http.listen / http.tls in the config)\n";
    return 2;
  }
  connectors::HttpServer& http = *http_server;
  http.route("/metrics", [&metrics](const connectors::HttpRequest&) {
    return connectors::HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", metrics.render()};
  });
  http.route("/healthz", [](const connectors::HttpRequest&) { return connectors::HttpResponse{200, "text/plain", "ok\n"}; });
  // The operator console: sessions, roles, the page and live updates (docs/console.md).
  connectors::Console console(cfg.console, wall_clock);
  console.add_routes(http);
  add_reload_routes(http, reloader, cfg.console.auth() ? &console : nullptr);  // POST /-/reload, GET /-/rules

  // The alert desk (docs/alerting.md): reads the alerts the workers raise.
  // The SLA board's view of the engines' clocks; outlives the HTTP routes that read it.
  rules::ClockBoard clock_board(static_cast<size_t>(cfg.pipeline.workers));
  std::unique_ptr<AlertService> alert_service;
  if (!cfg.alerting.file.empty()) {
    alerts::AlertingConfig alerting;
    const auto diags = alerts::load_alerting_config(cfg.alerting.file, &catalog, alerting);
    bool ok = true;
    for (const auto& d : diags) {
      std::cerr << rules::format_text(d) << "\n";
      ok &= d.level != rules::Diagnostic::Level::kError;
    }
    if (!ok) {
      std::cerr << "tocsin: the alerting file has errors and nothing was started; fix it and check with `tocsin check`\n";
      return 2;
    }
    for (const auto& d : alerts::check_targets(alerting, *loaded.rules)) std::cerr << rules::format_text(d) << "\n";
    // ... and on every rule reload (logged, and shown at GET /-/rules).
    reloader.set_checker([policies = std::make_shared<const alerts::AlertingConfig>(alerting)](const rules::RuleSet& set) {
      return alerts::check_targets(*policies, set);
    });
    try {
      alert_service = std::make_unique<AlertService>(cfg, alerting, &tables, metrics, http, console);
    } catch (const std::exception& e) {
      std::cerr << "tocsin: " << e.what() << "\n";
      return 2;
    }
  }
  struct StopHttpFirst {  // the desk's routes must stop being served before it goes
    connectors::HttpServer& http;
    ~StopHttpFirst() { http.stop(); }
  } stop_http_first{http};

  const Clock& clock = wall_clock;
  std::vector<WorkerSlot> slots(static_cast<size_t>(cfg.pipeline.workers));
  if (alert_service) alert_service->show_clocks(clock_board);
  std::vector<const WorkerStats*> worker_stats;
  std::vector<const rules::Engine*> engines;
  std::vector<const connectors::KafkaIOStats*> kafka_stats;
  for (auto& s : slots) {
    s.io = std::make_unique<connectors::KafkaIO>(cfg.kafka);
    s.stats = std::make_unique<WorkerStats>();
    s.out = std::make_unique<TimedOutputSink>(*s.io, *s.stats);
    s.encoder = std::make_unique<alerts::AlertEncoder>(*s.out, clock);
    s.engine = std::make_unique<rules::Engine>(
        loaded.rules, *s.encoder, &reloader, &tables,
        rules::EngineOptions{.timers_follow_event_time = cfg.pipeline.timers_follow_event_time,
                             .clock_board = &clock_board,
                             .worker_index = static_cast<size_t>(&s - slots.data())});
    s.worker = std::make_unique<Worker>(*s.io, *s.out, *s.engine, clock, cfg.pipeline.limits, *s.stats,
                                        cfg.pipeline.allowed_lateness_ms);
    worker_stats.push_back(s.stats.get());
    engines.push_back(s.engine.get());
    kafka_stats.push_back(&s.io->stats());
  }
  metrics.add_collector(monitoring::pipeline_collector(worker_stats, cfg.kafka.topics.input));
  metrics.add_collector(monitoring::rules_collector(engines));
  metrics.add_collector(connectors::kafka_collector(kafka_stats, cfg.kafka.topics.input));
  http.start();
  if (alert_service) alert_service->start();
  reloader.start({cfg.rules_watch, std::chrono::milliseconds(cfg.rules_watch_interval_ms)});
  set_reload_signal_handler([&reloader] { reloader.request_reload("sighup"); });

  // Table topics are read from the beginning before the workers start, so the
  // first events meet complete tables (bounded: a slow topic fills in later).
  std::vector<std::unique_ptr<connectors::TableTopicReader>> table_readers;
  std::vector<connectors::WatchedTableFile> watched_tables;
  for (const auto& t : cfg.tables) {
    if (!t.topic.empty()) {
      table_readers.push_back(std::make_unique<connectors::TableTopicReader>(cfg.kafka, t.topic, t.schema.name, tables));
      table_readers.back()->start();
    }
    if (t.reload && !t.file.empty()) watched_tables.push_back({t.schema.name, t.file});
  }
  connectors::TableFileWatcher table_watcher(tables, std::move(watched_tables));
  table_watcher.start();
  const auto tables_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (const auto& r : table_readers) {
    while (!stop.load() && !r->wait_caught_up(std::chrono::milliseconds(100)) && std::chrono::steady_clock::now() < tables_deadline) {
    }
    if (!r->stats().caught_up.load())
      spdlog::warn("tables: topic {} is not fully read yet; starting anyway (table {} fills in as it is read)", r->topic(), r->table());
  }
  metrics.add_collector([&tables, &table_readers, &table_watcher](monitoring::Families& out) {
    using prometheus::MetricType;
    auto rows = monitoring::make_family("tocsin_table_rows", "Rows in each reference table", MetricType::Gauge);
    auto records = monitoring::make_family("tocsin_table_topic_records_total", "Records read from each table's topic", MetricType::Counter);
    auto bad = monitoring::make_family("tocsin_table_topic_bad_records_total", "Table topic records skipped: no key, or a value that is not a row", MetricType::Counter);
    auto reloads = monitoring::make_family("tocsin_table_file_reloads_total", "Table file reloads, by result (error: the previous contents were kept)", MetricType::Counter);
    const auto snap = tables.snapshot();
    for (size_t i = 0; i < tables.catalog().tables.size(); ++i)
      monitoring::add_sample(rows, {{"table", tables.catalog().tables[i].name}}, static_cast<double>(snap->size(static_cast<int>(i))));
    for (const auto& r : table_readers) {
      monitoring::add_sample(records, {{"table", r->table()}}, static_cast<double>(r->stats().records.load(std::memory_order_relaxed)));
      monitoring::add_sample(bad, {{"table", r->table()}}, static_cast<double>(r->stats().bad_records.load(std::memory_order_relaxed)));
    }
    monitoring::add_sample(reloads, {{"result", "ok"}}, static_cast<double>(table_watcher.reloads()));
    monitoring::add_sample(reloads, {{"result", "error"}}, static_cast<double>(table_watcher.failures()));
    for (auto* f : {&rows, &records, &bad, &reloads}) out.push_back(std::move(*f));
  });
  std::string tables_banner;
  for (size_t i = 0; i < cfg.tables.size(); ++i) {
    const auto& t = cfg.tables[i];
    tables_banner += (i ? "\n                     " : "  tables:            ") + t.schema.name + " (" +
                     std::to_string(tables.snapshot()->size(static_cast<int>(i))) + " rows" +
                     (t.topic.empty() ? "" : ", topic " + t.topic) + (t.reload ? ", file watched" : "") + ")";
  }
  if (!tables_banner.empty()) tables_banner += "\n";

  banner << "Tocsin " << TOCSIN_VERSION << " is running"
         << (broker ? " on its embedded Kafka broker" : "") << "\n"
         << "  bootstrap servers: " << cfg.kafka.bootstrap << "\n"
         << "  watch alerts:      kcat -b " << cfg.kafka.bootstrap << " -C -t " << cfg.kafka.topics.alerts << "\n"
         << "  dead letters:      kcat -b " << cfg.kafka.bootstrap << " -C -t " << cfg.kafka.topics.dead_letter
         << " -f '%h %s\\n'\n"
         << "  metrics:           " << scheme << host << ":" << http.port() << "/metrics\n"
         << "  console:           " << scheme << host << ":" << http.port() << "/"
         << (cfg.console.auth() ? "" : " (no users configured: open to anyone on this host)") << "\n"
         << "  rules:             " << loaded.rules->rules.size() << " loaded, version " << loaded.rules->version << "\n"
         << tables_banner << (alert_service ? alert_service->describe() : std::string())
         << "  reload rules:      kill -HUP " << getpid() << " | curl -X POST http://" << host << ":" << http.port()
         << "/-/reload" << (cfg.rules_watch ? " (or edit the files: they are watched)" : "") << "\n"
         << "  stop:              Ctrl-C\n"
         << std::flush;

  std::atomic<int> unclean{0};
  for (auto& s : slots)
    s.thread = std::thread([&s, &stop, &cfg, &unclean] {
      s.worker->run(stop, cfg.pipeline.poll_timeout_ms);
      // Drain in every worker's own thread at once, so the group can finish
      // any rebalance while the members commit.
      if (!s.io->drain(10000)) unclean.fetch_add(1);
    });
  std::thread demo;
  if (broker && cfg.demo.enabled) {
    spdlog::info("demo traffic: {} events/s, seed {}", cfg.demo.rate, cfg.demo.seed);
    demo = std::thread([&] { demo_traffic(cfg.kafka, cfg.demo, stop); });
  }
  while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (demo.joinable()) demo.join();
  for (auto& s : slots) s.thread.join();
  for (auto& s : slots) s.io->close(10000);
  if (alert_service) alert_service->stop();
  const bool clean = unclean.load() == 0;
  http.stop();
  spdlog::info("stopped{}", clean ? " cleanly" : " with unacknowledged outputs (they will be redone)");
  return 0;
}

}  // namespace tocsin::app
