#include "pipeline/decoder.h"

#include <simdjson.h>

#include <cstring>
#include <vector>

namespace tocsin {
namespace {

namespace od = simdjson::ondemand;

constexpr std::string_view kReasons[kDecodeErrorCount] = {
    "ok",         "invalid_json",  "not_object",   "missing_field",  "wrong_type",
    "invalid_value", "oversized", "invalid_utf8", "impossible_time"};

// Field names are short and differ in length and in their first and last
// bytes: mixing those three picks a table slot without reading every byte.
uint32_t name_hash(std::string_view s) {
  if (s.empty()) return 0;
  const uint32_t a = static_cast<unsigned char>(s.front()), b = static_cast<unsigned char>(s.back());
  const uint32_t m = s.size() > 2 ? static_cast<unsigned char>(s[s.size() / 2]) : 0;
  return (static_cast<uint32_t>(s.size()) * 0x9e3779b1u) ^ (a * 0x85ebca6bu) ^ (b * 0xc2b2ae35u) ^ (m * 0x27d4eb2fu);
}

// Field names and keys are short: a byte loop beats a call to memcmp.
bool same_text(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// Open-addressing table from field name to slot, built once per schema, so a
// key lookup costs one hash and one compare.
class FieldIndex {
 public:
  explicit FieldIndex(const StreamSchema& schema) : schema_(&schema) {
    table_.fill(-1);
    for (size_t i = 0; i < schema.fields.size(); ++i) {
      const std::string_view name = schema.fields[i].name;
      quoted_[i].len = static_cast<uint8_t>(name.size() + 1);
      std::memcpy(quoted_[i].text.data(), name.data(), name.size());
      quoted_[i].text[name.size()] = '"';
      uint32_t h = name_hash(schema.fields[i].name) & kMask;
      while (table_[h] >= 0) h = (h + 1) & kMask;
      table_[h] = static_cast<int8_t>(i);
    }
  }
  // Whether the key whose text starts at `raw` (just after its opening quote,
  // inside the padded buffer) is field `slot`: its name followed by the
  // closing quote. A name holds no quote or backslash, so that is the whole key.
  bool is(int slot, const char* raw) const {
    const Quoted& q = quoted_[static_cast<size_t>(slot)];
    for (size_t w = 0; w * 8 < q.len; ++w) {
      uint64_t a, b;
      std::memcpy(&a, raw + w * 8, 8);  // may read past the key: the buffer is padded
      std::memcpy(&b, q.text.data() + w * 8, 8);
      const size_t left = q.len - w * 8;
      const uint64_t mask = left >= 8 ? ~0ull : (1ull << (left * 8)) - 1;
      if ((a ^ b) & mask) return false;
    }
    return true;
  }
  int find(std::string_view key) const {
    for (uint32_t h = name_hash(key) & kMask;; h = (h + 1) & kMask) {
      const int slot = table_[h];
      if (slot < 0) return -1;
      if (same_text(schema_->fields[static_cast<size_t>(slot)].name, key)) return slot;
    }
  }

 private:
  static constexpr uint32_t kMask = 63;
  const StreamSchema* schema_;
  std::array<int8_t, kMask + 1> table_{};
  struct Quoted {
    std::array<char, 40> text{};  // name + '"', zero-padded to whole words
    uint8_t len = 0;
  };
  std::array<Quoted, kMaxSlots> quoted_{};
};

DecodeResult fail(DecodeError e, std::string_view detail) { return {e, detail}; }


// The text of a JSON string whose opening quote is at raw[-1], when it has no
// escape: then it is its own unescaped value (unescaping it could only copy
// it: stage 1 has validated the UTF-8 of the whole document), and it is read
// in place, without the copy simdjson makes. False on a backslash.
bool unescaped_in_place(const char* raw, std::string_view& out) {
  size_t n = 0;
  while (raw[n] != '"' && raw[n] != '\\') ++n;
  if (raw[n] != '"') return false;
  out = {raw, n};
  return true;
}

DecodeError from_simdjson(simdjson::error_code ec) {
  switch (ec) {
    case simdjson::UTF8_ERROR: return DecodeError::kInvalidUtf8;
    case simdjson::INCORRECT_TYPE:
    case simdjson::NUMBER_OUT_OF_RANGE: return DecodeError::kWrongType;
    default: return DecodeError::kInvalidJson;
  }
}

}  // namespace

std::string_view reason_code(DecodeError e) { return kReasons[static_cast<int>(e)]; }

struct Decoder::Impl {
  DecodeLimits limits;
  od::parser parser;
  std::vector<char> buffer;  // capacity >= size + SIMDJSON_PADDING
  // Per stream, the slot of the field seen at each position of the last message (-1: none).
  std::array<std::array<int8_t, kMaxSlots>, kStreamCount> predicted = [] {
    std::array<std::array<int8_t, kMaxSlots>, kStreamCount> p{};
    for (auto& s : p) s.fill(-1);
    return p;
  }();
  FieldIndex index[kStreamCount] = {FieldIndex(schema_of(Stream::kCalls)),
                                    FieldIndex(schema_of(Stream::kFaults)),
                                    FieldIndex(schema_of(Stream::kComplaints)),
                                    FieldIndex(schema_of(Stream::kProfiles))};
  static_assert(kStreamCount == 4, "one FieldIndex per stream");

  explicit Impl(const DecodeLimits& l) : limits(l), parser(l.max_event_bytes + 64) {
    buffer.resize(l.max_event_bytes + simdjson::SIMDJSON_PADDING);
  }

  DecodeResult check_time(const FieldDef& f, int64_t ms, int64_t now_ms) const {
    if (ms < limits.min_time_ms || ms > now_ms + limits.max_future_skew_ms)
      return fail(DecodeError::kImpossibleTime, f.name);
    return {};
  }

  // `is_event_time`: only the event time is range-checked; other times (a
  // deadline, a SIM activation) are legitimately far from now.
  DecodeResult read_value(const FieldDef& f, od::value v, int64_t now_ms, bool is_event_time,
                          Value& out) {
    od::json_type t;
    if (auto ec = v.type().get(t)) return fail(from_simdjson(ec), f.name);
    if (t == od::json_type::null) {
      bool is_null = false;  // type() looks at the first byte only: check the whole atom
      if (v.is_null().get(is_null) || !is_null) return fail(DecodeError::kInvalidJson, f.name);
      out.present = false;
      return {};
    }
    out.type = f.type;
    switch (f.type) {
      case FieldType::kString: {
        if (t != od::json_type::string) return fail(DecodeError::kWrongType, f.name);
        // Unconsumed, the value is skipped by the object iteration.
        if (unescaped_in_place(v.raw_json_token().data() + 1, out.s)) break;
        if (auto ec = v.get_string().get(out.s)) return fail(from_simdjson(ec), f.name);
        break;
      }
      case FieldType::kInt: {
        if (t != od::json_type::number) return fail(DecodeError::kWrongType, f.name);
        if (auto ec = v.get_int64().get(out.i)) return fail(from_simdjson(ec), f.name);
        break;
      }
      case FieldType::kDouble: {
        if (t != od::json_type::number) return fail(DecodeError::kWrongType, f.name);
        if (auto ec = v.get_double().get(out.d)) return fail(from_simdjson(ec), f.name);
        break;
      }
      case FieldType::kBool: {
        if (t != od::json_type::boolean) return fail(DecodeError::kWrongType, f.name);
        if (auto ec = v.get_bool().get(out.b)) return fail(from_simdjson(ec), f.name);
        break;
      }
      case FieldType::kTime: {
        if (t == od::json_type::number) {
          if (auto ec = v.get_int64().get(out.i)) return fail(from_simdjson(ec), f.name);
        } else if (t == od::json_type::string) {
          std::string_view text;
          if (!unescaped_in_place(v.raw_json_token().data() + 1, text))
            if (auto ec = v.get_string().get(text)) return fail(from_simdjson(ec), f.name);
          if (auto e = parse_rfc3339_ms(text, out.i); e != DecodeError::kOk) return fail(e, f.name);
        } else {
          return fail(DecodeError::kWrongType, f.name);
        }
        // Every time must be writable back as RFC 3339 (years 0000-9999).
        if (out.i < kMinRfc3339Ms || out.i > kMaxRfc3339Ms) return fail(DecodeError::kImpossibleTime, f.name);
        if (is_event_time)
          if (auto r = check_time(f, out.i, now_ms); !r.ok()) return r;
        break;
      }
    }
    out.present = true;
    return {};
  }

  // Fully reads a value we do not need, so malformed content is still caught.
  static simdjson::error_code validate(od::value v) {
    od::json_type t;
    if (auto ec = v.type().get(t)) return ec;
    switch (t) {
      case od::json_type::object: {
        od::object o;
        if (auto ec = v.get_object().get(o)) return ec;
        for (auto f : o) {
          od::field field;
          if (auto ec = std::move(f).get(field)) return ec;
          if (auto ec = validate(field.value())) return ec;
        }
        return simdjson::SUCCESS;
      }
      case od::json_type::array: {
        od::array a;
        if (auto ec = v.get_array().get(a)) return ec;
        for (auto item : a) {
          od::value x;
          if (auto ec = std::move(item).get(x)) return ec;
          if (auto ec = validate(x)) return ec;
        }
        return simdjson::SUCCESS;
      }
      case od::json_type::string: return v.get_string().error();
      case od::json_type::number: return v.get_double().error();
      case od::json_type::boolean: return v.get_bool().error();
      case od::json_type::null: {
        bool is_null = false;  // type() looks at the first byte only: check the whole atom
        if (auto ec = v.is_null().get(is_null)) return ec;
        return is_null ? simdjson::SUCCESS : simdjson::N_ATOM_ERROR;
      }
    }
    return simdjson::SUCCESS;
  }

  DecodeResult decode(Stream stream, std::string_view bytes, int64_t now_ms, Event& out) {
    if (bytes.size() > limits.max_event_bytes) return fail(DecodeError::kOversized, "message");
    std::memcpy(buffer.data(), bytes.data(), bytes.size());
    std::memset(buffer.data() + bytes.size(), 0, simdjson::SIMDJSON_PADDING);
    const StreamSchema& schema = schema_of(stream);
    const FieldIndex& fields = index[static_cast<int>(stream)];
    out.stream = stream;
    out.kind = -1;
    for (size_t i = 0; i < schema.fields.size(); ++i) out.slots[i].present = false;

    od::document doc;
    if (auto ec = parser.iterate(buffer.data(), bytes.size(), buffer.size()).get(doc))
      return fail(from_simdjson(ec), simdjson::error_message(ec));
    od::json_type root_type;
    if (auto ec = doc.type().get(root_type)) return fail(from_simdjson(ec), "document");
    if (root_type != od::json_type::object) return fail(DecodeError::kNotObject, "document");
    od::object obj;
    if (auto ec = doc.get_object().get(obj)) return fail(from_simdjson(ec), "document");
    std::array<int8_t, kMaxSlots>& guess = predicted[static_cast<int>(stream)];
    size_t position = 0;
    for (auto field_result : obj) {
      od::field field;
      if (auto ec = std::move(field_result).get(field)) return fail(from_simdjson(ec), "object");
      // Producers write fields in a stable order: first try the field that
      // came at this position last time.
      const char* raw = field.key().raw();
      int slot = position < guess.size() ? guess[position] : -1;
      if (slot < 0 || !fields.is(slot, raw)) {
        std::string_view key;
        if (!unescaped_in_place(raw, key))
          if (auto ec = field.unescaped_key().get(key)) return fail(from_simdjson(ec), "key");
        slot = fields.find(key);
        if (position < guess.size()) guess[position] = static_cast<int8_t>(slot);
      }
      ++position;
      if (slot < 0) {
        // Unknown fields are ignored, but must still be well-formed JSON.
        if (auto ec = validate(field.value()))
          return fail(ec == simdjson::UTF8_ERROR ? DecodeError::kInvalidUtf8 : DecodeError::kInvalidJson, "value");
        continue;
      }
      const FieldDef& f = schema.fields[static_cast<size_t>(slot)];
      if (auto r = read_value(f, field.value(), now_ms, slot == schema.time_slot,
                              out.slots[static_cast<size_t>(slot)]);
          !r.ok())
        return r;
    }
    const char* rest = nullptr;
    if (doc.current_location().get(rest) == simdjson::SUCCESS)
      return fail(DecodeError::kInvalidJson, "trailing content");
    for (size_t i = 0; i < schema.fields.size(); ++i)
      if (schema.fields[i].required && !out.slots[i].present)
        return fail(DecodeError::kMissingField, schema.fields[i].name);
    if (schema.kind_slot >= 0) {
      out.kind = schema.kind_index(out.slots[static_cast<size_t>(schema.kind_slot)].s);
      if (out.kind < 0)
        return fail(DecodeError::kInvalidValue,
                    schema.fields[static_cast<size_t>(schema.kind_slot)].name);
    }
    out.time_ms = out.slots[static_cast<size_t>(schema.time_slot)].i;
    return {};
  }
};

Decoder::Decoder(const DecodeLimits& limits) : impl_(std::make_unique<Impl>(limits)) {}
Decoder::~Decoder() = default;

DecodeResult Decoder::decode(Stream stream, std::string_view bytes, int64_t now_ms, Event& out) {
  return impl_->decode(stream, bytes, now_ms, out);
}

}  // namespace tocsin
