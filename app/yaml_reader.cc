#include "app/yaml_reader.h"

#include "rules/expr.h"

namespace tocsin::app {

YAML::Node YamlReader::load(const std::string& text, std::vector<ConfigError>& errors) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    errors.push_back({"", e.mark.line + 1, e.mark.column + 1, "YAML syntax: " + e.msg});
    return YAML::Node();
  }
}

void YamlReader::error(const YAML::Node& n, const std::string& path, std::string msg) {
  const auto m = n.Mark();
  errors_.push_back({path, m.line >= 0 ? m.line + 1 : 0, m.column >= 0 ? m.column + 1 : 0, std::move(msg)});
}

bool YamlReader::map(const YAML::Node& n, const std::string& path, std::initializer_list<const char*> allowed) {
  if (!n) return false;
  if (!n.IsMap()) {
    error(n, path, "must be a mapping");
    return false;
  }
  for (const auto& kv : n) {
    const std::string k = kv.first.Scalar();
    bool ok = false;
    for (const char* a : allowed) ok |= k == a;
    if (!ok) {
      std::string list;
      for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      error(kv.first, join(path, k), "unknown key; expected one of: " + list);
    }
  }
  return true;
}

std::optional<std::string> YamlReader::scalar(const YAML::Node& n, const std::string& path, const char* what) {
  if (n.IsScalar()) return n.Scalar();
  error(n, path, std::string("must be ") + what);
  return std::nullopt;
}

void YamlReader::str(const YAML::Node& parent, const std::string& path, const char* key, std::string& out) {
  const YAML::Node n = parent[key];
  if (!n) return;
  if (!n.IsScalar()) return error(n, join(path, key), "must be a string");
  out = n.Scalar();
}

std::optional<int64_t> YamlReader::whole(const YAML::Node& parent, const std::string& path, const char* key, int64_t lo, int64_t hi) {
  const YAML::Node n = parent[key];
  if (!n) return std::nullopt;
  int64_t v;
  if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v) || v < lo || v > hi) {
    error(n, join(path, key), "must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi) + " (got '" +
                                  (n.IsScalar() ? n.Scalar() : "a structure") + "')");
    return std::nullopt;
  }
  return v;
}

void YamlReader::number(const YAML::Node& parent, const std::string& path, const char* key, double lo, double hi, double& out) {
  const YAML::Node n = parent[key];
  if (!n) return;
  double v;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || v < lo || v > hi)
    return error(n, join(path, key), "must be a number from " + std::to_string(lo) + " to " + std::to_string(hi));
  out = v;
}

void YamlReader::boolean(const YAML::Node& parent, const std::string& path, const char* key, bool& out) {
  const YAML::Node n = parent[key];
  if (!n) return;
  bool v;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) return error(n, join(path, key), "must be true or false");
  out = v;
}

void YamlReader::duration(const YAML::Node& parent, const std::string& path, const char* key, int64_t& out_ms) {
  const YAML::Node n = parent[key];
  if (!n) return;
  const auto ms = n.IsScalar() ? rules::parse_duration_ms(n.Scalar()) : std::nullopt;
  if (!ms) return error(n, join(path, key), "must be a duration such as 500ms, 30s, 15m or 1h");
  out_ms = *ms;
}

}  // namespace tocsin::app
