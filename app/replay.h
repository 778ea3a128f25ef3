#pragma once
// `tocsin replay`: turns recorded data (CSV or JSONL) into events of the input
// streams and sends them either through an in-process rule engine whose timers
// follow event time (`pipeline.timers: event`), then summarises the alerts, or
// to Kafka (`--to kafka`), each event keyed by its stream's partition key, for a
// running daemon to consume. Events go out in event-time order, as fast as
// possible or paced on event time (`--speed 1` real time, `--speed N` N times).
//
// Built-in mappings (docs/packs/heating.md, "Replaying NYC 311"):
//   nyc311    311 service requests (CSV): complaint types containing HEAT become
//             complaints `received`, category heating.no_heat.
//   heatseek  Heat Seek sensor readings (CSV, °F): faults `telemetry` with indoor_temp_c.
//   sichuan   the Sichuan fraud users file (CSV): one `profiles` event per number
//             (app/replay_sichuan.h), all at --as-of.
//   jsonl     one event per line in the stream's own JSON; the stream is --stream or
//             the file's name (calls.jsonl, faults.jsonl, complaints.jsonl).
// Other CSV files: a YAML mapping file (--mapping-file; docs/replay.md).
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "app/config.h"
#include "connectors/kafka_options.h"
#include "pipeline/event.h"

namespace tocsin::app {

// RFC 4180 CSV: quoted fields may hold the delimiter, "" and line breaks.
class CsvReader {
 public:
  explicit CsvReader(std::istream& in, char delimiter = ',') : in_(in), delimiter_(delimiter) {}
  // Reads the next record into `fields`; false at end of input.
  bool next(std::vector<std::string>& fields);
  // The raw text of the last record (for hashing).
  const std::string& raw() const { return raw_; }
  // The 1-based line the last record started on.
  int64_t line() const { return record_line_; }

 private:
  std::istream& in_;
  char delimiter_;
  std::string raw_;
  int64_t next_line_ = 1, record_line_ = 0;
};

// One event ready for the decoder or a producer.
// sichuan: 2020-04-01T00:00:00+08:00, the default event time of its profiles. The
// data summarises up to 8 months of records (month_ids <= 8) ending March 2020.
inline constexpr int64_t kSichuanDefaultAsOfMs = 1585670400000;

struct ReplayEvent {
  Stream stream = Stream::kComplaints;
  int64_t time_ms = 0;
  std::string json;
  std::string key;  // the stream's partition key (schema key_slot); "" when the event has none
};

// A CSV header: column name -> index.
struct CsvHeader {
  std::map<std::string, size_t, std::less<>> index;
  explicit CsvHeader(const std::vector<std::string>& names);
  // The (trimmed) value of `column` in `row`, or "" when the column is absent.
  std::string_view get(const std::vector<std::string>& row, std::string_view column) const;
};

struct MapStats {
  int64_t rows = 0;       // data rows read
  int64_t mapped = 0;     // rows that became events
  int64_t skipped = 0;    // rows the mapping does not take (e.g. not a heating complaint)
  int64_t invalid = 0;    // rows the mapping takes but cannot read (no address, bad time...)
  int64_t jittered = 0;   // rows whose time was truncated to midnight and spread over the day
};

// "12/25/2013 11:59:08 PM" in New York local time (US Eastern, with DST) -> epoch ms.
std::optional<int64_t> parse_nyc_datetime(std::string_view text);
// "2014-12-17 02:00:19.067+00" -> epoch ms.
std::optional<int64_t> parse_sql_timestamp(std::string_view text);
// Upper case, runs of spaces collapsed, trimmed.
std::string normalize_address(std::string_view s);
// Synthetic phone-like complainant id derived from a row's raw text.
std::string synthetic_complainant(std::string_view raw_row);

// Maps one row; nullopt when the row is skipped or invalid (stats say which).
std::optional<ReplayEvent> map_nyc311_row(const CsvHeader& h, const std::vector<std::string>& row,
                                          std::string_view raw, uint64_t jitter_seed, bool jitter, MapStats& stats);
std::optional<ReplayEvent> map_heatseek_row(const CsvHeader& h, const std::vector<std::string>& row, MapStats& stats);

// --- Mapping files (--mapping-file): other CSV files -> one stream -------------------------

// How a time column is read: RFC 3339, epoch seconds or milliseconds, or a
// strptime-like pattern (%Y %y %m %b %d %H %I %M %S %f %p %z %%; a space matches
// any run of white space) read in `zone` unless the text has a %z offset.
struct TimeFormat {
  enum class Kind : uint8_t { kRfc3339, kEpochMs, kEpochS, kPattern };
  Kind kind = Kind::kRfc3339;
  std::string pattern;
  int64_t utc_offset_ms = 0;  // local = UTC + offset (zone "+08:00")
  bool new_york = false;      // zone America/New_York: US Eastern with daylight saving
};
// Fills `out` from a format ("rfc3339", "epoch_ms", "epoch_s" or a pattern) and a
// zone ("UTC", "+08:00", "America/New_York"); returns what is wrong, "" when valid.
std::string parse_time_format(std::string_view format, std::string_view zone, TimeFormat& out);
// Epoch ms, or nullopt when `text` does not match the format or is no real time.
std::optional<int64_t> parse_time(const TimeFormat& f, std::string_view text);

struct MappingFile {
  // A column named in the mapping file, with where (1-based) for error messages.
  struct Column {
    std::string name;
    int line = 0, col = 0;
  };
  struct Field {
    int slot = -1;          // in the stream's schema
    Column column;          // read from this column, or (column.name empty) ...
    std::string constant;   // ... this constant (type-checked at load time)
    std::string json;       // the constant as a JSON value
  };
  struct Where {
    enum class Op : uint8_t { kEquals, kContains, kIn };
    Column column;
    Op op = Op::kEquals;
    std::vector<std::string> values;  // kIn: any of them; else one
  };
  std::string path;
  Stream stream = Stream::kComplaints;
  char delimiter = ',';
  Column time_column;
  TimeFormat time_format;   // also for the other time fields read from columns
  std::vector<Field> fields;  // schema order, the time field excluded
  std::vector<Where> where;   // a row is taken only when every clause holds
};

// Reads and checks a mapping file; every error is "file:line:column: path: what
// is wrong and how to fix it" (format(ConfigError, path)). `out` is usable only
// when the list is empty.
std::vector<ConfigError> parse_mapping(const std::string& text, const std::string& path, MappingFile& out);
std::vector<ConfigError> load_mapping_file(const std::string& path, MappingFile& out);

// A mapping file bound to one CSV file's header: columns resolved to indices once.
// The MappingFile must outlive the mapper.
class CsvMapper {
 public:
  // Fails (`error` names the mapping file's line and column) when the CSV file
  // lacks a column the mapping names.
  static std::optional<CsvMapper> bind(const MappingFile& m, const CsvHeader& header, const std::string& csv_path,
                                       std::string& error);
  // Maps one row; nullopt when the row is skipped (a `where` clause fails) or
  // invalid (`why` says which field, quoting the value: mask it before logging).
  std::optional<ReplayEvent> map(const std::vector<std::string>& row, MapStats& stats, std::string& why) const;

 private:
  const MappingFile* m_ = nullptr;
  size_t time_index_ = 0;
  std::vector<size_t> field_index_;  // per m_->fields (unused for constants)
  std::vector<size_t> where_index_;  // per m_->where
};

// --- Pacing and progress ------------------------------------------------------------------

// Monotonic time and sleeping for pacing and progress; tests pass a virtual
// clock so that nothing sleeps.
class PaceClock {
 public:
  virtual ~PaceClock() = default;
  virtual int64_t now_ms() = 0;           // monotonic milliseconds
  virtual void sleep_ms(int64_t ms) = 0;  // blocks about ms
};

// Event-time pacing. With speed s > 0 the event at event time t is due at
// start + (t - t0) / s, where t0 is the first event's time and start the clock
// when it was paced; speed 0 ("max") never waits. Due times are absolute, so an
// oversleep or slow sending is caught up rather than added to every later wait.
// Events come in event-time order (an earlier one is due at once).
class Pacer {
 public:
  explicit Pacer(double speed, PaceClock& clock, int64_t max_sleep_ms = 200)
      : speed_(speed), clock_(clock), max_sleep_ms_(max_sleep_ms) {}
  // Milliseconds until the event at event_ms is due (0: due now). The first call
  // starts the clock.
  int64_t due_in_ms(int64_t event_ms);
  // Sleeps until the event at event_ms is due, in slices of at most max_sleep_ms,
  // calling `between` (if set) after each; false as soon as *stop is set.
  bool wait(int64_t event_ms, const std::atomic<bool>* stop = nullptr, const std::function<void()>& between = {});

 private:
  double speed_;
  PaceClock& clock_;
  int64_t max_sleep_ms_;
  bool started_ = false;
  int64_t t0_ = 0, start_ = 0;
};

// "max" -> 0 (as fast as possible); "1" real time; "60" or "60x" 60 times real
// time; nullopt for anything else (zero, negative, not a number).
std::optional<double> parse_speed(std::string_view text);

// One redraw of the progress bar: "[#####.....]  50%  2/4 events  1.2k ev/s  ETA 0:03".
// eta_ms < 0: unknown.
std::string format_progress_bar(int64_t done, int64_t total, double events_per_s, int64_t eta_ms, int width = 30);

struct ReplayOptions {
  enum class Target : uint8_t { kInProcess, kKafka };
  std::vector<std::string> inputs;
  std::string mapping;            // nyc311 | heatseek | sichuan | jsonl; "" with mapping_file
  int64_t as_of_ms = kSichuanDefaultAsOfMs;  // sichuan: the event time of every profile (the file has no dates)
  std::string mapping_file;       // a YAML mapping for other CSV files
  std::string stream;             // jsonl: the stream (default: from the file name)
  std::vector<std::string> rule_files;  // in-process only
  Target to = Target::kInProcess;
  // Kafka: brokers, topics (prefix + the daemon's kafka.topics names), any
  // librdkafka producer property, how long to wait for a first broker answer.
  std::string brokers;
  std::string topic_prefix;
  connectors::Topics topics;
  std::map<std::string, std::string> kafka_properties;
  int connect_timeout_ms = 10000;
  double speed = 0;               // 0: as fast as possible; 1: real time; N: N times real time
  bool progress_bar = false;      // redraw a bar (stderr is a terminal) instead of lines
  const std::atomic<bool>* stop = nullptr;  // set (Ctrl-C): stop sending, flush, summarise
  PaceClock* clock = nullptr;     // null: the steady clock
  uint64_t jitter_seed = 1;
  bool jitter = true;
  std::string inferred_type_prefix = "heating.suspected";  // alert types counted as inferred outages
  int64_t progress_every = 10000;
  bool print_alerts = false;
};

struct ReplaySummary {
  MapStats map;
  int64_t events_read = 0;        // mapped events, to send
  int64_t events_sent = 0;
  int64_t rejected = 0;           // events the decoder refuses: not sent in-process; sent to Kafka (dead-lettered there)
  int64_t delivered = 0, failed = 0;  // Kafka: acknowledged by the broker, or not
  std::string incomplete;         // why some events did not reach Kafka ("" when all did)
  bool interrupted = false;       // stopped by *ReplayOptions::stop
  std::array<int64_t, kStreamCount> by_stream{};
  int64_t first_time_ms = 0, last_time_ms = 0;
  std::map<std::string, int64_t> alerts_by_rule;  // every loaded rule, 0 included
  int64_t alerts = 0;
  int64_t inferred_alerts = 0;
  std::set<std::string> inferred_buildings, inferred_streets;
};

// What is wrong with a combination of options ("" when none).
std::string check_replay_options(const ReplayOptions& o);
// Reads and maps the inputs (sorted by event time, stable). Errors go to `error`;
// the first few invalid rows of a mapping file are logged (masked) to `log`.
bool read_replay_events(const ReplayOptions& o, std::vector<ReplayEvent>& events, MapStats& stats, std::string& error,
                        std::ostream* log = nullptr);
// Runs the whole replay; progress and alerts go to `log`. Returns false with
// `error` set when nothing could be replayed (bad options, rules or inputs, no
// broker); true otherwise, with summary.incomplete set when events were lost.
bool run_replay(const ReplayOptions& o, ReplaySummary& summary, std::ostream& log, std::string& error);
void print_replay_summary(const ReplayOptions& o, const ReplaySummary& s, std::ostream& out);
// The subcommand: 0 ok, 1 when events did not reach Kafka, 2 when nothing could
// be replayed, 130 when interrupted.
int replay_main(const ReplayOptions& o, std::ostream& out, std::ostream& err);

}  // namespace tocsin::app
