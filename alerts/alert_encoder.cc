#include "alerts/alert_encoder.h"

#include <algorithm>
#include <cstdio>
#include <ostream>

#include "pipeline/json_writer.h"

namespace tocsin::alerts {

std::ostream& operator<<(std::ostream& os, const AlertId& id) { return os << id.view(); }

AlertId alert_id(std::string_view rule_id, std::span<const std::string_view> key, int64_t window_end_ms) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;  // separator, so ("ab","c") != ("a","bc")
  };
  mix(rule_id);
  for (auto k : key) mix(k);
  char end[24];
  mix(std::string_view(end, static_cast<size_t>(std::snprintf(end, sizeof end, "%lld", static_cast<long long>(window_end_ms)))));
  static constexpr char kHex[] = "0123456789abcdef";
  AlertId id;
  for (int i = 15; i >= 0; --i, h >>= 4) id.hex[static_cast<size_t>(i)] = kHex[h & 15];
  return id;
}

void AlertEncoder::on_signal(const rules::Signal& s) {
  const rules::Rule& r = *s.rule;
  const Event& e = *s.event;
  // A per-event alert is one per event; every other kind one per (rule, key, instance).
  const std::string_view event_id[] = {e.id()};
  const bool per_event = r.kind == rules::RuleKind::kPerEvent;
  const AlertId id = alert_id(r.id, per_event ? std::span<const std::string_view>(event_id) : s.key, s.instance_ms);
  const StreamSchema& key_schema = schema_of(r.alert_match().stream);
  const std::vector<int>& key_slots = r.alert_match().key;
  json_.clear();
  JsonWriter w(json_);
  w.begin_object()
      .key("id").str(id.view());
  // A rule saying an alert it raised is over (an absence deadline met late, or cancelled).
  if (s.resolved) w.key("status").str("resolved");
  w.key("rule").str(r.id)
      .key("rule_set_version").str(s.rule_set->version)
      .key("type").str(r.alert_type)
      .key("severity").str(s.severity)
      .key("title").str(s.title)
      .key("stream").str(schema_of(e.stream).name);
  if (!s.summary.empty()) w.key("summary").str(s.summary);
  if (!r.labels.empty() || !s.deadline_labels.empty()) {
    // The rule's labels, then the deadline's (a deadline's value wins for the same name).
    w.key("labels").begin_object();
    for (const auto& label : r.labels) {
      const bool overridden = std::any_of(s.deadline_labels.begin(), s.deadline_labels.end(),
                                          [&](const auto& dl) { return dl.first == label.first; });
      if (!overridden) w.key(label.first).str(label.second);
    }
    for (const auto& [k, v] : s.deadline_labels) w.key(k).str(v);
    w.end_object();
  }
  w.key("key").begin_object();
  for (size_t g = 0; g < s.key.size() && g < key_slots.size(); ++g)
    w.key(key_schema.fields[static_cast<size_t>(key_slots[g])].name).str(s.key[g]);
  w.end_object();
  // Where it happened, for consoles and incident grouping (never a phone number).
  if (const uint32_t ctx = context_slots(e.stream)) {
    const StreamSchema& schema = schema_of(e.stream);
    bool open = false;
    for (int slot = 0; slot < kMaxSlots; ++slot) {
      if (!(ctx >> slot & 1) || !e.at(slot).present) continue;
      if (!open) w.key("context").begin_object(), open = true;
      const Value& v = e.at(slot);
      w.key(schema.fields[static_cast<size_t>(slot)].name);
      if (v.type == FieldType::kInt) w.num(v.i);
      else w.str(v.s);
    }
    if (open) w.end_object();
  }
  w.key("window").begin_object()
      .key("start").time(s.window_start_ms)
      .key("end").time(s.window_end_ms)
      .key("size_ms").num(s.window_end_ms - s.window_start_ms)
      .end_object();
  w.key("evidence").begin_object().key("count").num(static_cast<int64_t>(s.count));
  for (size_t a = 0; a < r.aggregates.size() && a < s.values.size(); ++a)
    if (r.aggregates[a].kind == rules::AggregateKind::kCountDistinct ||
        r.aggregates[a].kind == rules::AggregateKind::kApproxDistinct) {
      w.key("distinct").num(static_cast<int64_t>(s.values[a]));
      break;
    }
  if (!r.aggregates.empty() && s.values.size() >= r.aggregates.size()) {
    w.key("aggregates").begin_object();
    for (size_t a = 0; a < r.aggregates.size(); ++a) w.key(r.aggregates[a].name).num(s.values[a]);
    w.end_object();
  }
  if (!s.deadline.empty()) w.key("deadline").str(s.deadline);
  w.key("first_event_id").str(s.first_event_id)
      .key("first_event_time").time(s.first_event_time_ms);
  if (r.kind != rules::RuleKind::kAbsence) w.key("last_event_id").str(e.id()).key("last_event_time").time(e.time_ms);
  w.end_object();
  if (r.score && s.values.size() == r.value_count()) {
    const auto& features = r.score->features;
    const size_t base = r.aggregates.size();
    w.key("score").begin_object().key("value").num(s.values[base + features.size()]).key("level").str(s.level);
    w.key("labels").begin_array();
    for (size_t f = 0; f < features.size(); ++f)
      if (!features[f].label.empty() && s.values[base + f] > 0) w.str(features[f].label);
    w.end_array();
    w.key("features").begin_array();
    for (size_t f = 0; f < features.size(); ++f)
      w.begin_object()
          .key("name").str(features[f].name)
          .key("value").num(s.values[base + f])
          .key("weight").num(features[f].weight)
          .key("contribution").num(s.values[base + f] * features[f].weight)
          .end_object();
    w.end_array().end_object();
  }
  if (e.source.partition >= 0) {
    w.key("source").begin_object()
        .key("topic").str(e.source.topic)
        .key("partition").num(static_cast<int64_t>(e.source.partition))
        .key("offset").num(e.source.offset)
        .end_object();
  }
  w.key("emitted_at").time(clock_.now_ms());
  w.end_object();
  out_.alert(id.view(), json_);
}

}  // namespace tocsin::alerts
