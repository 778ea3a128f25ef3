#pragma once
// Event model: one flat record of typed slots per input message.
//
// Each stream (calls, faults, complaints, profiles) has a fixed schema: an ordered list of
// fields with a type. The decoder fills slot i with field i; the rule compiler
// resolves field names to slot indices once, at load time, so evaluation never
// looks a name up. String values are views into the decoder's buffers and are
// valid only while the event is being processed (copy what must outlive it).
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace tocsin {

enum class Stream : uint8_t { kCalls = 0, kFaults = 1, kComplaints = 2, kProfiles = 3 };
inline constexpr int kStreamCount = 4;

enum class FieldType : uint8_t { kString, kInt, kDouble, kBool, kTime };

std::string_view to_string(Stream s);
std::string_view to_string(FieldType t);
std::optional<Stream> stream_from_string(std::string_view name);
// The stream names for messages: "calls, faults, complaints or profiles".
std::string_view stream_names();

struct FieldDef {
  std::string_view name;
  FieldType type;
  bool required;
  std::string_view doc;
};

// The schema of one stream. `time_slot` is the event time, `id_slot` the
// event's own id (used as evidence), `kind_slot` the event type that rules are
// indexed by (-1: the stream has a single event type), `key_slot` the
// partition key producers key their messages by (docs/events.md).
struct StreamSchema {
  Stream stream;
  std::string_view name;
  std::span<const FieldDef> fields;
  int time_slot;
  int id_slot;
  int kind_slot;
  std::span<const std::string_view> kinds;  // allowed values of kind_slot
  int key_slot;
  // Returns the slot of `field`, or -1.
  int slot_of(std::string_view field) const;
  // Returns the index of `kind` in `kinds`, or -1.
  int kind_index(std::string_view kind) const;
};

const StreamSchema& schema_of(Stream s);
// The slots of `s` that say where an event happened (district, street,
// community, grid, building, network_id, asset_id, households, category): an
// alert's `context`. Never a phone number; none for calls.
uint32_t context_slots(Stream s);

inline constexpr int kMaxSlots = 24;
// Every stream's event id is its first field (StreamSchema::id_slot; event.cc checks).
inline constexpr size_t kIdSlot = 0;

// A typed value. Plain data: copying is cheap and never allocates.
struct Value {
  FieldType type = FieldType::kString;
  bool present = false;
  bool b = false;
  int64_t i = 0;  // kInt, and kTime as epoch milliseconds
  double d = 0;
  std::string_view s;

  static Value of_int(int64_t v) { Value x; x.type = FieldType::kInt; x.present = true; x.i = v; return x; }
  static Value of_time(int64_t ms) { Value x; x.type = FieldType::kTime; x.present = true; x.i = ms; return x; }
  static Value of_double(double v) { Value x; x.type = FieldType::kDouble; x.present = true; x.d = v; return x; }
  static Value of_bool(bool v) { Value x; x.type = FieldType::kBool; x.present = true; x.b = v; return x; }
  static Value of_string(std::string_view v) { Value x; x.type = FieldType::kString; x.present = true; x.s = v; return x; }
};

// Where a message came from: carried to outputs and dead letters.
struct SourcePosition {
  std::string_view topic;
  int32_t partition = -1;
  int64_t offset = -1;
};

struct Event {
  Stream stream = Stream::kCalls;
  int kind = -1;  // index into schema.kinds, -1 when the stream has no kinds
  int64_t time_ms = 0;
  SourcePosition source;
  std::array<Value, kMaxSlots> slots{};

  const Value& at(int slot) const { return slots[static_cast<size_t>(slot)]; }
  std::string_view id() const { return slots[kIdSlot].s; }
};

}  // namespace tocsin
