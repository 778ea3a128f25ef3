#include "pipeline/phone_mask.h"

#include <simdjson.h>

#include <array>
#include <charconv>

#include "pipeline/json_writer.h"

namespace tocsin {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Characters that glue a digit run to a word: ASCII letters and digits, '_',
// and '*' (an already masked number). UTF-8 bytes (CJK text around a number)
// are not: "号码13812348000的" holds a number.
bool is_word(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '*';
}

bool starts_token(std::string_view t, size_t i) {
  if (i == 0) return true;
  if (is_word(t[i - 1])) return false;
  return !(t[i - 1] == '.' && i >= 2 && is_digit(t[i - 2]));  // not the fraction of a decimal
}

bool ends_token(std::string_view t, size_t p) {
  if (p == t.size()) return true;
  if (is_word(t[p])) return false;
  return !(t[p] == '.' && p + 1 < t.size() && is_digit(t[p + 1]));  // not the integer part of a decimal
}

bool is_mobile(std::string_view n) { return n.size() == 11 && n[0] == '1' && n[1] >= '3' && n[1] <= '9'; }

// Digits of the area code (without the trunk 0) of a national landline
// number written without its trunk 0, or 0 if it is not one: 10 and 2x have
// 2 digits and 8-digit subscriber numbers; the others 3 digits and 7 or 8.
size_t landline_area(std::string_view n) {
  if (n.size() < 2) return 0;
  if ((n[0] == '1' && n[1] == '0') || n[0] == '2') return n.size() == 10 ? 2 : 0;
  if (n[0] >= '3' && n[0] <= '9') return n.size() == 10 || n.size() == 11 ? 3 : 0;
  return 0;
}

// Leading digits shown unmasked, or 0 when `d` (digits only; `plus`: written
// after a '+') is not a phone number.
size_t shown_head(bool plus, std::string_view d) {
  size_t cc = 0;  // digits of the "86" country prefix (with its 00)
  if (plus) {
    if (!d.starts_with("86")) return d.size() >= 8 && d.size() <= 15 ? 3 : 0;
    cc = 2;
  } else if (d.starts_with("0086")) {
    cc = 4;
  } else if (d.starts_with("00")) {
    return d.size() >= 10 && d.size() <= 17 && d[2] != '0' ? 5 : 0;
  } else if (d.size() == 13 && d.starts_with("86") && is_mobile(d.substr(2))) {
    return 5;
  } else if (is_mobile(d)) {
    return 3;
  } else if (d.starts_with("0")) {
    const size_t area = landline_area(d.substr(1));
    return area ? 1 + area : 0;
  } else {
    return 0;
  }
  std::string_view n = d.substr(cc);
  if (is_mobile(n)) return cc + 3;
  if (n.starts_with("0")) n.remove_prefix(1), ++cc;  // +86 (0)10 ...: a trunk 0 written anyway
  const size_t area = landline_area(n);
  return area ? cc + area : 0;
}

constexpr size_t kMaxDigits = 20;

// The phone number starting at t[i], if any: its end and the digits shown
// unmasked at its head. Digit groups may be joined by one ' ' or '-'; the
// longest run of groups that is a number wins.
struct Match {
  size_t end = 0;
  size_t head = 0;
  size_t digits = 0;
  size_t first_group_end = 0;  // where to go on when there is no match
};

bool match_at(std::string_view t, size_t i, Match& m) {
  const bool plus = t[i] == '+';
  size_t p = plus ? i + 1 : i;
  std::array<char, kMaxDigits> digits{};
  std::array<std::pair<size_t, size_t>, 8> ends{};  // (position, digits so far) after each group
  size_t nd = 0, groups = 0;
  while (groups < ends.size()) {
    while (p < t.size() && is_digit(t[p])) {
      if (nd < kMaxDigits) digits[nd] = t[p];
      ++nd, ++p;
    }
    ends[groups++] = {p, nd};
    if (nd > kMaxDigits) break;
    if (p + 1 < t.size() && (t[p] == ' ' || t[p] == '-') && is_digit(t[p + 1])) {
      ++p;
      continue;
    }
    break;
  }
  m.first_group_end = ends[0].first;
  for (size_t k = groups; k-- > 0;) {
    const auto [end, n] = ends[k];
    if (n > kMaxDigits || !ends_token(t, end)) continue;
    const size_t head = shown_head(plus, std::string_view(digits.data(), n));
    if (head == 0) continue;
    m.end = end, m.head = head, m.digits = n;
    return true;
  }
  return false;
}

bool can_start(std::string_view t, size_t i) {
  const bool digit = is_digit(t[i]);
  const bool plus = t[i] == '+' && i + 1 < t.size() && is_digit(t[i + 1]);
  return (digit || plus) && starts_token(t, i);
}

void append_masked_span(std::string& out, std::string_view span, size_t head, size_t digits) {
  size_t j = 0;
  for (char c : span) {
    if (!is_digit(c)) {
      out += c;
      continue;
    }
    out += (j < head || j + 4 >= digits) ? c : '*';
    ++j;
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

void append_string(std::string& out, std::string_view s) {
  out += '"';
  append_json_escaped(out, s);
  out += '"';
}

void append_masked_json(std::string& out, simdjson::dom::element e, std::string& scratch) {
  using simdjson::dom::element_type;
  switch (e.type()) {
    case element_type::ARRAY: {
      simdjson::dom::array array;
      if (e.get(array) != simdjson::SUCCESS) return (void)(out += "null");
      out += '[';
      bool first = true;
      for (simdjson::dom::element x : array) {
        if (!first) out += ',';
        first = false;
        append_masked_json(out, x, scratch);
      }
      out += ']';
      return;
    }
    case element_type::OBJECT: {
      simdjson::dom::object object;
      if (e.get(object) != simdjson::SUCCESS) return (void)(out += "null");
      out += '{';
      bool first = true;
      for (auto [k, v] : object) {
        if (!first) out += ',';
        first = false;
        append_string(out, k);
        out += ':';
        append_masked_json(out, v, scratch);
      }
      out += '}';
      return;
    }
    case element_type::STRING: {
      std::string_view text;
      if (e.get(text) != simdjson::SUCCESS) return (void)(out += "null");
      scratch.clear();
      append_phones_masked(scratch, text);
      append_string(out, scratch);
      return;
    }
    case element_type::INT64:
    case element_type::UINT64: {
      const std::string text = simdjson::minify(e);
      if (is_phone_number(text)) append_string(out, mask_phone_number(text));
      else out += text;
      return;
    }
    default:
      out += simdjson::minify(e);
  }
}

}  // namespace

bool is_phone_number(std::string_view value) {
  const std::string_view t = trim(value);
  Match m;
  return !t.empty() && can_start(t, 0) && match_at(t, 0, m) && m.end == t.size();
}

std::string mask_phone_number(std::string_view number) {
  if (is_phone_number(number)) return mask_phones(number);
  size_t digits = 0;
  for (char c : number) digits += is_digit(c);
  if (digits < 8) return "****";
  std::string out;
  append_masked_span(out, number, 3, digits);
  return out;
}

void append_phones_masked(std::string& out, std::string_view t) {
  size_t i = 0;
  while (i < t.size()) {
    if (!can_start(t, i)) {
      out += t[i++];
      continue;
    }
    Match m;
    if (match_at(t, i, m)) {
      append_masked_span(out, t.substr(i, m.end - i), m.head, m.digits);
      i = m.end;
    } else {
      out.append(t.substr(i, m.first_group_end - i));
      i = m.first_group_end;
    }
  }
}

std::string mask_phones(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  append_phones_masked(out, text);
  return out;
}

bool append_json_phones_masked(std::string& out, std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(json.data(), json.size()).get(root)) return false;
  std::string result, scratch;
  append_masked_json(result, root, scratch);
  out += result;
  return true;
}

}  // namespace tocsin
