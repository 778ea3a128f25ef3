#pragma once
// Hot reload of the rule files. A new RuleSet is built beside the active one
// and swapped in atomically; a set with any error never goes live (the old
// one keeps running, the failure is counted, logged and kept for /-/rules).
// Engines poll version() once per batch and keep the window state of rules
// whose definition did not change (rules::Engine::replace_rules).
//
// Triggers: the watcher thread (file change), request_reload() (SIGHUP) and
// reload() (the admin HTTP endpoint). Thread-safe: reloads are serialised.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rules/engine.h"
#include "rules/rule_set.h"

namespace prometheus {
class Counter;
class Gauge;
class Registry;
}  // namespace prometheus

namespace tocsin::connectors {
class HttpServer;
class Console;
}

namespace tocsin::app {

// The outcome of one reload attempt (or of the initial load, trigger "startup").
struct ReloadStatus {
  int64_t time_ms = 0;  // wall clock, epoch ms
  std::string trigger;  // "startup", "watch", "sighup", "http", or what the caller passed
  bool ok = true;       // false: the set had errors and did not go live
  bool changed = false; // a new version went live
  std::string version;  // the version live after the attempt
  size_t rule_count = 0;
  std::vector<rules::Diagnostic> diagnostics;  // errors (when !ok) and warnings
};

struct WatchOptions {
  bool watch = true;  // poll the rule files; when false the thread only serves request_reload()
  std::chrono::milliseconds interval{1000};
};

class RuleReloader final : public rules::RuleFeed {
 public:
  // `initial` is the set already loaded from `paths` (start-up fails before
  // this when it has errors). `catalog` (may be null) declares the reference
  // tables the rules may use; it must outlive the reloader. `registry` (may be
  // null) receives the reload metrics.
  RuleReloader(std::vector<std::string> paths, std::shared_ptr<const rules::RuleSet> initial,
               const rules::TableCatalog* catalog = nullptr, prometheus::Registry* registry = nullptr);
  ~RuleReloader() override;  // stops the watcher
  RuleReloader(const RuleReloader&) = delete;
  RuleReloader& operator=(const RuleReloader&) = delete;

  // rules::RuleFeed: bumped each time a new version goes live.
  uint64_t version() const override { return version_.load(std::memory_order_acquire); }
  std::shared_ptr<const rules::RuleSet> current() const override;

  // Loads the files now (on the calling thread) and swaps the set in when it
  // has no errors and a different version.
  ReloadStatus reload(const std::string& trigger);
  // Asks the background thread to reload (returns at once; safe to call from a
  // signal-handling thread). Reloads inline when the thread is not running.
  void request_reload(const std::string& trigger);

  // Starts the background thread: polls the files every `interval` (when
  // `watch`) and serves request_reload(). A change is applied once the files
  // have looked the same for two polls in a row, so a file caught half-written
  // is not loaded.
  void start(WatchOptions options);
  void stop();  // immediate: the thread waits on a condition variable

  // Extra warnings for a set that loaded without errors (e.g. alerting policies
  // whose targets its alerts cannot fill: alerts::check_targets). They join the
  // reload's diagnostics and never block it. Set before start().
  using Checker = std::function<std::vector<rules::Diagnostic>(const rules::RuleSet&)>;
  void set_checker(Checker checker) { checker_ = std::move(checker); }

  ReloadStatus last_reload() const;
  // {"version","feed_version","rules":[ids],"files":[...],"last_reload":{...}}
  std::string rules_json() const;

  // What the watcher compares: every rule file (and each *.yaml / *.yml entry
  // of a directory) with its inode, size and modification time.
  static std::string fingerprint(const std::vector<std::string>& paths);

 private:
  ReloadStatus reload_locked(const std::string& trigger);  // holds reload_mu_
  void run(WatchOptions options);

  const std::vector<std::string> paths_;
  const rules::TableCatalog* catalog_;
  Checker checker_;

  std::mutex reload_mu_;  // serialises reloads; guards seen_, candidate_
  std::string seen_;      // fingerprint of the files as last loaded
  std::string candidate_; // a changed fingerprint waiting to look the same on the next poll

  mutable std::mutex mu_;  // guards current_, last_
  std::shared_ptr<const rules::RuleSet> current_;
  ReloadStatus last_;
  std::atomic<uint64_t> version_{1};

  std::mutex wake_mu_;  // guards stopping_, pending_, running_
  std::condition_variable wake_;
  bool stopping_ = false;
  bool running_ = false;
  std::string pending_;  // trigger of a requested reload
  std::thread thread_;

  prometheus::Counter* successes_ = nullptr;
  prometheus::Counter* failures_ = nullptr;      // tocsin_rules_reload_total{result="failure"}
  prometheus::Counter* failures_alt_ = nullptr;  // tocsin_rules_reload_failures_total
  prometheus::Gauge* last_success_ = nullptr;
};

// POST /-/reload: 200 {"ok":true,...,"version"} or 422 {"ok":false,...,"diagnostics":[...]};
// other methods 405. GET /-/rules: reloader.rules_json(). Register before server.start().
// `console`: when set, the routes need a session or token (reload: admin).
void add_reload_routes(connectors::HttpServer& server, RuleReloader& reloader, connectors::Console* console = nullptr);

}  // namespace tocsin::app
