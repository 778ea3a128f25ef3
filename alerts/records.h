#pragma once
// JSON forms of the desk's records: what is persisted in the StateStore (the
// full record, read back after a restart), what goes on the alerts topic for
// every lifecycle change (docs/schemas/alert-lifecycle.schema.json), the
// Alertmanager webhook payload (version 4), and the message templates.
#include <string>
#include <string_view>

#include "alerts/model.h"

namespace tocsin::alerts {

void to_json(const Alert& a, std::string& out);
void to_json(const Notification& n, std::string& out);
void to_json(const Incident& i, std::string& out);
// Return false (with a reason) for text that is not such a record.
bool from_json(std::string_view json, Alert& out, std::string& error);
bool from_json(std::string_view json, Notification& out, std::string& error);
bool from_json(std::string_view json, Incident& out, std::string& error);

// Reads a raised alert as the rule engine writes it (alert.schema.json) into
// the rule-given fields of `out` (id ... raised_json). False with a reason
// for a message that is not an alert.
bool parse_raised_alert(std::string_view json, Alert& out, std::string& error);

// One record of the alerts topic for a lifecycle change: {"record":"lifecycle", ...}.
void lifecycle_json(const Alert& a, const AuditEntry& change, std::string& out);

// Alertmanager webhook payload, version 4, with this one alert.
void alertmanager_payload(const Alert& a, std::string_view receiver, std::string& out);

// Renders a message template: {title} {summary} {type} {severity} {id}
// {rule} {key.<field>} (masked as 138****8000; {key.<field>!full} unmasked)
// {label.<name>} {incident}. Unknown placeholders are left as written.
std::string render_template(std::string_view text, const Alert& a);

}  // namespace tocsin::alerts
