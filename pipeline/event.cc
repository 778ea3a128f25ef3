#include "pipeline/event.h"

#include <array>
#include <string>

namespace tocsin {
namespace {

using FT = FieldType;

constexpr FieldDef kCallFields[] = {
    {"call_id", FT::kString, true, "unique id of the call detail record"},
    {"start_time", FT::kTime, true, "when the call started (event time)"},
    {"caller", FT::kString, true, "calling number as routed by the network"},
    {"callee", FT::kString, true, "called number"},
    {"duration_s", FT::kInt, true, "talk time in seconds (0 when not answered)"},
    {"answered", FT::kBool, true, "whether the callee answered"},
    {"direction", FT::kString, false, "outgoing | incoming, seen from the subscriber"},
    {"caller_class", FT::kString, false,
     "mobile | fixed | bank_95 | police_96110 | virtual_170 | international"},
    {"callee_class", FT::kString, false, "same classes as caller_class"},
    {"display_number", FT::kString, false, "caller id presented to the callee"},
    {"origin", FT::kString, false, "domestic | international: where the call entered the network"},
    {"imei_hash", FT::kString, false, "hash of the calling device's IMEI"},
    {"cell_id", FT::kString, false, "serving cell of the caller"},
    {"city", FT::kString, false, "city of the serving cell"},
    {"sim_activated_at", FT::kTime, false, "when the caller's SIM was activated"},
};

constexpr FieldDef kFaultFields[] = {
    {"fault_id", FT::kString, true, "id of the fault (or telemetry reading)"},
    {"time", FT::kTime, true, "when it happened (event time)"},
    {"kind", FT::kString, true, "opened | updated | restored | planned | telemetry"},
    {"network_id", FT::kString, true, "heating network (partition key)"},
    {"asset_type", FT::kString, false, "main_pipe | branch | substation | building"},
    {"asset_id", FT::kString, false, "id of the asset (e.g. heat station)"},
    {"district", FT::kString, false, "district"},
    {"street", FT::kString, false, "street office"},
    {"community", FT::kString, false, "community"},
    {"grid", FT::kString, false, "grid cell"},
    {"building", FT::kString, false, "building id"},
    {"households", FT::kInt, false, "households affected"},
    {"cause", FT::kString, false, "cause as reported"},
    {"severity", FT::kString, false, "minor | major | critical"},
    {"supply_temp_c", FT::kDouble, false, "supply temperature, degrees Celsius"},
    {"return_temp_c", FT::kDouble, false, "return temperature, degrees Celsius"},
    {"pressure_bar", FT::kDouble, false, "pressure, bar"},
    {"indoor_temp_c", FT::kDouble, false, "indoor temperature, degrees Celsius"},
    {"estimated_restore_at", FT::kTime, false, "estimated restoration time"},
};

constexpr FieldDef kComplaintFields[] = {
    {"ticket_id", FT::kString, true, "hotline ticket id (partition key)"},
    {"time", FT::kTime, true, "when the lifecycle step happened (event time)"},
    {"status", FT::kString, true, "lifecycle step, see kinds"},
    {"category", FT::kString, false, "dotted category, e.g. heating.no_heat"},
    {"urgency", FT::kString, false, "emergency | utility | general | complex"},
    {"complainant", FT::kString, false, "complainant's phone number"},
    {"district", FT::kString, false, "district"},
    {"street", FT::kString, false, "street office"},
    {"community", FT::kString, false, "community"},
    {"grid", FT::kString, false, "grid cell"},
    {"building", FT::kString, false, "building id"},
    {"assignee_level", FT::kString, false, "community | street | district | city | utility"},
    {"assignee", FT::kString, false, "unit the ticket is assigned to"},
    {"rating", FT::kString, false, "satisfied | unsatisfied (status rated)"},
    {"deadline_at", FT::kTime, false, "new deadline (status extended)"},
    {"text", FT::kString, false, "free text of the complaint"},
};

// Per-number summary features over a period (the columns of the Sichuan fraud data,
// docs/packs/fraud.md): one event per number and period, keyed by the number. Counts
// are ints; a count the number has none of is sent as 0 (the fitted score reads a
// missing value as "no contribution", the model as 0).
constexpr FieldDef kProfileFields[] = {
    {"profile_id", FT::kString, true, "id of the profile record"},
    {"time", FT::kTime, true, "when the profile was computed: the end of the period it summarises (event time)"},
    {"number", FT::kString, true, "the subscriber's number (partition key); digits, or a pseudonym where the source hashes numbers"},
    {"opposite_count", FT::kInt, false, "calls placed and received"},
    {"opposite_unique", FT::kInt, false, "distinct numbers called or calling (fan-out)"},
    {"phone2opposite_mean", FT::kDouble, false, "calls per counterpart (low: strangers, not contacts)"},
    {"voc_calltype1", FT::kDouble, false, "share of calls placed by the number, 0..1 (high: almost never receives calls)"},
    {"imeis", FT::kInt, false, "devices (IMEIs) used with the number"},
    {"call_dur_mean", FT::kDouble, false, "mean call duration, s"},
    {"call_dur_median", FT::kDouble, false, "median call duration, s"},
    {"call_dur_max", FT::kInt, false, "longest call, s"},
    {"city_name_nunique", FT::kInt, false, "cities the number called from"},
    {"county_name_nunique", FT::kInt, false, "counties the number called from (1: static, as a SIM box)"},
    {"voc_day_nunique", FT::kInt, false, "days of the month with calls, 0..31"},
    {"voc_hour_nunique", FT::kInt, false, "hours of the day with calls, 0..24"},
    {"sms_count", FT::kInt, false, "SMS messages sent and received"},
    {"sms_nunique", FT::kInt, false, "distinct SMS counterparts"},
    {"busi_count", FT::kInt, false, "app-usage records (mobile data sessions)"},
    {"flow_sum", FT::kDouble, false, "mobile data over the period, MB"},
    {"month_ids", FT::kInt, false, "months with records (low: a new SIM)"},
    {"arpu_mean", FT::kDouble, false, "mean monthly revenue from the number, yuan"},
};

constexpr std::string_view kFaultKinds[] = {"opened", "updated", "restored", "planned",
                                            "telemetry"};
constexpr std::string_view kComplaintKinds[] = {
    "received", "dispatched", "signed",   "contacted", "resolved", "followed_up",
    "rated",    "closed",     "returned", "extended",  "reopened", "escalated"};

static_assert(std::size(kCallFields) <= kMaxSlots);
static_assert(std::size(kFaultFields) <= kMaxSlots);
static_assert(std::size(kComplaintFields) <= kMaxSlots);
static_assert(std::size(kProfileFields) <= kMaxSlots);

constexpr StreamSchema kSchemas[kStreamCount] = {
    {Stream::kCalls, "calls", kCallFields, 1, 0, -1, {}, 2},
    {Stream::kFaults, "faults", kFaultFields, 1, 0, 2, kFaultKinds, 3},
    {Stream::kComplaints, "complaints", kComplaintFields, 1, 0, 2, kComplaintKinds, 0},
    {Stream::kProfiles, "profiles", kProfileFields, 1, 0, -1, {}, 2},
};
static_assert([] {
  for (const StreamSchema& s : kSchemas)
    if (s.id_slot != static_cast<int>(kIdSlot)) return false;
  return true;
}(), "Event::id() reads kIdSlot");

}  // namespace

std::string_view to_string(Stream s) { return kSchemas[static_cast<int>(s)].name; }

std::string_view to_string(FieldType t) {
  switch (t) {
    case FT::kString: return "string";
    case FT::kInt: return "int";
    case FT::kDouble: return "double";
    case FT::kBool: return "bool";
    case FT::kTime: return "time";
  }
  return "?";
}

std::optional<Stream> stream_from_string(std::string_view name) {
  for (const auto& s : kSchemas)
    if (s.name == name) return s.stream;
  return std::nullopt;
}

std::string_view stream_names() {
  static const std::string names = [] {
    std::string out;
    for (int i = 0; i < kStreamCount; ++i)
      out += std::string(i == 0 ? "" : i + 1 == kStreamCount ? " or " : ", ") + std::string(kSchemas[i].name);
    return out;
  }();
  return names;
}

const StreamSchema& schema_of(Stream s) { return kSchemas[static_cast<int>(s)]; }

uint32_t context_slots(Stream s) {
  static const auto masks = [] {
    static constexpr std::string_view kContext[] = {"district", "street", "community", "grid", "building",
                                                    "network_id", "asset_id", "households", "category"};
    std::array<uint32_t, kStreamCount> m{};
    for (int i = 0; i < kStreamCount; ++i) {
      if (static_cast<Stream>(i) == Stream::kCalls) continue;
      for (std::string_view f : kContext)
        if (const int slot = kSchemas[i].slot_of(f); slot >= 0) m[static_cast<size_t>(i)] |= 1u << slot;
    }
    return m;
  }();
  return masks[static_cast<size_t>(s)];
}

int StreamSchema::slot_of(std::string_view field) const {
  for (size_t i = 0; i < fields.size(); ++i)
    if (fields[i].name == field) return static_cast<int>(i);
  return -1;
}

int StreamSchema::kind_index(std::string_view kind) const {
  for (size_t i = 0; i < kinds.size(); ++i)
    if (kinds[i] == kind) return static_cast<int>(i);
  return -1;
}

}  // namespace tocsin
