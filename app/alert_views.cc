#include "app/alert_views.h"

#include <algorithm>
#include <map>
#include <string_view>
#include <vector>

#include "alerts/desk.h"
#include "alerts/records.h"
#include "pipeline/json_writer.h"
#include "pipeline/phone_mask.h"

namespace tocsin::app {
namespace {

// Text as the caller may see it.
class Shown {
 public:
  explicit Shown(bool full) : full_(full) {}
  bool full() const { return full_; }
  const std::string& operator()(std::string_view s) {
    buf_.clear();
    if (full_) buf_.assign(s);
    else append_phones_masked(buf_, s);
    return buf_;
  }

 private:
  bool full_;
  std::string buf_;
};

// Where an alert is, from its key and labels; building ids like B-D2-S3-C1-05
// (the generator's, docs/events.md) also give district, street and community.
void write_location(JsonWriter& w, const alerts::Alert& a, Shown& shown) {
  w.key("location").begin_object();
  std::string district(a.field("district")), street(a.field("street")), community(a.field("community"));
  const std::string building(a.field("building"));
  if (building.starts_with("B-D")) {
    std::vector<std::string> parts;
    for (size_t i = 2, j; i <= building.size(); i = j + 1) {
      j = building.find('-', i);
      if (j == std::string::npos) j = building.size();
      parts.push_back(building.substr(i, j - i));
    }
    if (parts.size() >= 3) {
      if (district.empty()) district = parts[0];
      if (street.empty()) street = parts[0] + "-" + parts[1];
      if (community.empty()) community = parts[0] + "-" + parts[1] + "-" + parts[2];
    }
  }
  auto put = [&](const char* k, std::string_view v) {
    if (!v.empty()) w.key(k).str(shown(v));
  };
  put("district", district);
  put("street", street);
  put("community", community);
  put("grid", a.field("grid"));
  put("building", building);
  put("network_id", a.field("network_id"));
  w.end_object();
}

void write_summary(JsonWriter& w, const alerts::Desk& desk, const alerts::Alert& a, Shown& shown) {
  w.key("id").str(a.id).key("type").str(a.type).key("severity").str(a.severity).key("title").str(shown(a.title))
      .key("summary").str(shown(a.summary)).key("rule").str(a.rule).key("rule_set_version").str(a.rule_set_version)
      .key("state").str(name(a.state)).key("raised_at").time(a.raised_at_ms).key("updated_at").time(a.updated_at_ms);
  w.key("labels").begin_object();
  for (const auto& [k, v] : a.labels) w.key(k).str(shown(v));
  w.end_object();
  write_location(w, a, shown);
  if (!a.policy.empty()) w.key("policy").str(a.policy).key("escalation_step").num(int64_t{a.step});
  w.key("must_reach").boolean(desk.must_reach(a));
  if (!a.incident.empty()) w.key("incident").str(a.incident);
  if (!a.assignee.empty()) w.key("assignee").str(shown(a.assignee));
  if (!a.silenced_by.empty()) w.key("silenced_by").str(shown(a.silenced_by));
  if (a.reached_at_ms) w.key("reached_at").time(a.reached_at_ms);
  w.key("notifications").num(static_cast<int64_t>(desk.notifications_of(a.id).size()));
}

void write_audit(JsonWriter& w, const std::vector<alerts::AuditEntry>& es, Shown& shown) {
  w.begin_array();
  for (const auto& e : es) {
    w.begin_object().key("at").time(e.at_ms).key("action").str(e.action).key("by").str(shown(e.by));
    if (!e.detail.empty()) w.key("detail").str(shown(e.detail));
    w.end_object();
  }
  w.end_array();
}

// The raised alert as the rule wrote it, every phone number in it masked unless full.
void write_raised(JsonWriter& w, std::string_view raw, bool full) {
  if (raw.empty()) return (void)w.null();
  if (full) return (void)w.raw(raw);
  std::string masked;
  if (!append_json_phones_masked(masked, raw)) return (void)w.null();
  w.raw(masked);
}

}  // namespace

std::string alert_summary_json(const alerts::Desk& desk, const alerts::Alert& a, bool full) {
  std::string out;
  JsonWriter w(out);
  Shown shown(full);
  w.begin_object();
  write_summary(w, desk, a, shown);
  w.end_object();
  return out;
}

std::string alert_list_json(const alerts::Desk& desk, bool all, bool full, size_t limit) {
  std::vector<const alerts::Alert*> list;
  for (const auto& [id, a] : desk.alerts())
    if (all || is_open(a.state)) list.push_back(&a);
  std::sort(list.begin(), list.end(), [](auto* x, auto* y) { return x->raised_at_ms > y->raised_at_ms; });
  std::string out;
  JsonWriter w(out);
  Shown shown(full);
  w.begin_object().key("alerts").begin_array();
  for (size_t i = 0; i < list.size() && i < limit; ++i) {
    w.begin_object();
    write_summary(w, desk, *list[i], shown);
    w.end_object();
  }
  w.end_array().end_object();
  return out;
}

std::string alert_detail_json(const alerts::Desk& desk, const alerts::Alert& a, bool full) {
  std::string out;
  JsonWriter w(out);
  Shown shown(full);
  w.begin_object();
  write_summary(w, desk, a, shown);
  w.key("raised");
  write_raised(w, a.raised_json, full);
  w.key("audit");
  write_audit(w, a.audit, shown);
  w.key("notifications").begin_array();
  for (const auto* n : desk.notifications_of(a.id)) {
    const auto* ch = desk.config().channel(n->channel);
    const bool sms = ch && ch->kind == "sms";
    // An SMS address is a number even when it does not look like one.
    const std::string address = full ? n->address : sms ? mask_phone_number(n->address) : mask_phones(n->address);
    w.begin_object().key("id").str(n->id).key("channel").str(n->channel).key("recipient").str(shown(n->recipient))
        .key("address").str(address).key("step").num(int64_t{n->step})
        .key("round").num(int64_t{n->round}).key("state").str(name(n->state)).key("attempts").num(int64_t{n->attempts})
        .key("text").str(sms ? shown(n->text) : std::string());
    w.key("timeline");
    write_audit(w, n->timeline, shown);
    w.end_object();
  }
  w.end_array();
  w.key("linked").begin_array();
  if (auto it = desk.incidents().find(a.incident); !a.incident.empty() && it != desk.incidents().end())
    for (const auto& id : it->second.alerts)
      if (const alerts::Alert* x = desk.alert(id); x && id != a.id) {
        w.begin_object();
        write_summary(w, desk, *x, shown);
        w.end_object();
      }
  if (a.silenced_by.starts_with("inhibited:"))
    if (const alerts::Alert* x = desk.alert(a.silenced_by.substr(10)); x && x->incident != a.incident) {
      w.begin_object();
      write_summary(w, desk, *x, shown);
      w.end_object();
    }
  w.end_array().end_object();
  return out;
}

std::string notification_event_json(const alerts::Notification& n, const std::string& action, bool full) {
  std::string out;
  JsonWriter w(out);
  Shown shown(full);
  w.begin_object().key("alert").str(n.alert_id).key("id").str(n.id).key("state").str(name(n.state))
      .key("channel").str(n.channel).key("recipient").str(shown(n.recipient)).key("action").str(action).end_object();
  return out;
}

std::string incidents_json(const alerts::Desk& desk, bool full) {
  std::string out, one;
  JsonWriter w(out);
  w.begin_object().key("incidents").begin_array();
  for (const auto& [id, i] : desk.incidents()) {
    alerts::to_json(i, one);
    if (full) {
      w.raw(one);
    } else {
      std::string masked;
      if (append_json_phones_masked(masked, one)) w.raw(masked);
    }
  }
  w.end_array().end_object();
  return out;
}

std::string silences_json(const alerts::Desk& desk, int64_t now_ms, bool full) {
  std::string out;
  JsonWriter w(out);
  Shown shown(full);
  w.begin_object().key("silences").begin_array();
  for (const auto& [id, s] : desk.silences()) {
    w.begin_object().key("id").str(id).key("matchers").begin_array();
    for (const auto& m : s.matcher_text) w.str(shown(m));
    w.end_array().key("starts_at").time(s.starts_at_ms).key("ends_at").time(s.ends_at_ms).key("active").boolean(s.active(now_ms))
        .key("created_by").str(shown(s.created_by)).key("comment").str(shown(s.comment)).end_object();
  }
  w.end_array().end_object();
  return out;
}

std::string kpis_json(const alerts::Desk& desk, int64_t now, int64_t off) {
  const int64_t local = now + off;
  const int64_t day_start = local - ((local % 86400000) + 86400000) % 86400000 - off;
  int64_t fraud = 0, must = 0, reached = 0, outages = 0, sla = 0, open = 0;
  std::map<std::string, int64_t> by_state;
  for (const auto& [id, a] : desk.alerts()) {
    ++by_state[std::string(name(a.state))];
    const bool today = a.raised_at_ms >= day_start;
    open += is_open(a.state);
    if (today && a.type.starts_with("fraud.")) ++fraud;
    if (today && desk.must_reach(a)) {
      ++must;
      reached += a.reached_at_ms != 0;
    }
    if (is_open(a.state) && (a.type == "heating.outage" || a.type.starts_with("heating.suspected"))) ++outages;
    if (today && a.type.starts_with("hotline.")) ++sla;
  }
  std::string out;
  JsonWriter w(out);
  w.begin_object().key("day_start").time(day_start).key("fraud_warnings_today").num(fraud).key("must_reach_today").num(must)
      .key("reached_today").num(reached).key("reach_rate");
  if (must) w.num(static_cast<double>(reached) / static_cast<double>(must));
  else w.null();
  w.key("open_outages").num(outages).key("sla_breaches_today").num(sla).key("open_alerts").num(open);
  w.key("by_state").begin_object();
  for (const auto& [k, v] : by_state) w.key(k).num(v);
  w.end_object().end_object();
  return out;
}

std::string sla_clocks_json(const std::vector<rules::ClockEntry>& clocks, int64_t now_ms, int64_t published_ms, bool full) {
  std::string out;
  JsonWriter w(out);
  Shown shown(full);
  w.begin_object().key("as_of").time(now_ms).key("published_at");
  if (published_ms) w.time(published_ms); else w.null();
  w.key("clocks").begin_array();
  for (const auto& c : clocks) {
    w.begin_object().key("rule").str(c.rule).key("type").str(c.alert_type).key("key").begin_object();
    for (const auto& [k, v] : c.key) w.key(k).str(shown(v));
    w.end_object().key("deadline").str(c.deadline).key("severity").str(c.severity).key("labels").begin_object();
    for (const auto& [k, v] : c.labels) w.key(k).str(shown(v));
    w.end_object().key("title").str(shown(c.title)).key("started_at").time(c.started_ms).key("due_at").time(c.due_ms).end_object();
  }
  w.end_array().end_object();
  return out;
}

}  // namespace tocsin::app
