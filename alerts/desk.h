#pragma once
// The alert desk: alert lifecycle and must-reach delivery (docs/alerting.md).
//
// Raised alerts come in (raise()), are deduplicated by id, grouped into
// incidents, silenced, inhibited or resolved by other alerts, and run through
// the first matching escalation policy: each step queues notifications in a
// durable outbox, a dispatcher submits them to their channel within the
// channel's rate and in-flight limits, retries with exponential backoff and
// jitter, and falls back to the next step when nobody was reached (failure,
// no receipt in time) or when the step's wait ends. Acknowledgement (an
// operator, or an SMS reply) stops the chain; so does a handset receipt when
// the policy says stop_when: reached.
//
// Every record is written to the StateStore as it changes, so a restart
// resumes from the store: a notification that was submitted before the
// restart is never submitted again (it waits for its receipt, then falls back).
//
// Single-threaded: every call, including Channel callbacks, must come from one
// thread. metrics() may be read from any thread.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "alerts/alerting_config.h"
#include "alerts/channel.h"
#include "alerts/model.h"
#include "pipeline/clock.h"
#include "pipeline/state_store.h"

namespace tocsin::alerts {

// Sees every lifecycle change, after it was persisted.
class LifecycleListener {
 public:
  virtual ~LifecycleListener() = default;
  virtual void on_alert(const Alert& a, const AuditEntry& change) = 0;
  virtual void on_notification(const Notification& n, const AuditEntry& change) { (void)n, (void)change; }
  virtual void on_incident(const Incident& i) { (void)i; }
};

// `lookup:<table>.<column>` targets: the cell of `key`'s row, "" if none.
using TableLookup = std::function<std::string(std::string_view table, std::string_view column, std::string_view key)>;

// Counters and gauges for /metrics (labels are closed sets: channel names
// and outcomes from the config, alert types from the rules).
struct DeskMetrics {
  // (type, severity, category): category is category_bucket() of the alert's
  // `category` field (labels, key or context), "none" without one.
  std::map<std::tuple<std::string, std::string, std::string>, int64_t> alerts_raised;
  std::map<std::string, int64_t> alerts_by_state;                         // gauge: open and closed alerts held
  std::map<std::string, int64_t> transitions;                             // action -> count
  std::map<std::pair<std::string, std::string>, int64_t> notifications;  // (channel, final state)
  std::map<std::string, int64_t> submits;                                 // channel -> submissions
  std::map<std::string, int64_t> retries;                                 // channel -> retryable failures
  std::map<std::string, int64_t> must_reach;                              // type -> must-reach alerts (Desk::must_reach)
  std::map<std::string, int64_t> reached;                                 // type -> must-reach alerts reached on a handset
  std::map<std::string, int64_t> unreached;                               // type -> unreached alerts raised
  std::map<int, int64_t> escalations;                                     // step (level) -> count
  std::map<std::string, int64_t> targets_unresolved;                      // policy -> notify targets that named nobody
  std::map<std::string, int64_t> queue_depth;                             // channel -> queued (gauge)
  std::map<std::string, int64_t> in_flight;                               // channel -> awaiting the gateway (gauge)
  std::map<std::string, double> oldest_queued_s;                          // channel -> age of the oldest queued (gauge)
  int64_t open_incidents = 0;
  int64_t receipts_unknown = 0, replies = 0, replies_unknown = 0, duplicates = 0;
  // time from raise to the first handset receipt (must-reach alerts)
  static constexpr double kReachBuckets[] = {5, 10, 30, 60, 120, 300, 600, 1800, 3600};
  std::vector<int64_t> reach_bucket_counts = std::vector<int64_t>(std::size(kReachBuckets), 0);
  int64_t reach_count = 0;
  double reach_sum_s = 0;
};

// A complaint category (`heating.no_heat`) bucketed to a closed set for a
// metric label: its top level (before the first '.') when that is one of gas,
// heating, housing, noise, power, property, road (or roads), sanitation,
// traffic, water; "other" for any other; "none" for an empty one.
std::string_view category_bucket(std::string_view category);

class Desk {
 public:
  Desk(const AlertingConfig& config, StateStore& store, const Clock& clock, TableLookup lookup = {});
  ~Desk();
  Desk(const Desk&) = delete;
  Desk& operator=(const Desk&) = delete;

  // The channel that carries notifications of config channel `name` (kind
  // sms or webhook; console notifications need none). Not owned.
  void set_channel(const std::string& name, Channel* channel);
  void add_listener(LifecycleListener* listener);

  // Loads every record from the store (after a restart). Call once, before
  // anything else.
  void recover();

  // A raised alert as the rule engine writes it. Returns "" or why it was
  // not taken (not an alert: count it and move on).
  std::string raise(std::string_view json);

  // Operator actions; `by` is who acted ("operator:<user>"). Return "" or an
  // error for the caller (unknown alert, already closed).
  std::string acknowledge(const std::string& id, const std::string& by, const std::string& note = "");
  std::string resolve(const std::string& id, const std::string& by, const std::string& note = "");
  std::string assign(const std::string& id, const std::string& by, const std::string& assignee);
  std::string add_note(const std::string& id, const std::string& by, const std::string& note);
  std::string escalate_now(const std::string& id, const std::string& by);
  // Adds (or replaces, by id) a silence; returns its id. Open matching alerts are silenced now.
  std::string add_silence(Silence s);
  std::string expire_silence(const std::string& id, const std::string& by);

  void on_receipt(const Receipt& r);
  void on_reply(const Reply& r);

  // Runs due timers (holds, step waits, receipt deadlines, expiry, silences
  // ending) and submits what the channels' limits allow. Call every ~100 ms.
  void tick();

  // Queries (same thread).
  const Alert* alert(std::string_view id) const;
  const std::map<std::string, Alert, std::less<>>& alerts() const { return alerts_; }
  std::vector<const Notification*> notifications_of(std::string_view alert_id) const;
  const Notification* notification(std::string_view id) const;
  const std::map<std::string, Incident, std::less<>>& incidents() const { return incidents_; }
  const std::map<std::string, Silence, std::less<>>& silences() const { return silences_; }
  const AlertingConfig& config() const { return config_; }
  // A must-reach alert: its escalation policy stops when a handset receipt
  // arrives (stop_when: reached). Only these count in the reach rate; an
  // alert whose policy stops on acknowledgement is an operator notice.
  bool must_reach(const Alert& a) const;

  DeskMetrics metrics() const;  // any thread

 private:
  struct ChannelState;
  Alert& admit(Alert a, const std::string& by);
  void record(Alert& a, std::string action, std::string by, std::string detail = "");
  void record(Notification& n, std::string action, std::string by, std::string detail = "");
  void persist(const Alert& a);
  void persist(const Notification& n);
  void persist(const Incident& i);
  void schedule(const Alert& a);
  int64_t next_due(const Alert& a) const;
  void on_due(Alert& a, int64_t now);
  void start_chain(Alert& a, const std::string& by);
  void start_step(Alert& a, int step, const std::string& by);
  void advance(Alert& a, const std::string& by);
  void stop_chain(Alert& a, const std::string& why);
  bool step_settled(const Alert& a) const;
  std::vector<std::string> addresses(const Alert& a, const Target& t) const;
  void queue_notification(Alert& a, const Target& t, const std::string& address);
  void make_ready(Notification& n);
  void dispatch(int64_t now);
  void submit(Notification& n, ChannelState& ch);
  void on_submit_result(const std::string& id, const SubmitResult& r);
  void finish(Notification& n, NotificationState s, std::string by, std::string detail);
  void mark_reached(Alert& a, const Notification& n);
  void close_alert(Alert& a, AlertState to, std::string action, const std::string& by, const std::string& note);
  void set_state(Alert& a, AlertState to);
  void apply_silences(Alert& a);
  void unsilence(Alert& a, const std::string& by);
  void link_incident(Alert& a);
  // Links `inc` (which `a` just joined) to the other open incidents sharing a `link` field value.
  void link_incidents(Alert& a, const IncidentRule& ir, Incident& inc);
  void raise_unreached(Alert& a);
  void housekeeping(int64_t now);
  const Policy* policy_of(const Alert& a) const;
  std::vector<Notification*> step_notifications(const Alert& a);
  ChannelState* channel_state(const std::string& name);

  const AlertingConfig config_;
  StateStore& store_;
  const Clock& clock_;
  TableLookup lookup_;
  std::vector<LifecycleListener*> listeners_;
  std::map<std::string, Alert, std::less<>> alerts_;
  std::map<std::string, Notification, std::less<>> notifications_;
  std::unordered_map<std::string, std::vector<std::string>> notifications_by_alert_;
  std::unordered_map<std::string, std::vector<std::string>> notifications_by_address_;
  std::map<std::string, Incident, std::less<>> incidents_;
  std::map<std::string, std::string> open_incident_by_group_;  // rule + group values -> incident id
  std::map<std::string, Silence, std::less<>> silences_;
  std::set<std::pair<int64_t, std::string>> alert_timers_;       // (due, alert id)
  std::unordered_map<std::string, int64_t> alert_due_;
  std::set<std::pair<int64_t, std::string>> notification_timers_;  // (due, notification id): retries, receipts, expiry
  std::map<std::string, std::unique_ptr<ChannelState>> channels_;
  std::mt19937_64 rng_{0x70c5e7};
  int64_t last_housekeeping_ms_ = 0;
  std::string scratch_;
  mutable std::mutex metrics_mu_;
  DeskMetrics metrics_;
};

}  // namespace tocsin::alerts
