#include "app/replay.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "pipeline/decoder.h"
#include "pipeline/json_writer.h"
#include "rules/engine.h"
#include "rules/rule_set.h"

namespace tocsin::app {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string upper(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return r;
}

uint64_t fnv1a(std::string_view s, uint64_t h = 1469598103934665603ULL) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Day of month of the n-th (1-based) Sunday of a month; n = -1: the last one.
unsigned nth_sunday(int64_t y, unsigned m, int n) {
  const int64_t first = days_from_civil(y, m, 1);
  const int64_t dow = ((first % 7) + 7 + 4) % 7;  // 1970-01-01 was a Thursday (4); 0 = Sunday
  unsigned day = static_cast<unsigned>(1 + (7 - dow) % 7);
  if (n > 0) return day + 7 * static_cast<unsigned>(n - 1);
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  unsigned last = kDays[m - 1] + (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
  while (day + 7 <= last) day += 7;
  return day;
}

// Local New York wall time (as if UTC) -> UTC, with the US Eastern DST rules.
int64_t new_york_to_utc(int64_t local_ms, int64_t y) {
  int64_t dst_start, dst_end;  // local wall times
  if (y >= 2007) {
    dst_start = days_from_civil(y, 3, nth_sunday(y, 3, 2)) * 86400000 + 2 * 3600000;
    dst_end = days_from_civil(y, 11, nth_sunday(y, 11, 1)) * 86400000 + 1 * 3600000;
  } else {
    dst_start = days_from_civil(y, 4, nth_sunday(y, 4, 1)) * 86400000 + 2 * 3600000;
    dst_end = days_from_civil(y, 10, nth_sunday(y, 10, -1)) * 86400000 + 1 * 3600000;
  }
  const bool dst = local_ms >= dst_start && local_ms < dst_end;
  return local_ms + (dst ? 4 : 5) * 3600000LL;
}

bool parse_uint(std::string_view s, int64_t& out) {
  if (s.empty() || s.size() > 9) return false;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

std::string fmt_time(int64_t ms) {
  char buf[32];
  return std::string(format_rfc3339_ms(ms, buf));
}

void add_str(std::string& j, std::string_view name, std::string_view value) {
  if (value.empty()) return;
  if (j.size() > 1) j += ',';
  j += '"';
  j += name;
  j += "\":\"";
  append_json_escaped(j, value);
  j += '"';
}

void add_raw(std::string& j, std::string_view name, std::string_view raw) {
  if (j.size() > 1) j += ',';
  j += '"';
  j += name;
  j += "\":";
  j += raw;
}

bool useful(std::string_view v) {
  const std::string u = upper(trim(v));
  return !u.empty() && u != "UNSPECIFIED" && u != "N/A" && u != "0" && !u.starts_with("0 UNSPECIFIED");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
bool CsvReader::next(std::vector<std::string>& fields) {
  fields.clear();
  raw_.clear();
  std::string field;
  bool in_quotes = false, any = false;
  int c;
  while ((c = in_.get()) != EOF) {
    any = true;
    const char ch = static_cast<char>(c);
    raw_ += ch;
    if (in_quotes) {
      if (ch == '"') {
        if (in_.peek() == '"') {
          field += '"';
          raw_ += static_cast<char>(in_.get());
        } else {
          in_quotes = false;
        }
      } else {
        field += ch;
      }
      continue;
    }
    if (ch == '"') in_quotes = true;
    else if (ch == ',') fields.push_back(std::move(field)), field.clear();
    else if (ch == '\n') {
      if (!raw_.empty()) raw_.pop_back();
      if (!field.empty() && field.back() == '\r') field.pop_back();
      fields.push_back(std::move(field));
      return true;
    } else field += ch;
  }
  if (!any) return false;
  if (!field.empty() && field.back() == '\r') field.pop_back();
  fields.push_back(std::move(field));
  return true;
}

CsvHeader::CsvHeader(const std::vector<std::string>& names) {
  for (size_t i = 0; i < names.size(); ++i) {
    std::string n(trim(names[i]));
    if (i == 0 && n.starts_with("\xEF\xBB\xBF")) n.erase(0, 3);  // UTF-8 BOM
    index.emplace(std::move(n), i);
  }
}

std::string_view CsvHeader::get(const std::vector<std::string>& row, std::string_view column) const {
  const auto it = index.find(column);
  if (it == index.end() || it->second >= row.size()) return {};
  return trim(row[it->second]);
}

std::optional<int64_t> parse_nyc_datetime(std::string_view t) {
  // MM/DD/YYYY HH:MM:SS AM|PM
  t = trim(t);
  if (t.size() < 22 || t[2] != '/' || t[5] != '/' || t[10] != ' ' || t[13] != ':' || t[16] != ':') return std::nullopt;
  int64_t mo, d, y, h, mi, s;
  if (!parse_uint(t.substr(0, 2), mo) || !parse_uint(t.substr(3, 2), d) || !parse_uint(t.substr(6, 4), y) ||
      !parse_uint(t.substr(11, 2), h) || !parse_uint(t.substr(14, 2), mi) || !parse_uint(t.substr(17, 2), s))
    return std::nullopt;
  const std::string ampm = upper(trim(t.substr(19)));
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h < 1 || h > 12 || mi > 59 || s > 60) return std::nullopt;
  if (ampm == "AM") h = h == 12 ? 0 : h;
  else if (ampm == "PM") h = h == 12 ? 12 : h + 12;
  else return std::nullopt;
  const int64_t local = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400000 +
                        ((h * 60 + mi) * 60 + s) * 1000;
  return new_york_to_utc(local, y);
}

std::optional<int64_t> parse_sql_timestamp(std::string_view t) {
  // YYYY-MM-DD HH:MM:SS[.fff][+HH[:MM]|Z]
  t = trim(t);
  if (t.size() < 19) return std::nullopt;
  std::string s(t);
  s[10] = 'T';
  const size_t tz = s.find_first_of("+-Z", 19);
  if (tz == std::string::npos) s += 'Z';
  else if (s[tz] != 'Z' && s.size() - tz == 3) s += ":00";
  int64_t ms = 0;
  if (parse_rfc3339_ms(s, ms) != DecodeError::kOk) return std::nullopt;
  return ms;
}

std::string normalize_address(std::string_view s) {
  std::string r;
  for (char c : trim(s)) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!r.empty() && r.back() != ' ') r += ' ';
    } else {
      r += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
  }
  if (!r.empty() && r.back() == ' ') r.pop_back();
  return r;
}

std::string synthetic_complainant(std::string_view raw_row) {
  // "99" + 10 digits: a valid phone-number field that no real number uses.
  char buf[16];
  std::snprintf(buf, sizeof buf, "99%010llu", static_cast<unsigned long long>(fnv1a(raw_row) % 10000000000ULL));
  return buf;
}

std::optional<ReplayEvent> map_nyc311_row(const CsvHeader& h, const std::vector<std::string>& row, std::string_view raw,
                                          uint64_t jitter_seed, bool jitter, MapStats& stats) {
  ++stats.rows;
  const std::string type = upper(h.get(row, "Complaint Type"));
  if (type.find("HEAT") == std::string::npos) {
    ++stats.skipped;
    return std::nullopt;
  }
  const std::string_view key = h.get(row, "Unique Key");
  const std::string address = normalize_address(h.get(row, "Incident Address"));
  const auto t = parse_nyc_datetime(h.get(row, "Created Date"));
  if (key.empty() || address.empty() || !t) {
    ++stats.invalid;
    return std::nullopt;
  }
  ReplayEvent ev;
  ev.stream = Stream::kComplaints;
  ev.time_ms = *t;
  // HPD rows of 2013 carry only the date: spread them over the day, the same way for every
  // run with the same seed (the offset depends on the seed and the ticket only).
  const std::string_view created = h.get(row, "Created Date");
  if (jitter && created.size() >= 22 && created.substr(11, 8) == "12:00:00" && upper(created.substr(20)) == "AM") {
    ev.time_ms += static_cast<int64_t>(splitmix64(jitter_seed ^ fnv1a(key)) % 86400000ULL);
    ++stats.jittered;
  }
  const std::string borough = normalize_address(h.get(row, "Borough"));
  std::string building = address;
  if (useful(borough)) building += ", " + borough;
  if (const std::string_view bbl = h.get(row, "BBL"); useful(bbl)) building += " [BBL " + std::string(bbl) + "]";
  std::string& j = ev.json;
  j = "{";
  add_str(j, "ticket_id", key);
  add_str(j, "time", fmt_time(ev.time_ms));
  add_str(j, "status", "received");
  add_str(j, "category", "heating.no_heat");
  add_str(j, "urgency", "utility");
  add_str(j, "complainant", synthetic_complainant(raw));
  if (useful(borough)) add_str(j, "district", borough);
  if (const std::string street = normalize_address(h.get(row, "Street Name")); useful(street)) add_str(j, "street", street);
  if (const std::string cb = normalize_address(h.get(row, "Community Board")); useful(cb)) add_str(j, "community", cb);
  add_str(j, "building", building);
  std::string text(h.get(row, "Complaint Type"));
  if (const std::string_view d = h.get(row, "Descriptor"); !d.empty()) text += ": " + std::string(d);
  add_str(j, "text", text);
  j += '}';
  ++stats.mapped;
  return ev;
}

std::optional<ReplayEvent> map_heatseek_row(const CsvHeader& h, const std::vector<std::string>& row, MapStats& stats) {
  ++stats.rows;
  const std::string_view id = h.get(row, "cartodb_id");
  const std::string_view sensor = h.get(row, "user_id");
  const std::string temp(h.get(row, "temp"));
  const auto t = parse_sql_timestamp(h.get(row, "date_of_sensor"));
  char* end = nullptr;
  const double f = temp.empty() ? NAN : std::strtod(temp.c_str(), &end);
  if (id.empty() || sensor.empty() || !t || std::isnan(f) || (end && *end != '\0') || f < -40 || f > 150) {
    ++stats.invalid;
    return std::nullopt;
  }
  ReplayEvent ev;
  ev.stream = Stream::kFaults;
  ev.time_ms = *t;
  const std::string asset = "heatseek-" + std::string(sensor);
  const double c = std::round((f - 32.0) * 5.0 / 9.0 * 10.0) / 10.0;
  char cbuf[32];
  std::snprintf(cbuf, sizeof cbuf, "%.1f", c);
  std::string& j = ev.json;
  j = "{";
  add_str(j, "fault_id", "heatseek-" + std::string(id));
  add_str(j, "time", fmt_time(ev.time_ms));
  add_str(j, "kind", "telemetry");
  add_str(j, "network_id", asset);
  add_str(j, "asset_type", "building");
  add_str(j, "asset_id", asset);
  add_str(j, "building", asset);
  if (const std::string_view addr = h.get(row, "full_addy"); !addr.empty())
    add_str(j, "street", normalize_address(addr.substr(0, std::min(addr.find(','), addr.size()))));
  add_raw(j, "indoor_temp_c", cbuf);
  j += '}';
  ++stats.mapped;
  return ev;
}

// ---------------------------------------------------------------------------------------------
bool read_replay_events(const ReplayOptions& o, std::vector<ReplayEvent>& events, MapStats& stats, std::string& error) {
  if (o.mapping != "nyc311" && o.mapping != "heatseek" && o.mapping != "jsonl") {
    error = "unknown mapping '" + o.mapping + "' (nyc311, heatseek or jsonl)";
    return false;
  }
  for (const auto& path : o.inputs) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      error = path + ": cannot be read";
      return false;
    }
    if (o.mapping == "jsonl") {
      const std::string name = o.stream.empty() ? std::filesystem::path(path).stem().string() : o.stream;
      const auto stream = stream_from_string(name);
      if (!stream) {
        error = path + ": no stream (name the file calls/faults/complaints.jsonl or pass --stream)";
        return false;
      }
      Decoder probe(DecodeLimits{.max_event_bytes = 1 << 20, .min_time_ms = INT64_MIN / 4, .max_future_skew_ms = INT64_MAX / 4});
      Event e;
      for (std::string line; std::getline(in, line);) {
        if (trim(line).empty()) continue;
        ++stats.rows;
        ReplayEvent ev{*stream, 0, line};
        if (probe.decode(*stream, line, 0, e).ok()) ev.time_ms = e.time_ms;  // the real check comes later
        events.push_back(std::move(ev));
        ++stats.mapped;
      }
      continue;
    }
    CsvReader csv(in);
    std::vector<std::string> row;
    if (!csv.next(row)) continue;
    const CsvHeader header(row);
    const char* required = o.mapping == "nyc311" ? "Complaint Type" : "temp";
    if (!header.index.contains(required)) {
      error = path + ": no column '" + required + "': not a " + o.mapping + " file";
      return false;
    }
    while (csv.next(row)) {
      if (row.size() == 1 && trim(row[0]).empty()) continue;
      auto ev = o.mapping == "nyc311" ? map_nyc311_row(header, row, csv.raw(), o.jitter_seed, o.jitter, stats)
                                      : map_heatseek_row(header, row, stats);
      if (ev) events.push_back(std::move(*ev));
    }
  }
  std::stable_sort(events.begin(), events.end(), [](const ReplayEvent& a, const ReplayEvent& b) { return a.time_ms < b.time_ms; });
  return true;
}

namespace {

class SummarySink final : public rules::SignalSink {
 public:
  SummarySink(const ReplayOptions& o, ReplaySummary& s, std::ostream& log) : o_(o), s_(s), log_(log) {}
  void on_signal(const rules::Signal& sig) override {
    ++s_.alerts;
    ++s_.alerts_by_rule[sig.rule->id];
    if (!o_.inferred_type_prefix.empty() && sig.rule->alert_type.starts_with(o_.inferred_type_prefix) && sig.event) {
      ++s_.inferred_alerts;
      const StreamSchema& schema = schema_of(sig.event->stream);
      for (auto [field, set] : {std::pair{"building", &s_.inferred_buildings}, std::pair{"street", &s_.inferred_streets}}) {
        const int slot = schema.slot_of(field);
        if (slot >= 0 && sig.event->at(slot).present) set->emplace(sig.event->at(slot).s);
      }
    }
    if (o_.print_alerts)
      log_ << "alert " << fmt_time(sig.window_end_ms) << " " << sig.rule->id << " [" << sig.severity << "] " << sig.title << "\n";
  }

 private:
  const ReplayOptions& o_;
  ReplaySummary& s_;
  std::ostream& log_;
};

}  // namespace

bool run_replay(const ReplayOptions& o, ReplaySummary& s, std::ostream& log, std::string& error) {
  s = ReplaySummary{};
  const auto loaded = rules::load_rule_files(o.rule_files);
  if (!loaded.ok()) {
    for (const auto& d : loaded.diagnostics) error += rules::format_text(d) + "\n";
    if (error.empty()) error = "the rules cannot be loaded";
    return false;
  }
  for (const auto& r : loaded.rules->rules) s.alerts_by_rule.emplace(r.id, 0);
  std::vector<ReplayEvent> events;
  if (!read_replay_events(o, events, s.map, error)) return false;
  if (s.map.jittered > 0)
    log << "replay: " << s.map.jittered << " rows carry only the date (Created Date truncated to midnight, as in the 2013 "
           "HPD rows): spread over the day with seeded jitter, --jitter-seed " << o.jitter_seed << "\n";

  SummarySink sink(o, s, log);
  rules::Engine engine(loaded.rules, sink, nullptr, nullptr, rules::EngineOptions{.timers_follow_event_time = true});
  // Recorded data may be years old: accept any time after 2000 and never treat it as "future".
  Decoder decoder(DecodeLimits{.max_event_bytes = 1 << 20});
  Event e;
  std::array<int64_t, kStreamCount> offsets{};
  int64_t newest = INT64_MIN;
  for (const ReplayEvent& ev : events) {
    const int64_t now = std::max(newest, ev.time_ms) + 3600 * 1000;
    const DecodeResult r = decoder.decode(ev.stream, ev.json, now, e);
    if (!r.ok()) {
      if (s.rejected++ < 5)
        log << "replay: rejected (" << reason_code(r.error) << ": " << r.detail << "): " << ev.json << "\n";
      continue;
    }
    const size_t si = static_cast<size_t>(ev.stream);
    e.source = SourcePosition{to_string(ev.stream), 0, offsets[si]++};
    engine.on_event(e);
    newest = std::max(newest, e.time_ms);
    engine.on_tick(newest);
    if (s.events_sent == 0) s.first_time_ms = e.time_ms;
    s.last_time_ms = std::max(s.last_time_ms, e.time_ms);
    ++s.events_sent;
    ++s.by_stream[si];
    if (o.progress_every > 0 && s.events_sent % o.progress_every == 0)
      log << "replay: " << s.events_sent << "/" << events.size() << " events sent, event time " << fmt_time(e.time_ms)
          << ", " << s.alerts << " alerts\n";
  }
  log << "replay: " << s.events_sent << "/" << events.size() << " events sent"
      << (s.events_sent ? ", event time up to " + fmt_time(s.last_time_ms) : std::string()) << ", " << s.alerts
      << " alerts\n";
  return true;
}

void print_replay_summary(const ReplayOptions& o, const ReplaySummary& s, std::ostream& out) {
  out << "replay summary (mapping " << o.mapping << ", timers follow event time)\n";
  out << "  rows read            " << s.map.rows << " (" << s.map.mapped << " mapped, " << s.map.skipped
      << " not taken by the mapping, " << s.map.invalid << " unreadable)\n";
  if (o.mapping == "nyc311") {
    out << "  complainant          synthetic: a hash of the row (311 data has no phone numbers, so every row counts as "
           "a distinct complainant)\n";
    if (s.map.jittered > 0)
      out << "  jitter               " << s.map.jittered
          << " rows had Created Date truncated to midnight; spread over the day with seeded jitter (--jitter-seed "
          << o.jitter_seed << ")\n";
  }
  out << "  events sent          " << s.events_sent << " (calls " << s.by_stream[0] << ", faults " << s.by_stream[1]
      << ", complaints " << s.by_stream[2] << "), rejected by the decoder " << s.rejected << "\n";
  if (s.events_sent) out << "  event time           " << fmt_time(s.first_time_ms) << " .. " << fmt_time(s.last_time_ms) << "\n";
  out << "  alerts               " << s.alerts << "\n";
  out << "alerts by rule\n";
  size_t w = 4;
  for (const auto& [id, n] : s.alerts_by_rule) w = std::max(w, id.size());
  for (const auto& [id, n] : s.alerts_by_rule) out << "  " << std::left << std::setw(static_cast<int>(w)) << id << "  " << n << "\n";
  out << std::right;
  out << "inferred outages (alert types " << o.inferred_type_prefix << "*): " << s.inferred_alerts << " alerts, "
      << s.inferred_buildings.size() << " distinct buildings, " << s.inferred_streets.size() << " distinct streets\n";
}

int replay_main(const ReplayOptions& o, std::ostream& out, std::ostream& err) {
  ReplaySummary s;
  std::string error;
  if (!run_replay(o, s, err, error)) {
    err << error << (error.ends_with('\n') ? "" : "\n") << "tocsin replay: nothing was replayed\n";
    return 2;
  }
  print_replay_summary(o, s, out);
  return 0;
}

}  // namespace tocsin::app
