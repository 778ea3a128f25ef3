#pragma once
// Validating decoder: one JSON message -> one typed Event.
//
// One Decoder per worker (not thread-safe). It owns a simdjson On-Demand parser
// and a padded input buffer that is reused for every message, so decoding
// allocates nothing once the buffer has grown to the largest accepted message.
// String values in the decoded Event point into the decoder and stay valid
// until the next call to decode().
#include <array>
#include <cstdint>
#include <memory>
#include <string_view>

#include "pipeline/event.h"

namespace tocsin {

// Why a message was rejected. Every value is a metric label and a dead-letter
// reason code, so the set is closed.
enum class DecodeError : uint8_t {
  kOk = 0,
  kInvalidJson,     // not parseable JSON, or trailing content
  kNotObject,       // valid JSON but not an object
  kMissingField,    // a required field is absent or null
  kWrongType,       // a field has the wrong JSON type (or an unparseable time)
  kInvalidValue,    // a field has a value outside its allowed set (e.g. kind)
  kOversized,       // larger than DecodeLimits::max_event_bytes
  kInvalidUtf8,     // the bytes are not valid UTF-8
  kImpossibleTime,  // a time that cannot exist, is too old, or is too far ahead
};
inline constexpr int kDecodeErrorCount = 9;
std::string_view reason_code(DecodeError e);

struct DecodeLimits {
  size_t max_event_bytes = 64 * 1024;
  int64_t min_time_ms = 946684800000;  // 2000-01-01T00:00:00Z
  int64_t max_future_skew_ms = 3600 * 1000;
};

struct DecodeResult {
  DecodeError error = DecodeError::kOk;
  std::string_view detail;  // field name or parser message; static or schema storage
  bool ok() const { return error == DecodeError::kOk; }
};

// kFast reads the flat objects producers write in one pass and hands anything
// else to simdjson; kSimdjson always uses simdjson. Both accept and reject the
// same messages with the same results (kSimdjson exists to check that).
enum class DecodePath : uint8_t { kFast, kSimdjson };

// The path that decided a message. kFast tries the stream's learnt shapes
// (key orders in compact JSON) first, then one pass over any flat object,
// then simdjson, which also words every rejection (but kOversized: not read,
// not counted).
enum class DecodedBy : uint8_t { kShape, kFlat, kSimdjson };
inline constexpr int kDecodedByCount = 3;
std::string_view to_string(DecodedBy d);  // "shape", "flat", "simdjson"
// Messages per stream and path: counts[stream][DecodedBy].
using DecodePathCounts = std::array<std::array<uint64_t, kDecodedByCount>, kStreamCount>;

class Decoder {
 public:
  explicit Decoder(const DecodeLimits& limits = {}, DecodePath path = DecodePath::kFast);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Decodes `bytes` as an event of `stream`. `now_ms` is the wall clock used to
  // reject times too far in the future. On error `out` is unspecified.
  DecodeResult decode(Stream stream, std::string_view bytes, int64_t now_ms, Event& out);
  const DecodePathCounts& path_counts() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The instants RFC 3339 can write: 0000-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z.
inline constexpr int64_t kMinRfc3339Ms = -62167219200000;
inline constexpr int64_t kMaxRfc3339Ms = 253402300799999;

// Parses RFC 3339 ("2026-11-26T14:03:07.123Z", "...+08:00", fraction optional).
// Returns kOk, kWrongType (not a timestamp) or kImpossibleTime (no such date/time,
// or an instant outside kMinRfc3339Ms..kMaxRfc3339Ms once the offset is applied).
DecodeError parse_rfc3339_ms(std::string_view text, int64_t& epoch_ms);
// Reads the canonical form producers write, "YYYY-MM-DDTHH:MM:SS.mmmZ", as
// parse_rfc3339_ms would: exactly the 24 bytes at `t`, which must be readable.
// False (and `epoch_ms` untouched) for anything else, including a time that does
// not exist or a leap second; parse_rfc3339_ms then decides. Remembers the last
// date it read, so that times on the same date skip the calendar arithmetic.
class CanonicalTimeReader {
 public:
  bool read(const char* t, int64_t& epoch_ms);

 private:
  uint64_t date_ymd_ = 0;  // "YYYY-MM-" and "DD" of day_ms_; zeros (never a date) at first
  uint16_t date_dd_ = 0;
  int64_t day_ms_ = 0;
};
// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
int64_t days_from_civil(int64_t year, unsigned month, unsigned day);
// Formats epoch milliseconds as "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (24 bytes);
// values outside kMinRfc3339Ms..kMaxRfc3339Ms are clamped to that range.
std::string_view format_rfc3339_ms(int64_t epoch_ms, char (&buf)[32]);

}  // namespace tocsin
