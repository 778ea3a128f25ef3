#include "app/rule_reloader.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "connectors/console.h"
#include "connectors/http_server.h"
#include "pipeline/json_writer.h"

namespace tocsin::app {
namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void stat_into(std::string& out, const std::string& path) {
  struct stat st {};
  out += path;
  if (::stat(path.c_str(), &st) != 0) {
    out += "|missing\n";
    return;
  }
  out += '|' + std::to_string(st.st_dev) + '|' + std::to_string(st.st_ino) + '|' + std::to_string(st.st_size) + '|' +
         std::to_string(st.st_mtim.tv_sec) + '.' + std::to_string(st.st_mtim.tv_nsec) + '|' +
         std::to_string(st.st_ctim.tv_sec) + '.' + std::to_string(st.st_ctim.tv_nsec) + '\n';
}

// Which rules went live, left or changed: for the log line.
std::string describe_change(const rules::RuleSet& before, const rules::RuleSet& after) {
  std::map<std::string, uint64_t> old;
  for (const auto& r : before.rules) old[r.id] = r.definition_hash;
  size_t kept = 0, changed = 0, added = 0;
  for (const auto& r : after.rules) {
    const auto it = old.find(r.id);
    if (it == old.end()) {
      ++added;
      continue;
    }
    (it->second == r.definition_hash ? kept : changed) += 1;
    old.erase(it);
  }
  return std::to_string(kept) + " unchanged (state kept), " + std::to_string(changed) + " changed, " +
         std::to_string(added) + " added, " + std::to_string(old.size()) + " removed";
}

void write_status(JsonWriter& w, const ReloadStatus& s) {
  w.begin_object()
      .key("time").time(s.time_ms)
      .key("trigger").str(s.trigger)
      .key("ok").boolean(s.ok)
      .key("changed").boolean(s.changed)
      .key("version").str(s.version)
      .key("rules").num(static_cast<int64_t>(s.rule_count))
      .key("diagnostics").raw(rules::format_json(s.diagnostics))
      .end_object();
}

}  // namespace

RuleReloader::RuleReloader(std::vector<std::string> paths, std::shared_ptr<const rules::RuleSet> initial,
                           const rules::TableCatalog* catalog, prometheus::Registry* registry)
    : paths_(std::move(paths)), catalog_(catalog), current_(std::move(initial)) {
  // A change between the initial load and here is seen only at the next change.
  seen_ = fingerprint(paths_);
  last_.time_ms = now_ms();
  last_.trigger = "startup";
  if (current_) {
    last_.version = current_->version;
    last_.rule_count = current_->rules.size();
  }
  if (registry) {
    auto& total = prometheus::BuildCounter()
                      .Name("tocsin_rules_reload_total")
                      .Help("Rule reload attempts by result; a failed reload leaves the previous rules running")
                      .Register(*registry);
    successes_ = &total.Add({{"result", "success"}});
    failures_ = &total.Add({{"result", "failure"}});
    failures_alt_ = &prometheus::BuildCounter()
                         .Name("tocsin_rules_reload_failures_total")
                         .Help("Rule reloads rejected because the new rules had errors (see GET /-/rules)")
                         .Register(*registry)
                         .Add({});
    last_success_ = &prometheus::BuildGauge()
                         .Name("tocsin_rules_last_reload_success_timestamp_seconds")
                         .Help("When the rules were last loaded successfully (start-up or reload), epoch seconds")
                         .Register(*registry)
                         .Add({});
    last_success_->Set(static_cast<double>(last_.time_ms) / 1000.0);
  }
}

RuleReloader::~RuleReloader() { stop(); }

std::shared_ptr<const rules::RuleSet> RuleReloader::current() const {
  std::lock_guard lk(mu_);
  return current_;
}

ReloadStatus RuleReloader::last_reload() const {
  std::lock_guard lk(mu_);
  return last_;
}

std::string RuleReloader::fingerprint(const std::vector<std::string>& paths) {
  std::string out;
  for (const auto& path : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      // The entries load_rule_files reads; the directory's own mtime is left
      // out so editors' temporary files do not count as changes.
      out += "dir " + path + "\n";
      for (const auto& f : rules::rule_files({path})) stat_into(out, f);
    } else {
      stat_into(out, path);
    }
  }
  return out;
}

ReloadStatus RuleReloader::reload(const std::string& trigger) {
  std::lock_guard lk(reload_mu_);
  return reload_locked(trigger);
}

ReloadStatus RuleReloader::reload_locked(const std::string& trigger) {
  // Taken before reading: a change during the load shows at the next poll.
  seen_ = fingerprint(paths_);
  candidate_.clear();
  auto loaded = rules::load_rule_files(paths_, catalog_);
  ReloadStatus s;
  s.time_ms = now_ms();
  s.trigger = trigger;
  s.ok = loaded.ok();
  s.diagnostics = std::move(loaded.diagnostics);
  if (s.ok && checker_)
    for (auto& d : checker_(*loaded.rules)) s.diagnostics.push_back(std::move(d));
  if (s.ok && loaded.rules->rules.empty() && current_ && !current_->rules.empty()) {
    // Most likely a deploy caught half-way (files removed before new ones are
    // copied): never drop every rule, and its state, on a reload.
    s.ok = false;
    s.diagnostics.push_back({rules::Diagnostic::Level::kError, "E016", paths_.empty() ? "" : paths_.front(), 0, 0,
                             "the new rule set has no rules; a reload never removes every rule (restart to run with none)", ""});
  }
  std::shared_ptr<const rules::RuleSet> before;
  {
    std::lock_guard lk(mu_);
    before = current_;
    if (s.ok && (!current_ || loaded.rules->version != current_->version)) {
      current_ = loaded.rules;
      s.changed = true;
      // After the set is stored: an engine that sees the new version gets the new set.
      version_.fetch_add(1, std::memory_order_release);
    }
    s.version = current_ ? current_->version : "";
    s.rule_count = current_ ? current_->rules.size() : 0;
    last_ = s;
  }
  if (!s.ok) {
    if (failures_) failures_->Increment();
    if (failures_alt_) failures_alt_->Increment();
    size_t errors = 0;
    for (const auto& d : s.diagnostics) errors += d.level == rules::Diagnostic::Level::kError;
    spdlog::error("rules reload ({}) rejected: {} error{}; version {} stays live. Fix the rules (`tocsin rules check`); "
                  "details at GET /-/rules",
                  trigger, errors, errors == 1 ? "" : "s", s.version);
    for (const auto& d : s.diagnostics) spdlog::error("{}", rules::format_text(d));
    return s;
  }
  for (const auto& d : s.diagnostics) spdlog::warn("{}", rules::format_text(d));
  if (successes_) successes_->Increment();
  if (last_success_) last_success_->Set(static_cast<double>(s.time_ms) / 1000.0);
  if (s.changed)
    spdlog::info("rules reloaded ({}): version {} -> {}, {} rules: {}", trigger, before ? before->version : "none",
                 s.version, s.rule_count, before ? describe_change(*before, *loaded.rules) : "all new");
  else
    spdlog::info("rules reload ({}): unchanged, version {}", trigger, s.version);
  return s;
}

void RuleReloader::request_reload(const std::string& trigger) {
  {
    std::lock_guard lk(wake_mu_);
    if (running_) {
      pending_ = trigger;
      wake_.notify_all();
      return;
    }
  }
  reload(trigger);
}

void RuleReloader::start(WatchOptions options) {
  std::lock_guard lk(wake_mu_);
  if (running_) return;
  running_ = true;
  stopping_ = false;
  thread_ = std::thread([this, options] { run(options); });
}

void RuleReloader::stop() {
  {
    std::lock_guard lk(wake_mu_);
    if (!running_) return;
    stopping_ = true;
    wake_.notify_all();
  }
  thread_.join();
  std::lock_guard lk(wake_mu_);
  running_ = false;
}

void RuleReloader::run(WatchOptions options) {
  if (options.watch)
    spdlog::info("watching the rule files every {} ms", options.interval.count());
  std::unique_lock lk(wake_mu_);
  while (true) {
    const auto woken = [this] { return stopping_ || !pending_.empty(); };
    if (options.watch) wake_.wait_for(lk, options.interval, woken);
    else wake_.wait(lk, woken);
    if (stopping_) return;
    const std::string trigger = std::move(pending_);
    pending_.clear();
    lk.unlock();
    if (!trigger.empty()) {
      reload(trigger);
    } else {
      std::lock_guard rl(reload_mu_);
      const std::string fp = fingerprint(paths_);
      if (fp == seen_) candidate_.clear();
      else if (fp == candidate_) reload_locked("watch");
      else candidate_ = fp;  // changed: apply when it looks the same at the next poll
    }
    lk.lock();
  }
}

std::string RuleReloader::rules_json() const {
  std::shared_ptr<const rules::RuleSet> set;
  ReloadStatus last;
  {
    std::lock_guard lk(mu_);
    set = current_;
    last = last_;
  }
  std::string out;
  JsonWriter w(out);
  w.begin_object().key("version").str(set ? set->version : "");
  w.key("feed_version").num(static_cast<int64_t>(version()));
  w.key("rules").begin_array();
  if (set)
    for (const auto& r : set->rules) w.str(r.id);
  w.end_array();
  w.key("files").begin_array();
  if (set)
    for (const auto& f : set->files) w.str(f);
  w.end_array();
  w.key("last_reload");
  write_status(w, last);
  w.end_object();
  out += '\n';
  return out;
}

void add_reload_routes(connectors::HttpServer& server, RuleReloader& reloader, connectors::Console* console) {
  const std::string json = "application/json";
  auto guarded = [console](connectors::Role role, connectors::HttpServer::Handler h) -> connectors::HttpServer::Handler {
    if (!console) return h;
    return console->guard(role, [h](const connectors::HttpRequest& req, const connectors::Principal&) { return h(req); });
  };
  server.route("/-/reload", guarded(connectors::Role::kAdmin, [&reloader, json](const connectors::HttpRequest& req) {
    if (req.method != "POST" && req.method != "PUT")
      return connectors::HttpResponse{405, "text/plain; charset=utf-8", "use POST /-/reload\n"};
    const ReloadStatus s = reloader.reload("http");
    std::string out;
    JsonWriter w(out);
    write_status(w, s);
    out += '\n';
    return connectors::HttpResponse{s.ok ? 200 : 422, json, std::move(out)};
  }));
  server.route("/-/rules", guarded(connectors::Role::kViewer, [&reloader, json](const connectors::HttpRequest& req) {
    if (req.method != "GET" && req.method != "HEAD")
      return connectors::HttpResponse{405, "text/plain; charset=utf-8", "use GET /-/rules\n"};
    return connectors::HttpResponse{200, json, reloader.rules_json()};
  }));
}

}  // namespace tocsin::app
