#include "rules/rule_test.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <set>
#include <sstream>
#include <tuple>

#include "alerts/alert_encoder.h"
#include "pipeline/clock.h"
#include "pipeline/decoder.h"
#include "pipeline/io.h"
#include "pipeline/json_writer.h"
#include "rules/engine.h"

namespace tocsin::rules {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- values

TestValue from_yaml(const YAML::Node& n) {
  TestValue v;
  const YAML::Mark m = n.Mark();
  v.line = m.line >= 0 ? m.line + 1 : 0;
  v.column = m.column >= 0 ? m.column + 1 : 0;
  switch (n.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      v.kind = TestValue::kNull;
      break;
    case YAML::NodeType::Scalar:
      v.kind = TestValue::kScalar;
      v.text = n.Scalar();
      v.quoted = n.Tag() == "!";
      break;
    case YAML::NodeType::Sequence:
      v.kind = TestValue::kList;
      for (const auto& i : n) v.items.push_back(from_yaml(i));
      break;
    case YAML::NodeType::Map:
      v.kind = TestValue::kMap;
      for (const auto& kv : n) {
        v.fields.emplace_back(kv.first.IsScalar() ? kv.first.Scalar() : YAML::Dump(kv.first), from_yaml(kv.second));
        v.key_positions.emplace_back(kv.first.Mark().line + 1, kv.first.Mark().column + 1);
      }
      break;
  }
  return v;
}

bool is_yaml_bool(std::string_view t) {
  return t == "true" || t == "false" || t == "True" || t == "False" || t == "TRUE" || t == "FALSE";
}

bool is_int_text(std::string_view t) {
  size_t i = (!t.empty() && (t[0] == '-' || t[0] == '+')) ? 1 : 0;
  if (i >= t.size()) return false;
  for (; i < t.size(); ++i)
    if (t[i] < '0' || t[i] > '9') return false;
  return true;
}

// A finite decimal number written in full ("5", "-2.5", "1e3", ".5").
std::optional<double> number_of(std::string_view t) {
  if (t.empty()) return std::nullopt;
  const char c = t[0];
  if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.')) return std::nullopt;
  const std::string s(t);
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(d)) return std::nullopt;
  if (s.find_first_of("xXpP") != std::string::npos) return std::nullopt;  // no hex floats
  return d;
}

bool is_json_number(std::string_view t) {
  size_t i = 0;
  if (i < t.size() && t[i] == '-') ++i;
  if (i >= t.size()) return false;
  if (t[i] == '0') ++i;
  else if (t[i] >= '1' && t[i] <= '9') while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
  else return false;
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (i >= t.size() || t[i] < '0' || t[i] > '9') return false;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (i >= t.size() || t[i] < '0' || t[i] > '9') return false;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
  }
  return i == t.size();
}

// Writes a value as JSON: quoted scalars are strings, plain scalars follow the
// YAML core schema (true/false, numbers; anything else is a string).
void to_json(const TestValue& v, std::string& out) {
  switch (v.kind) {
    case TestValue::kNull: out += "null"; return;
    case TestValue::kScalar: {
      if (!v.quoted) {
        if (is_yaml_bool(v.text)) { out += (v.text[0] == 't' || v.text[0] == 'T') ? "true" : "false"; return; }
        if (is_json_number(v.text)) { out += v.text; return; }
        if (is_int_text(v.text)) { out += v.text[0] == '+' ? v.text.substr(1) : v.text; return; }
        if (const auto d = number_of(v.text)) {
          char buf[32];
          out.append(buf, static_cast<size_t>(std::snprintf(buf, sizeof buf, "%.17g", *d)));
          return;
        }
      }
      out += '"';
      append_json_escaped(out, v.text);
      out += '"';
      return;
    }
    case TestValue::kList:
      out += '[';
      for (size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += ',';
        to_json(v.items[i], out);
      }
      out += ']';
      return;
    case TestValue::kMap:
      out += '{';
      for (size_t i = 0; i < v.fields.size(); ++i) {
        if (i) out += ',';
        out += '"';
        append_json_escaped(out, v.fields[i].first);
        out += "\":";
        to_json(v.fields[i].second, out);
      }
      out += '}';
      return;
  }
}

bool plain_safe(std::string_view t) {
  if (t.empty() || is_yaml_bool(t) || t == "null" || t == "~" || number_of(t)) return false;
  if (!(std::isalpha(static_cast<unsigned char>(t[0])) || t[0] == '_')) return false;
  for (char c : t)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' || c == '/')) return false;
  return true;
}

void render_scalar(std::string_view text, bool quoted, std::string& out) {
  if (!quoted || plain_safe(text)) {
    out += text;
    return;
  }
  out += '"';
  append_json_escaped(out, text);
  out += '"';
}

// A value in YAML flow style, on one line.
void render(const TestValue& v, std::string& out) {
  switch (v.kind) {
    case TestValue::kNull: out += "null"; return;
    case TestValue::kScalar: render_scalar(v.text, v.quoted, out); return;
    case TestValue::kList:
      out += '[';
      for (size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += ", ";
        render(v.items[i], out);
      }
      out += ']';
      return;
    case TestValue::kMap:
      out += '{';
      for (size_t i = 0; i < v.fields.size(); ++i) {
        if (i) out += ", ";
        out += v.fields[i].first;
        out += ": ";
        render(v.fields[i].second, out);
      }
      out += '}';
      return;
  }
}

std::string render(const TestValue& v) {
  std::string s;
  render(v, s);
  return s;
}

std::string where(const std::string& file, const TestValue& v) {
  return file + ":" + std::to_string(v.line) + ":" + std::to_string(v.column) + ": ";
}

std::optional<int64_t> parse_time(std::string_view text) {
  int64_t ms = 0;
  if (parse_rfc3339_ms(text, ms) != DecodeError::kOk) return std::nullopt;
  return ms;
}

std::string format_time(int64_t ms) {
  char buf[32];
  return std::string(format_rfc3339_ms(ms, buf));
}

std::string read_file(const fs::path& p, bool& ok) {
  std::ifstream in(p, std::ios::binary);
  ok = static_cast<bool>(in);
  if (!ok) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---------------------------------------------------------------- parsing

// Reads the parts of a test that golden cases share: input steps and expectations.
class Parser {
 public:
  Parser(std::string file, std::vector<std::string>& errors) : file_(std::move(file)), errors_(errors) {}

  bool fail(const TestValue& at, const std::string& msg) {
    errors_.push_back(where(file_, at) + msg);
    return false;
  }

  bool keys(const TestValue& map, std::initializer_list<std::string_view> allowed, const char* what) {
    bool ok = true;
    for (size_t i = 0; i < map.fields.size(); ++i) {
      const std::string& k = map.fields[i].first;
      if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      TestValue at = map.fields[i].second;
      if (i < map.key_positions.size()) std::tie(at.line, at.column) = map.key_positions[i];
      ok = fail(at, "unknown key '" + k + "' in " + what + " (expected one of: " + list + ")");
    }
    return ok;
  }

  std::optional<int64_t> offset(const TestValue& v, const char* what) {
    if (v.kind == TestValue::kScalar)
      if (const auto ms = parse_test_offset(v.text)) return ms;
    fail(v, std::string(what) + ": bad duration '" + render(v) + "' (e.g. 0s, 90s, 3m10s, 1h, 500ms, -5m)");
    return std::nullopt;
  }

  std::optional<int64_t> time(const TestValue& v, const char* what) {
    if (v.kind == TestValue::kScalar)
      if (const auto ms = parse_time(v.text)) return ms;
    fail(v, std::string(what) + ": not an RFC 3339 time: '" + render(v) + "' (e.g. \"2026-11-26T08:00:00Z\")");
    return std::nullopt;
  }

  bool step(const TestValue& item, TestStep& out) {
    if (item.kind != TestValue::kMap)
      return fail(item, "an input item is a mapping: {stream: ..., at: ..., event: {...}} or {advance: 10m}");
    out.line = item.line;
    if (const TestValue* adv = item.find("advance")) {
      if (!keys(item, {"advance"}, "an advance")) return false;
      out.kind = TestStep::kAdvance;
      const auto ms = offset(*adv, "advance");
      if (!ms) return false;
      if (*ms <= 0) return fail(*adv, "advance must move the clock forward");
      out.advance_ms = *ms;
      return true;
    }
    if (!keys(item, {"stream", "at", "event"}, "an input event")) return false;
    out.kind = TestStep::kEvent;
    const TestValue* stream = item.find("stream");
    const TestValue* event = item.find("event");
    if (!stream || !event) return fail(item, "an input event needs 'stream' and 'event' (or the item is {advance: DURATION})");
    const auto s = stream->kind == TestValue::kScalar ? stream_from_string(stream->text) : std::nullopt;
    if (!s) return fail(*stream, "unknown stream '" + render(*stream) + "' (" + std::string(stream_names()) + ")");
    out.stream = *s;
    if (event->kind != TestValue::kMap) return fail(*event, "'event' is a mapping of the event's fields");
    out.event = *event;
    const StreamSchema& schema = schema_of(*s);
    const std::string_view time_field = schema.fields[static_cast<size_t>(schema.time_slot)].name;
    const bool has_time = event->find(time_field) != nullptr;
    if (const TestValue* at = item.find("at")) {
      if (has_time)
        return fail(*at, "give the event time either as 'at' or as the event's '" + std::string(time_field) + "', not both");
      out.at_ms = offset(*at, "at");
      if (!out.at_ms) return false;
    } else if (!has_time) {
      return fail(item, "an input event needs 'at' (an offset from start, e.g. 90s)");
    }
    return true;
  }

  // A `tables:` section, as in the daemon's config (examples/tables/tocsin.yaml) plus
  // inline rows: [{name, key_normalization, columns: [{name, type}, ...], file, rows}].
  // `reload` and `topic` are accepted and ignored: a test's tables do not change.
  bool tables(const TestValue& section, const std::string& base_dir, std::vector<TestTable>& out) {
    if (section.kind != TestValue::kList)
      return fail(section, "'tables' is a list of tables, each {name, key_normalization, columns, file and/or rows}");
    bool ok = true;
    for (const TestValue& t : section.items) {
      if (t.kind != TestValue::kMap) {
        ok = fail(t, "a table is a mapping: {name, key_normalization, columns, file and/or rows}");
        continue;
      }
      if (!keys(t, {"name", "key_normalization", "columns", "file", "rows", "reload", "topic"}, "a table")) ok = false;
      TestTable table;
      table.line = t.line;
      const TestValue* name = t.find("name");
      if (!name || name->kind != TestValue::kScalar || name->text.empty()) {
        ok = fail(name ? *name : t, "a table needs a 'name'");
        continue;
      }
      table.schema.name = name->text;
      const TestValue* columns = t.find("columns");
      if (!columns || columns->kind != TestValue::kList || columns->items.empty()) {
        ok = fail(columns ? *columns : t, "a table needs 'columns': a list of {name, type}, the key column (a string) first");
        continue;
      }
      for (const TestValue& c : columns->items) {
        static constexpr std::pair<std::string_view, Type> kTypes[] = {
            {"string", Type::kString}, {"int", Type::kInt}, {"double", Type::kDouble}, {"bool", Type::kBool}, {"time", Type::kTime}};
        const TestValue* col = c.kind == TestValue::kMap ? c.find("name") : nullptr;
        const TestValue* type = c.kind == TestValue::kMap ? c.find("type") : nullptr;
        if (!col || col->kind != TestValue::kScalar || !type) {
          ok = fail(c, "a column is {name, type}");
          continue;
        }
        keys(c, {"name", "type"}, "a column");
        const auto it = std::find_if(std::begin(kTypes), std::end(kTypes), [&](const auto& x) { return x.first == type->text; });
        if (type->kind != TestValue::kScalar || it == std::end(kTypes)) {
          ok = fail(*type, "column '" + col->text + "': unknown type '" + render(*type) + "' (string, int, double, bool, time)");
          continue;
        }
        table.schema.columns.emplace_back(col->text, it->second);
      }
      if (!table.schema.columns.empty() && table.schema.columns[0].second != Type::kString)
        ok = fail(columns->items[0], "the first column is the key and must be a string");
      if (const TestValue* key = t.find("key_normalization")) {
        if (key->kind == TestValue::kScalar && key->text == "phone") table.schema.key = KeyNormalization::kPhone;
        else if (key->kind == TestValue::kScalar && key->text == "none") table.schema.key = KeyNormalization::kNone;
        else ok = fail(*key, "key_normalization: 'phone' (keys are phone numbers, normalised) or 'none'");
      }
      if (const TestValue* rows = t.find("rows"); rows && rows->kind != TestValue::kNull) {
        if (rows->kind != TestValue::kList) ok = fail(*rows, "'rows' is a list of rows, each a mapping of column to value");
        else
          for (const TestValue& r : rows->items) {
            if (r.kind != TestValue::kMap) ok = fail(r, "a row is a mapping of column to value");
            else table.rows.push_back(r);
          }
      }
      if (const TestValue* file = t.find("file")) {
        if (file->kind != TestValue::kScalar || file->text.empty()) {
          ok = fail(*file, "'file' names a CSV or JSONL file");
        } else {
          const fs::path path(file->text);
          table.file = path.is_absolute() ? path.string() : (fs::path(base_dir) / path).lexically_normal().string();
        }
      }
      for (const TestTable& other : out)
        if (other.schema.name == table.schema.name) ok = fail(*name, "duplicate table '" + table.schema.name + "'");
      out.push_back(std::move(table));
    }
    return ok;
  }

  bool expectation(const TestValue& item, TestValue& out) {
    if (item.kind != TestValue::kMap) return fail(item, "an expected alert is a mapping of alert fields, e.g. {rule: r, severity: high, at: 5m}");
    if (!keys(item, {"rule", "type", "severity", "title", "key", "at", "count", "distinct", "aggregates", "deadline",
                     "score", "summary", "labels", "context", "id", "stream", "rule_set_version", "window", "evidence", "source",
                     "emitted_at", "status"},
              "an expected alert"))
      return false;
    out = item;
    return true;
  }

 private:
  std::string file_;
  std::vector<std::string>& errors_;
};

// ---------------------------------------------------------------- comparing

// Where an expectation key lives in the alert JSON.
std::vector<std::string> alert_path(const std::string& key) {
  if (key == "at") return {"window", "end"};
  if (key == "count" || key == "distinct" || key == "aggregates" || key == "deadline") return {"evidence", key};
  return {key};
}

const TestValue* lookup(const TestValue& alert, const std::vector<std::string>& path) {
  const TestValue* v = &alert;
  for (const auto& p : path) {
    if (!v || v->kind != TestValue::kMap) return nullptr;
    v = v->find(p);
  }
  return v;
}

// An alert time shown relative to the test's start, as expectations write it.
std::string show_actual(const TestValue& v, int64_t start_ms) {
  if (v.kind == TestValue::kScalar && v.quoted)
    if (const auto t = parse_time(v.text)) return format_test_offset(*t - start_ms);
  return render(v);
}

bool scalars_equal(const TestValue& e, const TestValue& a, int64_t start_ms) {
  if (e.text == a.text) return true;
  const auto x = number_of(e.text), y = number_of(a.text);
  if (x && y && !a.quoted) return std::fabs(*x - *y) <= 1e-9 * std::max({1.0, std::fabs(*x), std::fabs(*y)});
  if (a.quoted)
    if (const auto t = parse_time(a.text)) {
      if (const auto off = parse_test_offset(e.text)) return start_ms + *off == *t;
      if (const auto et = parse_time(e.text)) return *et == *t;
    }
  return false;
}

void compare(const TestValue& e, const TestValue* a, const std::string& name, int64_t start_ms,
             std::vector<std::string>& diffs) {
  if (!a || a->kind == TestValue::kNull) {
    if (e.kind != TestValue::kNull)
      diffs.push_back(name + ": expected " + render(e) + ", got " + (a ? "null" : "nothing (the alert has no such field)"));
    return;
  }
  switch (e.kind) {
    case TestValue::kNull:
      diffs.push_back(name + ": expected null, got " + show_actual(*a, start_ms));
      return;
    case TestValue::kScalar:
      if (a->kind != TestValue::kScalar || !scalars_equal(e, *a, start_ms))
        diffs.push_back(name + ": expected " + render(e) + ", got " + show_actual(*a, start_ms));
      return;
    case TestValue::kList:
      if (a->kind != TestValue::kList || a->items.size() != e.items.size()) {
        diffs.push_back(name + ": expected " + render(e) + ", got " + render(*a));
        return;
      }
      for (size_t i = 0; i < e.items.size(); ++i)
        compare(e.items[i], &a->items[i], name + "[" + std::to_string(i) + "]", start_ms, diffs);
      return;
    case TestValue::kMap:
      if (a->kind != TestValue::kMap) {
        diffs.push_back(name + ": expected " + render(e) + ", got " + render(*a));
        return;
      }
      for (const auto& [k, v] : e.fields) compare(v, a->find(k), name + "." + k, start_ms, diffs);
      return;
  }
}

std::vector<std::string> differences(const TestValue& expected, const TestValue& alert, int64_t start_ms) {
  std::vector<std::string> diffs;
  for (const auto& [k, v] : expected.fields) {
    const TestValue* a = lookup(alert, alert_path(k));
    compare(v, a, k, start_ms, diffs);
    // The key names the alert's group: it is compared whole, not field by field.
    if (k == "key" && v.kind == TestValue::kMap && a && a->kind == TestValue::kMap)
      for (const auto& [ak, av] : a->fields)
        if (!v.find(ak)) diffs.push_back("key." + ak + ": not expected, got " + render(av));
  }
  return diffs;
}

// One line per alert, in the expectation's own vocabulary so it can be copied.
std::string summary(const TestValue& alert, int64_t start_ms) {
  std::string s = "{";
  auto field = [&](const char* name, const TestValue* v, bool as_time = false) {
    if (!v) return;
    if (s.size() > 1) s += ", ";
    s += name;
    s += ": ";
    s += as_time ? show_actual(*v, start_ms) : render(*v);
  };
  const TestValue* rule = alert.find("rule");
  const TestValue* type = alert.find("type");
  field("rule", rule);
  if (type && (!rule || type->text != rule->text)) field("type", type);
  if (const TestValue* key = alert.find("key"); key && !key->fields.empty()) field("key", key);
  field("severity", alert.find("severity"));
  field("title", alert.find("title"));
  field("at", lookup(alert, {"window", "end"}), true);
  field("count", lookup(alert, {"evidence", "count"}));
  field("distinct", lookup(alert, {"evidence", "distinct"}));
  field("deadline", lookup(alert, {"evidence", "deadline"}));
  return s + "}";
}

// Aligns expected and actual alerts (longest common subsequence of exact
// matches), then pairs what is left between matches as "differs" when the
// rule agrees, and reports the rest as missing or unexpected.
std::string diff_report(const std::vector<TestValue>& expected, const std::vector<TestValue>& actual, int64_t start_ms,
                        bool& same) {
  const size_t n = expected.size(), m = actual.size();
  std::vector<std::vector<char>> match(n, std::vector<char>(m));
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < m; ++j) match[i][j] = differences(expected[i], actual[j], start_ms).empty();
  std::vector<std::vector<int>> lcs(n + 1, std::vector<int>(m + 1, 0));
  for (size_t i = n; i-- > 0;)
    for (size_t j = m; j-- > 0;)
      lcs[i][j] = match[i][j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
  std::vector<std::pair<size_t, size_t>> anchors;
  for (size_t i = 0, j = 0; i < n && j < m;) {
    if (match[i][j] && lcs[i][j] == lcs[i + 1][j + 1] + 1) anchors.emplace_back(i++, j++);
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) ++i;
    else ++j;
  }
  same = anchors.size() == n && n == m;
  if (same) return {};

  std::string out = "expected " + std::to_string(n) + " alert" + (n == 1 ? "" : "s") + ", got " + std::to_string(m) +
                    " (= as expected, ~ differs, - missing, + unexpected):\n";
  auto gap = [&](size_t i0, size_t i1, size_t j0, size_t j1) {
    std::vector<char> used(j1 - j0);
    for (size_t i = i0; i < i1; ++i) {
      const TestValue* rule = expected[i].find("rule");
      size_t best = j1;
      for (size_t j = j0; j < j1 && best == j1; ++j) {
        if (used[j - j0]) continue;
        const TestValue* arule = actual[j].find("rule");
        if (!rule || (arule && rule->text == arule->text)) best = j;
      }
      if (best == j1) {
        out += "  - " + render(expected[i]) + "\n";
        continue;
      }
      used[best - j0] = 1;
      out += "  ~ expected " + render(expected[i]) + "\n";
      out += "      actual " + summary(actual[best], start_ms) + "\n";
      for (const auto& d : differences(expected[i], actual[best], start_ms)) out += "      " + d + "\n";
    }
    for (size_t j = j0; j < j1; ++j)
      if (!used[j - j0]) out += "  + " + summary(actual[j], start_ms) + "\n";
  };
  size_t i = 0, j = 0;
  for (const auto& [ai, aj] : anchors) {
    gap(i, ai, j, aj);
    out += "  = " + summary(actual[aj], start_ms) + "\n";
    i = ai + 1;
    j = aj + 1;
  }
  gap(i, n, j, m);
  return out;
}

// ---------------------------------------------------------------- running

class Capture final : public OutputSink {
 public:
  std::vector<std::string> alerts;
  void alert(std::string_view, std::string_view json) override { alerts.emplace_back(json); }
  void dead_letter(std::string_view, const DeadLetter&) override {}
};

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

bool load_rules_for(RuleTestFileResult& result, const std::vector<std::string>& files, const TableCatalog* catalog,
                    std::shared_ptr<const RuleSet>& rules) {
  const LoadResult loaded = load_rule_files(files, catalog);
  if (!loaded.ok()) {
    for (const auto& d : loaded.diagnostics)
      if (d.level == Diagnostic::Level::kError) result.load_errors.push_back(format_text(d));
    if (result.load_errors.empty()) result.load_errors.push_back("the rule files could not be loaded");
    return false;
  }
  rules = loaded.rules;
  return true;
}

std::vector<std::string> text_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
    lines.push_back(l);
  }
  return lines;
}

bool skip_line(const std::string& l) {
  const size_t p = l.find_first_not_of(" \t");
  return p == std::string::npos || l[p] == '#';
}

// Positions of a value parsed from one line of a file: that line.
void relocate(TestValue& v, int line) {
  v.line = line;
  for (auto& i : v.items) relocate(i, line);
  for (auto& [k, f] : v.fields) relocate(f, line);
  for (auto& p : v.key_positions) p.first = line;
}

// Reads a JSON-lines file of objects; `#` lines and blank lines are comments.
bool read_jsonl(const fs::path& p, std::vector<TestValue>& out, std::vector<std::string>& errors) {
  bool ok = false;
  const std::string text = read_file(p, ok);
  if (!ok) {
    errors.push_back(p.string() + ": cannot read the file");
    return false;
  }
  const auto lines = text_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (skip_line(lines[i])) continue;
    std::string err;
    auto v = parse_test_value(lines[i], err);
    const std::string at = p.string() + ":" + std::to_string(i + 1) + ":";
    if (!v) {
      errors.push_back(at + err);
      ok = false;
      continue;
    }
    if (v->kind != TestValue::kMap) {
      errors.push_back(at + "1: each line is a JSON object");
      ok = false;
      continue;
    }
    relocate(*v, static_cast<int>(i + 1));
    out.push_back(std::move(*v));
  }
  return ok;
}

}  // namespace

// ---------------------------------------------------------------- public API

const TestValue* TestValue::find(std::string_view key) const {
  for (const auto& [k, v] : fields)
    if (k == key) return &v;
  return nullptr;
}

std::optional<TestValue> parse_test_value(const std::string& text, std::string& error) {
  try {
    return from_yaml(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    error = std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) + ": " + e.msg;
    return std::nullopt;
  }
}

std::optional<int64_t> parse_test_offset(std::string_view t) {
  bool negative = false;
  if (!t.empty() && (t[0] == '-' || t[0] == '+')) {
    negative = t[0] == '-';
    t.remove_prefix(1);
  }
  if (t.empty()) return std::nullopt;
  std::optional<int64_t> ms;
  if (t.find_first_not_of("0123456789") == std::string_view::npos) {  // a plain number is milliseconds
    int64_t n = 0;
    for (char c : t) {
      if (n > INT64_MAX / 10 - 10) return std::nullopt;
      n = n * 10 + (c - '0');
    }
    ms = n;
  } else {
    ms = parse_duration_ms(t);
  }
  if (!ms) return std::nullopt;
  return negative ? -*ms : *ms;
}

std::string format_test_offset(int64_t ms) {
  if (ms == 0) return "0s";
  std::string s = ms < 0 ? "-" : "";
  uint64_t v = ms < 0 ? static_cast<uint64_t>(-(ms + 1)) + 1 : static_cast<uint64_t>(ms);
  static constexpr std::pair<uint64_t, const char*> kUnits[] = {
      {86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1000, "s"}, {1, "ms"}};
  for (auto [size, name] : kUnits)
    if (v >= size) {
      s += std::to_string(v / size) + name;
      v %= size;
    }
  return s;
}

int RuleTestFileResult::passed() const {
  return static_cast<int>(std::count_if(tests.begin(), tests.end(), [](const RuleTestResult& r) { return r.passed; }));
}
int RuleTestFileResult::failed() const { return static_cast<int>(tests.size()) - passed(); }

bool parse_rule_test_file(const std::string& name, const std::string& text, const std::string& base_dir,
                          RuleTestFile& out, std::vector<std::string>& errors) {
  const size_t errors_before = errors.size();
  out = RuleTestFile{};
  out.file = name;
  out.start_ms = kDefaultTestStartMs;
  std::string err;
  const auto root = parse_test_value(text, err);
  if (!root) {
    errors.push_back(name + ":" + err);
    return false;
  }
  Parser p(name, errors);
  if (root->kind != TestValue::kMap) {
    p.fail(*root, "a rule test file is a mapping with 'rule_files' and 'tests'");
    return false;
  }
  p.keys(*root, {"rule_files", "start", "tick", "tables", "tests"}, "a rule test file");

  const TestValue* files = root->find("rule_files");
  if (!files) p.fail(*root, "missing 'rule_files' (the rule files to test, relative to this file)");
  else {
    std::vector<const TestValue*> items;
    if (files->kind == TestValue::kList) for (const auto& i : files->items) items.push_back(&i);
    else items.push_back(files);
    for (const TestValue* f : items) {
      if (f->kind != TestValue::kScalar || f->text.empty()) {
        p.fail(*f, "rule_files lists file or directory names");
        continue;
      }
      const fs::path path(f->text);
      out.rule_files.push_back(path.is_absolute() ? path.string() : (fs::path(base_dir) / path).lexically_normal().string());
    }
    if (items.empty()) p.fail(*files, "rule_files is empty");
  }
  if (const TestValue* s = root->find("start"))
    if (const auto ms = p.time(*s, "start")) out.start_ms = *ms;
  if (const TestValue* t = root->find("tick")) {
    if (const auto ms = p.offset(*t, "tick")) {
      if (*ms <= 0) p.fail(*t, "tick must be positive");
      else out.tick_ms = *ms;
    }
  }
  if (const TestValue* t = root->find("tables")) p.tables(*t, base_dir, out.tables);

  const TestValue* tests = root->find("tests");
  if (!tests) p.fail(*root, "missing 'tests'");
  else if (tests->kind != TestValue::kList) p.fail(*tests, "'tests' is a list");
  else {
    std::set<std::string> names;
    for (const TestValue& t : tests->items) {
      if (t.kind != TestValue::kMap) {
        p.fail(t, "each test is a mapping with name, input and expect");
        continue;
      }
      p.keys(t, {"name", "start", "input", "expect"}, "a test");
      RuleTestCase c;
      c.start_ms = out.start_ms;
      c.file = name;
      c.location = name + ":" + std::to_string(t.line);
      const TestValue* n = t.find("name");
      if (!n || n->kind != TestValue::kScalar || n->text.empty()) {
        p.fail(n ? *n : t, "a test needs a 'name'");
        continue;
      }
      c.name = n->text;
      if (!names.insert(c.name).second) p.fail(*n, "duplicate test name '" + c.name + "'");
      if (const TestValue* s = t.find("start"))
        if (const auto ms = p.time(*s, "start")) c.start_ms = *ms;
      if (const TestValue* in = t.find("input"); in && in->kind != TestValue::kNull) {
        if (in->kind != TestValue::kList) p.fail(*in, "'input' is a list of events and clock advances");
        else
          for (const TestValue& item : in->items) {
            TestStep step;
            if (p.step(item, step)) c.input.push_back(std::move(step));
          }
      }
      const TestValue* ex = t.find("expect");
      if (!ex) p.fail(t, "test '" + c.name + "' needs 'expect' (the exact alerts; [] for none)");
      else if (ex->kind == TestValue::kList) {
        for (const TestValue& item : ex->items) {
          TestValue e;
          if (p.expectation(item, e)) c.expect.push_back(std::move(e));
        }
      } else if (ex->kind != TestValue::kNull) {
        p.fail(*ex, "'expect' is a list of alerts ([] for none)");
      }
      out.tests.push_back(std::move(c));
    }
  }
  return errors.size() == errors_before;
}

bool load_rule_test_file(const std::string& path, RuleTestFile& out, std::vector<std::string>& errors) {
  bool ok = false;
  const std::string text = read_file(path, ok);
  if (!ok) {
    errors.push_back(path + ": cannot read the file");
    return false;
  }
  return parse_rule_test_file(path, text, fs::path(path).parent_path().string(), out, errors);
}

std::unique_ptr<TableRegistry> make_test_tables(const RuleTestFile& file, std::vector<std::string>& errors) {
  if (file.tables.empty()) return nullptr;
  const size_t errors_before = errors.size();
  TableCatalog catalog;
  for (const TestTable& t : file.tables) catalog.tables.push_back(t.schema);
  auto registry = std::make_unique<TableRegistry>(std::move(catalog));
  for (const TestTable& t : file.tables) {
    const std::string at = file.file + ":" + std::to_string(t.line) + ": table '" + t.schema.name + "': ";
    if (!t.file.empty())
      for (const auto& e : registry->load_file(t.schema.name, t.file)) errors.push_back(at + e);
    if (t.rows.empty()) continue;
    // Inline rows, applied in order on top of the file's rows (a later row for a key wins).
    std::vector<TableChange> changes;
    for (const TestValue& r : t.rows) {
      std::string json, error;
      to_json(r, json);
      if (RowPtr row = parse_json_row(t.schema, {}, json, error)) changes.push_back({std::string(row->key()), std::move(row)});
      else errors.push_back(file.file + ":" + std::to_string(r.line) + ": table '" + t.schema.name + "': " + error);
    }
    if (const std::string e = registry->apply(t.schema.name, changes); !e.empty()) errors.push_back(at + e);
  }
  if (errors.size() != errors_before) return nullptr;
  return registry;
}

RuleTestResult run_rule_test(std::shared_ptr<const RuleSet> rules, const RuleTestCase& test, int64_t tick_ms,
                             const TableSource* tables) {
  RuleTestResult result;
  result.name = test.name;
  Capture out;
  ManualClock clock(test.start_ms);
  alerts::AlertEncoder encoder(out, clock);
  Engine engine(std::move(rules), encoder, nullptr, tables);
  Decoder decoder;
  Event event;
  std::array<int64_t, kStreamCount> offsets{};
  if (tick_ms <= 0) tick_ms = 1000;

  // Moves the virtual clock forward to `t`; the worker ticks on the way.
  auto move_to = [&](int64_t t) {
    const int64_t now = clock.now_ms();
    if (t <= now) return;
    for (int64_t g = test.start_ms + (floor_div(now - test.start_ms, tick_ms) + 1) * tick_ms; g < t; g += tick_ms) {
      clock.set(g);
      engine.on_tick(g);
    }
    clock.set(t);
  };

  std::string error;
  for (size_t i = 0; i < test.input.size() && error.empty(); ++i) {
    const TestStep& step = test.input[i];
    const std::string item = (test.file.empty() ? "line " : test.file + ":") + std::to_string(step.line) + ": input item " + std::to_string(i + 1);
    if (step.kind == TestStep::kAdvance) {
      move_to(clock.now_ms() + step.advance_ms);
      engine.on_tick(clock.now_ms());
      continue;
    }
    const StreamSchema& schema = schema_of(step.stream);
    const std::string time_field(schema.fields[static_cast<size_t>(schema.time_slot)].name);
    TestValue ev = step.event;
    int64_t t = clock.now_ms();
    if (step.at_ms) {
      t = test.start_ms + *step.at_ms;
      TestValue tv;
      tv.kind = TestValue::kScalar;
      tv.quoted = true;
      tv.text = format_time(t);
      ev.fields.emplace_back(time_field, std::move(tv));
    } else if (const TestValue* given = ev.find(time_field); given && given->kind == TestValue::kScalar) {
      if (const auto abs = parse_time(given->text)) t = *abs;
      else if (is_int_text(given->text)) t = std::strtoll(given->text.c_str(), nullptr, 10);
    }
    move_to(t);
    std::string json;
    to_json(ev, json);
    const DecodeResult r = decoder.decode(step.stream, json, clock.now_ms(), event);
    if (!r.ok()) {
      error = item + ": the decoder rejected the event (" + std::string(reason_code(r.error)) + ": " +
              std::string(r.detail) + ")";
      const int slot = schema.slot_of(r.detail);
      if (r.error == DecodeError::kWrongType && slot >= 0 && schema.fields[static_cast<size_t>(slot)].type == FieldType::kString)
        error += "; quote values meant as strings, e.g. " + std::string(r.detail) + ": \"13800138000\"";
      error += "\n  " + json + "\n";
      break;
    }
    event.source = SourcePosition{to_string(step.stream), 0, offsets[static_cast<size_t>(step.stream)]++};
    engine.on_event(event);
    engine.on_tick(clock.now_ms());
  }
  result.alerts = out.alerts;
  if (!error.empty()) {
    result.report = error;
    return result;
  }
  std::vector<TestValue> actual;
  for (const auto& json : out.alerts) {
    std::string err;
    auto v = parse_test_value(json, err);
    if (!v) {
      result.report = "at " + test.location + ": the alert is not valid JSON (" + err + "): " + json + "\n";
      return result;
    }
    actual.push_back(std::move(*v));
  }
  bool same = false;
  const std::string diff = diff_report(test.expect, actual, test.start_ms, same);
  result.passed = same;
  if (!same) result.report = "at " + test.location + ": " + diff;
  return result;
}

RuleTestFileResult run_rule_test_file(const std::string& path) {
  RuleTestFileResult result;
  result.file = path;
  RuleTestFile file;
  if (!load_rule_test_file(path, file, result.load_errors)) return result;
  const auto tables = make_test_tables(file, result.load_errors);
  if (!result.load_errors.empty()) return result;
  std::shared_ptr<const RuleSet> rules;
  if (!load_rules_for(result, file.rule_files, tables ? &tables->catalog() : nullptr, rules)) return result;
  for (const auto& t : file.tests) result.tests.push_back(run_rule_test(rules, t, file.tick_ms, tables.get()));
  return result;
}

RuleTestFileResult run_golden_case(const std::string& dir_name) {
  const fs::path dir(dir_name);
  RuleTestFileResult result;
  result.file = dir.string();
  const std::string name = dir.filename().string();
  const fs::path rules_file = dir / "rules.yaml";
  const fs::path errors_file = dir / "expected_errors.txt";
  const fs::path tables_file = dir / "tables.yaml";

  // Optional reference tables: a file with a `tables:` section.
  std::error_code ec;
  RuleTestFile with_tables;
  with_tables.file = tables_file.string();
  if (fs::exists(tables_file, ec)) {
    bool ok = false;
    const std::string text = read_file(tables_file, ok);
    std::string err;
    const auto root = ok ? parse_test_value(text, err) : std::nullopt;
    Parser p(tables_file.string(), result.load_errors);
    if (!ok) result.load_errors.push_back(tables_file.string() + ": cannot read the file");
    else if (!root) result.load_errors.push_back(tables_file.string() + ":" + err);
    else if (root->kind != TestValue::kMap || !root->find("tables")) p.fail(*root, "tables.yaml is a mapping with a 'tables' list");
    else if (p.keys(*root, {"tables"}, "tables.yaml")) p.tables(*root->find("tables"), dir.string(), with_tables.tables);
    if (!result.load_errors.empty()) return result;
  }
  const auto tables = make_test_tables(with_tables, result.load_errors);
  if (!result.load_errors.empty()) return result;
  const TableCatalog* catalog = tables ? &tables->catalog() : nullptr;

  if (fs::exists(errors_file, ec)) {
    // An error case: the diagnostics of loading rules.yaml, exactly.
    bool ok = false;
    const std::string text = read_file(errors_file, ok);
    if (!ok) {
      result.load_errors.push_back(errors_file.string() + ": cannot read the file");
      return result;
    }
    std::vector<std::string> expected;
    const auto lines = text_lines(text);
    for (size_t i = 0; i < lines.size(); ++i) {
      if (skip_line(lines[i])) continue;
      std::istringstream in(lines[i]);
      std::string code, pos, extra;
      in >> code >> pos;
      if (code.empty() || pos.find(':') == std::string::npos || (in >> extra)) {
        result.load_errors.push_back(errors_file.string() + ":" + std::to_string(i + 1) + ":1: expected 'CODE LINE:COLUMN', got '" + lines[i] + "'");
        continue;
      }
      expected.push_back(code + " " + pos);
    }
    if (!result.load_errors.empty()) return result;
    const LoadResult loaded = load_rule_files({rules_file.string()}, catalog);
    std::vector<std::string> actual;
    std::string full;
    for (const auto& d : loaded.diagnostics) {
      actual.push_back(d.code + " " + std::to_string(d.line) + ":" + std::to_string(d.column));
      full += "    " + format_text(d) + "\n";
    }
    RuleTestResult t;
    t.name = name;
    t.passed = actual == expected;
    if (!t.passed) {
      t.report = "diagnostics of " + rules_file.string() + " (- expected only, + actual only):\n";
      std::vector<char> used(actual.size());
      for (const auto& e : expected) {
        auto it = std::find_if(actual.begin(), actual.end(), [&](const std::string& a) { return a == e && !used[static_cast<size_t>(&a - actual.data())]; });
        if (it == actual.end()) t.report += "  - " + e + "\n";
        else used[static_cast<size_t>(it - actual.begin())] = 1;
      }
      for (size_t i = 0; i < actual.size(); ++i)
        if (!used[i]) t.report += "  + " + actual[i] + "\n";
      if (std::is_permutation(expected.begin(), expected.end(), actual.begin(), actual.end()))
        t.report += "  (the same diagnostics in a different order)\n";
      t.report += "  expected, in order: ";
      for (const auto& e : expected) t.report += e + "; ";
      t.report += "\n  actual:\n" + (full.empty() ? std::string("    none\n") : full);
    }
    result.tests.push_back(std::move(t));
    return result;
  }

  // A behaviour case: events in, alerts out.
  std::vector<TestValue> event_lines, expected_lines;
  read_jsonl(dir / "events.jsonl", event_lines, result.load_errors);
  read_jsonl(dir / "expected.jsonl", expected_lines, result.load_errors);
  if (!result.load_errors.empty()) return result;
  RuleTestCase c;
  c.name = name;
  c.file = (dir / "events.jsonl").string();
  c.location = c.file + ":1";
  c.start_ms = kDefaultTestStartMs;
  Parser events((dir / "events.jsonl").string(), result.load_errors);
  for (size_t i = 0; i < event_lines.size(); ++i) {
    const TestValue& v = event_lines[i];
    if (const TestValue* s = v.find("start")) {
      if (i != 0 || v.fields.size() != 1) {
        events.fail(v, "{\"start\": TIME} may only be the first line, alone");
        continue;
      }
      if (const auto ms = events.time(*s, "start")) c.start_ms = *ms;
      continue;
    }
    TestStep step;
    if (events.step(v, step)) c.input.push_back(std::move(step));
  }
  Parser alerts_parser((dir / "expected.jsonl").string(), result.load_errors);
  for (const TestValue& v : expected_lines) {
    TestValue e;
    if (alerts_parser.expectation(v, e)) c.expect.push_back(std::move(e));
  }
  if (!result.load_errors.empty()) return result;
  std::shared_ptr<const RuleSet> rules;
  if (!load_rules_for(result, {rules_file.string()}, catalog, rules)) return result;
  result.tests.push_back(run_rule_test(rules, c, 1000, tables.get()));
  return result;
}

int run_rule_test_cli(const std::vector<std::string>& files, std::ostream& out, std::ostream& err) {
  int passed = 0, failed = 0, unloaded = 0;
  for (const auto& f : files) {
    const RuleTestFileResult r = run_rule_test_file(f);
    if (files.size() > 1) out << f << "\n";
    if (!r.loaded()) {
      ++unloaded;
      err << "tocsin: cannot run the tests in " << f << ":\n";
      for (const auto& e : r.load_errors) err << e << "\n";
      continue;
    }
    for (const auto& t : r.tests) {
      out << (t.passed ? "PASS " : "FAIL ") << t.name << "\n";
      if (!t.passed) {
        std::istringstream lines(t.report);
        for (std::string l; std::getline(lines, l);) out << "    " << l << "\n";
      }
    }
    passed += r.passed();
    failed += r.failed();
  }
  out << passed << " passed, " << failed << " failed";
  if (unloaded) out << ", " << unloaded << " file" << (unloaded == 1 ? "" : "s") << " not loaded";
  out << "\n";
  return unloaded ? 2 : failed ? 1 : 0;
}

}  // namespace tocsin::rules
