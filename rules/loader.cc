#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "pipeline/json_writer.h"
#include "rules/rule_set.h"
#include "rules/tables.h"

namespace tocsin::rules {
namespace {

uint64_t fnv64(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string hex16(uint64_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<size_t>(i)] = kHex[v & 15];
  return s;
}

constexpr std::string_view kSeverities[] = {"info", "low", "medium", "high", "critical"};

// Resolves names in a rule's expressions: the rule's values (aggregates,
// features, `score`) when given, then `first.<field>` (the earlier event of a
// sequence, when `prior` is set; each use is recorded in `prior_slots`), then
// fields of the event's stream.
class RuleScope final : public Scope {
 public:
  RuleScope(const StreamSchema& schema, const TableCatalog* tables) : schema_(schema), tables_(tables) {}
  RuleScope& with_values(const std::vector<std::string>* names) { values_ = names; return *this; }
  RuleScope& with_prior(const StreamSchema* prior, uint32_t* used) { prior_ = prior; prior_used_ = used; return *this; }

  std::optional<TableRef> table(std::string_view name) const override {
    return tables_ ? tables_->find(name) : std::nullopt;
  }
  std::optional<NameRef> resolve(std::string_view name) const override {
    if (values_)
      for (size_t i = 0; i < values_->size(); ++i)
        if ((*values_)[i] == name) return NameRef{NameRef::kAggregate, static_cast<int>(i), Type::kDouble};
    if (prior_ && name.starts_with("first.")) {
      const int slot = prior_->slot_of(name.substr(6));
      if (slot < 0) return std::nullopt;
      *prior_used_ |= 1u << slot;
      return NameRef{NameRef::kPriorField, slot, type_of(prior_->fields[static_cast<size_t>(slot)].type)};
    }
    const int slot = schema_.slot_of(name);
    if (slot < 0) return std::nullopt;
    return NameRef{NameRef::kEventField, slot, type_of(schema_.fields[static_cast<size_t>(slot)].type)};
  }

 private:
  const StreamSchema& schema_;
  const TableCatalog* tables_;
  const std::vector<std::string>* values_ = nullptr;
  const StreamSchema* prior_ = nullptr;
  uint32_t* prior_used_ = nullptr;
};

class Compiler {
 public:
  Compiler(std::vector<Diagnostic>& out, const TableCatalog* tables) : diags_(out), tables_(tables) {}

  // A parsed file: its YAML and lines (for snippets). Calendars of every file
  // are compiled before any rule, so a rule may use a calendar of another file.
  struct Parsed {
    std::string file;
    std::vector<std::string> lines;
    YAML::Node root;
  };

  // Reads a file's YAML and checks its top level; false when there is nothing to compile.
  bool parse(const Source& src, Parsed& p) {
    p.file = src.name;
    std::istringstream in(src.text);
    for (std::string l; std::getline(in, l);) p.lines.push_back(l);
    enter(p);
    try {
      p.root = YAML::Load(src.text);
    } catch (const YAML::ParserException& e) {
      add(e.mark.line, e.mark.column, "E001", "YAML syntax: " + e.msg);
      return false;
    }
    if (!p.root || p.root.IsNull()) {
      add_line(1, 1, "W001", "file has no rules", Diagnostic::Level::kWarning);
      return false;
    }
    if (!p.root.IsMap()) {
      error(p.root, "E002", "a rule file is a mapping with a 'rules' list");
      return false;
    }
    check_keys(p.root, {"rules", "version", "calendars"});
    return true;
  }

  void compile_calendars(const Parsed& p, RuleSet& set) {
    enter(p);
    const YAML::Node cals = p.root["calendars"];
    if (!cals) return;
    if (!cals.IsMap()) return error(cals, "E017", "'calendars' maps a calendar name to {utc_offset, weekend, holidays, workdays}");
    for (const auto& kv : cals) {
      const std::string name = kv.first.Scalar();
      const YAML::Node c = kv.second;
      if (calendar_index_.count(name)) { error(kv.first, "E017", "calendar '" + name + "' is declared twice"); continue; }
      if (!c.IsMap()) { error(c, "E017", "calendar '" + name + "' is a mapping {utc_offset, weekend, holidays, workdays}"); continue; }
      check_keys(c, {"utc_offset", "weekend", "holidays", "workdays"});
      Calendar cal;
      cal.name = name;
      if (const auto off = c["utc_offset"]) {
        std::string t = off.IsScalar() ? off.Scalar() : "";
        const bool negative = t.starts_with('-');
        if (negative || t.starts_with('+')) t.erase(0, 1);
        const auto ms = t == "0" ? std::optional<int64_t>(0) : parse_duration_ms(t);
        if (!ms || *ms >= 86'400'000) { error(off, "E017", "utc_offset must be a duration under 24h, e.g. 8h or -5h"); continue; }
        cal.utc_offset_ms = negative ? -*ms : *ms;
      }
      if (const auto we = c["weekend"]) {
        static constexpr std::string_view kDays[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
        cal.weekend = 0;
        for (const auto& d : items(we)) {
          const auto it = std::find(std::begin(kDays), std::end(kDays), d.Scalar());
          if (it == std::end(kDays)) error(d, "E017", "weekend days are mon, tue, wed, thu, fri, sat, sun");
          else cal.weekend |= static_cast<uint8_t>(1u << (it - std::begin(kDays)));
        }
        if (cal.weekend == 0x7f) error(we, "E017", "a calendar needs at least one working weekday");
      }
      auto days = [&](const char* key, std::vector<int32_t>& out) {
        const YAML::Node list = c[key];
        if (!list) return;
        for (const auto& d : items(list)) {
          int32_t day;
          if (!d.IsScalar() || !parse_day(d.Scalar(), day)) error(d, "E017", std::string(key) + ": '" + (d.IsScalar() ? d.Scalar() : "") + "' is not a date (YYYY-MM-DD)");
          else out.push_back(day);
        }
        std::sort(out.begin(), out.end());
      };
      days("holidays", cal.holidays);
      days("workdays", cal.workdays);
      // Calendar::add() needs a working day in every 366: holidays cannot cover a whole year.
      for (size_t i = 0; i + 1 < cal.holidays.size() && cal.weekend != 0x7f; ++i)
        if (i + 365 < cal.holidays.size() && cal.holidays[i + 365] - cal.holidays[i] == 365) {
          error(c["holidays"], "E017", "holidays cover a whole year: no working day left");
          break;
        }
      calendar_index_[name] = static_cast<int>(set.calendars.size());
      set.calendars.push_back(std::move(cal));
    }
  }

  void compile_rules(const Parsed& p, RuleSet& set) {
    enter(p);
    const YAML::Node rules = p.root["rules"];
    if (!rules) {
      if (!p.root["calendars"]) error(p.root, "E003", "missing 'rules'");  // a file may hold only calendars
      return;
    }
    if (!rules.IsSequence()) return error(rules, "E002", "'rules' must be a list");
    if (rules.size() == 0) add(rules.Mark().line, rules.Mark().column, "W001", "file has no rules", Diagnostic::Level::kWarning);
    for (const auto& node : rules) compile_rule(node, set);
  }

  std::set<std::string> ids;

 private:
  void enter(const Parsed& p) {
    file_ = p.file;
    lines_ = &p.lines;
  }

  void add(int line0, int col0, const char* code, std::string msg,
           Diagnostic::Level level = Diagnostic::Level::kError) {
    add_line(line0 + 1, col0 + 1, code, std::move(msg), level);
  }
  void add_line(int line, int col, const char* code, std::string msg,
                Diagnostic::Level level = Diagnostic::Level::kError) {
    Diagnostic d;
    d.level = level;
    d.code = code;
    d.file = file_;
    d.line = line;
    d.column = col;
    d.message = std::move(msg);
    if (line >= 1 && static_cast<size_t>(line) <= lines_->size()) d.snippet = (*lines_)[static_cast<size_t>(line - 1)];
    diags_.push_back(std::move(d));
  }
  void error(const YAML::Node& n, const char* code, std::string msg) {
    add(n.Mark().line, n.Mark().column, code, std::move(msg));
  }
  void warn(const YAML::Node& n, const char* code, std::string msg) {
    add(n.Mark().line, n.Mark().column, code, std::move(msg), Diagnostic::Level::kWarning);
  }

  void check_keys(const YAML::Node& map, std::initializer_list<std::string_view> allowed) {
    for (const auto& kv : map) {
      const std::string k = kv.first.Scalar();
      if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
        std::string list;
        for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        error(kv.first, "E004", "unknown key '" + k + "' (expected one of: " + list + ")");
      }
    }
  }

  bool scalar(const YAML::Node& n, const char* what, std::string& out) {
    if (!n.IsScalar()) {
      error(n, "E002", std::string(what) + " must be a single value");
      return false;
    }
    out = n.Scalar();
    return true;
  }

  // Column of the first character of a scalar's text (past an opening quote).
  int text_column(const YAML::Node& n) const {
    const int line = n.Mark().line, col = n.Mark().column;
    if (line >= 0 && static_cast<size_t>(line) < lines_->size()) {
      const std::string& l = (*lines_)[static_cast<size_t>(line)];
      if (static_cast<size_t>(col) < l.size() && (l[static_cast<size_t>(col)] == '"' || l[static_cast<size_t>(col)] == '\''))
        return col + 1;
    }
    return col;
  }

  std::optional<Expr> expression(const YAML::Node& n, const Scope& scope, const char* what, bool want_bool = true) {
    std::string text;
    if (!scalar(n, what, text)) return std::nullopt;
    ExprError err;
    auto e = Expr::compile(text, scope, err);
    if (!e) {
      // Map the byte offset to a line/column inside single-line scalars.
      add(n.Mark().line, text_column(n) + static_cast<int>(err.offset), err.code.c_str(),
          std::string(what) + ": " + err.message);
      return std::nullopt;
    }
    if (want_bool ? e->type() != Type::kBool
                  : !(e->type() == Type::kBool || e->type() == Type::kInt || e->type() == Type::kDouble)) {
      error(n, "E201", std::string(what) + (want_bool ? " must be a condition (bool), not " : " must be a condition or a number, not ") +
                           std::string(to_string(e->type())));
      return std::nullopt;
    }
    return e;
  }

  // The YAML items of a scalar-or-list node.
  static std::vector<YAML::Node> items(const YAML::Node& n) {
    std::vector<YAML::Node> out;
    if (n.IsSequence()) for (const auto& i : n) out.push_back(i);
    else if (n) out.push_back(n);
    return out;
  }

  bool duration(const YAML::Node& n, const char* what, int64_t& out) {
    const auto ms = n.IsScalar() ? parse_duration_ms(n.Scalar()) : std::nullopt;
    if (!ms || *ms <= 0) {
      error(n, "E008", std::string("bad duration for ") + what + " '" + (n.IsScalar() ? n.Scalar() : "") + "' (e.g. 30s, 15m, 1h, 2d)");
      return false;
    }
    out = *ms;
    return true;
  }

  void kinds(const YAML::Node& on, const StreamSchema& schema, std::vector<int>& out) {
    for (const auto& i : items(on)) {
      std::string kind;
      if (!scalar(i, "on", kind)) continue;
      const int k = schema.kind_index(kind);
      if (k < 0) {
        std::string list;
        for (auto x : schema.kinds) list += (list.empty() ? "" : ", ") + std::string(x);
        error(i, "E007", "stream '" + std::string(schema.name) + "' has no event kind '" + kind + "'" +
                             (list.empty() ? " (it has no kinds)" : " (kinds: " + list + ")"));
      } else {
        out.push_back(k);
      }
    }
  }

  void key(const YAML::Node& g, const StreamSchema& schema, const char* what, std::vector<int>& out) {
    for (const auto& i : items(g)) {
      const std::string f = i.Scalar();
      const int slot = schema.slot_of(f);
      if (slot < 0) error(i, "E203", std::string(what) + ": stream '" + std::string(schema.name) + "' has no field '" + f + "'");
      else out.push_back(slot);
    }
    if (out.size() > static_cast<size_t>(kMaxGroupBy)) error(g, "E010", std::string("at most 4 ") + what + " fields");
  }

  // A step mapping {stream?, on?, where?, key?}. `prior` enables first.<field>.
  bool match(const YAML::Node& n, const char* what, Stream default_stream, const YAML::Node* key_node,
             Match& m, const StreamSchema* prior = nullptr, uint32_t* prior_used = nullptr, bool extend = false) {
    if (!n.IsMap()) {
      error(n, "E002", std::string(what) + " is a mapping with on, where and key");
      return false;
    }
    if (extend) check_keys(n, {"stream", "on", "where", "key", "to", "by"});
    else check_keys(n, {"stream", "on", "where", "key"});
    m.stream = default_stream;
    if (const auto st = n["stream"]) {
      const auto s = stream_from_string(st.Scalar());
      if (!s) { error(st, "E006", "unknown stream '" + st.Scalar() + "' (" + std::string(stream_names()) + ")"); return false; }
      m.stream = *s;
    }
    const StreamSchema& schema = schema_of(m.stream);
    if (n["on"]) kinds(n["on"], schema, m.kinds);
    RuleScope scope(schema, tables_);
    if (prior) scope.with_prior(prior, prior_used);
    if (n["where"]) m.where = expression(n["where"], scope, (std::string(what) + ".where").c_str());
    if (n["key"]) key(n["key"], schema, what, m.key);
    else if (key_node) key(*key_node, schema, what, m.key);
    return true;
  }

  void compile_rule(const YAML::Node& node, RuleSet& set) {
    const size_t errors_before = count_errors();
    if (!node.IsMap()) return error(node, "E002", "each rule is a mapping");
    check_keys(node, {"id", "description", "stream", "on", "where", "key", "window", "aggregates", "having",
                      "sequence", "absence", "score", "alert", "enabled"});
    if (node["enabled"] && node["enabled"].IsScalar() && node["enabled"].Scalar() == "false") return;
    Rule r;
    r.file = file_;
    r.line = node.Mark().line + 1;
    if (!node["id"]) return error(node, "E003", "rule without 'id'");
    if (!scalar(node["id"], "id", r.id)) return;
    if (!ids.insert(r.id).second) error(node["id"], "E005", "duplicate rule id '" + r.id + "'");
    if (node["description"]) scalar(node["description"], "description", r.description);

    const int shapes = !!node["window"] + !!node["sequence"] + !!node["absence"];
    if (shapes > 1) return error(node, "E013", "a rule has at most one of window, sequence and absence");
    r.kind = node["window"] ? RuleKind::kWindow : node["sequence"] ? RuleKind::kSequence
             : node["absence"] ? RuleKind::kAbsence : RuleKind::kPerEvent;

    Stream stream = Stream::kCalls;
    if (node["stream"]) {
      std::string stream_name;
      if (!scalar(node["stream"], "stream", stream_name)) return;
      const auto st = stream_from_string(stream_name);
      if (!st) return error(node["stream"], "E006", "unknown stream '" + stream_name + "' (" + std::string(stream_names()) + ")");
      stream = *st;
    } else if (r.kind != RuleKind::kSequence) {
      return error(node, "E003", "rule '" + r.id + "' has no 'stream' (" + std::string(stream_names()) + ")");
    }
    const StreamSchema& schema = schema_of(stream);
    r.match.stream = stream;
    if (r.kind == RuleKind::kPerEvent || r.kind == RuleKind::kWindow) {
      if (node["on"]) kinds(node["on"], schema, r.match.kinds);
      RuleScope event_scope(schema, tables_);
      if (node["where"]) r.match.where = expression(node["where"], event_scope, "where");
    } else if (node["on"] || node["where"]) {
      error(node["on"] ? node["on"] : node["where"], "E013", "a sequence or absence rule sets 'on' and 'where' per step");
    }

    // A per-event alert's key: whom or what it is about (`subject` in alerting.yaml is
    // its first field), e.g. the callee of a spoofed call. Windows use group_by.
    if (node["key"]) {
      if (r.kind == RuleKind::kPerEvent) key(node["key"], schema, "key", r.match.key);
      else error(node["key"], "E013", r.kind == RuleKind::kWindow ? "a window rule's key is its window's group_by"
                                                                  : "a sequence or absence rule sets 'key' per step");
    }
    if (r.kind == RuleKind::kWindow) compile_window(node, schema, r);
    else if (node["aggregates"]) error(node["aggregates"], "E003", "'aggregates' need a 'window'");
    if (r.kind == RuleKind::kSequence) compile_sequence(node["sequence"], r);
    if (r.kind == RuleKind::kAbsence) compile_absence(node["absence"], schema, r);

    // Values (aggregates, features, score) for having, score and the title.
    std::vector<std::string> values;
    for (const auto& a : r.aggregates) values.push_back(a.name);
    if (const auto sc = node["score"]) compile_score(sc, schema_of(r.alert_match().stream), r, values);
    if (node["having"]) {
      if (r.kind == RuleKind::kSequence || r.kind == RuleKind::kAbsence)
        error(node["having"], "E013", "'having' belongs to window and scored rules");
      else if (r.kind == RuleKind::kPerEvent && !r.score)
        error(node["having"], "E003", "'having' needs a 'window' or a 'score'");
      else {
        RuleScope scope(schema, tables_);
        scope.with_values(&values);
        r.having = expression(node["having"], scope, "having");
      }
    } else if (r.kind == RuleKind::kWindow) {
      error(node, "E003", "a windowed rule needs 'having' (e.g. count >= 20)");
    }

    const auto alert = node["alert"];
    if (!alert) return error(node, "E003", "rule '" + r.id + "' has no 'alert' (type, severity, title)");
    if (!alert.IsMap()) return error(alert, "E002", "'alert' is a mapping");
    check_keys(alert, {"type", "severity", "title", "summary", "labels", "unmasked"});
    if (const auto lb = alert["labels"]) {
      if (!lb.IsMap()) error(lb, "E002", "'labels' maps label names to values, e.g. {team: anti-fraud}");
      else for (const auto& kv : lb) r.labels.emplace_back(kv.first.Scalar(), kv.second.Scalar());
    }
    r.alert_type = alert["type"] ? alert["type"].Scalar() : r.id;
    r.severity = alert["severity"] ? alert["severity"].Scalar() : "";
    const bool from_score = r.severity == "from_score";
    if (from_score) {
      r.severity.clear();
      if (!r.score) error(alert["severity"], "E011", "severity 'from_score' needs a 'score' with levels");
    } else if (std::find(std::begin(kSeverities), std::end(kSeverities), r.severity) == std::end(kSeverities)) {
      error(alert["severity"] ? alert["severity"] : alert, "E011", "severity must be one of info, low, medium, high, critical (or from_score)");
    }
    std::set<std::string> unmasked;
    if (const auto u = alert["unmasked"])
      for (const auto& i : u) unmasked.insert(i.Scalar());
    // Titles refer to the event that fired: `then` for sequences, `start` for absences.
    const StreamSchema& title_schema = schema_of(r.alert_match().stream);
    if (alert["title"]) compile_template(alert["title"], title_schema, r, values, unmasked, r.title);
    else r.title.push_back({TemplatePart::kLiteral, r.id});
    if (alert["summary"]) compile_template(alert["summary"], title_schema, r, values, unmasked, r.summary);
    const YAML::Node ab = node["absence"];
    const YAML::Node ds = ab && ab.IsMap() ? ab["deadlines"] : YAML::Node();
    if (r.kind == RuleKind::kAbsence && ds && ds.IsSequence()) {
      // A deadline's own title or summary replaces the rule's (e.g. one per escalation level).
      for (size_t i = 0; i < ds.size() && i < r.deadlines.size(); ++i) {
        if (!ds[i].IsMap()) continue;
        if (const auto t = ds[i]["title"]) compile_template(t, title_schema, r, values, unmasked, r.deadlines[i].title);
        if (const auto t = ds[i]["summary"]) compile_template(t, title_schema, r, values, unmasked, r.deadlines[i].summary);
      }
    }

    if (count_errors() != errors_before) return;
    std::ostringstream def;
    def << YAML::Dump(node);
    r.definition_hash = fnv64(def.str());
    set.rules.push_back(std::move(r));
  }

  void compile_window(const YAML::Node& node, const StreamSchema& schema, Rule& r) {
    const auto w = node["window"];
    if (!w.IsMap()) return error(w, "E002", "'window' is a mapping with group_by and size (or gap)");
    check_keys(w, {"group_by", "size", "type", "gap"});
    const std::string type = w["type"] ? w["type"].Scalar() : "sliding";
    if (type == "sliding") r.window_type = WindowType::kSliding;
    else if (type == "tumbling") r.window_type = WindowType::kTumbling;
    else if (type == "session") r.window_type = WindowType::kSession;
    else error(w["type"], "E009", "window type '" + type + "' is unknown (sliding, tumbling, session)");
    const char* size_key = r.window_type == WindowType::kSession ? "gap" : "size";
    if (const auto sz = w[size_key]) duration(sz, size_key, r.window_ms);
    else error(w, "E003", std::string("window without '") + size_key + "' (e.g. " + (r.window_type == WindowType::kSession ? "gap: 30m)" : "size: 1h)"));
    if (w["group_by"]) key(w["group_by"], schema, "group_by", r.match.key);
    if (const auto a = node["aggregates"]) {
      if (!a.IsMap()) error(a, "E002", "'aggregates' maps a name to count(), count_if(cond), count_distinct(field), sum, avg, min, max (field) or rate()");
      else for (const auto& kv : a) compile_aggregate(kv.first, kv.second, schema, r);
    }
    if (r.aggregates.size() > static_cast<size_t>(kMaxAggregates)) error(node["aggregates"], "E010", "at most 8 aggregates");
    if (r.aggregates.empty()) r.aggregates.push_back({"count", AggregateKind::kCount, -1, std::nullopt});
  }

  void compile_sequence(const YAML::Node& q, Rule& r) {
    if (!q.IsMap()) return error(q, "E002", "'sequence' is a mapping with first, then and within");
    check_keys(q, {"first", "then", "within", "key"});
    if (!q["first"] || !q["then"] || !q["within"]) return error(q, "E003", "a sequence needs first, then and within");
    const YAML::Node key_node = q["key"];
    if (!match(q["first"], "first", r.match.stream, key_node ? &key_node : nullptr, r.match)) return;
    match(q["then"], "then", r.match.stream, key_node ? &key_node : nullptr, r.then, &schema_of(r.match.stream), &r.prior_slots);
    duration(q["within"], "within", r.within_ms);
    if (r.match.key.empty() || r.match.key.size() != r.then.key.size())
      error(q, "E014", "first and then need keys with the same number of fields (e.g. first: {key: [callee]}, then: {key: [caller]})");
    for (size_t i = 0; i < r.match.key.size() && i < r.then.key.size(); ++i)
      if (schema_of(r.match.stream).fields[static_cast<size_t>(r.match.key[i])].type !=
          schema_of(r.then.stream).fields[static_cast<size_t>(r.then.key[i])].type)
        error(q, "E014", "key field " + std::to_string(i + 1) + " of first and then have different types");
  }

  void compile_absence(const YAML::Node& a, const StreamSchema& schema, Rule& r) {
    if (!a.IsMap()) return error(a, "E002", "'absence' is a mapping with key, start and deadlines");
    check_keys(a, {"key", "start", "deadlines", "cancel", "resolve_within"});
    if (const auto rw = a["resolve_within"]) duration(rw, "resolve_within", r.resolve_within_ms);
    if (!a["key"] || !a["start"] || !a["deadlines"]) return error(a, "E003", "an absence needs key, start and deadlines");
    const YAML::Node key_node = a["key"];
    match(a["start"], "start", r.match.stream, &key_node, r.match);
    if (r.match.stream != schema.stream) error(a["start"], "E013", "an absence rule's steps use the rule's stream");
    const auto ds = a["deadlines"];
    if (!ds.IsSequence() || ds.size() == 0) return error(ds, "E002", "'deadlines' is a list of {name, after, until}");
    if (ds.size() > 32) return error(ds, "E010", "at most 32 deadlines");
    for (const auto& d : ds) {
      Deadline dl;
      if (!d.IsMap()) { error(d, "E002", "a deadline is a mapping {name, after, until, severity}"); continue; }
      check_keys(d, {"name", "after", "until", "severity", "calendar", "extend", "labels", "title", "summary"});
      if (!d["name"] || !d["after"] || !d["until"]) { error(d, "E003", "a deadline needs name, after and until"); continue; }
      dl.name = d["name"].Scalar();
      duration(d["after"], "after", dl.after_ms);
      match(d["until"], "until", r.match.stream, &key_node, dl.until);
      if (d["severity"]) {
        dl.severity = d["severity"].Scalar();
        if (std::find(std::begin(kSeverities), std::end(kSeverities), dl.severity) == std::end(kSeverities))
          error(d["severity"], "E011", "severity must be one of info, low, medium, high, critical");
      }
      if (const auto cal = d["calendar"]) {
        const auto it = calendar_index_.find(cal.Scalar());
        if (it == calendar_index_.end()) {
          std::string known;
          for (const auto& [name, i] : calendar_index_) known += (known.empty() ? "" : ", ") + name;
          error(cal, "E017", "unknown calendar '" + cal.Scalar() + "' (declare it under 'calendars:'" +
                                 (known.empty() ? "" : "; known: " + known) + ")");
        } else {
          dl.calendar = it->second;
        }
      }
      if (const auto ex = d["extend"]) {
        dl.extend.emplace();
        if (match(ex, "extend", r.match.stream, &key_node, *dl.extend, nullptr, nullptr, true)) {
          if (!!ex["to"] == !!ex["by"]) {
            error(ex, "E003", "extend needs exactly one of 'to' (a time field, e.g. to: deadline_at) or 'by' (a duration)");
          } else if (const auto to = ex["to"]) {
            dl.extend_to = schema.slot_of(to.Scalar());
            if (dl.extend_to < 0) error(to, "E203", "extend.to: stream '" + std::string(schema.name) + "' has no field '" + to.Scalar() + "'");
            else if (schema.fields[static_cast<size_t>(dl.extend_to)].type != FieldType::kTime)
              error(to, "E201", "extend.to: '" + to.Scalar() + "' is " +
                                    std::string(to_string(schema.fields[static_cast<size_t>(dl.extend_to)].type)) + ", not a time");
          } else {
            duration(ex["by"], "extend.by", dl.extend_by_ms);
          }
        }
      }
      if (const auto lb = d["labels"]) {
        if (!lb.IsMap()) error(lb, "E002", "a deadline's 'labels' maps label names to values, e.g. {level: street}");
        else for (const auto& kv : lb) dl.labels.emplace_back(kv.first.Scalar(), kv.second.Scalar());
      }
      r.deadlines.push_back(std::move(dl));
    }
    if (const auto c = a["cancel"]) {
      r.cancel.emplace();
      match(c, "cancel", r.match.stream, &key_node, *r.cancel);
    }
  }

  void compile_score(const YAML::Node& sc, const StreamSchema& schema, Rule& r, std::vector<std::string>& values) {
    if (!sc.IsMap()) return error(sc, "E002", "'score' is a mapping with features and levels");
    check_keys(sc, {"features", "levels"});
    Score score;
    RuleScope scope(schema, tables_);
    std::vector<std::string> agg_names = values;  // features may use aggregates
    scope.with_values(&agg_names);
    if (!sc["features"] || !sc["features"].IsSequence()) return error(sc, "E003", "a score needs a list of features");
    for (const auto& f : sc["features"]) {
      if (!f.IsMap()) { error(f, "E002", "a feature is a mapping {name, value, weight, cap, label}"); continue; }
      check_keys(f, {"name", "value", "weight", "cap", "label"});
      Feature feat;
      if (!f["name"] || !f["value"]) { error(f, "E003", "a feature needs name and value"); continue; }
      feat.name = f["name"].Scalar();
      feat.value = expression(f["value"], scope, "value", false);
      if (f["weight"] && !YAML::convert<double>::decode(f["weight"], feat.weight)) error(f["weight"], "E015", "weight must be a number");
      if (f["cap"] && (!YAML::convert<double>::decode(f["cap"], feat.cap) || feat.cap <= 0)) error(f["cap"], "E015", "cap must be a positive number");
      if (f["label"]) feat.label = f["label"].Scalar();
      score.features.push_back(std::move(feat));
    }
    if (const auto lv = sc["levels"]) {
      if (!lv.IsMap()) return error(lv, "E002", "'levels' maps a level name to its lowest score, e.g. {low: 0, high: 60}");
      for (const auto& kv : lv) {
        double v;
        if (!YAML::convert<double>::decode(kv.second, v)) { error(kv.second, "E015", "a level threshold must be a number"); continue; }
        score.levels.emplace_back(kv.first.Scalar(), v);
      }
      std::sort(score.levels.begin(), score.levels.end(), [](auto& x, auto& y) { return x.second < y.second; });
    }
    if (score.features.size() > static_cast<size_t>(kMaxFeatures)) error(sc["features"], "E010", "at most 16 features");
    for (const auto& feat : score.features) values.push_back(feat.name);
    values.push_back("score");
    r.score = std::move(score);
  }

  void compile_aggregate(const YAML::Node& key, const YAML::Node& value, const StreamSchema& schema, Rule& r) {
    const std::string name = key.Scalar();
    const std::string text = value.IsScalar() ? value.Scalar() : "";
    const auto open = text.find('('), close = text.rfind(')');
    if (open == std::string::npos || close != text.size() - 1)
      return error(value, "E010", "aggregate '" + name + "' must look like count(), count_if(cond), count_distinct(field), sum(field), avg(field), min(field), max(field) or rate()");
    const std::string fn = text.substr(0, open);
    std::string arg = text.substr(open + 1, close - open - 1);
    arg.erase(0, arg.find_first_not_of(' '));
    arg.erase(arg.find_last_not_of(' ') + 1);
    Aggregate a;
    a.name = name;
    if (fn == "count" || fn == "rate") {
      a.kind = fn == "count" ? AggregateKind::kCount : AggregateKind::kRate;
      if (!arg.empty()) return error(value, "E010", fn + "() takes no argument");
      r.aggregates.push_back(std::move(a));
      return;
    }
    if (fn == "count_if") {
      a.kind = AggregateKind::kCountIf;
      RuleScope scope(schema, tables_);
      ExprError err;
      a.condition = Expr::compile(arg, scope, err);
      if (!a.condition) return add(value.Mark().line, text_column(value) + static_cast<int>(open + 1 + err.offset), err.code.c_str(), "count_if: " + err.message);
      if (a.condition->type() != Type::kBool) return error(value, "E201", "count_if() needs a condition");
      r.aggregates.push_back(std::move(a));
      return;
    }
    if (fn == "baseline") {
      // baseline(aggregate, n): the aggregate's mean over the key's previous n tumbling windows.
      a.kind = AggregateKind::kBaseline;
      const auto comma = arg.find(',');
      std::string of = arg.substr(0, comma), n = comma == std::string::npos ? "" : arg.substr(comma + 1);
      of.erase(of.find_last_not_of(' ') + 1);
      n.erase(0, n.find_first_not_of(' '));
      if (r.window_type != WindowType::kTumbling)
        return error(value, "E010", "baseline() compares whole windows: it needs a tumbling window");
      for (size_t i = 0; i < r.aggregates.size(); ++i)
        if (r.aggregates[i].name == of && r.aggregates[i].kind != AggregateKind::kBaseline) a.of = static_cast<int>(i);
      if (a.of < 0) return error(value, "E010", "baseline(" + of + ", n): '" + of + "' is not an aggregate declared above it");
      if (n.empty() || n.size() > 2 || n.find_first_not_of("0123456789") != std::string::npos || std::stoi(n) < 1 || std::stoi(n) > 12)
        return error(value, "E010", "baseline(" + of + ", n): n is the number of previous windows, 1 to 12");
      a.windows = std::stoi(n);
      r.history_windows = std::max(r.history_windows, a.windows);
      r.aggregates.push_back(std::move(a));
      return;
    }
    if (fn == "count_distinct") a.kind = AggregateKind::kCountDistinct;
    else if (fn == "approx_count_distinct") a.kind = AggregateKind::kApproxDistinct;
    else if (fn == "sum") a.kind = AggregateKind::kSum;
    else if (fn == "avg") a.kind = AggregateKind::kAvg;
    else if (fn == "min") a.kind = AggregateKind::kMin;
    else if (fn == "max") a.kind = AggregateKind::kMax;
    else return error(value, "E010", "unknown aggregate '" + fn + "' (count, count_if, count_distinct, approx_count_distinct, sum, avg, min, max, rate, baseline)");
    a.slot = schema.slot_of(arg);
    if (a.slot < 0) return error(value, "E203", "aggregate '" + name + "': no field '" + arg + "' in stream '" + std::string(schema.name) + "'");
    const FieldType t = schema.fields[static_cast<size_t>(a.slot)].type;
    if (a.kind != AggregateKind::kCountDistinct && a.kind != AggregateKind::kApproxDistinct && t != FieldType::kInt && t != FieldType::kDouble && t != FieldType::kTime)
      return error(value, "E201", fn + "() needs a numeric field; '" + arg + "' is " + std::string(to_string(t)));
    r.aggregates.push_back(std::move(a));
  }

  void compile_template(const YAML::Node& n, const StreamSchema& schema, Rule& r, const std::vector<std::string>& values,
                        const std::set<std::string>& unmasked, std::vector<TemplatePart>& out) {
    const std::string t = n.Scalar();
    size_t i = 0;
    while (i < t.size()) {
      const size_t open = t.find('{', i);
      if (open == std::string::npos) { out.push_back({TemplatePart::kLiteral, t.substr(i)}); break; }
      if (open > i) out.push_back({TemplatePart::kLiteral, t.substr(i, open - i)});
      const size_t close = t.find('}', open);
      if (close == std::string::npos) {
        add(n.Mark().line, text_column(n) + static_cast<int>(open), "E012", "unclosed '{' in a template");
        return;
      }
      const std::string name = t.substr(open + 1, close - open - 1);
      TemplatePart p;
      p.masked = unmasked.count(name) == 0;
      bool found = false;
      for (size_t a = 0; a < values.size() && !found; ++a)
        if (values[a] == name) { p.kind = TemplatePart::kAggregate; p.index = static_cast<int>(a); found = true; }
      if (!found && name == "deadline" && r.kind == RuleKind::kAbsence) { p.kind = TemplatePart::kDeadline; found = true; }
      if (!found && name == "level" && r.score) { p.kind = TemplatePart::kLevel; found = true; }
      if (!found) {
        const int slot = schema.slot_of(name);
        if (slot >= 0) { p.kind = TemplatePart::kField; p.index = slot; r.title_slots |= 1u << slot; found = true; }
      }
      if (!found) add(n.Mark().line, text_column(n) + static_cast<int>(open) + 1, "E012", "template refers to unknown name '" + name + "'");
      out.push_back(std::move(p));
      i = close + 1;
    }
  }

  size_t count_errors() const {
    return static_cast<size_t>(std::count_if(diags_.begin(), diags_.end(), [](const Diagnostic& d) { return d.level == Diagnostic::Level::kError; }));
  }

  std::vector<Diagnostic>& diags_;
  const TableCatalog* tables_;
  std::string file_;
  const std::vector<std::string>* lines_ = nullptr;
  std::map<std::string, int, std::less<>> calendar_index_;
};

}  // namespace

std::string format_text(const Diagnostic& d) {
  std::string s = d.file + ":" + std::to_string(d.line) + ":" + std::to_string(d.column) + ": " +
                  (d.level == Diagnostic::Level::kError ? "error " : "warning ") + d.code + ": " + d.message;
  if (!d.snippet.empty()) {
    s += "\n  " + d.snippet + "\n  ";
    for (int i = 1; i < d.column; ++i) s += (static_cast<size_t>(i - 1) < d.snippet.size() && d.snippet[static_cast<size_t>(i - 1)] == '\t') ? '\t' : ' ';
    s += '^';
  }
  return s;
}

std::string format_json(const std::vector<Diagnostic>& ds) {
  std::string out;
  JsonWriter w(out);
  w.begin_array();
  for (const auto& d : ds) {
    w.begin_object()
        .key("level").str(d.level == Diagnostic::Level::kError ? "error" : "warning")
        .key("code").str(d.code)
        .key("file").str(d.file)
        .key("line").num(static_cast<int64_t>(d.line))
        .key("column").num(static_cast<int64_t>(d.column))
        .key("message").str(d.message)
        .key("snippet").str(d.snippet)
        .end_object();
  }
  w.end_array();
  return out;
}

namespace {
// Gives each rule of a trigger list the condition of its `where` that most
// other rules of the list have too (at least one): the engine then tests it
// once per event for all of them, as Esper's filter index shares a filter.
void share_conditions(RuleSet& set) {
  // The index of `c` among the conditions `at(0..n)` (n when none is the same).
  const auto find = [](size_t n, const auto& at, const Expr& c) {
    size_t j = 0;
    while (j < n && !at(j).same_condition(c)) ++j;
    return j;
  };
  for (auto& by_kind : set.index)
    for (std::vector<Trigger>& list : by_kind) {
      std::vector<std::vector<Expr>> of(list.size());     // per trigger, its `where`'s conditions
      std::vector<std::vector<size_t>> kind(list.size());  // per trigger and condition: its index in `distinct`
      std::vector<const Expr*> distinct;                   // in this list
      std::vector<size_t> rules, last;                     // per distinct: how many triggers, the last one counted
      for (size_t i = 0; i < list.size(); ++i) {
        const Match& m = set.rules[static_cast<size_t>(list[i].rule)].match;
        if (list[i].role != Trigger::kMain || !m.where) continue;
        of[i] = m.where->necessary_conditions();
        for (const Expr& c : of[i]) {
          const size_t j = find(distinct.size(), [&](size_t k) -> const Expr& { return *distinct[k]; }, c);
          if (j == distinct.size()) {
            distinct.push_back(&c);
            rules.push_back(0);
            last.push_back(SIZE_MAX);
          }
          if (last[j] != i) ++rules[j], last[j] = i;  // `a and a` counts once
          kind[i].push_back(j);
        }
      }
      for (size_t i = 0; i < list.size(); ++i) {
        size_t best = SIZE_MAX, best_rules = 1;  // the condition of of[i] most rules have, if any other has it
        for (size_t c = 0; c < of[i].size(); ++c)
          if (rules[kind[i][c]] > best_rules) best = c, best_rules = rules[kind[i][c]];
        if (best == SIZE_MAX) continue;
        const size_t id = find(set.conditions.size(), [&](size_t k) -> const Expr& { return set.conditions[k]; }, of[i][best]);
        if (id == set.conditions.size()) set.conditions.push_back(std::move(of[i][best]));  // `distinct` is done with
        list[i].condition = static_cast<int>(id);
      }
      for (size_t i = list.size(); i-- > 0;) {
        Trigger& t = list[i];
        if (t.condition < 0) continue;
        t.condition_run = i + 1 < list.size() && list[i + 1].condition == t.condition ? list[i + 1].condition_run + 1 : 1;
      }
    }
}
}  // namespace

LoadResult load_rules(const std::vector<Source>& sources, const TableCatalog* tables) {
  LoadResult result;
  auto set = std::make_shared<RuleSet>();
  Compiler c(result.diagnostics, tables);
  uint64_t h = 1469598103934665603ull;
  std::vector<Compiler::Parsed> parsed(sources.size());
  std::vector<bool> ok(sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    set->files.push_back(sources[i].name);
    h = fnv64(sources[i].name, h);
    h = fnv64(sources[i].text, h);
    ok[i] = c.parse(sources[i], parsed[i]);
  }
  for (size_t i = 0; i < sources.size(); ++i)
    if (ok[i]) c.compile_calendars(parsed[i], *set);
  for (size_t i = 0; i < sources.size(); ++i)
    if (ok[i]) c.compile_rules(parsed[i], *set);
  set->version = hex16(h);
  for (int s = 0; s < kStreamCount; ++s) {
    const auto& schema = schema_of(static_cast<Stream>(s));
    set->index[static_cast<size_t>(s)].assign(schema.kinds.size() + 1, {});
  }
  auto add_trigger = [&](const Match& m, Trigger t) {
    auto& by_kind = set->index[static_cast<size_t>(m.stream)];
    if (m.kinds.empty()) {
      for (auto& list : by_kind) list.push_back(t);
    } else {
      for (int k : m.kinds) by_kind[static_cast<size_t>(k + 1)].push_back(t);
    }
  };
  for (size_t i = 0; i < set->rules.size(); ++i) {
    const Rule& r = set->rules[i];
    const int ri = static_cast<int>(i);
    // Stops and cancels come before starts, so an event that both ends one
    // clock and starts another (e.g. a reopened ticket) is handled in that order.
    for (size_t d = 0; d < r.deadlines.size(); ++d) {
      add_trigger(r.deadlines[d].until, {Trigger::kUntil, ri, static_cast<int>(d)});
      if (r.deadlines[d].extend) add_trigger(*r.deadlines[d].extend, {Trigger::kExtend, ri, static_cast<int>(d)});
    }
    if (r.cancel) add_trigger(*r.cancel, {Trigger::kCancel, ri, -1});
    if (r.kind == RuleKind::kSequence) add_trigger(r.then, {Trigger::kThen, ri, -1});
    add_trigger(r.match, {Trigger::kMain, ri, -1});
  }
  share_conditions(*set);
  const bool has_error = std::any_of(result.diagnostics.begin(), result.diagnostics.end(),
                                     [](const Diagnostic& d) { return d.level == Diagnostic::Level::kError; });
  if (!has_error) result.rules = std::move(set);
  return result;
}

namespace {
// A directory's rule files: *.yaml and *.yml, except rule tests (*.test.yaml).
bool is_rule_file(const std::filesystem::path& p) {
  const std::string name = p.filename().string();
  if (name.ends_with(".test.yaml") || name.ends_with(".test.yml")) return false;
  return name.ends_with(".yaml") || name.ends_with(".yml");
}
}  // namespace

std::vector<std::string> rule_files(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& path : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      std::vector<std::string> files;
      for (const auto& e : std::filesystem::directory_iterator(path, ec))
        if (is_rule_file(e.path())) files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      out.insert(out.end(), files.begin(), files.end());
    } else {
      out.push_back(path);
    }
  }
  return out;
}

LoadResult load_rule_files(const std::vector<std::string>& paths, const TableCatalog* tables) {
  std::vector<Source> sources;
  LoadResult failed;
  for (const auto& f : rule_files(paths)) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      failed.diagnostics.push_back({Diagnostic::Level::kError, "E000", f, 0, 0, "cannot read the file", ""});
      continue;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    sources.push_back({f, ss.str()});
  }
  if (!failed.diagnostics.empty()) return failed;
  return load_rules(sources, tables);
}

}  // namespace tocsin::rules
