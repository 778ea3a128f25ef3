#pragma once
// Appending JSON writer over a caller-owned std::string (reused between
// messages, so steady-state writing does not allocate). It does not check
// structure: callers emit keys and values in a valid order.
#include <cstdint>
#include <string>
#include <string_view>

namespace tocsin {

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}
  JsonWriter& begin_object() { sep(); out_ += '{'; first_ = true; return *this; }
  JsonWriter& end_object() { out_ += '}'; first_ = false; return *this; }
  JsonWriter& begin_array() { sep(); out_ += '['; first_ = true; return *this; }
  JsonWriter& end_array() { out_ += ']'; first_ = false; return *this; }
  JsonWriter& key(std::string_view k);
  JsonWriter& str(std::string_view v);
  JsonWriter& num(int64_t v);
  JsonWriter& num(double v);
  JsonWriter& boolean(bool v) { sep(); out_ += v ? "true" : "false"; return *this; }
  JsonWriter& null() { sep(); out_ += "null"; return *this; }
  JsonWriter& time(int64_t epoch_ms);  // RFC 3339 with milliseconds, UTC
  // Writes `v` as a JSON value with no escaping: it must already be valid JSON.
  JsonWriter& raw(std::string_view v) { sep(); out_ += v; return *this; }

 private:
  void sep() {
    if (!first_ && after_key_ == false) out_ += ',';
    first_ = false;
    after_key_ = false;
  }
  std::string& out_;
  bool first_ = true;
  bool after_key_ = false;
};

// Appends `s` JSON-escaped (without quotes).
void append_json_escaped(std::string& out, std::string_view s);

// Masks a phone number for logs and titles: keeps the first 3 and last 4
// digits ("13812348000" -> "138****8000"). Short values become "****".
std::string mask_phone(std::string_view number);
// Appends `text` with every run of 7 or more digits (optionally after '+')
// masked as by mask_phone.
void append_masked_text(std::string& out, std::string_view text);

}  // namespace tocsin
