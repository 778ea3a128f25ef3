#include "rules/tables.h"

namespace tocsin::rules {

std::optional<TableRef> TableCatalog::find(std::string_view name) const {
  for (size_t i = 0; i < tables.size(); ++i)
    if (tables[i].name == name) return TableRef{static_cast<int>(i), tables[i].columns};
  return std::nullopt;
}

std::string_view normalize_phone(std::string_view number, char (&out)[32]) {
  size_t n = 0;
  for (char c : number)
    if (c >= '0' && c <= '9' && n < sizeof out) out[n++] = c;
  std::string_view d(out, n);
  if (d.starts_with("00")) d.remove_prefix(2);  // international prefix: country code follows
  else if (!number.empty() && number.find('+') != std::string_view::npos) {
  } else if (d.size() == 11 && d[0] == '1') {   // Chinese mobile written nationally
    if (n + 2 > sizeof out) return d;
    for (size_t i = n; i > 0; --i) out[i + 1] = out[i - 1];
    out[0] = '8';
    out[1] = '6';
    d = std::string_view(out, n + 2);
  } else if (d.size() >= 10 && d[0] == '0') {   // Chinese fixed line with trunk prefix 0
    out[0] = '6';
    if (n + 1 > sizeof out) return d;
    for (size_t i = n; i > 1; --i) out[i] = out[i - 1];
    out[0] = '8';
    out[1] = '6';
    d = std::string_view(out, n + 1);
  }
  return d;
}

}  // namespace tocsin::rules
