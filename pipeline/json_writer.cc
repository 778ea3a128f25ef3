#include "pipeline/json_writer.h"

#include <charconv>

#include "pipeline/decoder.h"

namespace tocsin {

JsonWriter& JsonWriter::key(std::string_view k) {
  sep();
  out_ += '"';
  append_json_escaped(out_, k);
  out_ += "\":";
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::str(std::string_view v) {
  sep();
  out_ += '"';
  append_json_escaped(out_, v);
  out_ += '"';
  return *this;
}

JsonWriter& JsonWriter::num(int64_t v) {
  sep();
  char buf[24];
  out_.append(buf, static_cast<size_t>(std::to_chars(buf, buf + sizeof buf, v).ptr - buf));
  return *this;
}

JsonWriter& JsonWriter::num(double v) {
  sep();
  char buf[32];  // as printf("%.17g"), without printf's locale and stream machinery
  out_.append(buf, static_cast<size_t>(std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general, 17).ptr - buf));
  return *this;
}

JsonWriter& JsonWriter::time(int64_t epoch_ms) {
  char buf[32];
  return str(format_rfc3339_ms(epoch_ms, buf));
}

void append_json_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
}

std::string mask_phone(std::string_view number) {
  std::string out;
  size_t digits = 0;
  for (char c : number) digits += (c >= '0' && c <= '9');
  if (digits < 7) return "****";
  size_t seen = 0;
  for (char c : number) {
    if (c < '0' || c > '9') {
      out += c;
      continue;
    }
    out += (seen < 3 || seen >= digits - 4) ? c : '*';
    ++seen;
  }
  return out;
}

void append_masked_text(std::string& out, std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    if (text[j] == '+') ++j;
    size_t k = j;
    while (k < text.size() && text[k] >= '0' && text[k] <= '9') ++k;
    if (k - j >= 7) {
      out += mask_phone(text.substr(i, k - i));
      i = k;
    } else {
      out.append(text.substr(i, k > i ? k - i : 1));
      i = k > i ? k : i + 1;
    }
  }
}

}  // namespace tocsin
