#pragma once
// The rule engine of one worker: evaluates a compiled RuleSet against that
// worker's events and keeps the per-key window state of its partitions.
//
// Not thread-safe: one Engine per worker. Counters are single-writer atomics
// that the metrics scrape may read from any thread. In steady state (no new
// keys, windows at their usual size) evaluation does not allocate.
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "pipeline/io.h"
#include "pipeline/stats.h"
#include "rules/rule_set.h"
#include "rules/tables.h"

namespace tocsin::rules {

// A rule fired. Views are valid only during SignalSink::on_signal.
struct Signal {
  const RuleSet* rule_set = nullptr;
  const Rule* rule = nullptr;
  const Event* event = nullptr;  // the event that made the rule fire
  std::span<const std::string_view> key;  // values of rule->group_by (empty for per-event rules)
  std::string_view title;                 // rendered, with phone numbers masked
  int64_t window_start_ms = 0;
  int64_t window_end_ms = 0;
  std::span<const double> aggregates;     // parallel to rule->aggregates
  std::string_view first_event_id;
  int64_t first_event_time_ms = 0;
  uint64_t count = 0;
};

class SignalSink {
 public:
  virtual ~SignalSink() = default;
  virtual void on_signal(const Signal& s) = 0;
};

struct RuleCounters {
  Counter evaluations{};  // events offered to the rule
  Counter matches{};      // events that passed `where`
  Counter signals{};      // times the rule fired
  Counter late{};         // events older than the rule's window (not counted)
  std::atomic<int64_t> keys{0};  // live window keys (gauge)
};

// Where an engine gets new rule sets from (hot reload). version() is read
// once per batch (a relaxed atomic load); current() only when it changed.
class RuleFeed {
 public:
  virtual ~RuleFeed() = default;
  virtual uint64_t version() const = 0;
  virtual std::shared_ptr<const RuleSet> current() const = 0;
};

// What the metrics scrape reads: the active rule set and its counters,
// kept alive while a scrape uses them even if the engine swaps rule sets.
struct EngineSnapshot {
  std::shared_ptr<const RuleSet> rules;
  std::shared_ptr<const RuleCounters[]> counters;
};

class Engine final : public EventHandler {
 public:
  Engine(std::shared_ptr<const RuleSet> rules, SignalSink& sink, const RuleFeed* feed = nullptr,
         const TableSource* tables = nullptr);
  ~Engine() override;

  void on_event(const Event& e) override;
  // Fires due timers, sweeps idle keys and picks up a new rule set from the feed.
  void on_tick(int64_t now_ms) override;

  // Swaps in a new rule set. Rules whose id and definition are unchanged keep
  // their window state and counter values; others start empty. Owner thread only.
  void replace_rules(std::shared_ptr<const RuleSet> rules);

  // Owner thread only.
  const RuleSet& rule_set() const { return *rules_; }
  std::span<const RuleCounters> counters() const;
  // Any thread.
  EngineSnapshot snapshot() const;

 private:
  struct RuleState;
  void fire(const Rule& rule, const Event& e, std::span<const std::string_view> key,
            int64_t start, int64_t end, std::span<const double> aggs,
            std::string_view first_id, int64_t first_time, uint64_t count);

  std::shared_ptr<const RuleSet> rules_;
  SignalSink& sink_;
  const RuleFeed* feed_;
  uint64_t feed_version_ = 0;
  const TableSource* table_source_;
  uint64_t tables_version_ = 0;
  std::shared_ptr<const TableSet> tables_;  // the snapshot expressions see
  std::shared_ptr<RuleCounters[]> counters_;
  mutable std::mutex snapshot_mu_;  // guards the pointers handed to snapshot()
  std::vector<std::unique_ptr<RuleState>> state_;
  std::string key_buffer_;
  std::string title_buffer_;
  int64_t last_sweep_ms_ = 0;
};

}  // namespace tocsin::rules
