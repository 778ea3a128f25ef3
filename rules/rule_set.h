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

enum class AggregateKind : uint8_t { kCount, kCountDistinct, kSum, kAvg };
inline constexpr int kMaxAggregates = 8;
inline constexpr int kMaxGroupBy = 4;

struct Aggregate {
  std::string name;
  AggregateKind kind = AggregateKind::kCount;
  int slot = -1;  // the field aggregated (not for count)
};

// A template such as "Caller {caller} called {strangers} numbers": literal
// text and references to event fields or aggregates, resolved at load time.
struct TemplatePart {
  enum Kind : uint8_t { kLiteral, kField, kAggregate } kind = kLiteral;
  std::string literal;
  int index = -1;
  bool masked = true;  // phone-like digits are masked unless the field is listed as unmasked
};

struct Rule {
  std::string id;
  std::string description;
  std::string file;
  int line = 0;
  Stream stream = Stream::kCalls;
  std::vector<int> kinds;  // event kinds the rule listens to; empty: all
  std::optional<Expr> where;
  // Sliding event-time window per key (absent: the rule fires per matching event).
  bool windowed = false;
  std::vector<int> group_by;  // event slots
  int64_t window_ms = 0;
  std::vector<Aggregate> aggregates;
  std::optional<Expr> having;
  // Alert output.
  std::string alert_type;
  std::string severity;
  std::vector<TemplatePart> title;
  uint64_t definition_hash = 0;  // changes when anything in the rule's definition changes
};

struct RuleSet {
  std::string version;  // hash of the sources, 16 hex digits
  std::vector<std::string> files;
  std::vector<Rule> rules;
  // index[stream][kind + 1] -> rule indices (kind -1 = stream without kinds)
  std::array<std::vector<std::vector<int>>, kStreamCount> index;

  const std::vector<int>& rules_for(Stream s, int kind) const {
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
// Reads files (a directory means every *.yaml / *.yml in it, sorted) and loads them.
LoadResult load_rule_files(const std::vector<std::string>& paths, const TableCatalog* tables = nullptr);

}  // namespace tocsin::rules
