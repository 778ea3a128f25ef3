#include "alerts/records.h"

#include <simdjson.h>

#include "pipeline/decoder.h"
#include "pipeline/json_writer.h"

namespace tocsin::alerts {
namespace {

using simdjson::dom::element;
using simdjson::dom::object;

void write_pairs(JsonWriter& w, const char* name, const Pairs& ps) {
  w.key(name).begin_object();
  for (const auto& [k, v] : ps) w.key(k).str(v);
  w.end_object();
}

void write_audit(JsonWriter& w, const char* name, const std::vector<AuditEntry>& es) {
  w.key(name).begin_array();
  for (const auto& e : es) {
    w.begin_object().key("at").time(e.at_ms).key("action").str(e.action).key("by").str(e.by);
    if (!e.detail.empty()) w.key("detail").str(e.detail);
    w.end_object();
  }
  w.end_array();
}

// Readers that leave `out` unchanged when the field is absent or mistyped.
void get(const object& o, const char* k, std::string& out) {
  std::string_view v;
  if (o[k].get(v) == simdjson::SUCCESS) out = std::string(v);
}
void get(const object& o, const char* k, int64_t& out) {
  int64_t v;
  if (o[k].get(v) == simdjson::SUCCESS) out = v;
}
void get(const object& o, const char* k, int& out) {
  int64_t v;
  if (o[k].get(v) == simdjson::SUCCESS) out = static_cast<int>(v);
}
void get(const object& o, const char* k, bool& out) {
  bool v;
  if (o[k].get(v) == simdjson::SUCCESS) out = v;
}
void get_time(const object& o, const char* k, int64_t& out) {
  std::string_view v;
  int64_t ms;
  if (o[k].get(v) == simdjson::SUCCESS && parse_rfc3339_ms(v, ms) == DecodeError::kOk) out = ms;
}
// Scalar members of an object as strings (numbers and booleans as written).
void get_pairs(const object& o, const char* k, Pairs& out) {
  object m;
  if (o[k].get(m) != simdjson::SUCCESS) return;
  out.clear();
  for (auto [key, value] : m) {
    std::string_view s;
    if (value.get(s) == simdjson::SUCCESS) out.emplace_back(std::string(key), std::string(s));
    else if (!value.is_object() && !value.is_array()) out.emplace_back(std::string(key), simdjson::minify(value));
  }
}
void get_audit(const object& o, const char* k, std::vector<AuditEntry>& out) {
  simdjson::dom::array arr;
  if (o[k].get(arr) != simdjson::SUCCESS) return;
  out.clear();
  for (element e : arr) {
    object eo;
    if (e.get(eo) != simdjson::SUCCESS) continue;
    AuditEntry a;
    get_time(eo, "at", a.at_ms);
    get(eo, "action", a.action);
    get(eo, "by", a.by);
    get(eo, "detail", a.detail);
    out.push_back(std::move(a));
  }
}

bool parse_object(simdjson::dom::parser& p, std::string_view json, object& o, std::string& error) {
  const auto ec = p.parse(json.data(), json.size()).get(o);
  if (ec) error = ec == simdjson::INCORRECT_TYPE ? "not a JSON object" : std::string("invalid JSON: ") + simdjson::error_message(ec);
  return !ec;
}

thread_local simdjson::dom::parser tl_parser;

}  // namespace

void to_json(const Alert& a, std::string& out) {
  out.clear();
  JsonWriter w(out);
  w.begin_object()
      .key("id").str(a.id).key("rule").str(a.rule).key("rule_set_version").str(a.rule_set_version)
      .key("type").str(a.type).key("severity").str(a.severity).key("title").str(a.title).key("summary").str(a.summary);
  write_pairs(w, "key", a.key);
  write_pairs(w, "labels", a.labels);
  write_pairs(w, "context", a.context);
  w.key("raised").str(a.raised_json).key("raised_at").time(a.raised_at_ms)
      .key("state").str(name(a.state)).key("updated_at").time(a.updated_at_ms)
      .key("hold_until").num(a.hold_until_ms).key("policy").str(a.policy)
      .key("step").num(int64_t{a.step}).key("round").num(int64_t{a.round}).key("step_deadline").num(a.step_deadline_ms)
      .key("chain_done").boolean(a.chain_done).key("incident").str(a.incident).key("silenced_by").str(a.silenced_by)
      .key("assignee").str(a.assignee).key("reached_at").num(a.reached_at_ms).key("reached_via").str(a.reached_via)
      .key("unreached_raised").boolean(a.unreached_raised).key("duplicates").num(int64_t{a.duplicates});
  write_audit(w, "audit", a.audit);
  w.end_object();
}

bool from_json(std::string_view json, Alert& a, std::string& error) {
  object o;
  if (!parse_object(tl_parser, json, o, error)) return false;
  a = Alert{};
  get(o, "id", a.id);
  if (a.id.empty()) return error = "no id", false;
  get(o, "rule", a.rule);
  get(o, "rule_set_version", a.rule_set_version);
  get(o, "type", a.type);
  get(o, "severity", a.severity);
  get(o, "title", a.title);
  get(o, "summary", a.summary);
  get_pairs(o, "key", a.key);
  get_pairs(o, "labels", a.labels);
  get_pairs(o, "context", a.context);
  get(o, "raised", a.raised_json);
  get_time(o, "raised_at", a.raised_at_ms);
  std::string state;
  get(o, "state", state);
  if (!parse_alert_state(state, a.state)) return error = "unknown state '" + state + "'", false;
  get_time(o, "updated_at", a.updated_at_ms);
  get(o, "hold_until", a.hold_until_ms);
  get(o, "policy", a.policy);
  get(o, "step", a.step);
  get(o, "round", a.round);
  get(o, "step_deadline", a.step_deadline_ms);
  get(o, "chain_done", a.chain_done);
  get(o, "incident", a.incident);
  get(o, "silenced_by", a.silenced_by);
  get(o, "assignee", a.assignee);
  get(o, "reached_at", a.reached_at_ms);
  get(o, "reached_via", a.reached_via);
  get(o, "unreached_raised", a.unreached_raised);
  get(o, "duplicates", a.duplicates);
  get_audit(o, "audit", a.audit);
  return true;
}

void to_json(const Notification& n, std::string& out) {
  out.clear();
  JsonWriter w(out);
  w.begin_object()
      .key("id").str(n.id).key("alert").str(n.alert_id).key("round").num(int64_t{n.round}).key("step").num(int64_t{n.step})
      .key("channel").str(n.channel).key("recipient").str(n.recipient).key("address").str(n.address).key("text").str(n.text)
      .key("state").str(name(n.state)).key("attempts").num(int64_t{n.attempts})
      .key("created_at").time(n.created_at_ms).key("next_attempt_at").num(n.next_attempt_at_ms)
      .key("receipt_deadline").num(n.receipt_deadline_ms).key("final_at").num(n.final_at_ms)
      .key("receipt").str(name(n.receipt));
  write_audit(w, "timeline", n.timeline);
  w.end_object();
}

bool from_json(std::string_view json, Notification& n, std::string& error) {
  object o;
  if (!parse_object(tl_parser, json, o, error)) return false;
  n = Notification{};
  get(o, "id", n.id);
  if (n.id.empty()) return error = "no id", false;
  get(o, "alert", n.alert_id);
  get(o, "round", n.round);
  get(o, "step", n.step);
  get(o, "channel", n.channel);
  get(o, "recipient", n.recipient);
  get(o, "address", n.address);
  get(o, "text", n.text);
  std::string state, receipt;
  get(o, "state", state);
  if (!parse_notification_state(state, n.state)) return error = "unknown state '" + state + "'", false;
  get(o, "attempts", n.attempts);
  get_time(o, "created_at", n.created_at_ms);
  get(o, "next_attempt_at", n.next_attempt_at_ms);
  get(o, "receipt_deadline", n.receipt_deadline_ms);
  get(o, "final_at", n.final_at_ms);
  get(o, "receipt", receipt);
  for (int s = 0; s <= static_cast<int>(ReceiptState::kUnknown); ++s)
    if (name(static_cast<ReceiptState>(s)) == receipt) n.receipt = static_cast<ReceiptState>(s);
  get_audit(o, "timeline", n.timeline);
  return true;
}

void to_json(const Incident& i, std::string& out) {
  out.clear();
  JsonWriter w(out);
  w.begin_object().key("id").str(i.id).key("rule").str(i.rule);
  write_pairs(w, "group", i.group);
  w.key("title").str(i.title).key("opened_at").time(i.opened_at_ms).key("closed_at").num(i.closed_at_ms);
  w.key("alerts").begin_array();
  for (const auto& id : i.alerts) w.str(id);
  w.end_array().key("linked").begin_array();
  for (const auto& id : i.linked) w.str(id);
  w.end_array().end_object();
}

bool from_json(std::string_view json, Incident& i, std::string& error) {
  object o;
  if (!parse_object(tl_parser, json, o, error)) return false;
  i = Incident{};
  get(o, "id", i.id);
  if (i.id.empty()) return error = "no id", false;
  get(o, "rule", i.rule);
  get_pairs(o, "group", i.group);
  get(o, "title", i.title);
  get_time(o, "opened_at", i.opened_at_ms);
  get(o, "closed_at", i.closed_at_ms);
  simdjson::dom::array arr;
  if (o["alerts"].get(arr) == simdjson::SUCCESS)
    for (element e : arr) {
      std::string_view s;
      if (e.get(s) == simdjson::SUCCESS) i.alerts.emplace_back(s);
    }
  if (o["linked"].get(arr) == simdjson::SUCCESS)
    for (element e : arr) {
      std::string_view s;
      if (e.get(s) == simdjson::SUCCESS) i.linked.emplace_back(s);
    }
  return true;
}

bool parse_raised_alert(std::string_view json, Alert& a, std::string& error) {
  object o;
  if (!parse_object(tl_parser, json, o, error)) return false;
  std::string_view record;
  if (o["record"].get(record) == simdjson::SUCCESS) return error = "a '" + std::string(record) + "' record, not a raised alert", false;
  a = Alert{};
  get(o, "id", a.id);
  get(o, "type", a.type);
  get(o, "severity", a.severity);
  if (a.id.empty() || a.type.empty() || a.severity.empty()) return error = "missing id, type or severity", false;
  get(o, "rule", a.rule);
  get(o, "rule_set_version", a.rule_set_version);
  get(o, "status", a.raised_status);
  get(o, "title", a.title);
  get(o, "summary", a.summary);
  get_pairs(o, "key", a.key);
  get_pairs(o, "labels", a.labels);
  get_pairs(o, "context", a.context);
  object score;
  simdjson::dom::array score_labels;
  if (o["score"].get(score) == simdjson::SUCCESS && score["labels"].get(score_labels) == simdjson::SUCCESS)
    for (element e : score_labels) {
      std::string_view s;
      if (e.get(s) == simdjson::SUCCESS) a.labels.emplace_back(std::string(s), "true");
    }
  a.raised_json = std::string(json);
  return true;
}

void lifecycle_json(const Alert& a, const AuditEntry& change, std::string& out) {
  out.clear();
  JsonWriter w(out);
  w.begin_object()
      .key("record").str("lifecycle")
      .key("id").str(a.id).key("rule").str(a.rule).key("rule_set_version").str(a.rule_set_version)
      .key("type").str(a.type).key("severity").str(a.severity).key("title").str(a.title)
      .key("state").str(name(a.state));
  write_pairs(w, "labels", a.labels);
  w.key("change").begin_object().key("at").time(change.at_ms).key("action").str(change.action).key("by").str(change.by);
  if (!change.detail.empty()) w.key("detail").str(change.detail);
  w.end_object();
  if (!a.incident.empty()) w.key("incident").str(a.incident);
  if (!a.assignee.empty()) w.key("assignee").str(a.assignee);
  if (!a.silenced_by.empty()) w.key("silenced_by").str(a.silenced_by);
  if (a.step >= 0) w.key("escalation_step").num(int64_t{a.step});
  if (a.reached_at_ms) w.key("reached_at").time(a.reached_at_ms);
  w.key("raised_at").time(a.raised_at_ms).key("updated_at").time(a.updated_at_ms).end_object();
}

void alertmanager_payload(const Alert& a, std::string_view receiver, std::string& out) {
  out.clear();
  JsonWriter w(out);
  const bool resolved = !is_open(a.state);
  auto labels = [&] {
    w.begin_object().key("alertname").str(a.type).key("severity").str(a.severity).key("rule").str(a.rule);
    for (const auto& [k, v] : a.labels)
      if (k != "alertname" && k != "severity" && k != "rule") w.key(k).str(v);
    w.end_object();
  };
  w.begin_object().key("version").str("4").key("groupKey").str("{}:{alert_id=\"" + a.id + "\"}")
      .key("truncatedAlerts").num(int64_t{0}).key("status").str(resolved ? "resolved" : "firing")
      .key("receiver").str(receiver);
  w.key("groupLabels").begin_object().key("alert_id").str(a.id).end_object();
  w.key("commonLabels");
  labels();
  w.key("commonAnnotations").begin_object().key("title").str(a.title).key("summary").str(a.summary).end_object();
  w.key("externalURL").str("");
  w.key("alerts").begin_array().begin_object().key("status").str(resolved ? "resolved" : "firing");
  w.key("labels");
  labels();
  w.key("annotations").begin_object().key("title").str(a.title).key("summary").str(a.summary)
      .key("state").str(name(a.state)).end_object();
  w.key("startsAt").time(a.raised_at_ms);
  if (resolved) w.key("endsAt").time(a.updated_at_ms);
  else w.key("endsAt").str("0001-01-01T00:00:00Z");
  w.key("generatorURL").str("").key("fingerprint").str(a.id).end_object().end_array().end_object();
}

std::string render_template(std::string_view text, const Alert& a) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t open = text.find('{', i);
    const size_t close = open == std::string_view::npos ? open : text.find('}', open);
    if (close == std::string_view::npos) {
      out.append(text.substr(i));
      break;
    }
    out.append(text.substr(i, open - i));
    std::string_view ph = text.substr(open + 1, close - open - 1);
    bool full = false;
    if (ph.ends_with("!full")) full = true, ph.remove_suffix(5);
    std::string_view value;
    bool known = true;
    if (ph == "title") value = a.title;
    else if (ph == "summary") value = a.summary;
    else if (ph == "type") value = a.type;
    else if (ph == "severity") value = a.severity;
    else if (ph == "id") value = a.id;
    else if (ph == "rule") value = a.rule;
    else if (ph == "incident") value = a.incident;
    else if (ph.starts_with("key.") || ph.starts_with("label.")) value = a.field(ph.starts_with("key.") ? ph : ph.substr(6));
    else known = false;
    if (!known) out.append(text.substr(open, close - open + 1));
    else if (ph.starts_with("key.") && !full) append_masked_text(out, value);
    else out.append(value);
    i = close + 1;
  }
  // Collapse the space a missing summary leaves.
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace tocsin::alerts
