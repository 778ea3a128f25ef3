#include "alerts/alerting_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "pipeline/decoder.h"
#include "rules/expr.h"
#include "rules/tables.h"

namespace tocsin::alerts {

bool Matcher::matches(const Alert& a) const {
  const std::string_view v = a.field(name);
  switch (op) {
    case Op::kEq: return v == value;
    case Op::kNe: return v != value;
    case Op::kRe: return std::regex_match(v.begin(), v.end(), *re);
    case Op::kNre: return !std::regex_match(v.begin(), v.end(), *re);
  }
  return false;
}

bool matches_all(const std::vector<Matcher>& ms, const Alert& a) {
  return std::all_of(ms.begin(), ms.end(), [&](const Matcher& m) { return m.matches(a); });
}

bool parse_matcher(std::string_view text, Matcher& out, std::string& error) {
  const size_t op = text.find_first_of("=!");
  if (op == std::string_view::npos || op == 0) {
    error = "a matcher is name=value, name!=value, name=~regex or name!~regex (got '" + std::string(text) + "')";
    return false;
  }
  auto trim = [](std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
  };
  out = Matcher{};
  out.name = std::string(trim(text.substr(0, op)));
  std::string_view rest = text.substr(op);
  if (rest.starts_with("=~")) out.op = Matcher::Op::kRe, rest.remove_prefix(2);
  else if (rest.starts_with("!~")) out.op = Matcher::Op::kNre, rest.remove_prefix(2);
  else if (rest.starts_with("!=")) out.op = Matcher::Op::kNe, rest.remove_prefix(2);
  else if (rest.starts_with("=")) out.op = Matcher::Op::kEq, rest.remove_prefix(1);
  else {
    error = "unknown matcher operator in '" + std::string(text) + "'; use =, !=, =~ or !~";
    return false;
  }
  rest = trim(rest);
  if (rest.size() >= 2 && rest.front() == '"' && rest.back() == '"') rest = rest.substr(1, rest.size() - 2);
  out.value = std::string(rest);
  if (out.op == Matcher::Op::kRe || out.op == Matcher::Op::kNre) {
    try {
      out.re = std::make_shared<const std::regex>(out.value, std::regex::ECMAScript | std::regex::optimize);
    } catch (const std::regex_error& e) {
      error = "bad regular expression '" + out.value + "': " + e.what();
      return false;
    }
  }
  return true;
}

bool MaintenanceWindow::active(int64_t now_ms) const {
  const int64_t local = now_ms + utc_offset_ms;
  const int64_t day = (local >= 0 ? local : local - 86399999) / 86400000;
  const int minute = static_cast<int>((local - day * 86400000) / 60000);
  // 1970-01-01 was a Thursday (3 with Monday = 0).
  auto weekday = [](int64_t d) { return static_cast<int>(((d % 7) + 7 + 3) % 7); };
  auto on = [&](int64_t d) { return days.empty() || std::find(days.begin(), days.end(), weekday(d)) != days.end(); };
  if (start_minute <= end_minute) return on(day) && minute >= start_minute && minute < end_minute;
  return (on(day) && minute >= start_minute) || (on(day - 1) && minute < end_minute);
}

const ChannelConfig* AlertingConfig::channel(std::string_view n) const {
  for (const auto& c : channels)
    if (c.name == n) return &c;
  return nullptr;
}

const Contact* AlertingConfig::contact(std::string_view n) const {
  for (const auto& c : contacts)
    if (c.name == n) return &c;
  return nullptr;
}

namespace {

class Reader {
 public:
  Reader(const std::string& file, const std::string& text, std::vector<rules::Diagnostic>& out) : file_(file), out_(out) {
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) lines_.push_back(l);
  }

  void error(const YAML::Node& n, const char* code, std::string msg) {
    const auto m = n.Mark();
    rules::Diagnostic d;
    d.code = code;
    d.file = file_;
    d.line = m.line >= 0 ? m.line + 1 : 0;
    d.column = m.column >= 0 ? m.column + 1 : 0;
    d.message = std::move(msg);
    if (d.line > 0 && static_cast<size_t>(d.line) <= lines_.size()) d.snippet = lines_[static_cast<size_t>(d.line - 1)];
    out_.push_back(std::move(d));
  }

  // The 1-based position and source line of `n`.
  void locate(const YAML::Node& n, int& line, int& column, std::string& snippet) const {
    const auto m = n.Mark();
    line = m.line >= 0 ? m.line + 1 : 0;
    column = m.column >= 0 ? m.column + 1 : 0;
    if (line > 0 && static_cast<size_t>(line) <= lines_.size()) snippet = lines_[static_cast<size_t>(line - 1)];
  }

  bool map(const YAML::Node& n, const std::string& what, std::initializer_list<const char*> allowed) {
    if (!n.IsMap()) {
      error(n, "A003", what + " must be a mapping");
      return false;
    }
    for (const auto& kv : n) {
      const std::string k = kv.first.Scalar();
      if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return k == a; })) {
        std::string list;
        for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        error(kv.first, "A002", "unknown key '" + k + "' in " + what + "; expected one of: " + list);
      }
    }
    return true;
  }

  bool str(const YAML::Node& n, const std::string& what, std::string& out) {
    if (!n) return false;
    if (!n.IsScalar()) {
      error(n, "A003", what + " must be a string");
      return false;
    }
    out = n.Scalar();
    return true;
  }

  void duration(const YAML::Node& n, const std::string& what, int64_t& out) {
    if (!n) return;
    const auto ms = n.IsScalar() ? rules::parse_duration_ms(n.Scalar()) : std::nullopt;
    if (!ms || *ms < 0) return error(n, "A010", what + " must be a duration such as 30s, 5m or 1h");
    out = *ms;
  }

  template <class T>
  void number(const YAML::Node& n, const std::string& what, double lo, double hi, T& out) {
    if (!n) return;
    double v;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || v < lo || v > hi)
      return error(n, "A003", what + " must be a number from " + fmt(lo) + " to " + fmt(hi));
    out = static_cast<T>(v);
  }

  void boolean(const YAML::Node& n, const std::string& what, bool& out) {
    if (!n) return;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, out)) error(n, "A003", what + " must be true or false");
  }

  std::vector<Matcher> matchers(const YAML::Node& n, const std::string& what, std::vector<std::string>* text = nullptr) {
    std::vector<Matcher> out;
    if (!n) return out;
    if (!n.IsSequence()) {
      error(n, "A004", what + " must be a list of matchers such as 'type=fraud.must_reach' or 'severity=~high|critical'");
      return out;
    }
    for (const auto& m : n) {
      Matcher x;
      std::string err;
      if (!m.IsScalar() || !parse_matcher(m.Scalar(), x, err)) {
        error(m, "A004", err.empty() ? what + ": each matcher is a string" : err);
        continue;
      }
      if (text) text->push_back(m.Scalar());
      out.push_back(std::move(x));
    }
    return out;
  }

  std::vector<std::string> names(const YAML::Node& n, const std::string& what) {
    std::vector<std::string> out;
    if (!n) return out;
    if (!n.IsSequence()) {
      error(n, "A003", what + " must be a list of names");
      return out;
    }
    for (const auto& x : n) {
      std::string s;
      if (str(x, what, s)) out.push_back(s);
    }
    return out;
  }

 private:
  static std::string fmt(double v) {
    std::ostringstream o;
    o << v;
    return o.str();
  }
  std::string file_;
  std::vector<std::string> lines_;
  std::vector<rules::Diagnostic>& out_;
};

std::string normalised_phone(std::string_view s) {
  char buf[32];
  return std::string(rules::normalize_phone(s, buf));
}

void parse_channels(Reader& r, const YAML::Node& n, AlertingConfig& c) {
  if (!n.IsMap()) return r.error(n, "A003", "channels must map a channel name to {kind, rate, max_in_flight, ...}");
  for (const auto& kv : n) {
    ChannelConfig ch;
    ch.name = kv.first.Scalar();
    const YAML::Node& v = kv.second;
    const std::string what = "channel '" + ch.name + "'";
    if (!r.map(v, what, {"kind", "rate", "max_in_flight", "max_attempts", "backoff", "backoff_max", "receipt_timeout", "expire_after"}))
      continue;
    if (!r.str(v["kind"], what + ".kind", ch.kind) || (ch.kind != "sms" && ch.kind != "webhook" && ch.kind != "console"))
      r.error(v["kind"] ? v["kind"] : v, "A003", what + " needs kind: sms, webhook or console");
    r.number(v["rate"], what + ".rate", 0.01, 100000, ch.rate_per_s);
    r.number(v["max_in_flight"], what + ".max_in_flight", 1, 10000, ch.max_in_flight);
    r.number(v["max_attempts"], what + ".max_attempts", 1, 100, ch.max_attempts);
    r.duration(v["backoff"], what + ".backoff", ch.backoff_initial_ms);
    r.duration(v["backoff_max"], what + ".backoff_max", ch.backoff_max_ms);
    r.duration(v["receipt_timeout"], what + ".receipt_timeout", ch.receipt_timeout_ms);
    r.duration(v["expire_after"], what + ".expire_after", ch.expire_after_ms);
    c.channels.push_back(std::move(ch));
  }
}

void parse_contacts(Reader& r, const YAML::Node& n, AlertingConfig& c) {
  if (!n.IsMap()) return r.error(n, "A003", "contacts must map a name to {phone, language}");
  for (const auto& kv : n) {
    Contact ct;
    ct.name = kv.first.Scalar();
    const std::string what = "contact '" + ct.name + "'";
    if (!r.map(kv.second, what, {"phone", "language"})) continue;
    std::string phone;
    if (!r.str(kv.second["phone"], what + ".phone", phone)) r.error(kv.second, "A003", what + " needs a phone number");
    ct.phone = normalised_phone(phone);
    r.str(kv.second["language"], what + ".language", ct.language);
    c.contacts.push_back(std::move(ct));
  }
}

// Checks a target's `to` against the contacts, groups and tables.
void check_target(Reader& r, const YAML::Node& at, const Target& t, const AlertingConfig& c,
                  const rules::TableCatalog* tables) {
  if (t.to.starts_with("contact:") && !c.contact(t.to.substr(8)))
    r.error(at, "A006", "unknown contact '" + t.to.substr(8) + "'; declare it under contacts:");
  if (t.to.starts_with("group:") && !c.groups.count(t.to.substr(6)))
    r.error(at, "A006", "unknown group '" + t.to.substr(6) + "'; declare it under groups:");
  if (t.to.starts_with("lookup:")) {
    std::string spec = t.to.substr(7);
    if (const size_t by = spec.find('@'); by != std::string::npos) {  // keyed by a field of the alert
      if (by + 1 == spec.size()) return r.error(at, "A007", "lookup:<table>.<column>@<field> needs a field after '@'");
      spec.resize(by);
    }
    const size_t dot = spec.find('.');
    if (dot == std::string::npos) return r.error(at, "A007", "lookup targets are lookup:<table>.<column> or lookup:<table>.<column>@<field>");
    if (!tables) return;
    const int id = tables->index_of(spec.substr(0, dot));
    if (id < 0) return r.error(at, "A007", "unknown table '" + spec.substr(0, dot) + "' (declare it under tables: in the main config)");
    const auto& cols = tables->tables[static_cast<size_t>(id)].columns;
    if (std::none_of(cols.begin(), cols.end(), [&](const auto& col) { return col.first == spec.substr(dot + 1); }))
      r.error(at, "A007", "table '" + spec.substr(0, dot) + "' has no column '" + spec.substr(dot + 1) + "'");
  }
}

void parse_policies(Reader& r, const YAML::Node& n, const rules::TableCatalog* tables, AlertingConfig& c) {
  if (!n.IsSequence()) return r.error(n, "A003", "policies must be a list of {name, match, steps}");
  std::set<std::string> seen;
  for (const auto& p : n) {
    Policy pol;
    if (!r.map(p, "a policy", {"name", "match", "steps", "repeat", "stop_when", "hold", "expire_after", "unreached"})) continue;
    if (!r.str(p["name"], "policy.name", pol.name)) r.error(p, "A003", "a policy needs a name");
    if (!seen.insert(pol.name).second) r.error(p["name"], "A009", "duplicate policy name '" + pol.name + "'");
    const std::string what = "policy '" + pol.name + "'";
    pol.match = r.matchers(p["match"], what + ".match");
    r.number(p["repeat"], what + ".repeat", 0, 100, pol.repeat);
    if (const auto& s = p["stop_when"]) {
      std::string v;
      r.str(s, what + ".stop_when", v);
      if (v == "reached") pol.stop_when_reached = true;
      else if (v == "acknowledged") pol.stop_when_reached = false;
      else r.error(s, "A003", what + ".stop_when is reached or acknowledged");
    }
    r.duration(p["hold"], what + ".hold", pol.hold_ms);
    r.duration(p["expire_after"], what + ".expire_after", pol.expire_after_ms);
    if (const auto& u = p["unreached"]; u && r.map(u, what + ".unreached", {"after", "type", "severity"})) {
      r.duration(u["after"], what + ".unreached.after", pol.unreached_after_ms);
      if (!r.str(u["type"], what + ".unreached.type", pol.unreached_type)) r.error(u, "A003", what + ".unreached needs a type");
      r.str(u["severity"], what + ".unreached.severity", pol.unreached_severity);
      if (pol.unreached_after_ms <= 0) r.error(u, "A010", what + ".unreached needs after: a duration");
    }
    const YAML::Node& steps = p["steps"];
    if (!steps || !steps.IsSequence() || steps.size() == 0) {
      r.error(steps ? steps : p, "A003", what + " needs steps: a list of {notify, wait}");
    } else {
      for (const auto& s : steps) {
        Step st;
        if (!r.map(s, what + " step", {"notify", "wait"})) continue;
        r.duration(s["wait"], what + " step.wait", st.wait_ms);
        const YAML::Node& notify = s["notify"];
        if (!notify || !notify.IsSequence()) {
          r.error(notify ? notify : s, "A003", what + ": each step needs notify: a list of {channel, to}");
          continue;
        }
        for (const auto& t : notify) {
          Target tg;
          if (!r.map(t, what + " target", {"channel", "to", "as", "template"})) continue;
          r.str(t["channel"], "target.channel", tg.channel);
          if (!c.channel(tg.channel))
            r.error(t["channel"] ? t["channel"] : t, "A005", "unknown channel '" + tg.channel + "'; declare it under channels:");
          if (!r.str(t["to"], "target.to", tg.to)) r.error(t, "A003", "a target needs to: (subject, key.<field>, contact:<name>, group:<name>, lookup:<table>.<column> or an address)");
          r.str(t["as"], "target.as", tg.recipient);
          if (tg.recipient.empty()) tg.recipient = tg.to;
          r.str(t["template"], "target.template", tg.template_name);
          if (tg.template_name.empty()) tg.template_name = "default";
          if (!c.templates.count(tg.template_name))
            r.error(t["template"] ? t["template"] : t, "A008", "unknown template '" + tg.template_name + "'; declare it under templates:");
          check_target(r, t["to"] ? t["to"] : t, tg, c, tables);
          r.locate(t["to"] ? t["to"] : t, tg.line, tg.column, tg.snippet);
          st.notify.push_back(std::move(tg));
        }
        pol.steps.push_back(std::move(st));
      }
    }
    c.policies.push_back(std::move(pol));
  }
}

template <class R>
void parse_pairs(Reader& r, const YAML::Node& n, const char* what, std::vector<R>& out) {
  if (!n.IsSequence()) return r.error(n, "A003", std::string(what) + " must be a list of {source, target, equal}");
  for (const auto& x : n) {
    if (!r.map(x, what, {"source", "target", "equal"})) continue;
    R rule;
    rule.source = r.matchers(x["source"], std::string(what) + ".source");
    rule.target = r.matchers(x["target"], std::string(what) + ".target");
    rule.equal = r.names(x["equal"], std::string(what) + ".equal");
    if (rule.source.empty() || rule.target.empty()) r.error(x, "A004", std::string(what) + " needs source and target matchers");
    out.push_back(std::move(rule));
  }
}

int parse_clock(std::string_view s) {
  if (s.size() != 5 || s[2] != ':') return -1;
  const int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
  return h >= 0 && h < 24 && m >= 0 && m < 60 ? h * 60 + m : -1;
}

}  // namespace

std::vector<rules::Diagnostic> parse_alerting_config(const std::string& text, const std::string& file,
                                                     const rules::TableCatalog* tables, AlertingConfig& c) {
  std::vector<rules::Diagnostic> out;
  Reader r(file, text, out);
  c = AlertingConfig{};
  c.file = file;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    rules::Diagnostic d;
    d.code = "A001";
    d.file = file;
    d.line = e.mark.line + 1;
    d.column = e.mark.column + 1;
    d.message = "YAML syntax: " + e.msg;
    out.push_back(d);
    return out;
  }
  if (!root || root.IsNull()) return out;  // empty: no channels, no policies
  if (!r.map(root, "the alerting file", {"channels", "contacts", "groups", "language", "templates", "policies", "incidents",
                                          "inhibit", "resolve", "silences", "maintenance", "ack_replies", "retention"}))
    return out;
  if (root["channels"]) parse_channels(r, root["channels"], c);
  if (root["contacts"]) parse_contacts(r, root["contacts"], c);
  if (const auto& g = root["groups"]) {
    if (!g.IsMap()) r.error(g, "A003", "groups must map a group name to a list of contact names");
    else
      for (const auto& kv : g) {
        auto members = r.names(kv.second, "group '" + kv.first.Scalar() + "'");
        for (const auto& m : members)
          if (!c.contact(m)) r.error(kv.second, "A006", "group '" + kv.first.Scalar() + "' names unknown contact '" + m + "'");
        c.groups[kv.first.Scalar()] = std::move(members);
      }
  }
  r.str(root["language"], "language", c.default_language);
  c.templates["default"] = {{"zh", "【Tocsin】{title} {summary}（回复1确认）"}, {"en", "[Tocsin] {title} {summary} (reply 1 to acknowledge)"}};
  if (const auto& t = root["templates"]) {
    if (!t.IsMap()) r.error(t, "A003", "templates must map a template name to {zh: text, en: text}");
    else
      for (const auto& kv : t) {
        auto& langs = c.templates[kv.first.Scalar()];
        langs.clear();
        if (!kv.second.IsMap()) {
          r.error(kv.second, "A003", "template '" + kv.first.Scalar() + "' must map a language (zh, en) to text");
          continue;
        }
        for (const auto& l : kv.second) r.str(l.second, "template text", langs[l.first.Scalar()]);
        if (!langs.count(c.default_language))
          r.error(kv.second, "A008", "template '" + kv.first.Scalar() + "' has no text in the default language '" + c.default_language + "'");
      }
  }
  if (root["policies"]) parse_policies(r, root["policies"], tables, c);
  if (const auto& inc = root["incidents"]) {
    if (!inc.IsSequence()) r.error(inc, "A003", "incidents must be a list of {name, match, group_by}");
    else
      for (const auto& x : inc) {
        if (!r.map(x, "an incident rule", {"name", "match", "group_by", "join", "link"})) continue;
        IncidentRule ir;
        if (!r.str(x["name"], "incident.name", ir.name)) r.error(x, "A003", "an incident rule needs a name");
        ir.match = r.matchers(x["match"], "incident '" + ir.name + "'.match");
        ir.group_by = r.names(x["group_by"], "incident '" + ir.name + "'.group_by");
        if (ir.group_by.empty()) r.error(x, "A003", "incident '" + ir.name + "' needs group_by: the fields that make one incident");
        if (x["join"]) {
          r.str(x["join"], "incident '" + ir.name + "'.join", ir.join);
          const bool known = std::any_of(c.incidents.begin(), c.incidents.end(), [&](const IncidentRule& o) { return o.name == ir.join && o.join.empty(); });
          if (!known) r.error(x["join"], "A011", "incident '" + ir.name + "' joins '" + ir.join + "': no incident rule above it has that name (and opens incidents)");
        }
        if (x["link"]) ir.link = r.names(x["link"], "incident '" + ir.name + "'.link");
        c.incidents.push_back(std::move(ir));
      }
  }
  if (root["inhibit"]) parse_pairs(r, root["inhibit"], "inhibit", c.inhibit);
  if (root["resolve"]) parse_pairs(r, root["resolve"], "resolve", c.resolve);
  if (const auto& s = root["silences"]) {
    if (!s.IsSequence()) r.error(s, "A003", "silences must be a list of {matchers, starts, ends, comment}");
    else
      for (const auto& x : s) {
        if (!r.map(x, "a silence", {"id", "matchers", "starts", "ends", "comment", "created_by"})) continue;
        Silence si;
        r.str(x["id"], "silence.id", si.id);
        si.matchers = r.matchers(x["matchers"], "silence.matchers", &si.matcher_text);
        std::string starts, ends;
        r.str(x["starts"], "silence.starts", starts);
        r.str(x["ends"], "silence.ends", ends);
        int64_t ms = 0;
        if (!starts.empty()) {
          if (parse_rfc3339_ms(starts, ms) == DecodeError::kOk) si.starts_at_ms = ms;
          else r.error(x["starts"], "A003", "silence.starts must be an RFC 3339 time such as 2026-12-01T08:00:00+08:00");
        }
        if (ends.empty() || parse_rfc3339_ms(ends, ms) != DecodeError::kOk) r.error(x["ends"] ? x["ends"] : x, "A003", "a silence needs ends: an RFC 3339 time");
        else si.ends_at_ms = ms;
        r.str(x["comment"], "silence.comment", si.comment);
        r.str(x["created_by"], "silence.created_by", si.created_by);
        if (si.created_by.empty()) si.created_by = "config";
        if (si.matchers.empty()) r.error(x, "A004", "a silence needs matchers (an empty one would silence everything)");
        if (si.id.empty()) si.id = "config-" + std::to_string(c.silences.size() + 1);
        c.silences.push_back(std::move(si));
      }
  }
  if (const auto& m = root["maintenance"]) {
    if (!m.IsSequence()) r.error(m, "A003", "maintenance must be a list of {name, matchers, days, start, end, utc_offset}");
    else
      for (const auto& x : m) {
        if (!r.map(x, "a maintenance window", {"name", "matchers", "days", "start", "end", "utc_offset"})) continue;
        MaintenanceWindow w;
        r.str(x["name"], "maintenance.name", w.name);
        w.matchers = r.matchers(x["matchers"], "maintenance.matchers");
        static constexpr std::string_view kDays[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
        for (const auto& d : r.names(x["days"], "maintenance.days")) {
          const auto it = std::find(std::begin(kDays), std::end(kDays), d);
          if (it == std::end(kDays)) r.error(x["days"], "A003", "maintenance.days are mon, tue, wed, thu, fri, sat, sun");
          else w.days.push_back(static_cast<int>(it - std::begin(kDays)));
        }
        std::string start, end;
        r.str(x["start"], "maintenance.start", start);
        r.str(x["end"], "maintenance.end", end);
        w.start_minute = parse_clock(start);
        w.end_minute = parse_clock(end);
        if (w.start_minute < 0 || w.end_minute < 0) r.error(x, "A003", "maintenance start and end are HH:MM");
        r.duration(x["utc_offset"], "maintenance.utc_offset", w.utc_offset_ms);
        if (w.matchers.empty()) r.error(x, "A004", "a maintenance window needs matchers");
        c.maintenance.push_back(std::move(w));
      }
  }
  if (root["ack_replies"]) c.ack_replies = r.names(root["ack_replies"], "ack_replies");
  r.duration(root["retention"], "retention", c.retention_ms);
  return out;
}

std::vector<rules::Diagnostic> load_alerting_config(const std::string& file, const rules::TableCatalog* tables,
                                                    AlertingConfig& out) {
  std::ifstream in(file);
  if (!in) {
    rules::Diagnostic d;
    d.code = "A001";
    d.file = file;
    d.message = "cannot read the alerting file; check alerting.file in the main config";
    return {d};
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_alerting_config(ss.str(), file, tables, out);
}

namespace {

// What the alerts of one rule (one deadline of an absence rule) are known to
// carry before any event: their static fields, key fields and context fields.
struct RuleAlerts {
  const rules::Rule* rule;
  Alert alert;                        // type, rule, severity, labels
  std::vector<std::string> key;       // key field names, in order
  std::vector<std::string> context;   // context field names
};

std::vector<RuleAlerts> rule_alerts(const rules::RuleSet& set) {
  std::vector<RuleAlerts> out;
  for (const rules::Rule& r : set.rules) {
    const StreamSchema& schema = schema_of(r.alert_match().stream);
    RuleAlerts ra{&r, {}, {}, {}};
    ra.alert.type = r.alert_type;
    ra.alert.rule = r.id;
    ra.alert.labels = r.labels;
    for (int slot : r.alert_match().key) ra.key.emplace_back(schema.fields[static_cast<size_t>(slot)].name);
    const uint32_t ctx = context_slots(schema.stream);
    for (size_t i = 0; i < schema.fields.size(); ++i)
      if (ctx >> i & 1) ra.context.emplace_back(schema.fields[i].name);
    std::vector<std::string> severities;
    if (!r.severity.empty()) severities.push_back(r.severity);
    else if (r.score) for (const auto& l : r.score->levels) severities.push_back(l.first);
    if (severities.empty()) severities.emplace_back();
    auto add = [&](const std::vector<std::pair<std::string, std::string>>& labels, const std::string& severity) {
      for (const std::string& s : severity.empty() ? severities : std::vector<std::string>{severity}) {
        RuleAlerts one = ra;
        one.alert.severity = s;
        for (const auto& [k, v] : labels) {
          auto it = std::find_if(one.alert.labels.begin(), one.alert.labels.end(), [&](const auto& l) { return l.first == k; });
          if (it != one.alert.labels.end()) it->second = v;
          else one.alert.labels.emplace_back(k, v);
        }
        out.push_back(std::move(one));
      }
    };
    if (r.kind == rules::RuleKind::kAbsence && !r.deadlines.empty())
      for (const auto& d : r.deadlines) add(d.labels, d.severity);
    else
      add({}, "");
  }
  return out;
}

bool has(const std::vector<std::string>& names, std::string_view n) {
  return std::find(names.begin(), names.end(), n) != names.end();
}

// Whether `m` can be decided before any event: it does not name a key or
// context field (values of the event), the alert's state or id. Type,
// severity, rule and labels are fixed per rule, and a name the alert does not
// carry at all reads as "" at run time too.
bool static_matcher(const Matcher& m, const RuleAlerts& ra) {
  return !(m.name.starts_with("key.") || m.name == "state" || m.name == "id" || has(ra.key, m.name) ||
           has(ra.context, m.name));
}

bool may_match(const std::vector<Matcher>& ms, const RuleAlerts& ra) {
  return std::all_of(ms.begin(), ms.end(), [&](const Matcher& m) { return !static_matcher(m, ra) || m.matches(ra.alert); });
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s.empty() ? "none" : s;
}

}  // namespace

std::vector<rules::Diagnostic> check_targets(const AlertingConfig& c, const rules::RuleSet& rules) {
  std::vector<rules::Diagnostic> out;
  const std::vector<RuleAlerts> alerts = rule_alerts(rules);
  for (const Policy& p : c.policies) {
    std::set<std::pair<const Target*, const rules::Rule*>> said;  // one warning per target and rule
    for (const RuleAlerts& ra : alerts) {
      if (!may_match(p.match, ra)) continue;
      for (const Step& st : p.steps)
        for (const Target& t : st.notify) {
          std::string missing;  // what the target needs and the alerts lack
          const std::string& to = t.to;
          if (to == "subject" || (to.starts_with("lookup:") && to.find('@') == std::string::npos)) {
            if (ra.key.empty()) missing = "key (" + std::string(to == "subject" ? "subject" : "the lookup") + " reads its first field)";
          } else if (to.starts_with("key.")) {
            if (!has(ra.key, to.substr(4))) missing = "key field '" + to.substr(4) + "'";
          } else if (to.starts_with("lookup:")) {
            const std::string f = to.substr(to.find('@') + 1);
            const bool label = std::any_of(ra.alert.labels.begin(), ra.alert.labels.end(), [&](const auto& l) { return l.first == f; });
            if (!has(ra.key, f) && !has(ra.context, f) && !label) missing = "field '" + f + "' in their key, context or labels";
          }
          if (missing.empty() || !said.insert({&t, ra.rule}).second) continue;
          rules::Diagnostic d;
          d.level = rules::Diagnostic::Level::kWarning;
          d.code = "A101";
          d.file = c.file;
          d.line = t.line;
          d.column = t.column;
          d.snippet = t.snippet;
          d.message = "policy '" + p.name + "' sends " + t.channel + " to " + to + ", but the alerts of rule '" + ra.rule->id +
                      "' (type " + ra.alert.type + ", key: " + joined(ra.key) + ") have no " + missing +
                      ": that notice would reach nobody. Give the rule a key (key: for a per-event rule, group_by for a "
                      "window) or change to:";
          out.push_back(std::move(d));
        }
    }
  }
  return out;
}

}  // namespace tocsin::alerts
