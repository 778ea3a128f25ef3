// libFuzzer target for the validating decoder and the RFC 3339 time helpers.
//
// Input: the first byte picks the stream (modulo kStreamCount: calls, faults, complaints, profiles),
// the rest is the message. Invariants checked (abort on violation):
//   - decode() never crashes, and a rejected message has a real reason code;
//   - an accepted event has every required field of its schema present, its
//     time_ms equals the time slot, its kind is valid and its time is in range;
//   - every string view of an accepted event is readable (ASan sees the reads),
//     and every time slot can be formatted with format_rfc3339_ms;
//   - parse_rfc3339_ms(format_rfc3339_ms(t)) == t for any t that parses;
//   - the fast path (DecodePath::kFast) and simdjson (kSimdjson) give the same
//     reason and detail, and the same slots when they accept.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "pipeline/decoder.h"
#include "pipeline/event.h"

namespace {

using tocsin::DecodeError;
using tocsin::Event;
using tocsin::FieldType;
using tocsin::Stream;

constexpr int64_t kNowMs = 1795702987000;  // 2026-11-26T14:23:07Z
constexpr size_t kMaxEventBytes = 4096;     // small, so the oversized path is hit too

tocsin::DecodeLimits limits() {
  tocsin::DecodeLimits l;
  l.max_event_bytes = kMaxEventBytes;
  return l;
}

[[noreturn]] void fail(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz_decoder: invariant violated: %s %.*s\n", what,
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

// Reads every byte of the view so out-of-bounds or dangling views are reported.
size_t touch(std::string_view s) {
  size_t h = s.size();
  for (unsigned char c : s) h = h * 31 + c;
  return h;
}

void check_event(const tocsin::DecodeLimits& lim, Stream stream, const Event& e) {
  const tocsin::StreamSchema& schema = tocsin::schema_of(stream);
  if (e.stream != stream) fail("event.stream differs from the decoded stream");
  volatile size_t sink = 0;
  for (size_t i = 0; i < schema.fields.size(); ++i) {
    const tocsin::FieldDef& f = schema.fields[i];
    const tocsin::Value& v = e.slots[i];
    if (f.required && !v.present) fail("required field absent:", f.name);
    if (v.present && v.type != f.type) fail("slot type differs from the schema:", f.name);
    if (v.present && v.type == FieldType::kString) sink = sink + touch(v.s);
    // Time slots are formatted downstream (alert titles, JSON output); other
    // times than the event time are not range-checked, so any int64 can get here.
    if (v.present && v.type == FieldType::kTime) {
      char buf[32];
      const std::string_view text = tocsin::format_rfc3339_ms(v.i, buf);
      if (text.size() >= sizeof buf) fail("formatted time overflows its buffer:", f.name);
      sink = sink + touch(text);
    }
  }
  (void)sink;
  const tocsin::Value& t = e.slots[static_cast<size_t>(schema.time_slot)];
  if (e.time_ms != t.i) fail("event.time_ms differs from the time slot");
  if (e.time_ms < lim.min_time_ms || e.time_ms > kNowMs + lim.max_future_skew_ms)
    fail("event time out of the accepted range");
  if (schema.kind_slot >= 0) {
    if (e.kind < 0 || static_cast<size_t>(e.kind) >= schema.kinds.size()) fail("kind out of range");
    if (schema.kinds[static_cast<size_t>(e.kind)] != e.slots[static_cast<size_t>(schema.kind_slot)].s)
      fail("kind index does not match the kind slot");
  } else if (e.kind != -1) {
    fail("kind set on a stream without kinds");
  }
  (void)touch(e.id());
}

void check_time_round_trip(std::string_view text) {
  int64_t ms = 0;
  if (tocsin::parse_rfc3339_ms(text, ms) != DecodeError::kOk) return;
  char buf[32];
  const std::string_view formatted = tocsin::format_rfc3339_ms(ms, buf);
  int64_t again = 0;
  const DecodeError e = tocsin::parse_rfc3339_ms(formatted, again);
  if (e != DecodeError::kOk || again != ms) {
    std::fprintf(stderr,
                 "fuzz_decoder: time round trip failed: input \"%.*s\" -> %lld ms -> \"%.*s\" -> %s %lld\n",
                 static_cast<int>(text.size()), text.data(), static_cast<long long>(ms),
                 static_cast<int>(formatted.size()), formatted.data(),
                 std::string(tocsin::reason_code(e)).c_str(), static_cast<long long>(again));
    std::abort();
  }
}

bool same_value(const tocsin::Value& x, const tocsin::Value& y) {
  if (x.present != y.present) return false;
  if (!x.present) return true;
  if (x.type != y.type) return false;
  switch (x.type) {
    case FieldType::kString: return x.s == y.s;
    case FieldType::kInt:
    case FieldType::kTime: return x.i == y.i;
    case FieldType::kBool: return x.b == y.b;
    case FieldType::kDouble: return std::memcmp(&x.d, &y.d, sizeof x.d) == 0;
  }
  return false;
}

void check_same_as_simdjson(Stream stream, std::string_view bytes, const tocsin::DecodeResult& r,
                            const Event& e) {
  static tocsin::Decoder slow(limits(), tocsin::DecodePath::kSimdjson);
  Event s;
  const tocsin::DecodeResult rs = slow.decode(stream, bytes, kNowMs, s);
  if (rs.error != r.error) fail("fast path and simdjson give different reasons:", tocsin::reason_code(rs.error));
  if (rs.detail != r.detail) fail("fast path and simdjson give different details:", rs.detail);
  if (!r.ok()) return;
  if (s.kind != e.kind || s.time_ms != e.time_ms) fail("fast path and simdjson differ in kind or time");
  const tocsin::StreamSchema& schema = tocsin::schema_of(stream);
  for (size_t i = 0; i < schema.fields.size(); ++i)
    if (!same_value(e.slots[i], s.slots[i])) fail("fast path and simdjson differ in", schema.fields[i].name);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const tocsin::DecodeLimits lim = limits();
  static tocsin::Decoder decoder(lim);
  if (size == 0) return 0;
  const Stream stream = static_cast<Stream>(data[0] % tocsin::kStreamCount);
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);

  Event event;
  const tocsin::DecodeResult r = decoder.decode(stream, bytes, kNowMs, event);
  if (static_cast<int>(r.error) >= tocsin::kDecodeErrorCount) fail("error code out of range");
  if (r.ok()) {
    check_event(lim, stream, event);
  } else {
    if (tocsin::reason_code(r.error) == "ok") fail("rejected with reason code 'ok'");
    if (r.error == DecodeError::kOversized && bytes.size() <= kMaxEventBytes)
      fail("oversized reported for a message within the limit");
    (void)touch(r.detail);
  }
  check_same_as_simdjson(stream, bytes, r, event);
  if (bytes.size() > kMaxEventBytes && r.error != DecodeError::kOversized)
    fail("message over the limit was not rejected as oversized");

  check_time_round_trip(bytes);
  return 0;
}
