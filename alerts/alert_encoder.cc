#include "alerts/alert_encoder.h"

#include "pipeline/json_writer.h"

namespace tocsin::alerts {

std::string alert_id(std::string_view rule_id, std::span<const std::string_view> key,
                     int64_t window_end_ms) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;  // separator, so ("ab","c") != ("a","bc")
  };
  mix(rule_id);
  for (auto k : key) mix(k);
  mix(std::to_string(window_end_ms));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) id[static_cast<size_t>(i)] = kHex[h & 15];
  return id;
}

void AlertEncoder::on_signal(const rules::Signal& s) {
  const rules::Rule& r = *s.rule;
  const Event& e = *s.event;
  const StreamSchema& schema = schema_of(r.stream);
  // A windowed alert is one per (rule, key, window); a per-event alert is one per event.
  const std::string_view event_id[] = {e.id()};
  const std::string id = alert_id(r.id, r.windowed ? s.key : std::span<const std::string_view>(event_id), s.window_end_ms);
  json_.clear();
  JsonWriter w(json_);
  w.begin_object()
      .key("id").str(id)
      .key("rule").str(r.id)
      .key("rule_set_version").str(s.rule_set->version)
      .key("type").str(r.alert_type)
      .key("severity").str(r.severity)
      .key("title").str(s.title)
      .key("stream").str(schema.name);
  w.key("key").begin_object();
  for (size_t g = 0; g < s.key.size(); ++g)
    w.key(schema.fields[static_cast<size_t>(r.group_by[g])].name).str(s.key[g]);
  w.end_object();
  w.key("window").begin_object()
      .key("start").time(s.window_start_ms)
      .key("end").time(s.window_end_ms)
      .key("size_ms").num(r.window_ms)
      .end_object();
  w.key("evidence").begin_object().key("count").num(static_cast<int64_t>(s.count));
  for (size_t a = 0; a < s.aggregates.size(); ++a)
    if (r.aggregates[a].kind == rules::AggregateKind::kCountDistinct) {
      w.key("distinct").num(static_cast<int64_t>(s.aggregates[a]));
      break;
    }
  if (!s.aggregates.empty()) {
    w.key("aggregates").begin_object();
    for (size_t a = 0; a < s.aggregates.size(); ++a) w.key(r.aggregates[a].name).num(s.aggregates[a]);
    w.end_object();
  }
  w.key("first_event_id").str(s.first_event_id)
      .key("first_event_time").time(s.first_event_time_ms)
      .key("last_event_id").str(e.id())
      .key("last_event_time").time(e.time_ms)
      .end_object();
  w.key("source").begin_object()
      .key("topic").str(e.source.topic)
      .key("partition").num(static_cast<int64_t>(e.source.partition))
      .key("offset").num(e.source.offset)
      .end_object();
  w.key("emitted_at").time(clock_.now_ms());
  w.end_object();
  out_.alert(id, json_);
}

}  // namespace tocsin::alerts
