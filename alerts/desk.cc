#include "alerts/desk.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "alerts/alert_encoder.h"
#include "alerts/records.h"
#include "pipeline/json_writer.h"
#include "pipeline/phone_mask.h"
#include "rules/tables.h"

namespace tocsin::alerts {

namespace {
constexpr std::string_view kAlertsNs = "alerts";
constexpr std::string_view kOutboxNs = "outbox";
constexpr std::string_view kIncidentsNs = "incidents";
constexpr std::string_view kSilencesNs = "silences";

int severity_rank(std::string_view s) {
  return s == "critical" ? 0 : s == "high" ? 1 : s == "medium" ? 2 : s == "low" ? 3 : 4;
}

std::string hash_id(std::string_view a, std::initializer_list<std::string_view> parts, int64_t n) {
  std::vector<std::string_view> v(parts);
  return std::string(alert_id(a, v, n).view());
}

std::string normalised(std::string_view number) {
  char buf[32];
  return std::string(rules::normalize_phone(number, buf));
}

void write_silence(const Silence& s, std::string& out) {
  out.clear();
  JsonWriter w(out);
  w.begin_object().key("id").str(s.id).key("matchers").begin_array();
  for (const auto& m : s.matcher_text) w.str(m);
  w.end_array().key("starts_at").num(s.starts_at_ms).key("ends_at").num(s.ends_at_ms)
      .key("created_by").str(s.created_by).key("comment").str(s.comment).end_object();
}
// Stored silences were validated when added; their matchers are parsed again.
bool read_silence(std::string_view json, Silence& s) {
  simdjson::dom::parser p;
  simdjson::dom::object o;
  if (p.parse(json.data(), json.size()).get(o)) return false;
  std::string_view v;
  if (o["id"].get(v)) return false;
  s.id = std::string(v);
  simdjson::dom::array ms;
  if (o["matchers"].get(ms) == simdjson::SUCCESS)
    for (auto m : ms) {
      Matcher x;
      std::string err;
      if (m.get(v) == simdjson::SUCCESS && parse_matcher(v, x, err)) {
        s.matchers.push_back(std::move(x));
        s.matcher_text.emplace_back(v);
      }
    }
  int64_t t;
  if (o["starts_at"].get(t) == simdjson::SUCCESS) s.starts_at_ms = t;
  if (o["ends_at"].get(t) == simdjson::SUCCESS) s.ends_at_ms = t;
  if (o["created_by"].get(v) == simdjson::SUCCESS) s.created_by = std::string(v);
  if (o["comment"].get(v) == simdjson::SUCCESS) s.comment = std::string(v);
  return !s.matchers.empty();
}
}  // namespace

std::string_view name(AlertState s) {
  static constexpr std::string_view k[] = {"pending", "firing", "acknowledged", "resolved", "silenced", "escalated", "expired"};
  return k[static_cast<int>(s)];
}
bool parse_alert_state(std::string_view t, AlertState& out) {
  for (int i = 0; i <= static_cast<int>(AlertState::kExpired); ++i)
    if (name(static_cast<AlertState>(i)) == t) return out = static_cast<AlertState>(i), true;
  return false;
}
std::string_view name(NotificationState s) {
  static constexpr std::string_view k[] = {"queued", "submitted", "gateway-accepted", "delivered", "failed", "expired", "no-receipt", "cancelled"};
  return k[static_cast<int>(s)];
}
bool parse_notification_state(std::string_view t, NotificationState& out) {
  for (int i = 0; i <= static_cast<int>(NotificationState::kCancelled); ++i)
    if (name(static_cast<NotificationState>(i)) == t) return out = static_cast<NotificationState>(i), true;
  return false;
}

std::string_view Alert::field(std::string_view n) const {
  if (n == "type" || n == "alertname") return type;
  if (n == "severity") return severity;
  if (n == "rule") return rule;
  if (n == "state") return name(state);
  if (n == "id") return id;
  if (n.starts_with("key.")) {
    n.remove_prefix(4);
    for (const auto& [k, v] : key)
      if (k == n) return v;
    return {};
  }
  for (const auto& [k, v] : labels)
    if (k == n) return v;
  for (const auto& [k, v] : key)  // a bare key field name, for group_by and equal
    if (k == n) return v;
  for (const auto& [k, v] : context)
    if (k == n) return v;
  return {};
}

struct Desk::ChannelState {
  const ChannelConfig* config = nullptr;
  Channel* channel = nullptr;
  double tokens = 0;
  int64_t refilled_at_ms = 0;
  int in_flight = 0;
  std::set<std::tuple<int, int64_t, std::string>> ready;  // (severity rank, created, id)
};

Desk::Desk(const AlertingConfig& config, StateStore& store, const Clock& clock, TableLookup lookup)
    : config_(config), store_(store), clock_(clock), lookup_(std::move(lookup)) {
  for (const auto& c : config_.channels) {
    auto st = std::make_unique<ChannelState>();
    st->config = &c;
    st->tokens = std::max(1.0, c.rate_per_s);
    st->refilled_at_ms = clock_.now_ms();
    channels_[c.name] = std::move(st);
  }
  for (const auto& s : config_.silences) silences_[s.id] = s;
}

Desk::~Desk() = default;

void Desk::set_channel(const std::string& n, Channel* channel) {
  if (auto* st = channel_state(n)) st->channel = channel;
}

void Desk::add_listener(LifecycleListener* l) { listeners_.push_back(l); }

Desk::ChannelState* Desk::channel_state(const std::string& n) {
  const auto it = channels_.find(n);
  return it == channels_.end() ? nullptr : it->second.get();
}

const Policy* Desk::policy_of(const Alert& a) const {
  for (const auto& p : config_.policies)
    if (p.name == a.policy) return &p;
  return nullptr;
}

bool Desk::must_reach(const Alert& a) const {
  const Policy* p = policy_of(a);
  return p && p->stop_when_reached;
}

std::string_view category_bucket(std::string_view category) {
  if (category.empty()) return "none";
  const std::string_view top = category.substr(0, category.find('.'));
  static constexpr std::string_view kKnown[] = {"gas",      "heating",    "housing", "noise", "power",
                                                "property", "sanitation", "traffic", "water"};
  for (std::string_view k : kKnown)
    if (top == k) return k;
  if (top == "road" || top == "roads") return "road";
  return "other";
}

// ---------------------------------------------------------------- persistence

void Desk::persist(const Alert& a) {
  to_json(a, scratch_);
  store_.put(kAlertsNs, a.id, scratch_);
}
void Desk::persist(const Notification& n) {
  to_json(n, scratch_);
  store_.put(kOutboxNs, n.id, scratch_);
}
void Desk::persist(const Incident& i) {
  to_json(i, scratch_);
  store_.put(kIncidentsNs, i.id, scratch_);
  for (auto* l : listeners_) l->on_incident(i);
}

void Desk::recover() {
  const int64_t now = clock_.now_ms();
  std::string error;
  store_.scan(kAlertsNs, [&](std::string_view, std::string_view v) {
    Alert a;
    if (from_json(v, a, error)) alerts_[a.id] = std::move(a);
    else spdlog::warn("alerts: skipped a stored alert that cannot be read: {}", error);
  });
  store_.scan(kIncidentsNs, [&](std::string_view, std::string_view v) {
    Incident i;
    if (!from_json(v, i, error)) return;
    if (!i.closed_at_ms) {
      std::string group = i.rule;
      for (const auto& [k, val] : i.group) group += '\x1f' + val;
      open_incident_by_group_[group] = i.id;
    }
    incidents_[i.id] = std::move(i);
  });
  store_.scan(kSilencesNs, [&](std::string_view, std::string_view v) {
    Silence s;
    if (read_silence(v, s)) silences_[s.id] = std::move(s);
  });
  int resumed = 0, awaiting = 0;
  store_.scan(kOutboxNs, [&](std::string_view, std::string_view v) {
    Notification n;
    if (!from_json(v, n, error)) return spdlog::warn("alerts: skipped a stored notification that cannot be read: {}", error);
    notifications_by_alert_[n.alert_id].push_back(n.id);
    if (n.channel.size() && config_.channel(n.channel) && config_.channel(n.channel)->kind == "sms")
      notifications_by_address_[n.address].push_back(n.id);
    notifications_[n.id] = std::move(n);
  });
  for (auto& [id, n] : notifications_) {
    const ChannelConfig* ch = config_.channel(n.channel);
    if (n.state == NotificationState::kSubmitted) {
      // It may have reached the gateway: never submit it again. Wait for
      // its receipt; without one the step falls back as for any silence.
      if (ch && ch->receipts()) {
        n.receipt_deadline_ms = std::max(n.receipt_deadline_ms, now + ch->receipt_timeout_ms);
        record(n, "recovered", "restart", "submitted before a restart: waiting for its receipt, not sent again");
        notification_timers_.insert({n.receipt_deadline_ms, id});
        ++awaiting;
      } else {
        finish(n, NotificationState::kFailed, "restart", "submitted before a restart, outcome unknown");
      }
    } else if (n.state == NotificationState::kQueued) {
      notification_timers_.insert({std::max(n.next_attempt_at_ms, now), id});
      ++resumed;
    } else if (n.state == NotificationState::kAccepted && n.receipt_deadline_ms) {
      notification_timers_.insert({n.receipt_deadline_ms, id});
      ++awaiting;
    }
  }
  for (auto& [id, a] : alerts_) schedule(a);
  spdlog::info("alerts: recovered {} alerts, {} incidents, {} notifications ({} to send, {} awaiting receipts)", alerts_.size(),
               incidents_.size(), notifications_.size(), resumed, awaiting);
}

// ---------------------------------------------------------------- audit

void Desk::record(Alert& a, std::string action, std::string by, std::string detail) {
  const int64_t now = clock_.now_ms();
  a.updated_at_ms = now;
  a.audit.push_back({now, std::move(action), std::move(by), std::move(detail)});
  persist(a);
  {
    std::lock_guard lk(metrics_mu_);
    ++metrics_.transitions[a.audit.back().action];
  }
  for (auto* l : listeners_) l->on_alert(a, a.audit.back());
}

void Desk::record(Notification& n, std::string action, std::string by, std::string detail) {
  n.timeline.push_back({clock_.now_ms(), std::move(action), std::move(by), std::move(detail)});
  persist(n);
  for (auto* l : listeners_) l->on_notification(n, n.timeline.back());
}

void Desk::set_state(Alert& a, AlertState to) { a.state = to; }

// ---------------------------------------------------------------- raising

std::string Desk::raise(std::string_view json) {
  Alert a;
  std::string error;
  if (!parse_raised_alert(json, a, error)) return error;
  if (a.raised_status == "resolved") {
    // The rule says its alert is over (e.g. the ticket was contacted after the deadline).
    const auto it = alerts_.find(a.id);
    if (it != alerts_.end() && is_open(it->second.state))
      return resolve(a.id, "rule:" + a.rule, "the awaited event came after the deadline (or the clock was cancelled)");
    return "";
  }
  if (auto it = alerts_.find(a.id); it != alerts_.end()) {
    ++it->second.duplicates;
    persist(it->second);
    std::lock_guard lk(metrics_mu_);
    ++metrics_.duplicates;
    return "";
  }
  const std::string by = "rule:" + a.rule;
  admit(std::move(a), by);
  dispatch(clock_.now_ms());  // send now, not at the next tick
  return "";
}

Alert& Desk::admit(Alert in, const std::string& by) {
  const int64_t now = clock_.now_ms();
  in.raised_at_ms = now;
  in.updated_at_ms = now;
  in.state = AlertState::kPending;
  Alert& a = alerts_.emplace(in.id, std::move(in)).first->second;
  {
    std::lock_guard lk(metrics_mu_);
    ++metrics_.alerts_raised[{a.type, a.severity, std::string(category_bucket(a.field("category")))}];
  }
  for (const auto& p : config_.policies)
    if (matches_all(p.match, a)) {
      a.policy = p.name;
      break;
    }
  record(a, "raised", by, a.policy.empty() ? "no escalation policy matches" : "policy " + a.policy);
  if (must_reach(a)) {
    std::lock_guard lk(metrics_mu_);
    ++metrics_.must_reach[a.type];
  }

  // Resolution: this alert closes the open alerts it resolves.
  for (const auto& rr : config_.resolve) {
    if (!matches_all(rr.source, a)) continue;
    for (auto& entry : alerts_) {
      Alert& t = entry.second;  // not a structured binding: clang 14 cannot capture those
      if (&t == &a || !is_open(t.state) || !matches_all(rr.target, t)) continue;
      if (std::all_of(rr.equal.begin(), rr.equal.end(), [&](const std::string& f) { return !a.field(f).empty() && a.field(f) == t.field(f); }))
        close_alert(t, AlertState::kResolved, "resolved", "rule:" + a.rule, "resolved by alert " + a.id + " (" + a.type + ")");
    }
  }
  link_incident(a);

  // Inhibition: an open source alert with equal fields explains this one.
  for (const auto& ir : config_.inhibit) {
    if (!matches_all(ir.target, a)) continue;
    for (auto& entry : alerts_) {
      Alert& s = entry.second;  // not a structured binding: clang 14 cannot capture those
      if (&s == &a || !is_open(s.state) || !matches_all(ir.source, s)) continue;
      if (!std::all_of(ir.equal.begin(), ir.equal.end(), [&](const std::string& f) { return !a.field(f).empty() && a.field(f) == s.field(f); }))
        continue;
      a.silenced_by = "inhibited:" + s.id;
      set_state(a, AlertState::kSilenced);
      record(a, "inhibited", "rule:" + s.rule, "explained by open alert " + s.id + " (" + s.type + ")");
      record(s, "linked", "rule:" + a.rule, "inhibits alert " + a.id + " (" + a.type + ")");
      schedule(a);
      return a;
    }
  }
  apply_silences(a);
  if (a.state == AlertState::kSilenced) {
    schedule(a);
    return a;
  }
  const Policy* p = policy_of(a);
  if (p && p->hold_ms > 0) {
    a.hold_until_ms = now + p->hold_ms;
    record(a, "pending", "timer", "held " + std::to_string(p->hold_ms / 1000) + " s before firing");
  } else {
    set_state(a, AlertState::kFiring);
    record(a, "fired", by);
    start_chain(a, by);
  }
  schedule(a);
  return a;
}

void Desk::link_incident(Alert& a) {
  for (const auto& ir : config_.incidents) {
    if (!matches_all(ir.match, a)) continue;
    Pairs group;
    std::string gkey = ir.name;
    for (const auto& f : ir.group_by) {
      const std::string_view v = a.field(f);
      if (v.empty()) break;
      group.emplace_back(f, std::string(v));
      gkey += '\x1f' + std::string(v);
    }
    if (group.size() != ir.group_by.size()) continue;
    if (!ir.join.empty()) {
      // Join the open incident of rule `join` with these group values, if there is one.
      gkey.replace(0, ir.name.size(), ir.join);
      const auto open = open_incident_by_group_.find(gkey);
      if (open == open_incident_by_group_.end() || !incidents_.count(open->second)) continue;
    }
    std::string& iid = open_incident_by_group_[gkey];
    if (iid.empty() || !incidents_.count(iid)) {
      Incident inc;
      inc.id = hash_id(ir.name, {gkey}, 0);
      inc.id = hash_id(inc.id, {a.id}, 0);
      inc.rule = ir.name;
      inc.group = std::move(group);
      inc.title = a.title;
      inc.opened_at_ms = clock_.now_ms();
      iid = inc.id;
      incidents_[inc.id] = std::move(inc);
    }
    Incident& inc = incidents_[iid];
    inc.alerts.push_back(a.id);
    a.incident = iid;
    persist(inc);
    record(a, "incident", "rule:" + ir.name,
           inc.alerts.size() == 1 ? "opened incident " + iid : "joined incident " + iid + " (" + std::to_string(inc.alerts.size()) + " alerts)");
    link_incidents(a, ir, inc);
    return;
  }
}

void Desk::link_incidents(Alert& a, const IncidentRule& ir, Incident& inc) {
  for (const auto& f : ir.link) {
    const std::string v(a.field(f));
    if (v.empty()) continue;
    for (auto& [jid, other] : incidents_) {
      if (jid == inc.id || other.closed_at_ms || std::find(inc.linked.begin(), inc.linked.end(), jid) != inc.linked.end()) continue;
      const bool shares = std::any_of(other.alerts.begin(), other.alerts.end(), [&](const std::string& id) {
        const auto it = alerts_.find(id);
        return it != alerts_.end() && it->second.field(f) == v;
      });
      if (!shares) continue;
      inc.linked.push_back(jid);
      other.linked.push_back(inc.id);
      persist(inc);
      persist(other);
      record(a, "incident", "rule:" + ir.name, "linked incident " + inc.id + " to incident " + jid + " (" + f + "=" + v + ")");
    }
  }
}

void Desk::apply_silences(Alert& a) {
  if (!is_open(a.state) || a.state == AlertState::kSilenced || a.state == AlertState::kAcknowledged) return;
  const int64_t now = clock_.now_ms();
  std::string by, detail;
  for (const auto& [id, s] : silences_)
    if (s.active(now) && matches_all(s.matchers, a)) {
      by = id;
      detail = "silence " + id + (s.comment.empty() ? "" : ": " + s.comment);
      break;
    }
  if (by.empty())
    for (const auto& w : config_.maintenance)
      if (w.active(now) && matches_all(w.matchers, a)) {
        by = "maintenance:" + w.name;
        detail = "maintenance window " + w.name;
        break;
      }
  if (by.empty()) return;
  a.silenced_by = by;
  set_state(a, AlertState::kSilenced);
  stop_chain(a, "silenced");
  record(a, "silenced", by.starts_with("maintenance:") ? by : "silence:" + by, detail);
}

void Desk::unsilence(Alert& a, const std::string& by) {
  a.silenced_by.clear();
  set_state(a, AlertState::kFiring);
  record(a, "unsilenced", by);
  if (policy_of(a)) {
    ++a.round;
    start_chain(a, by);
  }
  schedule(a);
}

// ---------------------------------------------------------------- escalation chain

void Desk::start_chain(Alert& a, const std::string& by) {
  const Policy* p = policy_of(a);
  if (!p || p->steps.empty()) return;
  start_step(a, 0, by);
}

std::vector<std::string> Desk::addresses(const Alert& a, const Target& t) const {
  std::vector<std::string> out;
  auto add_numbers = [&](std::string_view list) {
    size_t i = 0;
    while (i <= list.size()) {
      size_t j = list.find(';', i);
      if (j == std::string_view::npos) j = list.size();
      std::string_view one = list.substr(i, j - i);
      while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
      while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
      if (!one.empty()) out.push_back(normalised(one));
      i = j + 1;
    }
  };
  const std::string_view subject = a.key.empty() ? std::string_view() : std::string_view(a.key.front().second);
  const std::string& to = t.to;
  if (to == "subject") {
    if (!subject.empty()) out.push_back(normalised(subject));
  } else if (to.starts_with("key.")) {
    const std::string_view v = a.field(to);
    if (!v.empty()) out.push_back(normalised(v));
  } else if (to.starts_with("contact:")) {
    if (const Contact* c = config_.contact(to.substr(8))) out.push_back(c->phone);
  } else if (to.starts_with("group:")) {
    if (auto it = config_.groups.find(to.substr(6)); it != config_.groups.end())
      for (const auto& m : it->second)
        if (const Contact* c = config_.contact(m)) out.push_back(c->phone);
  } else if (to.starts_with("lookup:")) {
    // lookup:<table>.<column>, keyed by the subject, or by a field: lookup:<table>.<column>@<field>.
    const std::string spec = to.substr(7);
    const size_t dot = spec.find('.'), at = spec.find('@', dot);
    const std::string_view by = at == std::string::npos ? subject : a.field(std::string_view(spec).substr(at + 1));
    if (lookup_ && !by.empty()) add_numbers(lookup_(spec.substr(0, dot), spec.substr(dot + 1, at == std::string::npos ? std::string::npos : at - dot - 1), by));
  } else {
    out.push_back(to);
  }
  // A console or webhook address is a name, not a number.
  const ChannelConfig* ch = config_.channel(t.channel);
  if (ch && ch->kind != "sms" && to != "subject" && !to.starts_with("lookup:")) {
    out.clear();
    if (to.starts_with("contact:") || to.starts_with("group:")) out.push_back(to.substr(to.find(':') + 1));
    else out.push_back(to);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void Desk::start_step(Alert& a, int step, const std::string& by) {
  const Policy& p = *policy_of(a);
  const int64_t now = clock_.now_ms();
  a.step = step;
  a.chain_done = false;
  a.step_deadline_ms = now + p.steps[static_cast<size_t>(step)].wait_ms;
  if (step > 0) {
    if (a.state == AlertState::kFiring || a.state == AlertState::kEscalated) set_state(a, AlertState::kEscalated);
    std::lock_guard lk(metrics_mu_);
    ++metrics_.escalations[step];
  }
  // One notice per address and channel in a step: the first target that names it wins
  // (e.g. a vulnerable resident's own notice, not also the general one).
  size_t queued = 0;
  std::vector<std::pair<std::string_view, std::string>> taken;
  std::string unresolved;  // targets that named nobody for this alert, e.g. a key field it lacks
  for (const auto& t : p.steps[static_cast<size_t>(step)].notify) {
    std::vector<std::string> addrs = addresses(a, t);
    if (addrs.empty()) {
      unresolved += (unresolved.empty() ? "" : ", ") + t.channel + " to " + t.to;
      std::lock_guard lk(metrics_mu_);
      ++metrics_.targets_unresolved[p.name];
    }
    for (auto& addr : addrs) {
      if (std::find(taken.begin(), taken.end(), std::pair<std::string_view, std::string>(t.channel, addr)) != taken.end()) continue;
      queue_notification(a, t, addr);
      taken.emplace_back(t.channel, std::move(addr));
      ++queued;
    }
  }
  std::string detail = "step " + std::to_string(step + 1) + " of " + std::to_string(p.steps.size());
  if (a.round) detail += ", round " + std::to_string(a.round + 1);
  detail += queued ? ": " + std::to_string(queued) + " notification" + (queued == 1 ? "" : "s") : ": nobody to notify";
  if (!unresolved.empty()) detail += " (no address for " + unresolved + ")";
  record(a, step == 0 && a.round == 0 ? "notifying" : "escalated", by, detail);
  if (!queued) a.step_deadline_ms = now;  // nothing to wait for: next step at once
  schedule(a);
}

void Desk::queue_notification(Alert& a, const Target& t, const std::string& address) {
  Notification n;
  n.id = hash_id(a.id, {t.channel, address, t.recipient}, a.round * 1000 + a.step);
  if (notifications_.count(n.id)) return;  // already queued (a replayed step)
  const int64_t now = clock_.now_ms();
  n.alert_id = a.id;
  n.round = a.round;
  n.step = a.step;
  n.channel = t.channel;
  n.recipient = t.recipient;
  n.address = address;
  const ChannelConfig* ch = config_.channel(t.channel);
  if (ch && ch->kind == "webhook") {
    alertmanager_payload(a, address, n.text);
  } else {
    const Contact* c = t.to.starts_with("contact:") ? config_.contact(t.to.substr(8)) : nullptr;
    const std::string lang = c && !c->language.empty() ? c->language : config_.default_language;
    const auto& tmpl = config_.templates.at(t.template_name);
    const auto it = tmpl.count(lang) ? tmpl.find(lang) : tmpl.find(config_.default_language);
    n.text = render_template(it == tmpl.end() ? "{title}" : it->second, a);
  }
  n.created_at_ms = now;
  n.next_attempt_at_ms = now;
  notifications_by_alert_[a.id].push_back(n.id);
  if (ch && ch->kind == "sms") notifications_by_address_[address].push_back(n.id);
  Notification& stored = notifications_.emplace(n.id, std::move(n)).first->second;
  record(stored, "queued", "alert:" + a.id, "step " + std::to_string(stored.step + 1) + " → " + stored.recipient);
  make_ready(stored);
}

void Desk::make_ready(Notification& n) {
  ChannelState* st = channel_state(n.channel);
  if (!st) return;
  const Alert* a = alert(n.alert_id);
  st->ready.insert({a ? severity_rank(a->severity) : 4, n.created_at_ms, n.id});
  if (st->config->expire_after_ms > 0) notification_timers_.insert({n.created_at_ms + st->config->expire_after_ms, n.id});
}

std::vector<Notification*> Desk::step_notifications(const Alert& a) {
  std::vector<Notification*> out;
  if (auto it = notifications_by_alert_.find(a.id); it != notifications_by_alert_.end())
    for (const auto& id : it->second) {
      Notification& n = notifications_.at(id);
      if (n.round == a.round && n.step == a.step) out.push_back(&n);
    }
  return out;
}

// A step is settled when none of its notifications can still reach anyone.
bool Desk::step_settled(const Alert& a) const {
  const auto it = notifications_by_alert_.find(a.id);
  if (it == notifications_by_alert_.end()) return true;
  for (const auto& id : it->second) {
    const Notification& n = notifications_.at(id);
    if (n.round != a.round || n.step != a.step) continue;
    const bool waiting = !is_final(n.state) && !(n.state == NotificationState::kAccepted && n.receipt_deadline_ms == 0);
    if (waiting) return false;
  }
  return true;
}

void Desk::advance(Alert& a, const std::string& by) {
  const Policy* p = policy_of(a);
  if (!p || a.chain_done) return;
  if (a.step + 1 < static_cast<int>(p->steps.size())) return start_step(a, a.step + 1, by);
  if (a.round < p->repeat) {
    ++a.round;
    return start_step(a, 0, by);
  }
  a.chain_done = true;
  record(a, "chain_exhausted", by, a.reached_at_ms ? "every step ran" : "every step ran and nobody was reached");
  schedule(a);
}

void Desk::stop_chain(Alert& a, const std::string& why) {
  const bool was_running = !a.chain_done;
  a.chain_done = true;
  for (auto* n : step_notifications(a))
    if (n->state == NotificationState::kQueued) finish(*n, NotificationState::kCancelled, "alert:" + a.id, why);
  if (was_running) schedule(a);
}

// ---------------------------------------------------------------- timers

int64_t Desk::next_due(const Alert& a) const {
  if (!is_open(a.state)) return 0;
  int64_t due = 0;
  auto take = [&due](int64_t t) {
    if (t > 0 && (due == 0 || t < due)) due = t;
  };
  if (a.state == AlertState::kPending) take(a.hold_until_ms);
  if (!a.chain_done && a.state != AlertState::kSilenced) take(a.step_deadline_ms);
  if (const Policy* p = policy_of(a)) {
    if (p->unreached_after_ms && !a.unreached_raised && !a.reached_at_ms && a.state != AlertState::kAcknowledged)
      take(a.raised_at_ms + p->unreached_after_ms);
    if (p->expire_after_ms && a.state != AlertState::kAcknowledged) take(a.raised_at_ms + p->expire_after_ms);
  }
  return due;
}

void Desk::schedule(const Alert& a) {
  if (auto it = alert_due_.find(a.id); it != alert_due_.end()) {
    alert_timers_.erase({it->second, a.id});
    alert_due_.erase(it);
  }
  if (const int64_t due = next_due(a)) {
    alert_timers_.insert({due, a.id});
    alert_due_[a.id] = due;
  }
}

void Desk::on_due(Alert& a, int64_t now) {
  const Policy* p = policy_of(a);
  if (a.state == AlertState::kPending && a.hold_until_ms && now >= a.hold_until_ms) {
    set_state(a, AlertState::kFiring);
    record(a, "fired", "timer", "hold ended");
    start_chain(a, "timer");
  }
  if (p && p->expire_after_ms && a.state != AlertState::kAcknowledged && is_open(a.state) && now >= a.raised_at_ms + p->expire_after_ms)
    return close_alert(a, AlertState::kExpired, "expired", "timer", "nobody acted within " + std::to_string(p->expire_after_ms / 60000) + " min");
  if (p && p->unreached_after_ms && !a.unreached_raised && !a.reached_at_ms && a.state != AlertState::kAcknowledged &&
      now >= a.raised_at_ms + p->unreached_after_ms)
    raise_unreached(a);
  if (!a.chain_done && a.state != AlertState::kSilenced && is_open(a.state) && now >= a.step_deadline_ms)
    advance(a, "timer");
  schedule(a);
}

void Desk::raise_unreached(Alert& a) {
  const Policy* p = policy_of(a);
  a.unreached_raised = true;
  Alert u;
  u.id = hash_id(a.id, {"unreached"}, 0);
  u.rule = a.rule;
  u.rule_set_version = a.rule_set_version;
  u.type = p->unreached_type;
  u.severity = p->unreached_severity;
  u.title = (config_.default_language == "zh" ? "未触达：" : "Unreached: ") + a.title;
  u.summary = a.summary;
  u.key = a.key;
  u.labels = a.labels;
  u.labels.emplace_back("unreached_alert", a.id);
  {
    std::lock_guard lk(metrics_mu_);
    ++metrics_.unreached[a.type];
  }
  record(a, "unreached", "timer", "nobody reached within " + std::to_string(p->unreached_after_ms / 60000) + " min: raised " + u.id);
  if (alerts_.count(u.id)) return;
  JsonWriter w(u.raised_json);
  w.begin_object().key("id").str(u.id).key("type").str(u.type).key("severity").str(u.severity).key("title").str(u.title)
      .key("unreached_alert").str(a.id).end_object();
  Alert& stored = admit(std::move(u), "timer");
  if (stored.incident.empty() && !a.incident.empty()) {
    stored.incident = a.incident;
    record(stored, "incident", "timer", "joined incident " + a.incident + " of alert " + a.id);
  }
}

void Desk::tick() {
  const int64_t now = clock_.now_ms();
  // Notification timers first: a step they settle falls back in this tick.
  while (!notification_timers_.empty() && notification_timers_.begin()->first <= now) {
    const std::string id = notification_timers_.begin()->second;
    notification_timers_.erase(notification_timers_.begin());
    auto it = notifications_.find(id);
    if (it == notifications_.end()) continue;
    Notification& n = it->second;
    const ChannelConfig* ch = config_.channel(n.channel);
    if (n.state == NotificationState::kQueued && ch && ch->expire_after_ms && now >= n.created_at_ms + ch->expire_after_ms) {
      if (auto* st = channel_state(n.channel)) {
        const Alert* a = alert(n.alert_id);
        st->ready.erase({a ? severity_rank(a->severity) : 4, n.created_at_ms, n.id});
      }
      finish(n, NotificationState::kExpired, "timer", "not accepted by the gateway in time");
    } else if (n.state == NotificationState::kQueued && now >= n.next_attempt_at_ms) {
      make_ready(n);
    } else if ((n.state == NotificationState::kAccepted || n.state == NotificationState::kSubmitted) && n.receipt_deadline_ms &&
               now >= n.receipt_deadline_ms) {
      finish(n, NotificationState::kNoReceipt, "timer", "no final receipt in time");
    }
  }
  while (!alert_timers_.empty() && alert_timers_.begin()->first <= now) {
    const std::string id = alert_timers_.begin()->second;
    alert_timers_.erase(alert_timers_.begin());
    alert_due_.erase(id);
    if (auto it = alerts_.find(id); it != alerts_.end()) on_due(it->second, now);
  }
  dispatch(now);
  if (now - last_housekeeping_ms_ >= 1000) housekeeping(now);
}

// ---------------------------------------------------------------- dispatch

void Desk::dispatch(int64_t now) {
  for (auto& [chname, st] : channels_) {
    const ChannelConfig& cfg = *st->config;
    st->tokens = std::min(std::max(1.0, cfg.rate_per_s), st->tokens + static_cast<double>(now - st->refilled_at_ms) * cfg.rate_per_s / 1000.0);
    st->refilled_at_ms = now;
    while (!st->ready.empty() && st->in_flight < cfg.max_in_flight && st->tokens >= 1.0) {
      const std::string id = std::get<2>(*st->ready.begin());
      st->ready.erase(st->ready.begin());
      auto it = notifications_.find(id);
      if (it == notifications_.end() || it->second.state != NotificationState::kQueued) continue;
      if (it->second.next_attempt_at_ms > now) {
        notification_timers_.insert({it->second.next_attempt_at_ms, id});
        continue;
      }
      st->tokens -= 1.0;
      submit(it->second, *st);
    }
  }
}

void Desk::submit(Notification& n, ChannelState& ch) {
  const int64_t now = clock_.now_ms();
  ++n.attempts;
  {
    std::lock_guard lk(metrics_mu_);
    ++metrics_.submits[n.channel];
  }
  if (ch.config->kind == "console") {
    // An operator task: it is on every console now; a person acknowledges it.
    n.state = NotificationState::kAccepted;
    record(n, "accepted", "console", "operator task on the console");
    return;
  }
  if (!ch.channel) {
    return finish(n, NotificationState::kFailed, "dispatcher", "channel " + n.channel + " has no gateway configured");
  }
  n.state = NotificationState::kSubmitted;
  // Persisted before the request leaves: after a crash it is not sent again.
  if (ch.config->receipts()) n.receipt_deadline_ms = now + ch.config->receipt_timeout_ms;
  record(n, "submitted", "dispatcher", "attempt " + std::to_string(n.attempts));
  ++ch.in_flight;
  const std::string id = n.id;
  ch.channel->submit(OutboundMessage{n.id, n.address, n.text}, [this, id](SubmitResult r) { on_submit_result(id, r); });
}

void Desk::on_submit_result(const std::string& id, const SubmitResult& r) {
  auto it = notifications_.find(id);
  if (it == notifications_.end()) return;
  Notification& n = it->second;
  ChannelState* st = channel_state(n.channel);
  if (st && st->in_flight > 0) --st->in_flight;
  const int64_t now = clock_.now_ms();
  const std::string answer = (r.http_status ? "HTTP " + std::to_string(r.http_status) + " " : "") + r.detail;
  if (n.state != NotificationState::kSubmitted) {  // a receipt overtook the answer
    record(n, "gateway_answer", "gateway", answer);
    return;
  }
  switch (r.outcome) {
    case SubmitOutcome::kAccepted:
    case SubmitOutcome::kQueued: {
      n.state = NotificationState::kAccepted;
      if (!st || !st->config->receipts()) n.receipt_deadline_ms = 0;
      record(n, r.outcome == SubmitOutcome::kQueued ? "gateway_queued" : "gateway_accepted", "gateway", answer);
      // Without receipts (webhooks) the step's wait decides what happens next.
      if (n.receipt_deadline_ms) notification_timers_.insert({n.receipt_deadline_ms, n.id});
      break;
    }
    case SubmitOutcome::kRetry: {
      {
        std::lock_guard lk(metrics_mu_);
        ++metrics_.retries[n.channel];
      }
      if (!st || n.attempts >= st->config->max_attempts) {
        finish(n, NotificationState::kFailed, "gateway", answer + " (gave up after " + std::to_string(n.attempts) + " attempts)");
        break;
      }
      const double base = std::min<double>(static_cast<double>(st->config->backoff_max_ms),
                                           static_cast<double>(st->config->backoff_initial_ms) * std::pow(2.0, n.attempts - 1));
      const double jitter = 0.5 + 0.5 * std::uniform_real_distribution<double>(0, 1)(rng_);
      n.state = NotificationState::kQueued;
      n.receipt_deadline_ms = 0;
      n.next_attempt_at_ms = now + static_cast<int64_t>(base * jitter);
      record(n, "retry", "gateway", answer + "; next attempt in " + std::to_string((n.next_attempt_at_ms - now + 999) / 1000) + " s");
      notification_timers_.insert({n.next_attempt_at_ms, n.id});
      break;
    }
    case SubmitOutcome::kRejected:
      finish(n, NotificationState::kFailed, "gateway", answer + " (permanent: next route)");
      break;
  }
  dispatch(now);  // a slot is free: the next one goes now, not at the next tick
}

void Desk::finish(Notification& n, NotificationState s, std::string by, std::string detail) {
  if (is_final(n.state)) return;
  n.state = s;
  n.final_at_ms = clock_.now_ms();
  {
    std::lock_guard lk(metrics_mu_);
    ++metrics_.notifications[{n.channel, std::string(name(s))}];
  }
  record(n, std::string(name(s)), std::move(by), std::move(detail));
  auto it = alerts_.find(n.alert_id);
  if (it == alerts_.end()) return;
  Alert& a = it->second;
  if (s == NotificationState::kDelivered) return mark_reached(a, n);
  if (s == NotificationState::kCancelled) return;
  if (!a.chain_done && n.round == a.round && n.step == a.step && step_settled(a)) {
    const bool reached = a.reached_at_ms && policy_of(a) && policy_of(a)->stop_when_reached;
    if (!reached) {
      // Nobody can be reached by this step any more: fall back now.
      a.step_deadline_ms = clock_.now_ms();
      schedule(a);
    }
  }
}

void Desk::mark_reached(Alert& a, const Notification& n) {
  const bool first = a.reached_at_ms == 0;
  if (first) {
    a.reached_at_ms = n.final_at_ms;
    a.reached_via = n.id;
  }
  if (first && must_reach(a)) {  // the reach rate's numerator, over the same alerts as its denominator
    const double s = static_cast<double>(a.reached_at_ms - a.raised_at_ms) / 1000.0;
    std::lock_guard lk(metrics_mu_);
    ++metrics_.reached[a.type];
    ++metrics_.reach_count;
    metrics_.reach_sum_s += s;
    for (size_t b = 0; b < std::size(DeskMetrics::kReachBuckets); ++b)
      if (s <= DeskMetrics::kReachBuckets[b]) ++metrics_.reach_bucket_counts[b];
  }
  record(a, "reached", "sms:" + mask_phone_number(n.address), n.recipient + " (notification " + n.id + ")");
  const Policy* p = policy_of(a);
  if (p && p->stop_when_reached && !a.chain_done) {
    stop_chain(a, "reached " + n.recipient);
    record(a, "chain_stopped", "sms:" + mask_phone_number(n.address), "reached: the policy stops when reached");
  }
  schedule(a);
}

// ---------------------------------------------------------------- receipts and replies

void Desk::on_receipt(const Receipt& r) {
  auto it = notifications_.find(r.notification_id);
  if (it == notifications_.end()) {
    std::lock_guard lk(metrics_mu_);
    ++metrics_.receipts_unknown;
    return;
  }
  Notification& n = it->second;
  const std::string detail = std::string(name(r.state)) + (r.detail.empty() ? "" : ": " + r.detail);
  if (is_final(n.state)) {  // final states win: a late intermediate receipt only goes on the timeline
    record(n, "receipt", "gateway", detail + " (after " + std::string(name(n.state)) + ", ignored)");
    return;
  }
  n.receipt = r.state;
  if (!is_final(r.state)) {
    if (n.state == NotificationState::kSubmitted || n.state == NotificationState::kQueued) n.state = NotificationState::kAccepted;
    record(n, "receipt", "gateway", detail);
    return;
  }
  const NotificationState to = r.state == ReceiptState::kDelivered ? NotificationState::kDelivered
                               : r.state == ReceiptState::kExpired ? NotificationState::kExpired
                                                                   : NotificationState::kFailed;
  finish(n, to, "handset", detail);
}

void Desk::on_reply(const Reply& r) {
  const std::string from = normalised(r.from);
  std::string_view text = r.text;
  while (!text.empty() && (text.front() == ' ' || text.front() == '\n')) text.remove_prefix(1);
  const size_t sp = text.find_first_of(" \n\t");
  std::string first(text.substr(0, sp));
  std::transform(first.begin(), first.end(), first.begin(), [](unsigned char c) { return c < 128 ? std::tolower(c) : c; });
  const bool ack = std::find(config_.ack_replies.begin(), config_.ack_replies.end(), first) != config_.ack_replies.end();
  {
    std::lock_guard lk(metrics_mu_);
    ++metrics_.replies;
  }
  // The newest open alert this number was notified about.
  Alert* target = nullptr;
  if (auto it = notifications_by_address_.find(from); it != notifications_by_address_.end())
    for (auto id = it->second.rbegin(); id != it->second.rend() && !target; ++id) {
      auto a = alerts_.find(notifications_.at(*id).alert_id);
      if (a != alerts_.end() && is_open(a->second.state)) target = &a->second;
    }
  if (!target) {
    std::lock_guard lk(metrics_mu_);
    ++metrics_.replies_unknown;
    spdlog::info("alerts: SMS reply from {} matches no open alert", mask_phone_number(from));
    return;
  }
  const std::string by = "sms:" + mask_phone_number(from);
  if (ack && target->state != AlertState::kAcknowledged) acknowledge(target->id, by, "SMS reply: " + std::string(r.text));
  else record(*target, "reply", by, std::string(r.text));
}

// ---------------------------------------------------------------- operator actions

void Desk::close_alert(Alert& a, AlertState to, std::string action, const std::string& by, const std::string& note) {
  set_state(a, to);
  stop_chain(a, action);
  record(a, std::move(action), by, note);
  schedule(a);
  // Alerts it inhibited are explained by it: they close with it.
  for (auto& [id, t] : alerts_)
    if (is_open(t.state) && t.silenced_by == "inhibited:" + a.id)
      close_alert(t, AlertState::kResolved, "resolved", by, "resolved with alert " + a.id);
  if (!a.incident.empty()) {
    auto it = incidents_.find(a.incident);
    if (it != incidents_.end() && !it->second.closed_at_ms) {
      Incident& inc = it->second;
      const bool all_closed = std::all_of(inc.alerts.begin(), inc.alerts.end(), [&](const std::string& id) {
        const Alert* x = alert(id);
        return !x || !is_open(x->state);
      });
      if (all_closed) {
        inc.closed_at_ms = clock_.now_ms();
        std::string group = inc.rule;
        for (const auto& [k, v] : inc.group) group += '\x1f' + v;
        open_incident_by_group_.erase(group);
        persist(inc);
      }
    }
  }
}

std::string Desk::acknowledge(const std::string& id, const std::string& by, const std::string& note) {
  auto it = alerts_.find(id);
  if (it == alerts_.end()) return "unknown alert " + id;
  Alert& a = it->second;
  if (!is_open(a.state)) return "alert " + id + " is " + std::string(name(a.state));
  if (a.state == AlertState::kAcknowledged) return "";
  set_state(a, AlertState::kAcknowledged);
  stop_chain(a, "acknowledged");
  record(a, "acknowledged", by, note);
  schedule(a);
  return "";
}

std::string Desk::resolve(const std::string& id, const std::string& by, const std::string& note) {
  auto it = alerts_.find(id);
  if (it == alerts_.end()) return "unknown alert " + id;
  if (!is_open(it->second.state)) return "alert " + id + " is " + std::string(name(it->second.state));
  close_alert(it->second, AlertState::kResolved, "resolved", by, note);
  return "";
}

std::string Desk::assign(const std::string& id, const std::string& by, const std::string& assignee) {
  auto it = alerts_.find(id);
  if (it == alerts_.end()) return "unknown alert " + id;
  it->second.assignee = assignee;
  record(it->second, "assigned", by, assignee);
  return "";
}

std::string Desk::add_note(const std::string& id, const std::string& by, const std::string& note) {
  auto it = alerts_.find(id);
  if (it == alerts_.end()) return "unknown alert " + id;
  if (note.empty()) return "empty note";
  record(it->second, "note", by, note);
  return "";
}

std::string Desk::escalate_now(const std::string& id, const std::string& by) {
  auto it = alerts_.find(id);
  if (it == alerts_.end()) return "unknown alert " + id;
  Alert& a = it->second;
  if (!is_open(a.state)) return "alert " + id + " is " + std::string(name(a.state));
  const Policy* p = policy_of(a);
  if (!p) return "alert " + id + " has no escalation policy";
  if (a.state == AlertState::kSilenced) return "alert " + id + " is silenced";
  if (a.chain_done) {  // restart the chain at the next step (or from the first)
    a.chain_done = false;
    if (a.step + 1 >= static_cast<int>(p->steps.size())) {
      ++a.round;
      a.step = -1;
    }
  }
  if (a.state == AlertState::kAcknowledged || a.state == AlertState::kPending) set_state(a, AlertState::kEscalated);
  if (a.step < 0) start_step(a, 0, by);
  else advance(a, by);
  return "";
}

std::string Desk::add_silence(Silence s) {
  if (s.matchers.empty()) return "";
  if (s.id.empty()) s.id = hash_id(s.created_by, {s.comment}, clock_.now_ms());
  if (s.starts_at_ms == 0) s.starts_at_ms = clock_.now_ms();
  write_silence(s, scratch_);
  store_.put(kSilencesNs, s.id, scratch_);
  const std::string id = s.id;
  silences_[id] = std::move(s);
  for (auto& [aid, a] : alerts_) apply_silences(a);
  return id;
}

std::string Desk::expire_silence(const std::string& id, const std::string& by) {
  auto it = silences_.find(id);
  if (it == silences_.end()) return "unknown silence " + id;
  it->second.ends_at_ms = std::min(it->second.ends_at_ms, clock_.now_ms());
  write_silence(it->second, scratch_);
  store_.put(kSilencesNs, id, scratch_);
  for (auto& [aid, a] : alerts_)
    if (a.state == AlertState::kSilenced && a.silenced_by == id) unsilence(a, by);
  return "";
}

// ---------------------------------------------------------------- housekeeping

void Desk::housekeeping(int64_t now) {
  last_housekeeping_ms_ = now;
  DeskMetrics gauges;
  std::vector<std::string> drop;
  for (auto& [id, a] : alerts_) {
    if (a.state == AlertState::kSilenced && !a.silenced_by.empty() && !a.silenced_by.starts_with("inhibited:")) {
      bool still = false;
      if (a.silenced_by.starts_with("maintenance:")) {
        for (const auto& w : config_.maintenance)
          still |= "maintenance:" + w.name == a.silenced_by && w.active(now);
      } else if (auto s = silences_.find(a.silenced_by); s != silences_.end()) {
        still = s->second.active(now);
      }
      if (!still) unsilence(a, a.silenced_by.starts_with("maintenance:") ? a.silenced_by : "silence:" + a.silenced_by);
    }
    ++gauges.alerts_by_state[std::string(name(a.state))];
    if (!is_open(a.state) && now - a.updated_at_ms > config_.retention_ms) drop.push_back(id);
  }
  for (const auto& id : drop) {
    if (auto it = notifications_by_alert_.find(id); it != notifications_by_alert_.end()) {
      for (const auto& nid : it->second) {
        store_.erase(kOutboxNs, nid);
        notifications_.erase(nid);
      }
      notifications_by_alert_.erase(it);
    }
    store_.erase(kAlertsNs, id);
    alerts_.erase(id);
  }
  for (auto& [n, st] : channels_) {
    gauges.in_flight[n] = st->in_flight;
    gauges.queue_depth[n] = 0;
    gauges.oldest_queued_s[n] = 0;
  }
  for (const auto& [id, n] : notifications_)
    if (n.state == NotificationState::kQueued) {
      ++gauges.queue_depth[n.channel];
      gauges.oldest_queued_s[n.channel] = std::max(gauges.oldest_queued_s[n.channel], static_cast<double>(now - n.created_at_ms) / 1000.0);
    }
  for (const auto& [id, i] : incidents_) gauges.open_incidents += i.closed_at_ms == 0;
  std::lock_guard lk(metrics_mu_);
  metrics_.alerts_by_state = std::move(gauges.alerts_by_state);
  metrics_.in_flight = std::move(gauges.in_flight);
  metrics_.queue_depth = std::move(gauges.queue_depth);
  metrics_.oldest_queued_s = std::move(gauges.oldest_queued_s);
  metrics_.open_incidents = gauges.open_incidents;
}

// ---------------------------------------------------------------- queries

const Alert* Desk::alert(std::string_view id) const {
  auto it = alerts_.find(id);
  return it == alerts_.end() ? nullptr : &it->second;
}

const Notification* Desk::notification(std::string_view id) const {
  auto it = notifications_.find(id);
  return it == notifications_.end() ? nullptr : &it->second;
}

std::vector<const Notification*> Desk::notifications_of(std::string_view alert_id) const {
  std::vector<const Notification*> out;
  if (auto it = notifications_by_alert_.find(std::string(alert_id)); it != notifications_by_alert_.end())
    for (const auto& id : it->second) out.push_back(&notifications_.at(id));
  return out;
}

DeskMetrics Desk::metrics() const {
  std::lock_guard lk(metrics_mu_);
  return metrics_;
}

}  // namespace tocsin::alerts
