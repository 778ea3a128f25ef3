#pragma once
// What the alert desk keeps about an alert and each notification sent for it.
// Both are plain values: the desk persists them as JSON (records.h) in a
// StateStore and publishes them on the alerts topic and to the console.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "alerts/channel.h"

namespace tocsin::alerts {

// pending → firing → acknowledged → resolved, plus silenced (a silence,
// maintenance window or inhibition holds it), escalated (the policy went past
// its first step) and expired (nobody acted within the policy's lifetime).
enum class AlertState : uint8_t { kPending, kFiring, kAcknowledged, kResolved, kSilenced, kEscalated, kExpired };
std::string_view name(AlertState s);
bool parse_alert_state(std::string_view text, AlertState& out);
inline bool is_open(AlertState s) { return s != AlertState::kResolved && s != AlertState::kExpired; }

// One line of an alert's audit trail or a notification's timeline.
struct AuditEntry {
  int64_t at_ms = 0;
  std::string action;  // raised, fired, acknowledged, escalated, note, submitted, receipt, ...
  std::string by;      // "rule:<id>", "operator:<user>", "timer", "sms:<masked number>", "gateway"
  std::string detail;
};

using Pairs = std::vector<std::pair<std::string, std::string>>;

struct Alert {
  // As raised by the rule (docs/schemas/alert.schema.json).
  std::string id, rule, rule_set_version, type, severity, title, summary;
  Pairs key;     // group-by field -> value (unmasked; never logged)
  Pairs labels;  // the rule's labels, then the score's labels as label=true
  Pairs context; // where it happened (the raised alert's context: building, district, ...)
  std::string raised_json;
  std::string raised_status;  // "resolved" on a rule's message that its alert is over (never stored)
  int64_t raised_at_ms = 0;  // when the desk first saw it

  // Lifecycle.
  AlertState state = AlertState::kPending;
  int64_t updated_at_ms = 0;
  int64_t hold_until_ms = 0;     // pending until then
  std::string policy;            // escalation policy name, "" for none
  int step = -1;                 // escalation step in progress, -1 before the first
  int round = 0;                 // repeat round of the policy
  int64_t step_deadline_ms = 0;  // the step's wait ends
  bool chain_done = true;        // no step is running (stopped, finished or none)
  std::string incident;          // incident id, "" for none
  std::string silenced_by;       // silence id, "maintenance:<name>" or "inhibited:<alert id>"
  std::string assignee;
  int64_t reached_at_ms = 0;     // first delivery receipt from a handset, 0 if none
  std::string reached_via;       // notification id
  bool unreached_raised = false;
  int duplicates = 0;            // the same id raised again (replays, at-least-once)
  std::vector<AuditEntry> audit;

  std::string_view field(std::string_view name) const;  // for matchers and templates; "" if absent
};

// queued → submitted → gateway-accepted → delivered | failed | expired |
// no-receipt; cancelled when the chain stops before it was sent.
enum class NotificationState : uint8_t {
  kQueued, kSubmitted, kAccepted, kDelivered, kFailed, kExpired, kNoReceipt, kCancelled
};
std::string_view name(NotificationState s);
bool parse_notification_state(std::string_view text, NotificationState& out);
inline bool is_final(NotificationState s) { return s >= NotificationState::kDelivered; }

struct Notification {
  std::string id;  // 16 hex digits of (alert id, round, step, channel, address)
  std::string alert_id;
  int round = 0;
  int step = 0;
  std::string channel;    // channel name from the config
  std::string recipient;  // who this is for: "subject", "family", a contact or group name
  std::string address;    // full number / webhook name / console user (never logged unmasked)
  std::string text;
  NotificationState state = NotificationState::kQueued;
  int attempts = 0;
  int64_t created_at_ms = 0;
  int64_t next_attempt_at_ms = 0;
  int64_t receipt_deadline_ms = 0;  // accepted, waiting for a receipt until then (0: none expected)
  int64_t final_at_ms = 0;
  ReceiptState receipt = ReceiptState::kUnknown;  // latest receipt state seen
  std::vector<AuditEntry> timeline;
};

// Alerts grouped by an incident rule (alerting_config.h): one per value of its
// group_by fields while any of its alerts is open.
struct Incident {
  std::string id;  // 16 hex digits of (rule name, group values, first alert id)
  std::string rule;
  Pairs group;     // group_by field -> value
  std::string title;  // the first alert's title
  int64_t opened_at_ms = 0;
  int64_t closed_at_ms = 0;  // 0 while open
  std::vector<std::string> alerts;  // ids, in arrival order
  std::vector<std::string> linked;  // related incidents (incident rules' `link`), either way
};

}  // namespace tocsin::alerts
