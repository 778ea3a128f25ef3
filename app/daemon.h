#pragma once
// The daemon's wiring: embedded broker (when no bootstrap.servers is set),
// demo traffic, metrics HTTP server, and N workers each with its own Kafka
// I/O, rule engine and alert encoder. Only this file and main know every folder.
#include <atomic>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "app/config.h"
#include "rules/rule_set.h"

namespace tocsin::app {

// Runs until `stop` becomes true. Prints the banner (bootstrap servers, how
// to watch alerts, metrics URL, how to stop) to `banner`. Returns the process
// exit code; rule or start-up errors are printed to stderr with how to fix them.
int run_daemon(Config config, const std::atomic<bool>& stop, std::ostream& banner);

// Rules whose key is not the partition key of their stream: correct only when
// one worker sees every partition (until repartitioning lands). One message each.
std::vector<std::string> partition_warnings(const rules::RuleSet& set);

// Blocks SIGINT and SIGTERM in the calling thread (call first in main, so
// every thread inherits the mask) and starts a thread that sets `stop` when
// one arrives.
// SIGHUP is blocked and handled by the same thread: it calls the handler set
// with set_reload_signal_handler (the daemon's rule reload), or stops like
// SIGTERM when none is set.
void install_stop_signals(std::atomic<bool>& stop);

// The SIGHUP handler (empty: none). It runs on the signal thread and must not
// block; after set_reload_signal_handler({}) returns, it is no longer running.
void set_reload_signal_handler(std::function<void()> handler);

}  // namespace tocsin::app
