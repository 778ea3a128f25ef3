#include "app/daemon.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "alerts/alert_encoder.h"
#include "connectors/embedded_broker.h"
#include "connectors/http_server.h"
#include "connectors/kafka_io.h"
#include "connectors/kafka_metrics.h"
#include "gen/generator.h"
#include "monitoring/metrics.h"
#include "pipeline/worker.h"
#include "rules/engine.h"

#ifndef TOCSIN_VERSION
#define TOCSIN_VERSION "dev"
#endif

namespace tocsin::app {
namespace {

struct WorkerSlot {
  std::unique_ptr<connectors::KafkaIO> io;
  std::unique_ptr<alerts::AlertEncoder> encoder;
  std::unique_ptr<rules::Engine> engine;
  std::unique_ptr<WorkerStats> stats;
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

void install_stop_signals(std::atomic<bool>& stop) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set, &stop] {
    int sig = 0;
    sigwait(&set, &sig);
    stop.store(true);
    spdlog::info("{} received: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
  }).detach();
}

int run_daemon(Config cfg, const std::atomic<bool>& stop, std::ostream& banner) {
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  const auto loaded = rules::load_rule_files(cfg.rule_paths);
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
    cfg.kafka.bootstrap = broker->bootstrap();
    connectors::apply_embedded_defaults(cfg.kafka);
    if (!cfg.embedded.bootstrap_file.empty()) std::ofstream(cfg.embedded.bootstrap_file) << cfg.kafka.bootstrap << "\n";
  }

  monitoring::Metrics metrics;
  monitoring::add_build_info(metrics, TOCSIN_VERSION);
  std::string host;
  uint16_t port = 0;
  split_host_port(cfg.http_listen, host, port);
  connectors::HttpServer http(host, port);
  http.route("/metrics", [&metrics](const connectors::HttpRequest&) {
    return connectors::HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", metrics.render()};
  });
  http.route("/healthz", [](const connectors::HttpRequest&) { return connectors::HttpResponse{200, "text/plain", "ok\n"}; });

  WallClock clock;
  std::vector<WorkerSlot> slots(static_cast<size_t>(cfg.pipeline.workers));
  std::vector<const WorkerStats*> worker_stats;
  std::vector<const rules::Engine*> engines;
  std::vector<const connectors::KafkaIOStats*> kafka_stats;
  for (auto& s : slots) {
    s.io = std::make_unique<connectors::KafkaIO>(cfg.kafka);
    s.encoder = std::make_unique<alerts::AlertEncoder>(*s.io, clock);
    s.engine = std::make_unique<rules::Engine>(loaded.rules, *s.encoder);
    s.stats = std::make_unique<WorkerStats>();
    s.worker = std::make_unique<Worker>(*s.io, *s.io, *s.engine, clock, cfg.pipeline.limits, *s.stats);
    worker_stats.push_back(s.stats.get());
    engines.push_back(s.engine.get());
    kafka_stats.push_back(&s.io->stats());
  }
  metrics.add_collector(monitoring::pipeline_collector(worker_stats, cfg.kafka.topics.input));
  metrics.add_collector(monitoring::rules_collector(engines));
  metrics.add_collector(connectors::kafka_collector(kafka_stats, cfg.kafka.topics.input));
  http.start();

  banner << "Tocsin " << TOCSIN_VERSION << " is running"
         << (broker ? " on its embedded Kafka broker" : "") << "\n"
         << "  bootstrap servers: " << cfg.kafka.bootstrap << "\n"
         << "  watch alerts:      kcat -b " << cfg.kafka.bootstrap << " -C -t " << cfg.kafka.topics.alerts << "\n"
         << "  dead letters:      kcat -b " << cfg.kafka.bootstrap << " -C -t " << cfg.kafka.topics.dead_letter
         << " -f '%h %s\\n'\n"
         << "  metrics:           http://" << host << ":" << http.port() << "/metrics\n"
         << "  rules:             " << loaded.rules->rules.size() << " loaded, version " << loaded.rules->version << "\n"
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
  const bool clean = unclean.load() == 0;
  http.stop();
  spdlog::info("stopped{}", clean ? " cleanly" : " with unacknowledged outputs (they will be redone)");
  return 0;
}

}  // namespace tocsin::app
