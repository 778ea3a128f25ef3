#pragma once
// The alert desk's configuration (docs/alerting.md): channels and their
// limits, contacts, message templates, escalation policies, incidents,
// inhibition, resolution, silences and maintenance windows. Read from one
// YAML file and checked like the rules: every error carries a code (A0xx) and
// file:line:column, and a file with any error is never used.
#include <cstdint>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "alerts/model.h"
#include "rules/rule_set.h"

namespace tocsin::alerts {

// An Alertmanager-style matcher: name=value, name!=value, name=~regex,
// name!~regex (regexes are anchored). Names: type, severity, rule, state, a
// label name, or key.<field>.
struct Matcher {
  enum class Op : uint8_t { kEq, kNe, kRe, kNre } op = Op::kEq;
  std::string name;
  std::string value;
  std::shared_ptr<const std::regex> re;
  bool matches(const Alert& a) const;
};
// Parses one matcher; on failure returns false and sets `error`.
bool parse_matcher(std::string_view text, Matcher& out, std::string& error);
bool matches_all(const std::vector<Matcher>& ms, const Alert& a);

struct ChannelConfig {
  std::string name;
  std::string kind;             // sms | webhook | console
  double rate_per_s = 20;       // submissions per second (token bucket, burst = rate)
  int max_in_flight = 8;        // submissions awaiting the gateway's answer
  int max_attempts = 6;         // submissions before a retryable failure becomes final
  int64_t backoff_initial_ms = 1000;
  int64_t backoff_max_ms = 60000;
  int64_t receipt_timeout_ms = 120000;  // sms: accepted without a final receipt by then → no-receipt
  int64_t expire_after_ms = 3600000;    // still not accepted this long after queueing → expired
  bool receipts() const { return kind == "sms"; }
};

struct Contact {
  std::string name;
  std::string phone;  // normalised to +E.164 at load
  std::string language;
};

// Who a policy step notifies. `to` forms:
//   subject                      the alert's first key value (the person the alert is about)
//   key.<field>                  a key value of the alert
//   contact:<name> | group:<name>
//   lookup:<table>.<column>      the subject's row in a reference table; ';'-separated numbers
//   <literal>                    an address as given (a webhook name, a console queue)
struct Target {
  std::string channel;
  std::string to;
  std::string recipient;  // label shown in the timeline; defaults to `to`
  std::string template_name;
  int line = 0, column = 0;  // of `to` in the alerting file, for check_targets()
  std::string snippet;       // that source line
};

struct Step {
  std::vector<Target> notify;
  int64_t wait_ms = 300000;  // until the next step, unless the chain stopped
};

struct Policy {
  std::string name;
  std::vector<Matcher> match;
  std::vector<Step> steps;
  int repeat = 0;                 // extra rounds of all steps
  bool stop_when_reached = true;  // a handset receipt stops the chain; else only acknowledgement does
  int64_t hold_ms = 0;            // pending this long before firing (a resolve meanwhile never notifies)
  int64_t expire_after_ms = 0;    // open and unacknowledged this long → expired (0: never)
  // Raise an alert of this type when nobody was reached within `unreached_after`.
  int64_t unreached_after_ms = 0;
  std::string unreached_type;
  std::string unreached_severity = "critical";
};

// Alerts matching `match` share one incident per value of `group_by`.
struct IncidentRule {
  std::string name;
  std::vector<Matcher> match;
  std::vector<std::string> group_by;  // field names as in matchers
  // `join`: the matching alerts only join the open incident of rule `join`
  // with the same group values (e.g. later complaints of a suspected outage);
  // they never open one, and with none open the next rule is tried.
  std::string join;
  // `link`: an incident of this rule is linked to every other open incident
  // with an alert whose value of one of these fields is the new alert's
  // (e.g. a fault's outage and the building's suspected outage).
  std::vector<std::string> link;
};

// An open `source` alert silences `target` alerts with equal `equal` fields.
struct InhibitRule {
  std::vector<Matcher> source, target;
  std::vector<std::string> equal;
};

// A `source` alert resolves the open `target` alerts with equal fields.
struct ResolveRule {
  std::vector<Matcher> source, target;
  std::vector<std::string> equal;
};

struct Silence {
  std::string id;
  std::vector<Matcher> matchers;
  std::vector<std::string> matcher_text;
  int64_t starts_at_ms = 0;
  int64_t ends_at_ms = 0;
  std::string created_by;
  std::string comment;
  bool active(int64_t now_ms) const { return now_ms >= starts_at_ms && now_ms < ends_at_ms; }
};

// A recurring quiet period: on `days` (0 = Monday), from `start` to `end`
// minutes of the day in UTC+utc_offset (end < start spans midnight).
struct MaintenanceWindow {
  std::string name;
  std::vector<Matcher> matchers;
  std::vector<int> days;
  int start_minute = 0, end_minute = 0;
  int64_t utc_offset_ms = 0;
  bool active(int64_t now_ms) const;
};

struct AlertingConfig {
  std::string file;
  std::vector<ChannelConfig> channels;
  std::vector<Contact> contacts;
  std::map<std::string, std::vector<std::string>> groups;  // name -> contact names
  std::string default_language = "zh";
  // templates[name][language] = text; "default" is used when a target names none.
  std::map<std::string, std::map<std::string, std::string>> templates;
  std::vector<Policy> policies;
  std::vector<IncidentRule> incidents;
  std::vector<InhibitRule> inhibit;
  std::vector<ResolveRule> resolve;
  std::vector<Silence> silences;
  std::vector<MaintenanceWindow> maintenance;
  std::vector<std::string> ack_replies{"1", "收到", "ok", "y", "yes"};  // first word of an SMS reply that acknowledges
  int64_t retention_ms = 7 * 86400000LL;  // closed alerts and their notifications are kept this long

  const ChannelConfig* channel(std::string_view name) const;
  const Contact* contact(std::string_view name) const;
};

// Parses `text` (the content of `file`). Returns every diagnostic; `out` is
// usable only when none is an error. `tables` names the reference tables
// that `lookup:` targets may use (nullptr: not checked).
std::vector<rules::Diagnostic> parse_alerting_config(const std::string& text, const std::string& file,
                                                     const rules::TableCatalog* tables, AlertingConfig& out);
std::vector<rules::Diagnostic> load_alerting_config(const std::string& file, const rules::TableCatalog* tables,
                                                    AlertingConfig& out);

// Warnings (A101) for notify targets that would name nobody for the alerts of
// `rules` their policy matches: `subject`, or a lookup keyed by it, on a rule
// whose alerts have no key; `key.<field>` or `lookup:…@<field>` for a field
// those alerts do not carry (key, context or label). Matchers on fields known
// only at run time (key and context values, state) are taken to match.
std::vector<rules::Diagnostic> check_targets(const AlertingConfig& c, const rules::RuleSet& rules);

}  // namespace tocsin::alerts
