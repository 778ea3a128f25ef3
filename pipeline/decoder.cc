#include "pipeline/decoder.h"

#include <simdjson.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <cstring>
#include <stdexcept>
#include <string>
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

// Bit i: raw[i] == text[i], for the 16 bytes of each.
inline unsigned equal16(const char* raw, const char* text) {
#if defined(__SSE2__)
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(raw));
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(text));
  return static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(a, b)));
#else
  unsigned bits = 0;
  for (int i = 0; i < 16; ++i) bits |= static_cast<unsigned>(raw[i] == text[i]) << i;
  return bits;
#endif
}

// Open-addressing table from field name to slot, built once per schema, so a
// key lookup costs one hash and one compare.
class FieldIndex {
 public:
  explicit FieldIndex(const StreamSchema& schema) : schema_(&schema) {
    table_.fill(-1);
    for (size_t i = 0; i < schema.fields.size(); ++i) {
      const std::string_view name = schema.fields[i].name;
      Quoted& q = quoted_[i];
      if (name.size() + 2 > sizeof q.text) throw std::logic_error("schema field name too long: " + std::string(name));
      std::memcpy(q.text.data(), name.data(), name.size());  // name, '"', ':', zero-padded
      q.text[name.size()] = '"';
      q.text[name.size() + 1] = ':';
      q.len = static_cast<uint8_t>(name.size());
      q.chunks = static_cast<uint8_t>((name.size() + 1) / 16 + 1);
      q.colon_chunks = static_cast<uint8_t>((name.size() + 2) / 16 + 1);
      for (size_t c = 0; c < kChunks; ++c) {
        q.mask[c] = mask_of(name.size() + 1, c);
        q.colon_mask[c] = mask_of(name.size() + 2, c);
      }
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
    return same(q, q.mask, q.chunks, raw);
  }
  // The same, with the colon right after the closing quote (compact JSON).
  bool is_with_colon(int slot, const char* raw) const {
    const Quoted& q = quoted_[static_cast<size_t>(slot)];
    return same(q, q.colon_mask, q.colon_chunks, raw);
  }
  // Length of field `slot`'s name.
  size_t name_size(int slot) const { return quoted_[static_cast<size_t>(slot)].len; }
  int find(std::string_view key) const {
    for (uint32_t h = name_hash(key) & kMask;; h = (h + 1) & kMask) {
      const int slot = table_[h];
      if (slot < 0) return -1;
      if (same_text(schema_->fields[static_cast<size_t>(slot)].name, key)) return slot;
    }
  }

 private:
  static constexpr uint32_t kMask = 63;
  static constexpr size_t kChunks = 3;  // names are at most 46 bytes (+ '"' + ':')
  // The bytes of 16-byte chunk `c` that lie within the first `n` bytes, a bit each.
  static uint16_t mask_of(size_t n, size_t c) {
    return n >= (c + 1) * 16 ? 0xffff : n <= c * 16 ? 0 : static_cast<uint16_t>((1u << (n - c * 16)) - 1);
  }
  // The name, '"' and ':', and which of their bytes the key must match.
  struct Quoted {
    std::array<char, 16 * kChunks> text{};
    std::array<uint16_t, kChunks> mask{}, colon_mask{};
    uint8_t len = 0;  // of the name
    uint8_t chunks = 0, colon_chunks = 0;  // chunks with a byte to match
  };
  // May read past the key: the buffer is padded.
  static bool same(const Quoted& q, const std::array<uint16_t, kChunks>& mask, size_t chunks, const char* raw) {
    for (size_t c = 0; c < chunks; ++c)
      if (~equal16(raw + 16 * c, q.text.data() + 16 * c) & mask[c]) return false;
    return true;
  }
  const StreamSchema* schema_;
  std::array<int8_t, kMask + 1> table_{};
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


// ---- The fast path: one pass over a flat object of scalars ----------------
//
// Every producer writes events as one flat JSON object of strings, numbers,
// booleans and nulls without escapes. flat_decode() reads exactly that shape
// and gives up (returns false) on anything else: an escape, a control or
// non-UTF-8 byte, a nested value, an exponent, a number that might not be
// exact, a wrong type, a missing field, a time out of range. The simdjson path
// then decides, so what is accepted, what is rejected and every reason code
// stay those of simdjson; the fast path only has to be right where it accepts
// (tests/pipeline/decoder_test.cc and fuzz_decoder compare both paths).

inline bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
inline const char* skip_ws(const char* p) {
  if (static_cast<unsigned char>(*p) > ' ') return p;  // compact JSON: no whitespace at all
  while (is_ws(*p)) ++p;
  return p;
}
inline bool is_digit(char c) { return static_cast<unsigned char>(c - '0') < 10; }
// What may follow a value inside an object.
inline bool ends_value(char c) { return c == ',' || c == '}' || is_ws(c); }

// The rest of scan_string() from `q`, its first non-ASCII byte: byte by byte,
// then the whole string's UTF-8 is checked. Rare: producers write ASCII ids.
[[gnu::noinline, gnu::cold]] const char* scan_non_ascii_string(const char* start, const char* q,
                                                              bool allow_non_ascii) {
  if (!allow_non_ascii) return nullptr;
  for (;; ++q) {
    const unsigned char c = static_cast<unsigned char>(*q);
    if (c == '"') break;
    if (c == '\\' || c < 0x20) return nullptr;
  }
  return simdjson::validate_utf8(start, static_cast<size_t>(q - start)) ? q : nullptr;
}

// The bytes scan_string() compares with, 16 of each. Filled at run time and
// passed by reference, so that GCC reads them as operands of the compares:
// as constants it rebuilt them with broadcasts at every inlined scan (calls
// in the decoders' loops clobber the vector registers), 8 instructions each.
struct StopBytes {
  alignas(16) char quote[16];
  alignas(16) char backslash[16];
  alignas(16) char space[16];  // bytes below it, as signed bytes: control or non-ASCII
  StopBytes() {
    std::memset(quote, '"', 16);
    std::memset(backslash, '\\', 16);
    std::memset(space, ' ', 16);
  }
};

// The text of a string starting at `p` (just after its opening quote), up to
// its closing quote; nullptr on an escape, a control byte or invalid UTF-8, and
// on any non-ASCII byte unless `allow_non_ascii`.
// Reads 16 bytes at a time: the buffer is padded with zeros, which stop it.
inline const char* scan_string(const char* p, bool allow_non_ascii, const StopBytes& stops) {
#if defined(__SSE2__)
  const __m128i quote = _mm_load_si128(reinterpret_cast<const __m128i*>(stops.quote)),
                backslash = _mm_load_si128(reinterpret_cast<const __m128i*>(stops.backslash)),
                space = _mm_load_si128(reinterpret_cast<const __m128i*>(stops.space));
  for (const char* q = p;; q += 16) {
    const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    // Below ' ' as signed bytes: a control byte or a non-ASCII one.
    const unsigned stop = static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(w, quote), _mm_cmpeq_epi8(w, backslash)), _mm_cmplt_epi8(w, space))));
    if (stop == 0) continue;
    q += __builtin_ctz(stop);
    if (*q == '"') return q;
    if (static_cast<unsigned char>(*q) < 0x80) return nullptr;  // an escape or a control byte
    return scan_non_ascii_string(p, q, allow_non_ascii);
  }
#else
  (void)stops;
  for (const char* q = p;; ++q) {
    const unsigned char c = static_cast<unsigned char>(*q);
    if (c == '"') return q;
    if (c == '\\' || c < 0x20) return nullptr;
    if (c >= 0x80) return scan_non_ascii_string(p, q, allow_non_ascii);
  }
#endif
}

// -?(0|[1-9][0-9]{0,17}) ended by a delimiter: always fits an int64.
inline const char* parse_int(const char* p, int64_t& out) {
  const bool neg = *p == '-';
  p += neg;
  uint64_t v = 0;
  if (*p == '0') {
    ++p;
  } else {
    const char* const first = p;
    while (is_digit(*p)) v = v * 10 + static_cast<uint64_t>(*p++ - '0');
    if (p == first || p - first > 18) return nullptr;
  }
  if (!ends_value(*p)) return nullptr;
  out = neg ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
  return p;
}

// A JSON number without exponent and with at most 15 digits: mantissa and
// power of ten are exact doubles, so one division rounds correctly (Clinger's
// fast path) and gives the value simdjson would.
inline const char* parse_double(const char* p, double& out) {
  static constexpr double kPow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7,
                                      1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
  const bool neg = *p == '-';
  p += neg;
  uint64_t v = 0;
  int digits = 0, fraction = 0;
  if (*p == '0') {
    ++p;
    digits = 1;
  } else {
    while (is_digit(*p)) v = v * 10 + static_cast<uint64_t>(*p++ - '0'), ++digits;
    if (digits == 0) return nullptr;
  }
  if (*p == '.') {
    ++p;
    while (is_digit(*p)) v = v * 10 + static_cast<uint64_t>(*p++ - '0'), ++digits, ++fraction;
    if (fraction == 0) return nullptr;
  }
  if (digits > 15 || !ends_value(*p)) return nullptr;
  const double x = static_cast<double>(v) / kPow10[fraction];
  out = neg ? -x : x;
  return p;
}

// Matches a literal (`true`, `false`, `null`) ended by a delimiter.
inline const char* literal(const char* p, std::string_view word) {
  uint64_t a = 0, b = 0;  // words are at most 5 bytes: compare them as one integer
  std::memcpy(&a, p, 8);  // the buffer is padded
  std::memcpy(&b, word.data(), word.size());
  if ((a ^ b) & ((1ull << (8 * word.size())) - 1) || !ends_value(p[word.size()])) return nullptr;
  return p + word.size();
}

// Any scalar of a field the schema does not have: checked, then skipped.
inline const char* skip_scalar(const char* p, const StopBytes& stops) {
  switch (*p) {
    case '"': {
      const char* end = scan_string(p + 1, true, stops);
      return end ? end + 1 : nullptr;
    }
    case 't': return literal(p, "true");
    case 'f': return literal(p, "false");
    case 'n': return literal(p, "null");
    default: {
      double ignored;
      return parse_double(p, ignored);
    }
  }
}

// ---- The shape path: the learnt key orders of compact messages --------------
//
// A producer writes the messages of a stream with their keys in one order, as
// compact JSON, leaving out optional fields it has no value for. Once a message
// has decoded on the flat path, its key order is kept as a shape: per
// position, the bytes that must come before the value, `{"name":` for the
// first field and `,"name":` after. The next message is read against it: one
// masked 16-byte compare (two for long names) checks the delimiter, the whole
// key and the colon at once, with no key scan, slot lookup or whitespace test;
// a key that does not match is a field the message lacks, and the next step is
// tried. Anything else (a key out of order or unknown, whitespace, a value the
// flat path would not read) gives up and the flat path decides, so the shape
// path too only has to be right where it accepts.

// Whether the keys `a` come in the same order, and with the same first key, in
// `b`: then a shape learnt from `b` reads a message with keys `a`.
bool first_and_in_order(const int8_t* a, size_t na, const int8_t* b, size_t nb) {
  if (na == 0 || nb == 0 || a[0] != b[0]) return false;  // the first key is never skipped
  size_t k = 0;
  for (size_t i = 0; i < na; ++i) {
    while (k < nb && b[k] != a[i]) ++k;
    if (k++ == nb) return false;
  }
  return true;
}

struct Shape {
  struct Step {
    std::array<char, 32> key{};  // the delimiter, `"name":`, zero-padded
    uint32_t mask = 0;           // a bit per byte of `key` that must match
    uint32_t bit = 0;            // 1 << slot
    uint8_t len = 0;             // bytes in `key`
    int8_t slot = -1;
    FieldType type = FieldType::kString;  // the field's
  };
  std::array<Step, kMaxSlots> steps{};
  size_t size = 0;  // steps in use; 0: none

  // Whether the shape path can read messages with keys `keys` (a slot per
  // position): known, distinct keys with names of at most 28 bytes.
  static bool readable(const StreamSchema& schema, const int8_t* keys, size_t n) {
    if (n == 0 || n > kMaxSlots) return false;
    uint32_t slots = 0;
    for (size_t i = 0; i < n; ++i) {
      const int slot = keys[i];
      if (slot < 0 || (slots >> slot & 1) || schema.fields[static_cast<size_t>(slot)].name.size() > 28) return false;
      slots |= 1u << slot;
    }
    return true;
  }
  // Makes `keys` the shape; readable(schema, keys, n) must hold.
  void learn(const StreamSchema& schema, const int8_t* keys, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const auto slot = static_cast<size_t>(keys[i]);
      const std::string_view name = schema.fields[slot].name;
      Step& step = steps[i];
      step.key.fill(0);
      step.key[0] = i == 0 ? '{' : ',';
      step.key[1] = '"';
      std::memcpy(step.key.data() + 2, name.data(), name.size());
      step.key[name.size() + 2] = '"';
      step.key[name.size() + 3] = ':';
      step.len = static_cast<uint8_t>(name.size() + 4);
      step.mask = step.len == 32 ? ~0u : (1u << step.len) - 1;
      step.slot = static_cast<int8_t>(slot);
      step.bit = 1u << slot;
      step.type = schema.fields[slot].type;
    }
    size = n;
  }
  // Whether the bytes at `p` (padded) are `step`'s delimiter and key.
  static bool at_key(const Step& step, const char* p) {
    if (~equal16(p, step.key.data()) & step.mask & 0xffff) return false;
    return step.mask >> 16 == 0 || (~equal16(p + 16, step.key.data() + 16) & step.mask >> 16) == 0;
  }
};

// A stream's shapes: a few, for producers that write more than one order.
struct Shapes {
  static constexpr size_t kCount = 4;
  std::array<Shape, kCount> shape{};
  size_t last = 0;  // the shape that read the last message: tried first
  size_t next = 0;  // the shape a new order replaces (round robin)

  // Called after the flat path read a message with keys `keys` (a slot per position).
  void learn(const StreamSchema& schema, const int8_t* keys, size_t n) {
    if (!Shape::readable(schema, keys, n)) return;  // keeps the shapes it has
    size_t widen = kCount;
    for (size_t i = 0; i < kCount; ++i) {
      std::array<int8_t, kMaxSlots> order;  // shape i's keys
      for (size_t k = 0; k < shape[i].size; ++k) order[k] = shape[i].steps[k].slot;
      // A shape that covers the keys failed on something else (a value, whitespace).
      if (first_and_in_order(keys, n, order.data(), shape[i].size)) return;
      if (widen == kCount && first_and_in_order(order.data(), shape[i].size, keys, n)) widen = i;
    }
    const size_t i = widen < kCount ? widen : next++ % kCount;
    shape[i].learn(schema, keys, n);
    last = i;
  }
};
}  // namespace

std::string_view reason_code(DecodeError e) { return kReasons[static_cast<int>(e)]; }

std::string_view to_string(DecodedBy d) {
  static constexpr std::string_view kNames[kDecodedByCount] = {"shape", "flat", "simdjson"};
  return kNames[static_cast<int>(d)];
}

struct Decoder::Impl {
  DecodeLimits limits;
  DecodePath path;
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
  // Per stream, a bit per required field.
  std::array<uint32_t, kStreamCount> required = [] {
    std::array<uint32_t, kStreamCount> r{};
    for (int s = 0; s < kStreamCount; ++s) {
      const StreamSchema& schema = schema_of(static_cast<Stream>(s));
      for (size_t i = 0; i < schema.fields.size(); ++i)
        if (schema.fields[i].required) r[static_cast<size_t>(s)] |= 1u << i;
    }
    return r;
  }();

  Impl(const DecodeLimits& l, DecodePath p) : limits(l), path(p), parser(l.max_event_bytes + 64) {
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

  // Per stream and time field: most of a field's times fall on a few dates.
  std::array<std::array<CanonicalTimeReader, kMaxSlots>, kStreamCount> times{};
  std::array<Shapes, kStreamCount> shapes{};
  StopBytes stops;
  DecodePathCounts counts{};

  // The shape path over buffer[0, size): true when `out` is the decoded event
  // (see "The shape path" above).
  bool shape_decode(Stream stream, size_t size, int64_t now_ms, Event& out) {
    Shapes& shapes_of_stream = shapes[static_cast<size_t>(stream)];
    const size_t last = shapes_of_stream.last;
    if (read_shape(stream, shapes_of_stream.shape[last], size, now_ms, out)) return true;
    for (size_t i = 0; i < Shapes::kCount; ++i)
      if (i != last && read_shape(stream, shapes_of_stream.shape[i], size, now_ms, out)) {
        shapes_of_stream.last = i;
        return true;
      }
    return false;
  }

  bool read_shape(Stream stream, const Shape& shape, size_t size, int64_t now_ms, Event& out) {
    const Shape::Step* step = shape.steps.data();
    const Shape::Step* const last_step = step + shape.size;
    const char* p = buffer.data();
    if (shape.size == 0 || !Shape::at_key(*step, p)) return false;  // the first key is never skipped
    const size_t s = static_cast<size_t>(stream);
    const StreamSchema& schema = schema_of(stream);
    uint32_t seen = 0, nulls = 0;  // a bit per slot
    for (;;) {
      p += step->len;
      const auto slot = static_cast<size_t>(step->slot);
      Value& v = out.slots[slot];
      seen |= step->bit;
      if (step->type == FieldType::kString && *p == '"') {  // most fields: read here, not in flat_value()
        const char* end = scan_string(p + 1, true, stops);
        if (!end) return false;
        v.type = FieldType::kString;
        v.present = true;
        v.s = {p + 1, static_cast<size_t>(end - p - 1)};
        p = end + 1;
      } else if (*p == 'n') {
        p = literal(p, "null");
        v.present = false;
        nulls |= step->bit;
      } else {
        p = flat_value(schema.fields[slot], p, now_ms, static_cast<int>(slot) == schema.time_slot, times[s][slot],
                       v);
      }
      if (!p) return false;
      do  // a step whose key is not next is a field this message lacks
        if (++step == last_step) goto end_of_steps;
      while (!Shape::at_key(*step, p));
    }
  end_of_steps:
    if (*p != '}' || p + 1 != buffer.data() + size) return false;
    if ((seen & ~nulls & required[s]) != required[s]) return false;
    return finish(schema, seen, out);
  }

  // Marks the slots not in `seen` (a bit per slot) absent and sets the event's
  // kind and time from its slots; false for a kind the schema does not have.
  static bool finish(const StreamSchema& schema, uint32_t seen, Event& out) {
    const uint32_t all = (1u << schema.fields.size()) - 1;
    for (uint32_t m = all & ~seen; m; m &= m - 1) out.slots[static_cast<size_t>(__builtin_ctz(m))].present = false;
    if (schema.kind_slot >= 0) {
      out.kind = schema.kind_index(out.slots[static_cast<size_t>(schema.kind_slot)].s);
      if (out.kind < 0) return false;
    }
    out.time_ms = out.slots[static_cast<size_t>(schema.time_slot)].i;
    return true;
  }

  // Reads one non-null scalar value of field `f` at `p` into `out`; nullptr when the
  // simdjson path must decide (see "The fast path" above).
  // Inlined in both paths: a call per field cost ~8 % of the shape path.
  [[gnu::always_inline]] const char* flat_value(const FieldDef& f, const char* p, int64_t now_ms,
                                                bool is_event_time, CanonicalTimeReader& times_of_field,
                                                Value& out) const {
    out.type = f.type;
    out.present = true;
    switch (f.type) {
      case FieldType::kString: {
        if (*p != '"') return nullptr;
        const char* end = scan_string(p + 1, true, stops);
        if (!end) return nullptr;
        out.s = {p + 1, static_cast<size_t>(end - p - 1)};
        return end + 1;
      }
      case FieldType::kInt: return parse_int(p, out.i);
      case FieldType::kDouble: return parse_double(p, out.d);
      case FieldType::kBool:
        out.b = *p == 't';
        return literal(p, out.b ? "true" : "false");
      case FieldType::kTime: {
        if (*p == '"') {
          const char* end = p + 25;  // the closing quote of a canonical time
          if (*end != '"' || !times_of_field.read(p + 1, out.i)) {
            end = scan_string(p + 1, false, stops);
            if (!end ||
                parse_rfc3339_ms({p + 1, static_cast<size_t>(end - p - 1)}, out.i) != DecodeError::kOk)
              return nullptr;
          }
          p = end + 1;
        } else {
          p = parse_int(p, out.i);
          if (!p) return nullptr;
        }
        if (out.i < kMinRfc3339Ms || out.i > kMaxRfc3339Ms) return nullptr;
        if (is_event_time && !check_time(f, out.i, now_ms).ok()) return nullptr;
        return p;
      }
    }
    return nullptr;
  }

  // The fast path over buffer[0, size): true when `out` is the decoded event.
  bool flat_decode(Stream stream, size_t size, int64_t now_ms, Event& out) {
    const StreamSchema& schema = schema_of(stream);
    const FieldIndex& fields = index[static_cast<int>(stream)];
    std::array<int8_t, kMaxSlots>& guess = predicted[static_cast<int>(stream)];
    const char* const end = buffer.data() + size;
    const char* p = skip_ws(buffer.data());
    if (*p != '{') return false;
    p = skip_ws(p + 1);
    uint32_t seen = 0, present = 0;  // a bit per slot: read, read and not null
    size_t position = 0;
    for (;; ++position) {
      if (*p != '"') return false;
      // The guessed name followed by a quote is the whole key: no need to scan it.
      const char* key = p + 1;
      int slot = position < guess.size() ? guess[position] : -1;
      if (slot >= 0 && fields.is_with_colon(slot, key)) {  // `"name":`, as compact JSON writes it
        p = skip_ws(key + fields.name_size(slot) + 2);
      } else {
        const char* key_end;
        if (slot >= 0 && fields.is(slot, key)) {
          key_end = key + fields.name_size(slot);
        } else {
          key_end = scan_string(key, false, stops);
          if (!key_end) return false;
          slot = fields.find({key, static_cast<size_t>(key_end - key)});
          if (position < guess.size()) guess[position] = static_cast<int8_t>(slot);
        }
        p = skip_ws(key_end + 1);
        if (*p != ':') return false;
        p = skip_ws(p + 1);
      }
      if (slot < 0) {
        p = skip_scalar(p, stops);
      } else {
        const uint32_t bit = 1u << slot;
        Value& v = out.slots[static_cast<size_t>(slot)];
        seen |= bit;
        if (*p == 'n') {
          p = literal(p, "null");
          v.present = false;
          present &= ~bit;
        } else {
          p = flat_value(schema.fields[static_cast<size_t>(slot)], p, now_ms, slot == schema.time_slot,
                         times[static_cast<size_t>(stream)][static_cast<size_t>(slot)], v);
          present |= bit;
        }
      }
      if (!p) return false;
      if (*p == ',' && p[1] == '"') {  // compact JSON: the next key follows
        ++p;
        continue;
      }
      p = skip_ws(p);
      if (*p == '}') break;
      if (*p != ',') return false;
      p = skip_ws(p + 1);
    }
    if (skip_ws(p + 1) != end) return false;
    const uint32_t required_fields = required[static_cast<size_t>(stream)];
    if ((present & required_fields) != required_fields) return false;
    if (!finish(schema, seen, out)) return false;
    // `guess` now holds this message's key order: the next message may take the shape path.
    if (position < guess.size()) shapes[static_cast<size_t>(stream)].learn(schema, guess.data(), position + 1);
    return true;
  }

  DecodeResult decode(Stream stream, std::string_view bytes, int64_t now_ms, Event& out) {
    if (bytes.size() > limits.max_event_bytes) return fail(DecodeError::kOversized, "message");
    std::memcpy(buffer.data(), bytes.data(), bytes.size());
    std::memset(buffer.data() + bytes.size(), 0, simdjson::SIMDJSON_PADDING);
    out.stream = stream;
    out.kind = -1;
    auto& by = counts[static_cast<size_t>(stream)];
    if (path == DecodePath::kFast) {
      if (shape_decode(stream, bytes.size(), now_ms, out)) {
        ++by[static_cast<size_t>(DecodedBy::kShape)];
        return {};
      }
      out.kind = -1;
      if (flat_decode(stream, bytes.size(), now_ms, out)) {
        ++by[static_cast<size_t>(DecodedBy::kFlat)];
        return {};
      }
    }
    ++by[static_cast<size_t>(DecodedBy::kSimdjson)];
    out.kind = -1;
    const StreamSchema& schema = schema_of(stream);
    for (size_t i = 0; i < schema.fields.size(); ++i) out.slots[i].present = false;
    return simdjson_decode(stream, bytes.size(), now_ms, out);
  }

  // The general path: any JSON, every error classified.
  DecodeResult simdjson_decode(Stream stream, size_t size, int64_t now_ms, Event& out) {
    const StreamSchema& schema = schema_of(stream);
    const FieldIndex& fields = index[static_cast<int>(stream)];
    od::document doc;
    if (auto ec = parser.iterate(buffer.data(), size, buffer.size()).get(doc))
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

Decoder::Decoder(const DecodeLimits& limits, DecodePath path)
    : impl_(std::make_unique<Impl>(limits, path)) {}
Decoder::~Decoder() = default;

DecodeResult Decoder::decode(Stream stream, std::string_view bytes, int64_t now_ms, Event& out) {
  return impl_->decode(stream, bytes, now_ms, out);
}

const DecodePathCounts& Decoder::path_counts() const { return impl_->counts; }

}  // namespace tocsin
