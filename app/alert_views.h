#pragma once
// JSON views of the alert desk for the console and the alerts API
// (docs/console.md, docs/openapi.yaml), and the console's KPIs.
//
// `full`: the caller may see phone numbers (admins). Otherwise every phone
// number in the view is masked (pipeline/phone_mask.h, value-based): the
// raised alert (key, labels, context, evidence, score), titles and summaries,
// labels, assignees, notification recipients, addresses and texts, audit
// entries, incident groups and titles, silences. Values that are not numbers
// (building ids, ticket ids, grid cells) are shown as they are.
//
// Call on the desk's thread (they read the desk).
#include <cstdint>
#include <string>
#include <vector>

#include "rules/clock_board.h"

namespace tocsin::alerts {
class Desk;
struct Alert;
struct Notification;
}  // namespace tocsin::alerts

namespace tocsin::app {

// One alert's summary: the list row and the live "alert" event.
std::string alert_summary_json(const alerts::Desk& desk, const alerts::Alert& a, bool full);
// GET /api/v1/alerts: open (or all) alerts, newest first, at most `limit`.
std::string alert_list_json(const alerts::Desk& desk, bool all, bool full, size_t limit = 1000);
// GET /api/v1/alerts/<id>: the summary, the raised alert, the audit trail,
// notifications with their timelines, linked alerts.
std::string alert_detail_json(const alerts::Desk& desk, const alerts::Alert& a, bool full);
// The live "notification" event.
std::string notification_event_json(const alerts::Notification& n, const std::string& action, bool full);
// GET /api/v1/incidents.
std::string incidents_json(const alerts::Desk& desk, bool full);
// GET /api/v1/silences.
std::string silences_json(const alerts::Desk& desk, int64_t now_ms, bool full);

// GET /api/v1/kpis. "Today" starts at local midnight, `utc_offset_ms` east of
// UTC. reach_rate: today's must-reach alerts (Desk::must_reach: stop_when:
// reached) reached on a handset, over today's must-reach alerts; null with none.
std::string kpis_json(const alerts::Desk& desk, int64_t now_ms, int64_t utc_offset_ms);

// The SLA board's running clocks (rules::ClockBoard::read), soonest first:
// {as_of, published_at, clocks: [{rule, type, key, deadline, severity, labels,
// title, started_at, due_at}]}. Not desk state: call on any thread.
std::string sla_clocks_json(const std::vector<rules::ClockEntry>& clocks, int64_t now_ms, int64_t published_ms, bool full);

}  // namespace tocsin::app
