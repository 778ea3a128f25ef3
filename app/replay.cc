#include "app/replay.h"
#include "app/replay_sichuan.h"
#include "app/yaml_reader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

#include "connectors/kafka_io.h"
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
  record_line_ = next_line_;
  std::string field;
  bool in_quotes = false, any = false;
  int c;
  while ((c = in_.get()) != EOF) {
    any = true;
    const char ch = static_cast<char>(c);
    raw_ += ch;
    if (ch == '\n') ++next_line_;
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
    else if (ch == delimiter_) fields.push_back(std::move(field)), field.clear();
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
  ev.key = key;
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
  ev.key = asset;
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
// Time formats

namespace {

constexpr unsigned kMonthDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
constexpr const char* kPatternHelp = "%Y %y %m %b %d %H %I %M %S %f %p %z %%";

bool leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

// Reads min..max digits at t[i]; advances i.
bool read_digits(std::string_view t, size_t& i, int min, int max, int64_t& out) {
  int n = 0;
  int64_t v = 0;
  while (n < max && i < t.size() && t[i] >= '0' && t[i] <= '9') v = v * 10 + (t[i++] - '0'), ++n;
  out = v;
  return n >= min;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// "+08:00", "-0500", "+08", "Z" at t[i] -> offset ms east of UTC; advances i.
bool read_offset(std::string_view t, size_t& i, int64_t& out) {
  if (i < t.size() && (t[i] == 'Z' || t[i] == 'z')) {
    ++i;
    out = 0;
    return true;
  }
  if (i >= t.size() || (t[i] != '+' && t[i] != '-')) return false;
  const int64_t sign = t[i++] == '-' ? -1 : 1;
  int64_t h, m = 0;
  if (!read_digits(t, i, 2, 2, h)) return false;
  if (i < t.size() && t[i] == ':') ++i;
  if (i < t.size() && t[i] >= '0' && t[i] <= '9' && !read_digits(t, i, 2, 2, m)) return false;
  if (h > 23 || m > 59) return false;
  out = sign * (h * 60 + m) * 60000;
  return true;
}

std::optional<int64_t> parse_pattern(const TimeFormat& f, std::string_view t) {
  static constexpr std::string_view kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                                 "jul", "aug", "sep", "oct", "nov", "dec"};
  int64_t year = -1, month = -1, day = -1, hour = 0, minute = 0, second = 0, ms = 0, offset = 0;
  int pm = -1;  // -1: no %p, 0 AM, 1 PM
  bool has_offset = false;
  const std::string_view p = f.pattern;
  size_t i = 0;
  for (size_t k = 0; k < p.size(); ++k) {
    const char c = p[k];
    if (c == ' ') {
      if (i >= t.size() || !std::isspace(static_cast<unsigned char>(t[i]))) return std::nullopt;
      while (i < t.size() && std::isspace(static_cast<unsigned char>(t[i]))) ++i;
      continue;
    }
    if (c != '%' || k + 1 >= p.size()) {
      if (i >= t.size() || t[i] != c) return std::nullopt;
      ++i;
      continue;
    }
    bool ok = true;
    switch (p[++k]) {
      case 'Y': ok = read_digits(t, i, 4, 4, year); break;
      case 'y':
        ok = read_digits(t, i, 2, 2, year);
        year += year < 69 ? 2000 : 1900;  // POSIX: 69..99 -> 19xx
        break;
      case 'm': ok = read_digits(t, i, 1, 2, month); break;
      case 'd': ok = read_digits(t, i, 1, 2, day); break;
      case 'H': case 'I': ok = read_digits(t, i, 1, 2, hour); break;
      case 'M': ok = read_digits(t, i, 1, 2, minute); break;
      case 'S': ok = read_digits(t, i, 1, 2, second); break;
      case 'f': {
        const size_t from = i;
        int64_t v;
        ok = read_digits(t, i, 1, 9, v);
        for (size_t n = i - from; n < 3; ++n) v *= 10;
        for (size_t n = i - from; n > 3; --n) v /= 10;
        ms = v;
        break;
      }
      case 'p':
        ok = i + 2 <= t.size() && (iequals(t.substr(i, 2), "AM") || iequals(t.substr(i, 2), "PM"));
        if (ok) pm = iequals(t.substr(i, 2), "PM"), i += 2;
        break;
      case 'b':
        ok = false;
        for (int m = 0; m < 12 && !ok && i + 3 <= t.size(); ++m)
          if (iequals(t.substr(i, 3), kMonths[m])) ok = true, month = m + 1, i += 3;
        break;
      case 'z': ok = has_offset = read_offset(t, i, offset); break;
      case '%': ok = i < t.size() && t[i] == '%', ++i; break;
      default: return std::nullopt;  // parse_time_format refuses it
    }
    if (!ok) return std::nullopt;
  }
  if (i != t.size() || year < 1 || month < 1 || month > 12 || day < 1) return std::nullopt;
  if (day > kMonthDays[month - 1] + (month == 2 && leap(year))) return std::nullopt;
  if (pm >= 0) {
    if (hour < 1 || hour > 12) return std::nullopt;
    hour = hour % 12 + (pm ? 12 : 0);
  }
  if (hour > 23 || minute > 59 || second > 60) return std::nullopt;
  const int64_t local = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400000 +
                        ((hour * 60 + minute) * 60 + second) * 1000 + ms;
  if (has_offset) return local - offset;
  if (f.new_york) return new_york_to_utc(local, year);
  return local - f.utc_offset_ms;
}

}  // namespace

std::string parse_time_format(std::string_view format, std::string_view zone, TimeFormat& out) {
  out = TimeFormat{};
  if (format.empty() || format == "rfc3339") out.kind = TimeFormat::Kind::kRfc3339;
  else if (format == "epoch_ms") out.kind = TimeFormat::Kind::kEpochMs;
  else if (format == "epoch_s") out.kind = TimeFormat::Kind::kEpochS;
  else if (format.find('%') == std::string_view::npos)
    return "unknown time format '" + std::string(format) + "': use rfc3339, epoch_ms, epoch_s or a pattern such as "
           "\"%Y-%m-%d %H:%M:%S\" (" + kPatternHelp + ")";
  else {
    out.kind = TimeFormat::Kind::kPattern;
    out.pattern = format;
    bool y = false, m = false, d = false, i12 = false, p = false;
    for (size_t k = 0; k < format.size(); ++k) {
      if (format[k] != '%') continue;
      if (k + 1 == format.size()) return "the time format ends with a lone '%' (write %% for a literal %)";
      switch (format[++k]) {
        case 'Y': case 'y': y = true; break;
        case 'm': case 'b': m = true; break;
        case 'd': d = true; break;
        case 'I': i12 = true; break;
        case 'p': p = true; break;
        case 'H': case 'M': case 'S': case 'f': case 'z': case '%': break;
        default:
          return std::string("unknown directive %") + format[k] + " in the time format (supported: " + kPatternHelp + ")";
      }
    }
    if (!y || !m || !d) return "the time format needs a year (%Y or %y), a month (%m or %b) and a day (%d)";
    if (i12 != p) return "%I (12-hour clock) and %p (AM/PM) go together; use %H for a 24-hour clock";
  }
  if (zone.empty() || zone == "UTC" || zone == "Z") return {};
  if (zone == "America/New_York") {
    out.new_york = true;
    return {};
  }
  size_t i = 0;
  int64_t off = 0;
  if (!read_offset(zone, i, off) || i != zone.size())
    return "unknown zone '" + std::string(zone) + "': use UTC, a fixed offset such as +08:00 or -05:00, or "
           "America/New_York (the one named zone built in)";
  out.utc_offset_ms = off;
  return {};
}

std::optional<int64_t> parse_time(const TimeFormat& f, std::string_view text) {
  text = trim(text);
  switch (f.kind) {
    case TimeFormat::Kind::kRfc3339: {
      int64_t ms;
      if (parse_rfc3339_ms(text, ms) != DecodeError::kOk) return std::nullopt;
      return ms;
    }
    case TimeFormat::Kind::kEpochMs: {
      int64_t ms;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
      if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
      return ms;
    }
    case TimeFormat::Kind::kEpochS: {
      double sec;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), sec);
      if (ec != std::errc{} || end != text.data() + text.size() || text.empty() || !std::isfinite(sec) ||
          std::fabs(sec) > 1e13)
        return std::nullopt;
      return std::llround(sec * 1000.0);
    }
    case TimeFormat::Kind::kPattern: return parse_pattern(f, text);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Mapping files

namespace {

// The shared reader, and where in the file a column is named.
class MappingReader : public YamlReader {
 public:
  using YamlReader::YamlReader;

  MappingFile::Column column(const YAML::Node& n, const std::string& name) {
    const auto m = n.Mark();
    return {name, m.line + 1, m.column + 1};
  }
};

// Appends the JSON value of `v` as a `type`; false (out unchanged) when v is
// not one. Times are read with `tf` (RFC 3339 when null).
bool append_value(std::string& out, FieldType type, std::string_view v, const TimeFormat* tf) {
  char buf[32];
  switch (type) {
    case FieldType::kString:
      out += '"';
      append_json_escaped(out, v);
      out += '"';
      return true;
    case FieldType::kInt: {
      int64_t i;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), i);
      if (v.empty() || ec != std::errc{} || end != v.data() + v.size()) return false;
      out.append(buf, std::to_chars(buf, buf + sizeof buf, i).ptr);
      return true;
    }
    case FieldType::kDouble: {
      double d;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
      if (v.empty() || ec != std::errc{} || end != v.data() + v.size() || !std::isfinite(d)) return false;
      out.append(buf, std::to_chars(buf, buf + sizeof buf, d).ptr);
      return true;
    }
    case FieldType::kBool:
      for (const char* t : {"true", "yes", "1", "t", "y"})
        if (iequals(v, t)) return out += "true", true;
      for (const char* f : {"false", "no", "0", "f", "n"})
        if (iequals(v, f)) return out += "false", true;
      return false;
    case FieldType::kTime: {
      const auto ms = parse_time(tf ? *tf : TimeFormat{}, v);
      if (!ms) return false;
      out += '"';
      out += format_rfc3339_ms(*ms, buf);
      out += '"';
      return true;
    }
  }
  return false;
}

const char* type_help(FieldType t) {
  switch (t) {
    case FieldType::kString: return "text";
    case FieldType::kInt: return "a whole number";
    case FieldType::kDouble: return "a number";
    case FieldType::kBool: return "true or false (yes/no, 1/0)";
    case FieldType::kTime: return "a time in the mapping's time format";
  }
  return "?";
}

std::string field_list(const StreamSchema& schema) {
  std::string list;
  for (const auto& f : schema.fields) list += (list.empty() ? "" : ", ") + std::string(f.name);
  return list;
}

}  // namespace

std::vector<ConfigError> parse_mapping(const std::string& text, const std::string& path, MappingFile& m) {
  std::vector<ConfigError> errors;
  m = MappingFile{};
  m.path = path;
  const YAML::Node root = YamlReader::load(text, errors);
  if (!errors.empty()) return errors;
  MappingReader r(errors);
  if (!root || root.IsNull()) {
    errors.push_back({"", 0, 0, "the mapping file is empty: it needs stream, time and fields (docs/replay.md)"});
    return errors;
  }
  if (!r.map(root, "", {"stream", "delimiter", "time", "fields", "where"})) return errors;

  const YAML::Node stream = root["stream"];
  if (!stream) {
    r.error(root, "stream", "missing: the stream the rows become (" + std::string(stream_names()) + ")");
    return errors;
  }
  const auto sname = r.scalar(stream, "stream", "a stream name");
  if (!sname) return errors;
  const auto st = stream_from_string(*sname);
  if (!st) {
    r.error(stream, "stream", "unknown stream '" + *sname + "'; expected " + std::string(stream_names()));
    return errors;
  }
  m.stream = *st;
  const StreamSchema& schema = schema_of(m.stream);

  if (const YAML::Node d = root["delimiter"]) {
    if (const auto v = r.scalar(d, "delimiter", "one character")) {
      if (*v == "\\t") m.delimiter = '\t';
      else if (v->size() == 1 && (*v)[0] != '"' && (*v)[0] != '\n') m.delimiter = (*v)[0];
      else r.error(d, "delimiter", "must be one character such as ',' or ';' (\"\\t\" for tab)");
    }
  }

  const YAML::Node time = root["time"];
  if (!time) {
    r.error(root, "time", "missing: the column holding the event time, e.g. time: {column: Created, format: "
                          "\"%Y-%m-%d %H:%M:%S\", zone: UTC}");
  } else if (time.IsScalar()) {
    m.time_column = r.column(time, time.Scalar());
  } else if (r.map(time, "time", {"column", "format", "zone"})) {
    const YAML::Node col = time["column"];
    if (!col) r.error(time, "time.column", "missing: the CSV column holding the event time");
    else if (const auto v = r.scalar(col, "time.column", "a column name")) m.time_column = r.column(col, *v);
    std::string format, zone;
    if (const YAML::Node f = time["format"]) format = r.scalar(f, "time.format", "a time format").value_or("");
    if (const YAML::Node z = time["zone"]) zone = r.scalar(z, "time.zone", "a zone").value_or("");
    if (const std::string err = parse_time_format(format, zone, m.time_format); !err.empty()) {
      const char* key = err.starts_with("unknown zone") ? "zone" : "format";
      r.error(time[key], std::string("time.") + key, err);
    }
  }

  const YAML::Node fields = root["fields"];
  std::vector<bool> mapped(schema.fields.size(), false);
  if (!fields) {
    r.error(root, "fields", "missing: the stream's fields, each from a column or a constant, e.g. fields: "
                            "{ticket_id: Ticket, status: {value: received}}");
  } else if (!fields.IsMap()) {
    r.error(fields, "fields", "must map field names to a column or {value: CONSTANT}");
  } else {
    for (const auto& kv : fields) {
      const std::string name = kv.first.Scalar();
      const std::string path = "fields." + name;
      const int slot = schema.slot_of(name);
      if (slot < 0) {
        r.error(kv.first, path, std::string(schema.name) + " have no field '" + name + "'; fields: " + field_list(schema));
        continue;
      }
      if (slot == schema.time_slot) {
        r.error(kv.first, path, "the event time comes from time: (remove it here)");
        continue;
      }
      const FieldDef& def = schema.fields[static_cast<size_t>(slot)];
      mapped[static_cast<size_t>(slot)] = true;  // wrong or not: one error per problem
      MappingFile::Field f;
      f.slot = slot;
      const YAML::Node v = kv.second;
      if (v.IsScalar()) {
        if (trim(v.Scalar()).empty()) {
          r.error(v, path, "the column name is empty");
          continue;
        }
        f.column = r.column(v, v.Scalar());
      } else if (!v.IsMap()) {
        r.error(v, path, "must be a column name, {column: NAME} or {value: CONSTANT}");
        continue;
      } else {
        if (!r.map(v, path, {"column", "value"})) continue;
        const YAML::Node col = v["column"], val = v["value"];
        if (!col == !val) {
          r.error(v, path, "needs exactly one of column: (read from a CSV column) or value: (a constant)");
          continue;
        }
        if (col) {
          const auto c = r.scalar(col, path + ".column", "a column name");
          if (!c) continue;
          f.column = r.column(col, *c);
        } else {
          const auto c = r.scalar(val, path + ".value", "a constant");
          if (!c) continue;
          f.constant = trim(*c);
          if (f.constant.empty() || !append_value(f.json, def.type, f.constant, nullptr)) {
            r.error(val, path + ".value", "'" + *c + "' is not " + type_help(def.type) + " (" + name + " is " +
                                              std::string(to_string(def.type)) +
                                              (def.type == FieldType::kTime ? ", written in RFC 3339" : "") + ")");
            continue;
          }
          if (slot == schema.kind_slot && schema.kind_index(f.constant) < 0) {
            std::string kinds;
            for (const auto k : schema.kinds) kinds += (kinds.empty() ? "" : ", ") + std::string(k);
            r.error(val, path + ".value", "'" + *c + "' is not a " + name + " of " + std::string(schema.name) +
                                              "; expected one of: " + kinds);
            continue;
          }
        }
      }
      m.fields.push_back(std::move(f));
    }
  }
  if (fields && fields.IsMap())
    for (size_t i = 0; i < schema.fields.size(); ++i)
      if (schema.fields[i].required && static_cast<int>(i) != schema.time_slot && !mapped[i])
        r.error(fields, "fields", "no mapping for '" + std::string(schema.fields[i].name) + "', which every " +
                                      std::string(schema.name) + " event needs (add " + std::string(schema.fields[i].name) +
                                      ": COLUMN or " + std::string(schema.fields[i].name) + ": {value: CONSTANT})");
  std::sort(m.fields.begin(), m.fields.end(), [](const auto& a, const auto& b) { return a.slot < b.slot; });

  if (const YAML::Node where = root["where"]) {
    std::vector<YAML::Node> clauses;
    if (where.IsMap()) clauses.push_back(where);
    else if (where.IsSequence()) for (const auto& c : where) clauses.push_back(c);
    else r.error(where, "where", "must be a clause {column: NAME, equals|contains|in: ...} or a list of them");
    for (size_t i = 0; i < clauses.size(); ++i) {
      const std::string path = where.IsSequence() ? "where[" + std::to_string(i) + "]" : "where";
      const YAML::Node& c = clauses[i];
      if (!r.map(c, path, {"column", "equals", "contains", "in"})) continue;
      MappingFile::Where w;
      const YAML::Node col = c["column"];
      if (!col) {
        r.error(c, path + ".column", "missing: the column the clause tests");
        continue;
      }
      const auto cname = r.scalar(col, path + ".column", "a column name");
      if (!cname) continue;
      w.column = r.column(col, *cname);
      const int ops = !!c["equals"] + !!c["contains"] + !!c["in"];
      if (ops != 1) {
        r.error(c, path, "needs exactly one of equals:, contains: or in:");
        continue;
      }
      if (const YAML::Node e = c["equals"]) {
        w.op = MappingFile::Where::Op::kEquals;
        if (const auto v = r.scalar(e, path + ".equals", "a value")) w.values.push_back(*v);
      } else if (const YAML::Node e = c["contains"]) {
        w.op = MappingFile::Where::Op::kContains;
        if (const auto v = r.scalar(e, path + ".contains", "a value")) w.values.push_back(*v);
      } else {
        const YAML::Node in = c["in"];
        w.op = MappingFile::Where::Op::kIn;
        if (!in.IsSequence() || in.size() == 0) r.error(in, path + ".in", "must be a list of values, e.g. [HPD, DHCR]");
        else for (const auto& v : in) if (const auto s = r.scalar(v, path + ".in", "a value")) w.values.push_back(*s);
      }
      if (!w.values.empty()) m.where.push_back(std::move(w));
    }
  }
  return errors;
}

std::vector<ConfigError> load_mapping_file(const std::string& path, MappingFile& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {{"", 0, 0, "cannot be read (does the mapping file exist?)"}};
  std::ostringstream text;
  text << in.rdbuf();
  return parse_mapping(text.str(), path, out);
}

std::optional<CsvMapper> CsvMapper::bind(const MappingFile& m, const CsvHeader& header, const std::string& csv_path,
                                         std::string& error) {
  CsvMapper c;
  c.m_ = &m;
  std::string columns;
  for (const auto& [name, i] : header.index) columns += (columns.empty() ? "'" : ", '") + name + "'";
  auto resolve = [&](const MappingFile::Column& col, const std::string& path, size_t& out) {
    const auto it = header.index.find(col.name);
    if (it != header.index.end()) {
      out = it->second;
      return true;
    }
    error += format(ConfigError{path, col.line, col.col, "no column '" + col.name + "' in " + csv_path +
                                                          " (its columns: " + columns + ")"}, m.path) + "\n";
    return false;
  };
  bool ok = resolve(m.time_column, "time.column", c.time_index_);
  c.field_index_.resize(m.fields.size());
  for (size_t i = 0; i < m.fields.size(); ++i)
    if (!m.fields[i].column.name.empty())
      ok &= resolve(m.fields[i].column, "fields." + std::string(schema_of(m.stream).fields[static_cast<size_t>(m.fields[i].slot)].name),
                    c.field_index_[i]);
  c.where_index_.resize(m.where.size());
  for (size_t i = 0; i < m.where.size(); ++i) ok &= resolve(m.where[i].column, "where", c.where_index_[i]);
  if (!ok) {
    error.pop_back();
    return std::nullopt;
  }
  return c;
}

std::optional<ReplayEvent> CsvMapper::map(const std::vector<std::string>& row, MapStats& stats, std::string& why) const {
  ++stats.rows;
  auto cell = [&](size_t i) { return i < row.size() ? trim(row[i]) : std::string_view(); };
  for (size_t i = 0; i < m_->where.size(); ++i) {
    const auto& w = m_->where[i];
    const std::string_view v = cell(where_index_[i]);
    const bool hold = w.op == MappingFile::Where::Op::kContains ? v.find(w.values[0]) != std::string_view::npos
                                                                : std::find(w.values.begin(), w.values.end(), v) != w.values.end();
    if (!hold) {
      ++stats.skipped;
      return std::nullopt;
    }
  }
  const StreamSchema& schema = schema_of(m_->stream);
  ReplayEvent ev;
  ev.stream = m_->stream;
  const std::string_view time_text = cell(time_index_);
  const auto t = parse_time(m_->time_format, time_text);
  if (!t) {
    why = "time: '" + std::string(time_text) + "' (column '" + m_->time_column.name + "') does not match the time format";
    ++stats.invalid;
    return std::nullopt;
  }
  ev.time_ms = *t;
  std::string& j = ev.json;
  j = "{";
  bool time_written = false;
  auto write_time = [&] {
    add_str(j, schema.fields[static_cast<size_t>(schema.time_slot)].name, fmt_time(ev.time_ms));
    time_written = true;
  };
  for (size_t i = 0; i < m_->fields.size(); ++i) {
    const MappingFile::Field& f = m_->fields[i];
    const FieldDef& def = schema.fields[static_cast<size_t>(f.slot)];
    if (!time_written && f.slot > schema.time_slot) write_time();
    if (f.column.name.empty()) {  // a constant
      add_raw(j, def.name, f.json);
      if (f.slot == schema.key_slot) ev.key = f.constant;
      continue;
    }
    const std::string_view v = cell(field_index_[i]);
    if (v.empty()) {
      if (!def.required) continue;
      why = std::string(def.name) + ": column '" + f.column.name + "' is empty";
      ++stats.invalid;
      return std::nullopt;
    }
    if (j.size() > 1) j += ',';
    j += '"';
    j += def.name;
    j += "\":";
    if (!append_value(j, def.type, v, &m_->time_format)) {
      why = std::string(def.name) + ": '" + std::string(v) + "' (column '" + f.column.name + "') is not " + type_help(def.type);
      ++stats.invalid;
      return std::nullopt;
    }
    if (f.slot == schema.key_slot) ev.key = v;
  }
  if (!time_written) write_time();
  j += '}';
  ++stats.mapped;
  return ev;
}

// ---------------------------------------------------------------------------------------------
// Pacing and progress

int64_t Pacer::due_in_ms(int64_t event_ms) {
  const int64_t now = clock_.now_ms();
  if (!started_) {
    started_ = true;
    t0_ = event_ms;
    start_ = now;
  }
  if (speed_ <= 0 || event_ms <= t0_) return 0;
  const int64_t due = start_ + std::llround(std::min(static_cast<double>(event_ms - t0_) / speed_, 1e15));
  return std::max<int64_t>(0, due - now);
}

bool Pacer::wait(int64_t event_ms, const std::atomic<bool>* stop, const std::function<void()>& between) {
  for (int64_t left; (left = due_in_ms(event_ms)) > 0;) {
    if (stop && stop->load(std::memory_order_relaxed)) return false;
    clock_.sleep_ms(std::min(left, max_sleep_ms_));
    if (between) between();
  }
  return !(stop && stop->load(std::memory_order_relaxed));
}

std::optional<double> parse_speed(std::string_view text) {
  text = trim(text);
  if (text == "max") return 0.0;
  if (!text.empty() && (text.back() == 'x' || text.back() == 'X')) text.remove_suffix(1);
  double v;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(v) || v <= 0) return std::nullopt;
  return v;
}

namespace {

std::string fmt_duration(int64_t ms) {
  const int64_t s = (ms + 999) / 1000;
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                               static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return buf;
}

std::string fmt_rate(double r) {
  char buf[32];
  if (r >= 1e6) std::snprintf(buf, sizeof buf, "%.1fM", r / 1e6);
  else if (r >= 1e4) std::snprintf(buf, sizeof buf, "%.0fk", r / 1e3);
  else if (r >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", r / 1e3);
  else if (r >= 10 || r == 0) std::snprintf(buf, sizeof buf, "%.0f", r);
  else std::snprintf(buf, sizeof buf, "%.1f", r);
  return buf;
}

}  // namespace

std::string format_progress_bar(int64_t done, int64_t total, double events_per_s, int64_t eta_ms, int width) {
  const double frac = total > 0 ? std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0) : 1.0;
  const int filled = static_cast<int>(frac * width);
  std::string s = "[";
  s.append(static_cast<size_t>(filled), '#');
  s.append(static_cast<size_t>(width - filled), '.');
  char buf[96];
  std::snprintf(buf, sizeof buf, "] %3d%%  %lld/%lld events  ", static_cast<int>(frac * 100), static_cast<long long>(done),
                static_cast<long long>(total));
  s += buf;
  s += fmt_rate(events_per_s) + " ev/s  ETA " + (eta_ms < 0 ? std::string("--:--") : fmt_duration(eta_ms));
  return s;
}

// ---------------------------------------------------------------------------------------------
std::string check_replay_options(const ReplayOptions& o) {
  const bool kafka = o.to == ReplayOptions::Target::kKafka;
  if (o.inputs.empty()) return "no input files: name the CSV or JSONL files to replay";
  if (o.mapping.empty() == o.mapping_file.empty())
    return "pass --mapping nyc311|heatseek|sichuan|jsonl or --mapping-file FILE.yaml (one of them)";
  if (!o.mapping.empty() && o.mapping != "nyc311" && o.mapping != "heatseek" && o.mapping != "sichuan" && o.mapping != "jsonl")
    return "unknown mapping '" + o.mapping + "' (nyc311, heatseek, sichuan or jsonl)";
  if (!kafka && o.rule_files.empty())
    return "an in-process replay needs --rules FILE|DIR (or --to kafka --brokers HOST:PORT, where the daemon's rules "
           "raise the alerts)";
  if (kafka && !o.rule_files.empty())
    return "--rules is for in-process replays: with --to kafka the daemon consuming the topics raises the alerts";
  if (kafka && o.brokers.empty()) return "--to kafka needs --brokers HOST:PORT[,HOST:PORT...]";
  if (!kafka && !o.brokers.empty()) return "--brokers needs --to kafka (an in-process replay uses no broker)";
  if (!(o.speed >= 0) || !std::isfinite(o.speed)) return "--speed must be max or a positive number";
  return {};
}

bool read_replay_events(const ReplayOptions& o, std::vector<ReplayEvent>& events, MapStats& stats, std::string& error,
                        std::ostream* log) {
  MappingFile mf;
  const bool by_file = !o.mapping_file.empty();
  if (by_file) {
    const auto errors = load_mapping_file(o.mapping_file, mf);
    if (!errors.empty()) {
      for (const auto& e : errors) error += format(e, o.mapping_file) + "\n";
      error += std::to_string(errors.size()) + (errors.size() == 1 ? " error" : " errors") + " in the mapping file (see docs/replay.md)";
      return false;
    }
  } else if (o.mapping != "nyc311" && o.mapping != "heatseek" && o.mapping != "sichuan" && o.mapping != "jsonl") {
    error = "unknown mapping '" + o.mapping + "' (nyc311, heatseek, sichuan or jsonl)";
    return false;
  }
  int64_t logged = 0;
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
        error = path + ": no stream: pass --stream (" + std::string(stream_names()) +
                ") or name the file after its stream, e.g. complaints.jsonl";
        return false;
      }
      const int key_slot = schema_of(*stream).key_slot;
      Decoder probe(DecodeLimits{.max_event_bytes = 1 << 20, .min_time_ms = INT64_MIN / 4, .max_future_skew_ms = INT64_MAX / 4});
      Event e;
      for (std::string line; std::getline(in, line);) {
        if (trim(line).empty()) continue;
        ++stats.rows;
        ReplayEvent ev{*stream, 0, line, {}};
        if (probe.decode(*stream, line, 0, e).ok()) {  // the real check comes later
          ev.time_ms = e.time_ms;
          if (e.at(key_slot).present) ev.key = e.at(key_slot).s;
        }
        events.push_back(std::move(ev));
        ++stats.mapped;
      }
      continue;
    }
    CsvReader csv(in, by_file ? mf.delimiter : ',');
    std::vector<std::string> row;
    if (!csv.next(row)) continue;
    const CsvHeader header(row);
    std::optional<CsvMapper> mapper;
    if (by_file) {
      mapper = CsvMapper::bind(mf, header, path, error);
      if (!mapper) return false;
    } else {
      const std::string_view required = o.mapping == "nyc311"     ? "Complaint Type"
                                        : o.mapping == "sichuan" ? kSichuanNumberColumn
                                                                 : "temp";
      if (!header.index.contains(required)) {
        error = path + ": no column '" + std::string(required) + "': not a " + o.mapping + " file";
        return false;
      }
    }
    std::string why;
    int64_t data_rows = 0;
    while (csv.next(row)) {
      if (row.size() == 1 && trim(row[0]).empty()) continue;
      std::optional<ReplayEvent> ev;
      if (mapper) {
        ev = mapper->map(row, stats, why);
        if (!ev && !why.empty()) {
          if (log && logged++ < 5) {
            std::string line = "replay: " + path + ":" + std::to_string(csv.line()) + ": row not mapped: ";
            append_masked_text(line, why);  // values may be phone numbers
            *log << line << "\n";
          }
          why.clear();
        }
      } else if (o.mapping == "sichuan") {
        ev = map_sichuan_user_row(header, row, ++data_rows, SichuanOptions{.as_of_ms = o.as_of_ms}, stats);
        if (ev) ev->key = header.get(row, kSichuanNumberColumn);
      } else {
        ev = o.mapping == "nyc311" ? map_nyc311_row(header, row, csv.raw(), o.jitter_seed, o.jitter, stats)
                                   : map_heatseek_row(header, row, stats);
      }
      if (ev) events.push_back(std::move(*ev));
    }
  }
  if (log && logged > 5) *log << "replay: " << logged - 5 << " more rows not mapped\n";
  std::stable_sort(events.begin(), events.end(), [](const ReplayEvent& a, const ReplayEvent& b) { return a.time_ms < b.time_ms; });
  return true;
}

namespace {

class SteadyPaceClock final : public PaceClock {
 public:
  int64_t now_ms() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  void sleep_ms(int64_t ms) override { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
};

// Progress on the log: on a terminal a bar redrawn at most every 200 ms (percent,
// rate, ETA); otherwise a line every `progress_every` events.
class Progress {
 public:
  Progress(const ReplayOptions& o, std::ostream& log, PaceClock& clock, const std::vector<ReplayEvent>& events)
      : o_(o), log_(log), clock_(clock), total_(static_cast<int64_t>(events.size())),
        last_ms_(events.empty() ? 0 : events.back().time_ms), start_(clock.now_ms()) {}

  // After each event, and while waiting for the next one.
  void update(const ReplaySummary& s, int64_t done, int64_t event_ms) {
    done_ = done;
    event_ms_ = event_ms;
    if (o_.progress_bar) {
      const int64_t now = clock_.now_ms();
      if (now - drawn_at_ < 200 && done < total_) return;
      drawn_at_ = now;
      draw(s);
    } else if (o_.progress_every > 0 && done > 0 && done % o_.progress_every == 0 && done != lined_) {
      lined_ = done;
      log_ << "replay: " << done << "/" << total_ << " events sent, event time " << fmt_time(event_ms);
      if (o_.to == ReplayOptions::Target::kInProcess) log_ << ", " << s.alerts << " alerts";
      log_ << "\n";
    }
  }
  // Before another line goes to the log: takes the bar off the screen.
  void clear() {
    if (shown_) log_ << "\r\033[K";
    shown_ = false;
  }
  // Leaves the final bar on its own line.
  void finish(const ReplaySummary& s) {
    if (!o_.progress_bar) return;
    draw(s);
    log_ << "\n";
    shown_ = false;
  }

 private:
  void draw(const ReplaySummary& s) {
    const double elapsed_s = static_cast<double>(clock_.now_ms() - start_) / 1000.0;
    const double rate = elapsed_s > 0 ? static_cast<double>(done_) / elapsed_s : 0;
    int64_t eta = -1;
    if (done_ >= total_) eta = 0;
    else if (rate > 0) eta = static_cast<int64_t>(static_cast<double>(total_ - done_) / rate * 1000.0);
    if (o_.speed > 0 && done_ > 0 && done_ < total_)  // paced: the event time still to go bounds it
      eta = std::max(eta, static_cast<int64_t>(static_cast<double>(last_ms_ - event_ms_) / o_.speed));
    std::string line = "\rreplay " + format_progress_bar(done_, total_, rate, eta);
    if (done_ > 0) line += "  " + fmt_time(event_ms_);
    if (o_.to == ReplayOptions::Target::kInProcess) line += "  " + std::to_string(s.alerts) + " alerts";
    log_ << line << "\033[K" << std::flush;
    shown_ = true;
  }

  const ReplayOptions& o_;
  std::ostream& log_;
  PaceClock& clock_;
  const int64_t total_, last_ms_, start_;
  int64_t done_ = 0, event_ms_ = 0, drawn_at_ = INT64_MIN / 2, lined_ = -1;
  bool shown_ = false;
};

class SummarySink final : public rules::SignalSink {
 public:
  SummarySink(const ReplayOptions& o, ReplaySummary& s, std::ostream& log, Progress& progress)
      : o_(o), s_(s), log_(log), progress_(progress) {}
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
    if (o_.print_alerts) {
      progress_.clear();
      log_ << "alert " << fmt_time(sig.window_end_ms) << " " << sig.rule->id << " [" << sig.severity << "] " << sig.title << "\n";
    }
  }

 private:
  const ReplayOptions& o_;
  ReplaySummary& s_;
  std::ostream& log_;
  Progress& progress_;
};

// Where the events go.
class Sender {
 public:
  enum class Result : uint8_t { kSent, kRejected, kStop };
  virtual ~Sender() = default;
  virtual Result send(const ReplayEvent& ev) = 0;
  // After the last event (or a stop): waits for what is in flight.
  virtual void finish() {}
};

// Recorded data may be years old: accept any time after 2000 and never treat it as "future".
constexpr DecodeLimits kReplayLimits{.max_event_bytes = 1 << 20};

void log_rejected(std::ostream& log, Progress& progress, int64_t n, const DecodeResult& r, const std::string& json,
                  const char* what) {
  if (n > 5) return;
  progress.clear();
  std::string line = std::string("replay: ") + what + " (" + std::string(reason_code(r.error)) + ": " + std::string(r.detail) + "): ";
  append_masked_text(line, json);  // phone numbers are personal data
  log << line << "\n";
}

// The in-process engine, timers on event time.
class EngineSender final : public Sender {
 public:
  EngineSender(std::shared_ptr<const rules::RuleSet> rules, SummarySink& sink, ReplaySummary& s, std::ostream& log,
               Progress& progress)
      : engine_(std::move(rules), sink, nullptr, nullptr, rules::EngineOptions{.timers_follow_event_time = true}),
        decoder_(kReplayLimits), s_(s), log_(log), progress_(progress) {}

  Result send(const ReplayEvent& ev) override {
    const int64_t now = std::max(newest_, ev.time_ms) + 3600 * 1000;
    const DecodeResult r = decoder_.decode(ev.stream, ev.json, now, e_);
    if (!r.ok()) {
      log_rejected(log_, progress_, ++s_.rejected, r, ev.json, "rejected");
      return Result::kRejected;
    }
    const size_t si = static_cast<size_t>(ev.stream);
    e_.source = SourcePosition{to_string(ev.stream), 0, offsets_[si]++};
    engine_.on_event(e_);
    newest_ = std::max(newest_, e_.time_ms);
    engine_.on_tick(newest_);
    return Result::kSent;
  }

 private:
  rules::Engine engine_;
  Decoder decoder_;
  Event e_;
  std::array<int64_t, kStreamCount> offsets_{};
  int64_t newest_ = INT64_MIN;
  ReplaySummary& s_;
  std::ostream& log_;
  Progress& progress_;
};

std::string topic_of(const ReplayOptions& o, Stream s) { return o.topic_prefix + o.topics.input[static_cast<size_t>(s)]; }

// Kafka: each event's JSON to its stream's topic, keyed by the partition key.
// Events the decoder refuses are sent all the same (the daemon dead-letters
// them, as it would the original messages) and counted.
class KafkaSender final : public Sender {
 public:
  KafkaSender(const ReplayOptions& o, ReplaySummary& s, std::ostream& log, Progress& progress)
      : o_(o), s_(s), log_(log), progress_(progress), decoder_(kReplayLimits) {
    for (int i = 0; i < kStreamCount; ++i) topics_[static_cast<size_t>(i)] = topic_of(o, static_cast<Stream>(i));
  }

  // Creates the producer and asks the cluster for metadata; false with `error` when it does not answer.
  bool start(const std::vector<ReplayEvent>& events, std::string& error) {
    connectors::KafkaOptions k;
    k.bootstrap = o_.brokers;
    k.producer["linger.ms"] = "5";
    k.producer["message.timeout.ms"] = "30000";  // a lost broker fails the replay in 30 s, not librdkafka's 5 min
    for (const auto& [name, value] : o_.kafka_properties) k.producer[name] = value;
    int64_t timeout = 30000;
    std::from_chars(k.producer["message.timeout.ms"].data(),
                    k.producer["message.timeout.ms"].data() + k.producer["message.timeout.ms"].size(), timeout);
    flush_timeout_ms_ = static_cast<int>(std::min<int64_t>(timeout + 5000, INT32_MAX));
    try {
      producer_ = std::make_unique<connectors::KafkaProducer>(k);
    } catch (const std::exception& e) {
      error = std::string(e.what()) + " (check the -X/--property options; see librdkafka CONFIGURATION.md)";
      return false;
    }
    std::vector<std::string> needed, missing;
    std::array<bool, kStreamCount> used{};
    for (const auto& ev : events) used[static_cast<size_t>(ev.stream)] = true;
    for (int i = 0; i < kStreamCount; ++i)
      if (used[static_cast<size_t>(i)]) needed.push_back(topics_[static_cast<size_t>(i)]);
    if (const std::string why = producer_->check_cluster(o_.connect_timeout_ms, needed, missing); !why.empty()) {
      error = "cannot reach Kafka at " + o_.brokers + " within " + std::to_string(o_.connect_timeout_ms / 1000) + " s (" + why +
              "): check --brokers HOST:PORT and that a broker is listening there (`kcat -b " + o_.brokers +
              " -L` lists the cluster)";
      return false;
    }
    for (const auto& t : missing) {
      const size_t i = static_cast<size_t>(std::find(topics_.begin(), topics_.end(), t) - topics_.begin());
      log_ << "replay: topic '" << t << "' does not exist on " << o_.brokers
           << ": delivery fails unless the cluster creates topics on first write; create it, or pick another with "
              "--topic-prefix or --" << to_string(static_cast<Stream>(i)) << "-topic\n";
    }
    return true;
  }

  Result send(const ReplayEvent& ev) override {
    const int64_t now = std::max(newest_, ev.time_ms) + 3600 * 1000;
    if (const DecodeResult r = decoder_.decode(ev.stream, ev.json, now, e_); !r.ok())
      log_rejected(log_, progress_, ++s_.rejected, r, ev.json, "invalid event, sent all the same");
    newest_ = std::max(newest_, ev.time_ms);
    try {
      producer_->produce(topics_[static_cast<size_t>(ev.stream)], ev.key, ev.json);
    } catch (const std::exception& e) {
      stop_reason_ = "cannot produce to " + topics_[static_cast<size_t>(ev.stream)] + ": " + e.what();
      return Result::kStop;
    }
    if (producer_->failed() > 0) stop_reason_ = "a delivery failed";  // stop rather than lose more
    return Result::kSent;
  }

  void finish() override {
    const int64_t lost = producer_->flush(flush_timeout_ms_);
    s_.delivered = producer_->delivered();
    s_.failed = lost;
    if (lost == 0 && stop_reason_.empty()) return;
    s_.incomplete = std::to_string(lost) + " of " + std::to_string(s_.events_sent) + " events sent were not acknowledged by Kafka at " +
                    o_.brokers + (stop_reason_.empty() ? "" : " (" + stop_reason_ + ")") +
                    (s_.events_sent < s_.events_read ? "; sending stopped after " + std::to_string(s_.events_sent) + " of " +
                                                           std::to_string(s_.events_read) + " events" : "") +
                    ": see the errors above, check that the topics exist and take writes (`kcat -b " + o_.brokers +
                    " -L`), then replay again";
  }

  bool stopped() const { return !stop_reason_.empty(); }

 private:
  const ReplayOptions& o_;
  ReplaySummary& s_;
  std::ostream& log_;
  Progress& progress_;
  std::array<std::string, kStreamCount> topics_;
  std::unique_ptr<connectors::KafkaProducer> producer_;
  int flush_timeout_ms_ = 35000;
  std::string stop_reason_;  // why sending stopped early ("" while all goes well)
  Decoder decoder_;
  Event e_;
  int64_t newest_ = INT64_MIN;
};

}  // namespace

bool run_replay(const ReplayOptions& o, ReplaySummary& s, std::ostream& log, std::string& error) {
  s = ReplaySummary{};
  if (std::string bad = check_replay_options(o); !bad.empty()) {
    error = std::move(bad);
    return false;
  }
  const bool kafka = o.to == ReplayOptions::Target::kKafka;
  std::shared_ptr<const rules::RuleSet> rules;
  if (!kafka) {
    const auto loaded = rules::load_rule_files(o.rule_files);
    if (!loaded.ok()) {
      for (const auto& d : loaded.diagnostics) error += rules::format_text(d) + "\n";
      if (error.empty()) error = "the rules cannot be loaded";
      return false;
    }
    rules = loaded.rules;
    for (const auto& r : rules->rules) s.alerts_by_rule.emplace(r.id, 0);
  }
  std::vector<ReplayEvent> events;
  if (!read_replay_events(o, events, s.map, error, &log)) return false;
  s.events_read = static_cast<int64_t>(events.size());
  if (s.map.jittered > 0)
    log << "replay: " << s.map.jittered << " rows carry only the date (Created Date truncated to midnight, as in the 2013 "
           "HPD rows): spread over the day with seeded jitter, --jitter-seed " << o.jitter_seed << "\n";

  SteadyPaceClock steady;
  PaceClock& clock = o.clock ? *o.clock : steady;
  Progress progress(o, log, clock, events);
  SummarySink sink(o, s, log, progress);
  std::unique_ptr<Sender> sender;
  KafkaSender* to_kafka = nullptr;
  if (kafka) {
    auto k = std::make_unique<KafkaSender>(o, s, log, progress);
    if (!k->start(events, error)) return false;
    to_kafka = k.get();
    sender = std::move(k);
  } else {
    sender = std::make_unique<EngineSender>(rules, sink, s, log, progress);
  }

  Pacer pacer(o.speed, clock);
  int64_t done = 0, last_event_ms = 0;
  const std::function<void()> between = [&] { progress.update(s, done, last_event_ms); };
  for (const ReplayEvent& ev : events) {
    if (!pacer.wait(ev.time_ms, o.stop, between)) {
      s.interrupted = true;
      break;
    }
    const auto r = sender->send(ev);
    if (r == Sender::Result::kStop) break;
    ++done;
    last_event_ms = ev.time_ms;
    if (r == Sender::Result::kSent) {
      if (s.events_sent == 0) s.first_time_ms = ev.time_ms;
      s.last_time_ms = std::max(s.last_time_ms, ev.time_ms);
      ++s.events_sent;
      ++s.by_stream[static_cast<size_t>(ev.stream)];
    }
    progress.update(s, done, ev.time_ms);
    if (to_kafka && to_kafka->stopped()) break;
  }
  sender->finish();
  progress.finish(s);
  log << "replay: " << s.events_sent << "/" << events.size() << " events sent"
      << (s.events_sent ? ", event time up to " + fmt_time(s.last_time_ms) : std::string());
  if (!kafka) log << ", " << s.alerts << " alerts";
  else log << ", " << s.delivered << " acknowledged by Kafka";
  log << (s.interrupted ? " (interrupted)" : "") << "\n";
  return true;
}

void print_replay_summary(const ReplayOptions& o, const ReplaySummary& s, std::ostream& out) {
  const bool kafka = o.to == ReplayOptions::Target::kKafka;
  out << "replay summary (" << (o.mapping_file.empty() ? "mapping " + o.mapping : "mapping file " + o.mapping_file)
      << (kafka ? ", to Kafka at " + o.brokers : std::string(", timers follow event time"));
  if (o.speed > 0) {
    std::ostringstream sp;
    sp << o.speed;
    out << ", " << (o.speed == 1 ? std::string("real time") : sp.str() + "x real time");
  }
  out << ")\n";
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
  if (s.interrupted) out << "  interrupted          after " << s.events_sent << " of " << s.events_read << " events\n";
  if (kafka) {
    out << "  events sent          " << s.events_sent << " of " << s.events_read << ": " << s.delivered
        << " acknowledged by the broker, " << s.failed << " not\n";
    size_t w = 0;
    for (int i = 0; i < kStreamCount; ++i) w = std::max(w, to_string(static_cast<Stream>(i)).size());
    for (int i = 0; i < kStreamCount; ++i)
      out << "    " << std::left << std::setw(static_cast<int>(w)) << to_string(static_cast<Stream>(i)) << std::right << "  "
          << std::setw(8) << s.by_stream[static_cast<size_t>(i)] << "  -> topic " << topic_of(o, static_cast<Stream>(i)) << "\n";
    out << "  invalid events       " << s.rejected << " (sent all the same: the daemon dead-letters them)\n";
  } else {
    out << "  events sent          " << s.events_sent << " (";
    for (int i = 0; i < kStreamCount; ++i)
      out << (i ? ", " : "") << to_string(static_cast<Stream>(i)) << " " << s.by_stream[static_cast<size_t>(i)];
    out << "), rejected by the decoder " << s.rejected << "\n";
  }
  if (s.events_sent) out << "  event time           " << fmt_time(s.first_time_ms) << " .. " << fmt_time(s.last_time_ms) << "\n";
  if (kafka) {
    out << "alerts: raised by the daemon consuming these topics (watch them with kcat -b " << o.brokers << " -C -t "
        << o.topics.alerts << ")\n";
    return;
  }
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
  if (!s.incomplete.empty()) {
    err << "tocsin replay: " << s.incomplete << "\n";
    return 1;
  }
  return s.interrupted ? 130 : 0;
}

}  // namespace tocsin::app
