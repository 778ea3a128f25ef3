#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
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

// Resolves names to event fields of one stream, then to the rule's aggregates.
class RuleScope final : public Scope {
 public:
  RuleScope(const StreamSchema& schema, const std::vector<Aggregate>* aggs,
            const TableCatalog* tables = nullptr)
      : schema_(schema), aggs_(aggs), tables_(tables) {}
  std::optional<TableRef> table(std::string_view name) const override {
    return tables_ ? tables_->find(name) : std::nullopt;
  }
  std::optional<NameRef> resolve(std::string_view name) const override {
    if (aggs_)
      for (size_t i = 0; i < aggs_->size(); ++i)
        if ((*aggs_)[i].name == name)
          return NameRef{NameRef::kAggregate, static_cast<int>(i), Type::kDouble};
    const int slot = schema_.slot_of(name);
    if (slot < 0) return std::nullopt;
    Type t = Type::kNull;
    switch (schema_.fields[static_cast<size_t>(slot)].type) {
      case FieldType::kString: t = Type::kString; break;
      case FieldType::kInt: t = Type::kInt; break;
      case FieldType::kDouble: t = Type::kDouble; break;
      case FieldType::kBool: t = Type::kBool; break;
      case FieldType::kTime: t = Type::kTime; break;
    }
    return NameRef{NameRef::kEventField, slot, t};
  }

 private:
  const StreamSchema& schema_;
  const std::vector<Aggregate>* aggs_;
  const TableCatalog* tables_;
};

class Compiler {
 public:
  Compiler(std::vector<Diagnostic>& out, const TableCatalog* tables) : diags_(out), tables_(tables) {}

  void compile_source(const Source& src, RuleSet& set) {
    file_ = src.name;
    lines_.clear();
    std::istringstream in(src.text);
    for (std::string l; std::getline(in, l);) lines_.push_back(l);
    YAML::Node root;
    try {
      root = YAML::Load(src.text);
    } catch (const YAML::ParserException& e) {
      add(e.mark.line, e.mark.column, "E001", "YAML syntax: " + e.msg);
      return;
    }
    if (!root || root.IsNull()) {
      add_line(1, 1, "W001", "file has no rules", Diagnostic::Level::kWarning);
      return;
    }
    if (!root.IsMap()) return error(root, "E002", "a rule file is a mapping with a 'rules' list");
    check_keys(root, {"rules", "version"});
    const YAML::Node rules = root["rules"];
    if (!rules) return error(root, "E003", "missing 'rules'");
    if (!rules.IsSequence()) return error(rules, "E002", "'rules' must be a list");
    for (const auto& node : rules) compile_rule(node, set);
  }

  std::set<std::string> ids;

 private:
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
    if (line >= 1 && static_cast<size_t>(line) <= lines_.size()) d.snippet = lines_[static_cast<size_t>(line - 1)];
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
    if (line >= 0 && static_cast<size_t>(line) < lines_.size()) {
      const std::string& l = lines_[static_cast<size_t>(line)];
      if (static_cast<size_t>(col) < l.size() && (l[static_cast<size_t>(col)] == '"' || l[static_cast<size_t>(col)] == '\''))
        return col + 1;
    }
    return col;
  }

  std::optional<Expr> expression(const YAML::Node& n, const Scope& scope, const char* what) {
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
    if (e->type() != Type::kBool) {
      error(n, "E201", std::string(what) + " must be a condition (bool), not " + std::string(to_string(e->type())));
      return std::nullopt;
    }
    return e;
  }

  void compile_rule(const YAML::Node& node, RuleSet& set) {
    const size_t errors_before = count_errors();
    if (!node.IsMap()) return error(node, "E002", "each rule is a mapping");
    check_keys(node, {"id", "description", "stream", "on", "where", "window", "aggregates",
                      "having", "alert", "enabled"});
    if (node["enabled"] && node["enabled"].IsScalar() && node["enabled"].Scalar() == "false") return;
    Rule r;
    r.file = file_;
    r.line = node.Mark().line + 1;
    if (!node["id"]) return error(node, "E003", "rule without 'id'");
    if (!scalar(node["id"], "id", r.id)) return;
    if (!ids.insert(r.id).second) error(node["id"], "E005", "duplicate rule id '" + r.id + "'");
    if (node["description"]) scalar(node["description"], "description", r.description);

    std::string stream_name;
    if (!node["stream"]) return error(node, "E003", "rule '" + r.id + "' has no 'stream' (calls, faults or complaints)");
    if (!scalar(node["stream"], "stream", stream_name)) return;
    const auto stream = stream_from_string(stream_name);
    if (!stream) return error(node["stream"], "E006", "unknown stream '" + stream_name + "' (calls, faults or complaints)");
    r.stream = *stream;
    const StreamSchema& schema = schema_of(r.stream);

    if (const auto on = node["on"]) {
      std::vector<YAML::Node> items;
      if (on.IsSequence()) for (const auto& i : on) items.push_back(i); else items.push_back(on);
      for (const auto& i : items) {
        std::string kind;
        if (!scalar(i, "on", kind)) continue;
        const int k = schema.kind_index(kind);
        if (k < 0) {
          std::string list;
          for (auto x : schema.kinds) list += (list.empty() ? "" : ", ") + std::string(x);
          error(i, "E007", "stream '" + stream_name + "' has no event kind '" + kind + "'" + (list.empty() ? " (it has no kinds)" : " (kinds: " + list + ")"));
        } else {
          r.kinds.push_back(k);
        }
      }
    }

    RuleScope event_scope(schema, nullptr, tables_);
    if (node["where"]) r.where = expression(node["where"], event_scope, "where");

    if (const auto w = node["window"]) {
      r.windowed = true;
      if (!w.IsMap()) return error(w, "E002", "'window' is a mapping with group_by and size");
      check_keys(w, {"group_by", "size", "type"});
      if (w["type"] && w["type"].Scalar() != "sliding")
        error(w["type"], "E009", "window type '" + w["type"].Scalar() + "' is not supported yet (sliding)");
      if (!w["size"]) error(w, "E003", "window without 'size' (e.g. 1h)");
      else {
        const auto ms = parse_duration_ms(w["size"].Scalar());
        if (!ms || *ms <= 0) error(w["size"], "E008", "bad duration '" + w["size"].Scalar() + "' (e.g. 30s, 15m, 1h, 2d)");
        else r.window_ms = *ms;
      }
      if (const auto g = w["group_by"]) {
        std::vector<YAML::Node> items;
        if (g.IsSequence()) for (const auto& i : g) items.push_back(i); else items.push_back(g);
        for (const auto& i : items) {
          const std::string f = i.Scalar();
          const int slot = schema.slot_of(f);
          if (slot < 0) error(i, "E203", "group_by: stream '" + stream_name + "' has no field '" + f + "'");
          else r.group_by.push_back(slot);
        }
        if (r.group_by.size() > static_cast<size_t>(kMaxGroupBy)) error(g, "E010", "at most 4 group_by fields");
      }
      if (const auto a = node["aggregates"]) {
        if (!a.IsMap()) error(a, "E002", "'aggregates' maps a name to count(), count_distinct(field), sum(field) or avg(field)");
        else
          for (const auto& kv : a) compile_aggregate(kv.first, kv.second, schema, r);
      }
      if (r.aggregates.size() > static_cast<size_t>(kMaxAggregates)) error(node["aggregates"], "E010", "at most 8 aggregates");
      if (r.aggregates.empty()) r.aggregates.push_back({"count", AggregateKind::kCount, -1});
      RuleScope agg_scope(schema, &r.aggregates, tables_);
      if (node["having"]) r.having = expression(node["having"], agg_scope, "having");
      else error(node, "E003", "a windowed rule needs 'having' (e.g. count >= 20)");
    } else if (node["aggregates"] || node["having"]) {
      error(node["aggregates"] ? node["aggregates"] : node["having"], "E003", "'aggregates' and 'having' need a 'window'");
    }

    const auto alert = node["alert"];
    if (!alert) return error(node, "E003", "rule '" + r.id + "' has no 'alert' (type, severity, title)");
    if (!alert.IsMap()) return error(alert, "E002", "'alert' is a mapping");
    check_keys(alert, {"type", "severity", "title", "unmasked"});
    r.alert_type = alert["type"] ? alert["type"].Scalar() : r.id;
    r.severity = alert["severity"] ? alert["severity"].Scalar() : "";
    if (std::find(std::begin(kSeverities), std::end(kSeverities), r.severity) == std::end(kSeverities))
      error(alert["severity"] ? alert["severity"] : alert, "E011", "severity must be one of info, low, medium, high, critical");
    std::set<std::string> unmasked;
    if (const auto u = alert["unmasked"])
      for (const auto& i : u) unmasked.insert(i.Scalar());
    if (alert["title"]) compile_template(alert["title"], schema, r, unmasked);
    else r.title.push_back({TemplatePart::kLiteral, r.id});

    if (count_errors() != errors_before) return;
    std::ostringstream def;
    def << YAML::Dump(node);
    r.definition_hash = fnv64(def.str());
    set.rules.push_back(std::move(r));
  }

  void compile_aggregate(const YAML::Node& key, const YAML::Node& value, const StreamSchema& schema, Rule& r) {
    const std::string name = key.Scalar();
    const std::string text = value.IsScalar() ? value.Scalar() : "";
    const auto open = text.find('('), close = text.rfind(')');
    if (open == std::string::npos || close != text.size() - 1)
      return error(value, "E010", "aggregate '" + name + "' must look like count(), count_distinct(field), sum(field) or avg(field)");
    const std::string fn = text.substr(0, open);
    std::string arg = text.substr(open + 1, close - open - 1);
    arg.erase(0, arg.find_first_not_of(' '));
    arg.erase(arg.find_last_not_of(' ') + 1);
    Aggregate a;
    a.name = name;
    if (fn == "count") {
      a.kind = AggregateKind::kCount;
      if (!arg.empty()) return error(value, "E010", "count() takes no argument");
      r.aggregates.push_back(a);
      return;
    }
    if (fn == "count_distinct") a.kind = AggregateKind::kCountDistinct;
    else if (fn == "sum") a.kind = AggregateKind::kSum;
    else if (fn == "avg") a.kind = AggregateKind::kAvg;
    else return error(value, "E010", "unknown aggregate '" + fn + "' (count, count_distinct, sum, avg)");
    a.slot = schema.slot_of(arg);
    if (a.slot < 0) return error(value, "E203", "aggregate '" + name + "': no field '" + arg + "' in stream '" + std::string(schema.name) + "'");
    const FieldType t = schema.fields[static_cast<size_t>(a.slot)].type;
    if (a.kind != AggregateKind::kCountDistinct && t != FieldType::kInt && t != FieldType::kDouble)
      return error(value, "E201", fn + "() needs a numeric field; '" + arg + "' is " + std::string(to_string(t)));
    r.aggregates.push_back(a);
  }

  void compile_template(const YAML::Node& n, const StreamSchema& schema, Rule& r, const std::set<std::string>& unmasked) {
    const std::string t = n.Scalar();
    size_t i = 0;
    while (i < t.size()) {
      const size_t open = t.find('{', i);
      if (open == std::string::npos) { r.title.push_back({TemplatePart::kLiteral, t.substr(i)}); break; }
      if (open > i) r.title.push_back({TemplatePart::kLiteral, t.substr(i, open - i)});
      const size_t close = t.find('}', open);
      if (close == std::string::npos) {
        add(n.Mark().line, text_column(n) + static_cast<int>(open), "E012", "unclosed '{' in title");
        return;
      }
      const std::string name = t.substr(open + 1, close - open - 1);
      TemplatePart p;
      p.masked = unmasked.count(name) == 0;
      bool found = false;
      for (size_t a = 0; a < r.aggregates.size(); ++a)
        if (r.aggregates[a].name == name) { p.kind = TemplatePart::kAggregate; p.index = static_cast<int>(a); found = true; }
      if (!found) {
        const int slot = schema.slot_of(name);
        if (slot >= 0) { p.kind = TemplatePart::kField; p.index = slot; found = true; }
      }
      if (!found) add(n.Mark().line, text_column(n) + static_cast<int>(open) + 1, "E012", "title refers to unknown name '" + name + "'");
      r.title.push_back(std::move(p));
      i = close + 1;
    }
  }

  size_t count_errors() const {
    return static_cast<size_t>(std::count_if(diags_.begin(), diags_.end(), [](const Diagnostic& d) { return d.level == Diagnostic::Level::kError; }));
  }

  std::vector<Diagnostic>& diags_;
  const TableCatalog* tables_;
  std::string file_;
  std::vector<std::string> lines_;
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

LoadResult load_rules(const std::vector<Source>& sources, const TableCatalog* tables) {
  LoadResult result;
  auto set = std::make_shared<RuleSet>();
  Compiler c(result.diagnostics, tables);
  uint64_t h = 1469598103934665603ull;
  for (const auto& src : sources) {
    set->files.push_back(src.name);
    h = fnv64(src.name, h);
    h = fnv64(src.text, h);
    c.compile_source(src, *set);
  }
  set->version = hex16(h);
  for (int s = 0; s < kStreamCount; ++s) {
    const auto& schema = schema_of(static_cast<Stream>(s));
    set->index[static_cast<size_t>(s)].assign(schema.kinds.size() + 1, {});
  }
  for (size_t i = 0; i < set->rules.size(); ++i) {
    const Rule& r = set->rules[i];
    auto& by_kind = set->index[static_cast<size_t>(r.stream)];
    if (r.kinds.empty()) {
      for (auto& list : by_kind) list.push_back(static_cast<int>(i));
    } else {
      for (int k : r.kinds) by_kind[static_cast<size_t>(k + 1)].push_back(static_cast<int>(i));
    }
  }
  const bool has_error = std::any_of(result.diagnostics.begin(), result.diagnostics.end(),
                                     [](const Diagnostic& d) { return d.level == Diagnostic::Level::kError; });
  if (!has_error) result.rules = std::move(set);
  return result;
}

LoadResult load_rule_files(const std::vector<std::string>& paths, const TableCatalog* tables) {
  std::vector<Source> sources;
  LoadResult failed;
  auto read = [&](const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) {
      failed.diagnostics.push_back({Diagnostic::Level::kError, "E000", p.string(), 0, 0, "cannot read the file", ""});
      return;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    sources.push_back({p.string(), ss.str()});
  };
  for (const auto& path : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(path, ec))
        if (e.path().extension() == ".yaml" || e.path().extension() == ".yml") files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) read(f);
    } else {
      read(path);
    }
  }
  if (!failed.diagnostics.empty()) return failed;
  return load_rules(sources, tables);
}

}  // namespace tocsin::rules
