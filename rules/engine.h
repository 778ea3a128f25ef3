#pragma once
// The rule engine of one worker: evaluates a compiled RuleSet against that
// worker's events and keeps the per-key window state of its partitions.
//
// Not thread-safe: one Engine per worker. Counters are single-writer atomics
// that the metrics scrape may read from any thread. In steady state (no more
// keys at once than before, windows at their usual size) evaluation does not
// allocate: a new window key, sequence key or absence clock reuses the
// storage of an ended one.
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "pipeline/io.h"
#include "pipeline/state_store.h"
#include "pipeline/stats.h"
#include "rules/clock_board.h"
#include "rules/rule_set.h"
#include "rules/tables.h"

namespace tocsin::rules {

// A rule fired. Views are valid only during SignalSink::on_signal.
struct Signal {
  const RuleSet* rule_set = nullptr;
  const Rule* rule = nullptr;
  const Event* event = nullptr;  // the event that made the rule fire (an absence: its start event)
  std::span<const std::string_view> key;  // values of the rule's key fields (empty for per-event rules)
  std::string_view title;                 // rendered, with phone numbers masked
  std::string_view summary;               // rendered like the title; empty when the rule has none
  std::string_view severity;              // the rule's, a deadline's, or the score level's
  int64_t window_start_ms = 0;
  int64_t window_end_ms = 0;
  int64_t instance_ms = 0;                // time part of the alert id (window end, session start, due time)
  std::span<const double> values;         // parallel to aggregates, then features, then score
  std::string_view first_event_id;
  int64_t first_event_time_ms = 0;
  uint64_t count = 0;
  std::string_view deadline;              // absence: the deadline that passed
  std::span<const std::pair<std::string, std::string>> deadline_labels;  // its labels (override the rule's)
  std::string_view level;                 // scored rules: the level reached
  bool resolved = false;                  // absence: the alert of `deadline` is over (met or cancelled late)
};

class SignalSink {
 public:
  virtual ~SignalSink() = default;
  virtual void on_signal(const Signal& s) = 0;
};

struct RuleCounters {
  Counter evaluations{};  // events offered to the rule (as of the engine's last on_tick)
  Counter matches{};      // events that passed `where`
  Counter signals{};      // times the rule fired
  Counter late{};         // events older than the rule's window (not counted)
  Counter dropped{};      // sequence starts dropped because a key had too many pending
  std::atomic<int64_t> keys{0};    // live keys: windows, pending sequences, running clocks (gauge)
  std::atomic<int64_t> timers{0};  // pending deadline timers (gauge)
};

struct EngineOptions {
  // Absence deadlines fire when the wall clock (on_tick's now) passes them.
  // For replays of recorded streams, set this so they follow event time (the
  // newest event time the engine has seen) instead.
  bool timers_follow_event_time = false;
  // Pending `first` events kept per sequence key; older ones are dropped and counted.
  size_t max_pending_per_key = 16;
  // Where this engine publishes its soonest running clocks when the SLA board
  // is open (null: never), and its slot there.
  ClockBoard* clock_board = nullptr;
  size_t worker_index = 0;
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
         const TableSource* tables = nullptr, EngineOptions options = {});
  ~Engine() override;

  void on_event(const Event& e) override;
  // Fires due timers, sweeps idle keys and picks up a new rule set from the feed.
  void on_tick(int64_t now_ms) override;

  // Swaps in a new rule set. Rules whose id and definition are unchanged keep
  // their window state and counter values; others start empty. Owner thread only.
  void replace_rules(std::shared_ptr<const RuleSet> rules);

  // Owner thread only; up to date.
  const RuleSet& rule_set() const { return *rules_; }
  std::span<const RuleCounters> counters() const;
  // Any thread; evaluations as of the last on_tick.
  EngineSnapshot snapshot() const;

  // Writes the durable state (running clocks and pending sequence steps) to
  // `store`, one namespace per rule ("absence/<id>", "sequence/<id>"), and
  // reads it back. restore_state() is for a fresh engine with the same rules;
  // it skips rules the store does not know. Owner thread only.
  void snapshot_state(StateStore& store) const;
  void restore_state(const StateStore& store);

 private:
  struct RuleState;
  struct KeyTable;
  struct Fire;
  // One key table per (stream, group_by) of the window rules; sets each window
  // rule's key_table and key_pos in `state`.
  static std::vector<std::unique_ptr<KeyTable>> make_key_tables(
      const RuleSet& set, std::vector<std::unique_ptr<RuleState>>& state);
  // Per stream and kind (as RuleSet::index): the trigger before which on_event
  // guesses each window key's entry and prefetches its states, halfway to the
  // first window rule (SIZE_MAX: no guess; the first window rule comes before
  // 2 * kGuessAfter triggers, or there is none).
  using GuessPoints = std::array<std::vector<size_t>, kStreamCount>;
  static constexpr size_t kGuessAfter = 4;
  static GuessPoints guess_points(const RuleSet& set);
  void fire(const Fire& f);
  size_t build_key(const Event& e, const std::vector<int>& slots);
  // The key build_key would write, without copying when it is one string
  // field (a view of the event's value); else built into key_buffer_.
  std::string_view key_of(const Event& e, const std::vector<int>& slots);
  // Views the `fields` values of a stored key (joined by '\x1f') in key_parts_; returns how many.
  size_t split_key(std::string_view key, size_t fields);
  void on_main(int ri, const Rule& rule, const Event& e, RuleCounters& c);
  void on_window(int ri, const Rule& rule, const Event& e, RuleCounters& c);
  void on_then(int ri, const Rule& rule, const Event& e, RuleCounters& c);
  void on_start(int ri, const Rule& rule, const Event& e, RuleCounters& c);
  void on_until(int ri, const Rule& rule, int deadline, const Event& e);
  void on_cancel(int ri, const Rule& rule, const Event& e);
  // Signals `resolved` for the fired deadlines of clocks `k` (of `key`) in `bits` (K: the engine's clocks).
  template <typename K>
  void resolve_fired(const Rule& rule, K& k, std::string_view key, uint32_t bits, const Event& e);
  void on_extend(int ri, const Rule& rule, int deadline, const Event& e);
  void fire_timers(int64_t now_ms);
  void publish_clocks(int64_t now_ms);
  // Evaluations are counted per trigger list (RuleSet::index) as events
  // arrive, and added to the counters of the list's rules on each tick: one
  // increment per event, not one per rule.
  void size_offered();
  void fold_offered() const;
  // Computes the score features into values[first..] and returns the level.
  std::string_view score(const Rule& rule, const EvalContext& ctx, double* values);

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
  std::vector<std::unique_ptr<KeyTable>> key_tables_;
  GuessPoints guess_at_;
  uint64_t event_seq_ = 0;  // events seen: a key table's lookup is reused within one event
  // Per RuleSet::conditions, its outcome for the event: event_seq_ << 1 | holds.
  std::vector<uint64_t> condition_memo_;
  mutable std::array<std::vector<uint64_t>, kStreamCount> offered_;  // events per trigger list, since the last fold
  EngineOptions options_;
  std::string key_buffer_;
  std::array<std::string_view, kMaxGroupBy> key_parts_{};
  std::string title_buffer_;
  std::string summary_buffer_;
  void render(const std::vector<TemplatePart>& parts, const Fire& f, std::string& out);
  Event scratch_;            // unpacked stored events (absence starts, sequence firsts)
  int64_t newest_event_ms_ = INT64_MIN;
  int64_t last_sweep_ms_ = 0;
  uint64_t events_since_sweep_ = 0;
};

}  // namespace tocsin::rules
