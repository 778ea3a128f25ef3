#include "app/replay_sichuan.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "pipeline/decoder.h"
#include "pipeline/json_writer.h"

namespace tocsin::app {
namespace {

bool is_missing(std::string_view v) {
  if (v.empty()) return true;
  std::string lower;
  for (char c : v) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return lower == "nan" || lower == "null" || lower == "na" || lower == "none";
}

// The whole text as a finite number; nullopt otherwise.
std::optional<double> parse_number(std::string_view v) {
  const std::string text(v);
  char* end = nullptr;
  const double d = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !std::isfinite(d)) return std::nullopt;
  return d;
}

// Revenue can be negative or zero for real: a missing value is unknown, not 0.
constexpr std::string_view kLeftOutWhenMissing = "arpu_mean";

void add_key(std::string& j, std::string_view name) {
  if (j.size() > 1) j += ',';
  j += '"';
  j += name;
  j += "\":";
}

}  // namespace

std::optional<ReplayEvent> map_sichuan_user_row(const CsvHeader& h, const std::vector<std::string>& row,
                                                int64_t row_number, const SichuanOptions& o, MapStats& stats) {
  ++stats.rows;
  const std::string_view number = h.get(row, kSichuanNumberColumn);
  if (number.empty()) {
    ++stats.invalid;
    return std::nullopt;
  }
  const StreamSchema& schema = schema_of(Stream::kProfiles);
  ReplayEvent ev;
  ev.stream = Stream::kProfiles;
  ev.time_ms = o.as_of_ms;
  std::string& j = ev.json;
  j = "{";
  add_key(j, "profile_id");
  j += '"';
  append_json_escaped(j, o.id_prefix);
  j += std::to_string(row_number);
  j += '"';
  char time_buf[32];
  add_key(j, "time");
  j += '"';
  j += format_rfc3339_ms(o.as_of_ms, time_buf);
  j += '"';
  add_key(j, "number");
  j += '"';
  append_json_escaped(j, number);
  j += '"';
  for (size_t i = 0; i < schema.fields.size(); ++i) {
    if (static_cast<int>(i) == schema.id_slot || static_cast<int>(i) == schema.time_slot ||
        static_cast<int>(i) == schema.key_slot)
      continue;
    const FieldDef& f = schema.fields[i];
    if (!h.index.contains(f.name)) continue;
    const std::string_view text = h.get(row, f.name);
    double v = 0;
    if (is_missing(text)) {
      if (f.name == kLeftOutWhenMissing) continue;
    } else if (const auto d = parse_number(text)) {
      v = *d;
    } else {
      ++stats.invalid;
      return std::nullopt;
    }
    add_key(j, f.name);
    if (f.type == FieldType::kInt) {
      if (std::fabs(v) > 9e15) {
        ++stats.invalid;
        return std::nullopt;
      }
      j += std::to_string(std::llround(v));
    } else {
      // The shortest text that reads back as the same double (JSON has no NaN or inf: excluded above).
      char buf[64];
      const auto r = std::to_chars(buf, buf + sizeof buf, v);
      j.append(buf, r.ptr);
    }
  }
  j += '}';
  ++stats.mapped;
  return ev;
}

bool read_sichuan_users(std::istream& in, const SichuanOptions& o, std::vector<ReplayEvent>& events,
                        MapStats& stats, std::string& error) {
  CsvReader csv(in);
  std::vector<std::string> row;
  if (!csv.next(row)) return true;
  const CsvHeader header(row);
  if (!header.index.contains(kSichuanNumberColumn)) {
    error = "no column '" + std::string(kSichuanNumberColumn) + "': not a Sichuan users file";
    return false;
  }
  int64_t n = 0;
  while (csv.next(row)) {
    if (row.size() == 1 && row[0].empty()) continue;
    if (auto ev = map_sichuan_user_row(header, row, ++n, o, stats)) events.push_back(std::move(*ev));
  }
  return true;
}

}  // namespace tocsin::app
