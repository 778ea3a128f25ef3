// e2e_consume: consumes a pre-loaded topic through Tocsin's real Kafka path and
// reports the rate.
//
//   e2e_consume --bootstrap B --topic calls --expect N [--workers W] [--rules FILE]
//               [--batch-size 1000] [--deadline 120] [-X consumer.property=value ...]
//
// W threads, each with its own KafkaIO + AlertEncoder + rules::Engine + Worker
// (WallClock), wired like app/daemon.cc and subscribed to the three input
// topics (--topic replaces the calls topic's name). A fresh consumer group per
// run, so the topic is read from the beginning. The clock starts at the first
// non-empty batch of any worker and stops when the workers together have
// handled N events (WorkerStats processed + failed); both instants are taken on
// the worker threads, between batches. Prints one line on stdout:
//
//   tocsin: N events in S s = R events/s (decode + rules, W workers)
//
// Exits 1 if N events were not handled within --deadline seconds, 3 if the
// group rebalanced during the measurement (the line is printed all the same).
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "alerts/alert_encoder.h"
#include "connectors/kafka_io.h"
#include "connectors/kafka_options.h"
#include "pipeline/clock.h"
#include "pipeline/worker.h"
#include "rules/engine.h"
#include "rules/rule_set.h"

#ifndef TOCSIN_SOURCE_DIR
#define TOCSIN_SOURCE_DIR "."
#endif

namespace {

using namespace tocsin;
using Steady = std::chrono::steady_clock;

struct Progress {
  std::vector<const WorkerStats*> stats;
  int64_t expect = 0;
  std::atomic<int64_t> start_ns{0};  // steady clock; 0 = not yet
  std::atomic<int64_t> end_ns{0};
  std::atomic<bool> done{false};

  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Steady::now().time_since_epoch()).count();
  }
  int64_t handled() const {
    int64_t n = 0;
    for (const WorkerStats* s : stats)
      for (int i = 0; i < kStreamCount; ++i) {
        n += static_cast<int64_t>(s->processed[static_cast<size_t>(i)].load(std::memory_order_relaxed));
        for (const auto& f : s->failed[static_cast<size_t>(i)])
          n += static_cast<int64_t>(f.load(std::memory_order_relaxed));
      }
    return n;
  }
};

// Passes KafkaIO through and timestamps the first non-empty batch and the
// moment the expected count is reached (checked before each poll, i.e. after
// the previous batch was fully handled).
class TimedSource final : public EventSource {
 public:
  TimedSource(EventSource& inner, Progress& p) : inner_(inner), p_(p) {}
  std::span<const RawMessage> poll(int timeout_ms) override {
    if (!p_.done.load(std::memory_order_relaxed) && p_.handled() >= p_.expect) {
      int64_t zero = 0;
      if (p_.end_ns.compare_exchange_strong(zero, Progress::now_ns())) p_.done.store(true);
    }
    const auto batch = inner_.poll(timeout_ms);
    if (!batch.empty() && p_.start_ns.load(std::memory_order_relaxed) == 0) {
      int64_t zero = 0;
      p_.start_ns.compare_exchange_strong(zero, Progress::now_ns());
    }
    return batch;
  }
  void batch_done() override { inner_.batch_done(); }

 private:
  EventSource& inner_;
  Progress& p_;
};

struct Slot {
  std::unique_ptr<connectors::KafkaIO> io;
  std::unique_ptr<TimedSource> source;
  std::unique_ptr<alerts::AlertEncoder> encoder;
  std::unique_ptr<rules::Engine> engine;
  std::unique_ptr<WorkerStats> stats;
  std::unique_ptr<Worker> worker;
  std::thread thread;
};

}  // namespace

int main(int argc, char** argv) {
  std::string bootstrap;
  std::string topic = "calls";
  int64_t expect = 0;
  int workers = 1;
  std::string rules_file = std::string(TOCSIN_SOURCE_DIR) + "/examples/rules/first_slice.yaml";
  int deadline_s = 120;
  int batch_size = 1000;

  CLI::App cli{"Consume a pre-loaded topic through Tocsin's Kafka path and report events/s"};
  cli.add_option("--bootstrap", bootstrap, "Kafka bootstrap servers")->required();
  cli.add_option("--topic", topic, "Topic of the calls stream (faults and complaints keep their defaults)");
  cli.add_option("--expect", expect, "Number of events to handle")->required()->check(CLI::PositiveNumber);
  cli.add_option("--workers", workers, "Worker threads (one consumer each)")->check(CLI::Range(1, 64));
  cli.add_option("--rules", rules_file, "Rule file or directory");
  cli.add_option("--deadline", deadline_s, "Give up after this many seconds")->check(CLI::Range(1, 3600));
  cli.add_option("--batch-size", batch_size, "Messages per poll")->check(CLI::Range(1, 100000));
  bool progress_log = false;
  cli.add_flag("--progress", progress_log, "Print the handled count every 250 ms on stderr");
  std::vector<std::string> consumer_props;
  cli.add_option("-X", consumer_props, "Extra librdkafka consumer property NAME=VALUE (repeatable)");
  CLI11_PARSE(cli, argc, argv);

  spdlog::set_default_logger(spdlog::stderr_color_mt("e2e_consume"));
  spdlog::set_level(spdlog::level::warn);

  const auto loaded = rules::load_rule_files({rules_file});
  for (const auto& d : loaded.diagnostics) std::cerr << rules::format_text(d) << "\n";
  if (!loaded.ok()) {
    std::cerr << "e2e_consume: the rules in " << rules_file << " have errors\n";
    return 2;
  }

  connectors::KafkaOptions kafka;
  kafka.bootstrap = bootstrap;
  kafka.group_id = "tocsin-e2e-" + std::to_string(getpid()) + "-" +
                   std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  kafka.topics.input[static_cast<size_t>(Stream::kCalls)] = topic;
  connectors::apply_embedded_defaults(kafka);
  kafka.batch_size = batch_size;
  for (const auto& p : consumer_props) {
    const auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "e2e_consume: -X expects NAME=VALUE, got '" << p << "'\n";
      return 2;
    }
    kafka.consumer[p.substr(0, eq)] = p.substr(eq + 1);
  }

  Progress progress;
  progress.expect = expect;
  WallClock clock;
  const DecodeLimits limits;
  std::vector<Slot> slots(static_cast<size_t>(workers));
  try {
    for (auto& s : slots) {
      s.io = std::make_unique<connectors::KafkaIO>(kafka);
      s.source = std::make_unique<TimedSource>(*s.io, progress);
      s.encoder = std::make_unique<alerts::AlertEncoder>(*s.io, clock);
      s.engine = std::make_unique<rules::Engine>(loaded.rules, *s.encoder);
      s.stats = std::make_unique<WorkerStats>();
      s.worker = std::make_unique<Worker>(*s.source, *s.io, *s.engine, clock, limits, *s.stats);
      progress.stats.push_back(s.stats.get());
    }
  } catch (const std::exception& e) {
    std::cerr << "e2e_consume: " << e.what() << "\n";
    return 2;
  }

  std::atomic<bool> stop{false};
  for (auto& s : slots) s.thread = std::thread([&s, &stop] { s.worker->run(stop, 100); });

  const auto deadline = Steady::now() + std::chrono::seconds(deadline_s);
  auto next_report = Steady::now();
  while (!progress.done.load() && Steady::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (progress_log && Steady::now() >= next_report) {
      next_report += std::chrono::milliseconds(250);
      const int64_t start = progress.start_ns.load();
      std::fprintf(stderr, "e2e_consume: t=%.2f s handled %lld\n",
                   start ? static_cast<double>(Progress::now_ns() - start) * 1e-9 : 0.0,
                   static_cast<long long>(progress.handled()));
    }
  }
  // A worker whose partitions are exhausted may be blocked in poll(); it
  // checks again within one poll timeout, but so that the end is taken even
  // when all workers block at the same moment, the main thread checks too.
  if (!progress.done.load() && progress.handled() >= expect) {
    int64_t zero = 0;
    if (progress.end_ns.compare_exchange_strong(zero, Progress::now_ns())) progress.done.store(true);
  }
  stop.store(true);
  for (auto& s : slots) s.thread.join();

  const int64_t handled = progress.handled();
  int64_t failed = 0;
  for (const auto& s : slots) {
    for (int i = 0; i < kStreamCount; ++i)
      for (const auto& f : s.stats->failed[static_cast<size_t>(i)]) failed += static_cast<int64_t>(f.load());
  }
  int rc = 0;
  // Each worker should have been assigned its partitions exactly once. A
  // member that joined late makes the group rebalance in the middle of the
  // measurement (the mock broker waits session.timeout.ms for it), which
  // measures the rebalance, not the pipeline: exit 3 so the caller can retry.
  bool rebalanced = false;
  for (const auto& s : slots) rebalanced |= s.io->stats().rebalances.load() > 1;
  if (!progress.done.load()) {
    std::cerr << "e2e_consume: only " << handled << " of " << expect << " events handled within " << deadline_s
              << " s\n";
    rc = 1;
  } else {
    const double secs = static_cast<double>(progress.end_ns.load() - progress.start_ns.load()) * 1e-9;
    char line[256];
    std::snprintf(line, sizeof line, "tocsin: %lld events in %.3f s = %.0f events/s (decode + rules, %d workers)",
                  static_cast<long long>(expect), secs, static_cast<double>(expect) / secs, workers);
    std::cout << line << std::endl;
    std::cerr << "e2e_consume: handled " << handled << " (" << failed << " dead-lettered); per worker (handled, alerts, rebalances):";
    for (const auto& s : slots) {
      int64_t n = 0;
      for (int i = 0; i < kStreamCount; ++i) {
        n += static_cast<int64_t>(s.stats->processed[static_cast<size_t>(i)].load());
        for (const auto& f : s.stats->failed[static_cast<size_t>(i)]) n += static_cast<int64_t>(f.load());
      }
      std::cerr << " (" << n << ", " << s.io->stats().alerts_produced.load() << ", " << s.io->stats().rebalances.load() << ")";
    }
    std::cerr << "\n";
    if (rebalanced) {
      std::cerr << "e2e_consume: the group rebalanced during the measurement; the figure includes it\n";
      rc = 3;
    }
  }
  for (auto& s : slots) s.io->drain(10000);
  for (auto& s : slots) s.io->close(10000);
  return rc;
}
