#pragma once
// Rule files -> an immutable, compiled RuleSet.
//
// Loading runs in stages (Falco style): read YAML keeping every node's file,
// line and column -> check and compile each rule (names resolved to slots,
// expressions type-checked, templates parsed) -> index rules by stream and
// event kind. Any error leaves the result without a rule set: a bad file never
// goes live. A RuleSet is immutable and shared read-only between workers.
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/event.h"
#include "rules/calendar.h"
#include "rules/expr.h"

namespace tocsin::rules {

struct Diagnostic {
  enum class Level { kError, kWarning } level = Level::kError;
  std::string code;  // E0xx structure, E1xx expression syntax, E2xx types and names, Wxxx warnings
  std::string file;
  int line = 0;    // 1-based; 0 when unknown
  int column = 0;  // 1-based
  std::string message;
  std::string snippet;  // the source line
};

// "file:line:column: error E123: message" followed by the snippet and a caret.
std::string format_text(const Diagnostic& d);
// The diagnostics as a JSON array.
std::string format_json(const std::vector<Diagnostic>& ds);

enum class AggregateKind : uint8_t { kCount, kCountIf, kCountDistinct, kApproxDistinct, kSum, kAvg, kMin, kMax, kRate, kBaseline };
inline constexpr int kMaxAggregates = 8;
inline constexpr int kMaxFeatures = 16;
// The most values a rule exposes: aggregates, score features and the score.
inline constexpr int kMaxValues = kMaxAggregates + kMaxFeatures + 1;
inline constexpr int kMaxGroupBy = 4;

struct Aggregate {
  std::string name;
  AggregateKind kind = AggregateKind::kCount;
  int slot = -1;                     // the field aggregated (not for count, count_if, rate)
  std::optional<Expr> condition;     // count_if
  // baseline(agg, n): the mean of aggregate `of` over the key's previous `windows`
  // tumbling windows (a window without events counts 0).
  int of = -1;
  int windows = 0;
};

// A template such as "Caller {caller} called {strangers} numbers": literal
// text and references to event fields, values (aggregates, features, score)
// or the deadline name, resolved at load time.
struct TemplatePart {
  enum Kind : uint8_t { kLiteral, kField, kAggregate, kDeadline, kLevel } kind = kLiteral;
  std::string literal;
  int index = -1;
  bool masked = true;  // phone-like digits are masked unless the field is listed as unmasked
};

enum class RuleKind : uint8_t {
  kPerEvent,  // fires for each matching event
  kWindow,    // aggregates per key over an event-time window, fires on `having`
  kSequence,  // `first` followed by `then` on the same key within a time
  kAbsence,   // `start` not followed by `until` within each deadline: fires on a timer
};
enum class WindowType : uint8_t { kSliding, kTumbling, kSession };

// Which events a rule (or one of its steps) takes, and the key it files them under.
struct Match {
  Stream stream = Stream::kCalls;
  std::vector<int> kinds;   // event kinds; empty: all
  std::optional<Expr> where;
  std::vector<int> key;     // event slots forming the key
};

struct Deadline {
  std::string name;
  int64_t after_ms = 0;
  int calendar = -1;        // index into RuleSet::calendars: `after` counts working time only
  Match until;              // events that meet the deadline (same key as the start)
  std::string severity;     // overrides the alert's severity when set
  // `extend`: an event of the key moves the pending deadline to the time in
  // field `extend_to` (a time slot), or `extend_by` later than it was.
  std::optional<Match> extend;
  int extend_to = -1;
  int64_t extend_by_ms = 0;
  std::vector<std::pair<std::string, std::string>> labels;  // added to (and override) the rule's
  std::vector<TemplatePart> title;    // replace the rule's when not empty
  std::vector<TemplatePart> summary;
};

struct Feature {
  std::string name;
  std::optional<Expr> value;  // bool (1/0) or number, clamped to [0, cap]
  double weight = 1;
  double cap = 1;
  std::string label;          // attached to the alert when the feature contributes
};

struct Score {
  std::vector<Feature> features;
  std::vector<std::pair<std::string, double>> levels;  // ascending thresholds
};

struct Rule {
  std::string id;
  std::string description;
  std::string file;
  int line = 0;
  RuleKind kind = RuleKind::kPerEvent;
  Match match;              // per-event and window rules; `first` of a sequence; `start` of an absence
  // Window rules.
  WindowType window_type = WindowType::kSliding;
  int64_t window_ms = 0;    // sliding/tumbling size, session gap
  std::vector<Aggregate> aggregates;
  int history_windows = 0;  // the most previous windows a baseline() looks at
  std::optional<Expr> having;
  // Sequence rules.
  Match then;
  int64_t within_ms = 0;
  uint32_t prior_slots = 0;  // slots of `first` that `then` refers to (kept while pending)
  // Absence rules.
  std::vector<Deadline> deadlines;
  std::optional<Match> cancel;
  // `resolve_within`: a deadline that fired is resolved (a "resolved" signal of
  // the same alert id) when its `until` or the `cancel` arrives within this
  // time after it fired; 0: a fired deadline is forgotten.
  int64_t resolve_within_ms = 0;
  // Scoring (any kind).
  std::optional<Score> score;
  // Alert output.
  std::string alert_type;
  std::string severity;     // "" with a score: the level names the severity
  std::vector<TemplatePart> title;
  std::vector<TemplatePart> summary;  // optional longer text, same placeholders
  std::vector<std::pair<std::string, std::string>> labels;  // static labels (e.g. team, pack)
  uint32_t title_slots = 0;  // event slots the title and summary refer to
  uint64_t definition_hash = 0;  // changes when anything in the rule's definition changes

  // The values `having`, the score and titles see: aggregates, then
  // features, then the score.
  size_t value_count() const {
    return aggregates.size() + (score ? score->features.size() + 1 : 0);
  }
  Stream stream() const { return match.stream; }
  const std::vector<int>& group_by() const { return match.key; }
  // The step whose stream and key fields the alert carries: a sequence's `then`, else `match`.
  const Match& alert_match() const { return kind == RuleKind::kSequence ? then : match; }
  bool windowed() const { return kind == RuleKind::kWindow; }
  // How long an idle window key is kept: its window, and the windows a baseline needs.
  int64_t retention_ms() const { return window_ms * (1 + history_windows); }
};

// A rule's interest in an event of some stream and kind.
struct Trigger {
  enum Role : uint8_t { kMain, kThen, kUntil, kCancel, kExtend } role = kMain;
  int rule = 0;
  int deadline = -1;  // kUntil, kExtend
  // kMain: a condition of RuleSet::conditions the rule's `where` implies and
  // other rules of the same list share (-1: none). The engine tests it once
  // per event and skips the rules whose condition fails.
  int condition = -1;
  // With a condition: how many triggers from this one on have it (the list's
  // next ones, all kMain); when it fails, the engine skips them all at once.
  int condition_run = 0;
  bool operator==(const Trigger&) const = default;
};

struct RuleSet {
  std::string version;  // hash of the sources, 16 hex digits
  std::vector<std::string> files;
  std::vector<Rule> rules;
  std::vector<Calendar> calendars;  // declared in any loaded file; deadlines refer to them by index
  // index[stream][kind + 1] -> triggers (kind -1 = stream without kinds)
  std::array<std::vector<std::vector<Trigger>>, kStreamCount> index;
  // Conditions shared by the `where` of several rules (Trigger::condition),
  // each distinct (Expr::same_condition) across the whole set.
  std::vector<Expr> conditions;

  const std::vector<Trigger>& rules_for(Stream s, int kind) const {
    return index[static_cast<size_t>(s)][static_cast<size_t>(kind + 1)];
  }
};

struct LoadResult {
  std::shared_ptr<const RuleSet> rules;  // null when any error was found
  std::vector<Diagnostic> diagnostics;
  bool ok() const { return rules != nullptr; }
};

// A rule file's name and text (text may come from disk or from a test).
struct Source {
  std::string name;
  std::string text;
};

struct TableCatalog;
// `tables` declares the reference tables rules may look up (none when null).
LoadResult load_rules(const std::vector<Source>& sources, const TableCatalog* tables = nullptr);
// The files `paths` stand for: a file as given; a directory means every
// *.yaml / *.yml in it, sorted, except rule tests named *.test.yaml.
std::vector<std::string> rule_files(const std::vector<std::string>& paths);
// Reads rule_files(paths) and loads them.
LoadResult load_rule_files(const std::vector<std::string>& paths, const TableCatalog* tables = nullptr);

}  // namespace tocsin::rules
