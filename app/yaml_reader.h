// Typed reads from a YAML document that collect every error, each with its
// YAML path and line:column, instead of stopping at the first: shared by the
// config file (config.cc) and replay mapping files (replay.cc).
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "app/config.h"

namespace tocsin::app {

class YamlReader {
 public:
  explicit YamlReader(std::vector<ConfigError>& errors) : errors_(errors) {}

  // The document in `text`, or a null node after recording its syntax error.
  static YAML::Node load(const std::string& text, std::vector<ConfigError>& errors);

  static std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

  void error(const YAML::Node& n, const std::string& path, std::string msg);

  // False when `n` is absent or not a mapping (the latter an error); reports
  // keys not in `allowed` (likely typos) with the allowed list.
  bool map(const YAML::Node& n, const std::string& path, std::initializer_list<const char*> allowed);

  // A scalar, or an error "`path` must be `what`".
  std::optional<std::string> scalar(const YAML::Node& n, const std::string& path, const char* what);

  // parent[key] into `out` when present; an error naming path.key when it is not of the type.
  void str(const YAML::Node& parent, const std::string& path, const char* key, std::string& out);
  void number(const YAML::Node& parent, const std::string& path, const char* key, double lo, double hi, double& out);
  void boolean(const YAML::Node& parent, const std::string& path, const char* key, bool& out);
  void duration(const YAML::Node& parent, const std::string& path, const char* key, int64_t& out_ms);
  template <typename Int>
  void integer(const YAML::Node& parent, const std::string& path, const char* key, int64_t lo, int64_t hi, Int& out) {
    static_assert(std::is_integral_v<Int>);
    if (const auto v = whole(parent, path, key, lo, hi)) out = static_cast<Int>(*v);
  }

 private:
  std::optional<int64_t> whole(const YAML::Node& parent, const std::string& path, const char* key, int64_t lo, int64_t hi);
  std::vector<ConfigError>& errors_;
};

}  // namespace tocsin::app
