#include "app/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "app/yaml_reader.h"
#include "rules/expr.h"

namespace tocsin::app {
namespace {

// A map of librdkafka property names to values, each checked by librdkafka now, not at start-up.
void properties(YamlReader& r, const YAML::Node& parent, const std::string& path, const char* key,
                std::map<std::string, std::string>& out) {
  const YAML::Node n = parent[key];
  if (!n) return;
  const std::string at = YamlReader::join(path, key);
  if (!n.IsMap()) return r.error(n, at, "must map librdkafka property names to values");
  for (const auto& kv : n) {
    if (!kv.second.IsScalar()) {
      r.error(kv.second, YamlReader::join(at, kv.first.Scalar()), "must be a single value");
      continue;
    }
    if (const std::string err = connectors::check_property(kv.first.Scalar(), kv.second.Scalar()); !err.empty())
      r.error(kv.second, YamlReader::join(at, kv.first.Scalar()), err + " (see librdkafka CONFIGURATION.md)");
    out[kv.first.Scalar()] = kv.second.Scalar();
  }
}

bool is_identifier(const std::string& s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  for (char ch : s)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_')) return false;
  return true;
}

// tables: a list of {name, key_normalization, columns: [{name, type}], file, topic, reload}.
void parse_tables(YamlReader& r, const YAML::Node& n, const std::filesystem::path& base, Config& c) {
  if (!n.IsSequence()) return r.error(n, "tables", "must be a list of tables, each {name, columns, file and/or topic}");
  std::set<std::string> names, topics;
  for (size_t i = 0; i < n.size(); ++i) {
    const YAML::Node t = n[i];
    const std::string path = "tables[" + std::to_string(i) + "]";
    if (!r.map(t, path, {"name", "key_normalization", "columns", "file", "topic", "reload"})) continue;
    TableConfig tc;
    r.str(t, path, "name", tc.schema.name);
    if (!t["name"]) r.error(t, path, "needs a name (used in in_table(\"name\", ...) and lookup(\"name\", ...))");
    else if (!is_identifier(tc.schema.name)) r.error(t["name"], path + ".name", "must be letters, digits and _ (e.g. risky_numbers)");
    else if (!names.insert(tc.schema.name).second) r.error(t["name"], path + ".name", "table '" + tc.schema.name + "' is declared twice");
    std::string norm = "none";
    r.str(t, path, "key_normalization", norm);
    if (norm == "phone") tc.schema.key = rules::KeyNormalization::kPhone;
    else if (norm != "none") r.error(t["key_normalization"], path + ".key_normalization", "must be none or phone");
    const YAML::Node cols = t["columns"];
    if (!cols) {
      r.error(t, path, "needs columns: [{name, type}, ...]; the first column is the key");
    } else if (!cols.IsSequence() || cols.size() == 0) {
      r.error(cols, path + ".columns", "must be a non-empty list of {name, type}; the first column is the key");
    } else {
      std::set<std::string> col_names;
      for (size_t j = 0; j < cols.size(); ++j) {
        const std::string cp = path + ".columns[" + std::to_string(j) + "]";
        if (!r.map(cols[j], cp, {"name", "type"})) continue;
        std::string name, type = "string";
        r.str(cols[j], cp, "name", name);
        r.str(cols[j], cp, "type", type);
        if (!cols[j]["name"] || !is_identifier(name)) r.error(cols[j]["name"] ? cols[j]["name"] : cols[j], cp + ".name", "must be letters, digits and _ (e.g. risk_level)");
        else if (!col_names.insert(name).second) r.error(cols[j]["name"], cp + ".name", "column '" + name + "' is declared twice");
        rules::Type ty = rules::Type::kString;
        if (type == "int") ty = rules::Type::kInt;
        else if (type == "double") ty = rules::Type::kDouble;
        else if (type == "bool") ty = rules::Type::kBool;
        else if (type != "string") r.error(cols[j]["type"], cp + ".type", "must be string, int, double or bool");
        if (j == 0 && ty != rules::Type::kString) r.error(cols[j]["type"], cp + ".type", "the first column is the key and must be a string");
        tc.schema.columns.emplace_back(name, ty);
      }
    }
    if (const auto f = t["file"]) {
      std::string file;
      r.str(t, path, "file", file);
      std::filesystem::path p = file;
      if (p.is_relative()) p = base / p;
      tc.file = p.lexically_normal().string();
      const std::string ext = p.extension().string();
      std::error_code ec;
      if (file.empty()) r.error(f, path + ".file", "must name a .csv or .jsonl file");
      else if (ext != ".csv" && ext != ".jsonl" && ext != ".json" && ext != ".ndjson")
        r.error(f, path + ".file", "must be a .csv or .jsonl file (the extension says which)");
      else if (!std::filesystem::is_regular_file(p, ec))
        r.error(f, path + ".file", "'" + tc.file + "' does not exist; paths are relative to the config file");
    }
    if (const auto tp = t["topic"]) {
      r.str(t, path, "topic", tc.topic);
      const auto& k = c.kafka.topics;
      const bool clash = tc.topic == k.alerts || tc.topic == k.dead_letter || tc.topic == k.late ||
                         std::find(k.input.begin(), k.input.end(), tc.topic) != k.input.end();
      if (tc.topic.empty()) r.error(tp, path + ".topic", "must name a Kafka topic");
      else if (clash) r.error(tp, path + ".topic", "topic '" + tc.topic + "' is already a stream or output topic; give the table its own (compacted) topic");
      else if (!topics.insert(tc.topic).second) r.error(tp, path + ".topic", "topic '" + tc.topic + "' feeds two tables");
    }
    r.boolean(t, path, "reload", tc.reload);
    if (tc.reload && !t["file"]) r.error(t["reload"], path + ".reload", "reload watches the table's file; this table has no file");
    if (!t["file"] && !t["topic"]) r.error(t, path, "needs a file, a topic or both to fill it");
    c.tables.push_back(std::move(tc));
  }
}

}  // namespace

std::string format(const ConfigError& e, const std::string& file) {
  std::string s = file;
  if (e.line) s.append(":").append(std::to_string(e.line)).append(":").append(std::to_string(e.column));
  s.append(": ");
  if (!e.path.empty()) s.append(e.path).append(": ");
  return s.append(e.message);
}

bool split_host_port(const std::string& s, std::string& host, uint16_t& port) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = s.substr(0, colon);
  const std::string p = s.substr(colon + 1);
  if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return false;
  const int v = std::stoi(p);
  if (v > 65535) return false;
  port = static_cast<uint16_t>(v);
  return true;
}

std::vector<ConfigError> parse_config(const std::string& text, const std::string& file, Config& c) {
  std::vector<ConfigError> errors;
  c.path = file;
  const YAML::Node root = YamlReader::load(text, errors);
  if (!root || root.IsNull()) return errors;  // an empty file (or a syntax error) means all defaults
  YamlReader r(errors);
  if (!r.map(root, "", {"kafka", "embedded", "demo", "pipeline", "rules", "http", "log", "tables", "alerting", "console"})) return errors;

  if (const auto k = root["kafka"]; r.map(k, "kafka", {"bootstrap.servers", "group.id", "topics", "properties", "consumer", "producer", "batch_size"})) {
    r.str(k, "kafka", "bootstrap.servers", c.kafka.bootstrap);
    r.str(k, "kafka", "group.id", c.kafka.group_id);
    if (const auto t = k["topics"]; r.map(t, "kafka.topics", {"calls", "faults", "complaints", "profiles", "alerts", "dead_letter", "late"})) {
      r.str(t, "kafka.topics", "late", c.kafka.topics.late);
      for (int s = 0; s < kStreamCount; ++s)
        r.str(t, "kafka.topics", std::string(to_string(static_cast<Stream>(s))).c_str(), c.kafka.topics.input[static_cast<size_t>(s)]);
      r.str(t, "kafka.topics", "alerts", c.kafka.topics.alerts);
      r.str(t, "kafka.topics", "dead_letter", c.kafka.topics.dead_letter);
      std::set<std::string> names;
      for (const auto& kv : t)
        if (kv.second.IsScalar() && !names.insert(kv.second.Scalar()).second)
          r.error(kv.second, "kafka.topics." + kv.first.Scalar(), "topic '" + kv.second.Scalar() + "' is used twice; every stream and output needs its own topic");
    }
    properties(r, k, "kafka", "properties", c.kafka.common);
    properties(r, k, "kafka", "consumer", c.kafka.consumer);
    properties(r, k, "kafka", "producer", c.kafka.producer);
    r.integer(k, "kafka", "batch_size", 1, 100000, c.kafka.batch_size);
    for (const auto* m : {&c.kafka.common, &c.kafka.consumer, &c.kafka.producer})
      for (const auto& [key, v] : *m) {
        (void)v;
        if (key == "bootstrap.servers" || key == "group.id")
          r.error(k, "kafka", "set '" + key + "' directly under kafka:, not among the librdkafka properties");
      }
  }
  if (const auto e = root["embedded"]; r.map(e, "embedded", {"brokers", "partitions", "bootstrap_file"})) {
    r.integer(e, "embedded", "brokers", 1, 16, c.embedded.brokers);
    r.integer(e, "embedded", "partitions", 1, 1024, c.embedded.partitions);
    r.str(e, "embedded", "bootstrap_file", c.embedded.bootstrap_file);
  }
  if (const auto d = root["demo"]; r.map(d, "demo", {"enabled", "rate", "seed"})) {
    r.boolean(d, "demo", "enabled", c.demo.enabled);
    r.number(d, "demo", "rate", 0.1, 10'000'000, c.demo.rate);
    r.integer(d, "demo", "seed", 0, INT64_MAX, c.demo.seed);
  }
  if (const auto p = root["pipeline"]; r.map(p, "pipeline", {"workers", "max_event_bytes", "max_future_skew", "poll_timeout", "allowed_lateness", "timers"})) {
    r.duration(p, "pipeline", "allowed_lateness", c.pipeline.allowed_lateness_ms);
    if (const auto t = p["timers"]) {
      if (!t.IsScalar() || (t.Scalar() != "wall" && t.Scalar() != "event"))
        r.error(t, "pipeline.timers", "must be 'wall' (deadlines fire on the wall clock, live) or 'event' (they follow event time, for replays)");
      else
        c.pipeline.timers_follow_event_time = t.Scalar() == "event";
    }
    r.integer(p, "pipeline", "workers", 1, 256, c.pipeline.workers);
    r.integer(p, "pipeline", "max_event_bytes", 64, 1 << 20, c.pipeline.limits.max_event_bytes);
    r.duration(p, "pipeline", "max_future_skew", c.pipeline.limits.max_future_skew_ms);
    int64_t poll = c.pipeline.poll_timeout_ms;
    r.duration(p, "pipeline", "poll_timeout", poll);
    if (poll < 1 || poll > 10000) r.error(p["poll_timeout"], "pipeline.poll_timeout", "must be between 1ms and 10s");
    c.pipeline.poll_timeout_ms = static_cast<int>(poll);
  }
  const std::filesystem::path base = file.empty() ? std::filesystem::path(".") : std::filesystem::path(file).parent_path();
  if (const auto rl = root["rules"]; r.map(rl, "rules", {"files", "watch", "watch_interval"})) {
    r.boolean(rl, "rules", "watch", c.rules_watch);
    if (rl["watch_interval"]) {
      int64_t every = -1;
      r.duration(rl, "rules", "watch_interval", every);
      if (every != -1 && (every < 10 || every > 3'600'000))
        r.error(rl["watch_interval"], "rules.watch_interval", "must be between 10ms and 1h (e.g. 1s)");
      else if (every != -1) c.rules_watch_interval_ms = every;
    }
    const auto f = rl["files"];
    if (f) {
      c.rule_paths.clear();
      if (!f.IsSequence()) {
        r.error(f, "rules.files", "must be a list of rule files or directories");
      } else {
        for (size_t i = 0; i < f.size(); ++i) {
          std::filesystem::path p = f[i].Scalar();
          if (p.is_relative()) p = base / p;
          std::error_code ec;
          if (!std::filesystem::exists(p, ec))
            r.error(f[i], "rules.files[" + std::to_string(i) + "]", "'" + p.string() + "' does not exist; give a rule file or a directory of *.yaml rule files");
          c.rule_paths.push_back(p.lexically_normal().string());
        }
      }
    }
  }
  if (const auto h = root["http"]; r.map(h, "http", {"listen", "tls"})) {
    r.str(h, "http", "listen", c.http_listen);
    if (const auto t = h["tls"]; r.map(t, "http.tls", {"cert", "key"})) {
      r.str(t, "http.tls", "cert", c.http_tls_cert);
      r.str(t, "http.tls", "key", c.http_tls_key);
      for (auto* f : {&c.http_tls_cert, &c.http_tls_key}) {
        std::filesystem::path p = *f;
        if (!f->empty() && p.is_relative()) *f = (base / p).lexically_normal().string();
      }
      std::error_code ec;
      if (c.http_tls_cert.empty() || c.http_tls_key.empty())
        r.error(t, "http.tls", "needs both cert and key (PEM files)");
      else if (!std::filesystem::exists(c.http_tls_cert, ec))
        r.error(t["cert"], "http.tls.cert", "'" + c.http_tls_cert + "' does not exist");
      else if (!std::filesystem::exists(c.http_tls_key, ec))
        r.error(t["key"], "http.tls.key", "'" + c.http_tls_key + "' does not exist");
    }
    std::string host;
    uint16_t port;
    if (!split_host_port(c.http_listen, host, port)) r.error(h["listen"], "http.listen", "must be HOST:PORT, e.g. 127.0.0.1:9464 (port 0 picks a free port)");
  }
  if (const auto l = root["log"]; r.map(l, "log", {"level"})) {
    r.str(l, "log", "level", c.log_level);
    static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "critical", "off"};
    if (!kLevels.count(c.log_level)) r.error(l["level"], "log.level", "must be one of trace, debug, info, warn, error, critical, off");
  }
  if (const auto t = root["tables"]; t && !t.IsNull()) parse_tables(r, t, base, c);
  if (const auto a = root["alerting"]; r.map(a, "alerting", {"file", "state_dir", "public_url", "sms", "webhooks", "webhook_timeout", "tick"})) {
    auto resolve = [&](std::string& p) {
      if (!p.empty() && std::filesystem::path(p).is_relative()) p = (base / p).lexically_normal().string();
    };
    r.str(a, "alerting", "file", c.alerting.file);
    if (a["file"] && c.alerting.file.empty()) r.error(a["file"], "alerting.file", "must name the alerting file (policies, templates), e.g. alerting.yaml");
    resolve(c.alerting.file);
    std::error_code ec;
    if (!c.alerting.file.empty() && !std::filesystem::exists(c.alerting.file, ec))
      r.error(a["file"], "alerting.file", "'" + c.alerting.file + "' does not exist");
    r.str(a, "alerting", "state_dir", c.alerting.state_dir);
    r.str(a, "alerting", "public_url", c.alerting.public_url);
    if (!c.alerting.public_url.empty() && !c.alerting.public_url.starts_with("http://"))
      r.error(a["public_url"], "alerting.public_url", "must be an http:// URL at which the SMS gateway reaches Tocsin, e.g. http://127.0.0.1:9464");
    if (const auto s = a["sms"]; r.map(s, "alerting.sms", {"sendsms_url", "username", "password", "from", "smsc", "dlr_mask", "timeout", "max_parts"})) {
      auto& g = c.alerting.sms;
      r.str(s, "alerting.sms", "sendsms_url", g.sendsms_url);
      if (!g.sendsms_url.starts_with("http://"))
        r.error(s["sendsms_url"] ? s["sendsms_url"] : s, "alerting.sms.sendsms_url", "must be Kannel's sendsms URL, e.g. http://127.0.0.1:13013/cgi-bin/sendsms");
      r.str(s, "alerting.sms", "username", g.username);
      r.str(s, "alerting.sms", "password", g.password);
      r.str(s, "alerting.sms", "from", g.from);
      r.str(s, "alerting.sms", "smsc", g.smsc);
      r.integer(s, "alerting.sms", "dlr_mask", 0, 63, g.dlr_mask);
      r.duration(s, "alerting.sms", "timeout", g.timeout_ms);
      r.integer(s, "alerting.sms", "max_parts", 1, 255, g.max_parts);
    }
    if (const auto w = a["webhooks"]) {
      if (!w.IsMap()) r.error(w, "alerting.webhooks", "must map a webhook name to its http:// URL");
      else
        for (const auto& kv : w) {
          if (!kv.second.IsScalar() || !kv.second.Scalar().starts_with("http://")) {
            r.error(kv.second, "alerting.webhooks." + kv.first.Scalar(), "must be an http:// URL");
            continue;
          }
          c.alerting.webhooks[kv.first.Scalar()] = kv.second.Scalar();
        }
    }
    r.duration(a, "alerting", "webhook_timeout", c.alerting.webhook_timeout_ms);
    r.duration(a, "alerting", "tick", c.alerting.tick_ms);
    if (c.alerting.tick_ms < 1 || c.alerting.tick_ms > 10000) r.error(a["tick"], "alerting.tick", "must be between 1ms and 10s");
  }
  if (const auto cn = root["console"]; r.map(cn, "console", {"users", "tokens", "session_ttl", "timezone", "web_root"})) {
    auto& cc = c.console;
    std::set<std::string> names;
    auto role_of = [&](const YAML::Node& n, const std::string& path, connectors::Role& out) {
      if (!n || !n.IsScalar() || !connectors::parse_role(n.Scalar(), out))
        r.error(n ? n : YAML::Node(), path + ".role", "must be viewer, operator or admin");
    };
    if (const auto us = cn["users"]) {
      if (!us.IsSequence()) r.error(us, "console.users", "must be a list of {name, role, password_hash}");
      else
        for (size_t i = 0; i < us.size(); ++i) {
          const std::string path = "console.users[" + std::to_string(i) + "]";
          if (!r.map(us[i], path, {"name", "role", "password_hash"})) continue;
          connectors::ConsoleUser u;
          r.str(us[i], path, "name", u.name);
          if (u.name.empty()) r.error(us[i], path + ".name", "every user needs a name");
          else if (!names.insert(u.name).second) r.error(us[i]["name"], path + ".name", "user '" + u.name + "' is declared twice");
          role_of(us[i]["role"], path, u.role);
          r.str(us[i], path, "password_hash", u.password_hash);
          if (!connectors::is_password_hash(u.password_hash))
            r.error(us[i]["password_hash"] ? us[i]["password_hash"] : us[i], path + ".password_hash",
                    "must be a hash from `tocsin hash-password PASSWORD` (pbkdf2-sha256$...), never the password itself");
          cc.users.push_back(std::move(u));
        }
    }
    if (const auto ts = cn["tokens"]) {
      if (!ts.IsSequence()) r.error(ts, "console.tokens", "must be a list of {name, role, token_hash}");
      else
        for (size_t i = 0; i < ts.size(); ++i) {
          const std::string path = "console.tokens[" + std::to_string(i) + "]";
          if (!r.map(ts[i], path, {"name", "role", "token_hash"})) continue;
          connectors::ConsoleToken t;
          r.str(ts[i], path, "name", t.name);
          role_of(ts[i]["role"], path, t.role);
          r.str(ts[i], path, "token_hash", t.token_hash);
          if (!t.token_hash.starts_with("sha256$") || t.token_hash.size() != 7 + 64)
            r.error(ts[i]["token_hash"] ? ts[i]["token_hash"] : ts[i], path + ".token_hash",
                    "must be sha256$<64 hex digits>, from `tocsin hash-password --token TOKEN`");
          cc.tokens.push_back(std::move(t));
        }
    }
    r.duration(cn, "console", "session_ttl", cc.session_ttl_ms);
    if (cc.session_ttl_ms < 60000) r.error(cn["session_ttl"], "console.session_ttl", "must be at least 1m");
    if (const auto tz = cn["timezone"]) {
      const std::string z = tz.IsScalar() ? tz.Scalar() : "";
      const bool ok = z.size() == 6 && (z[0] == '+' || z[0] == '-') && z[3] == ':' && std::isdigit(static_cast<unsigned char>(z[1])) &&
                      std::isdigit(static_cast<unsigned char>(z[2])) && std::isdigit(static_cast<unsigned char>(z[4])) &&
                      std::isdigit(static_cast<unsigned char>(z[5]));
      if (!ok) r.error(tz, "console.timezone", "must be a UTC offset such as +08:00");
      else cc.utc_offset_ms = (z[0] == '-' ? -1 : 1) * (((z[1] - '0') * 10 + (z[2] - '0')) * 60 + (z[4] - '0') * 10 + (z[5] - '0')) * 60000LL;
    }
    r.str(cn, "console", "web_root", cc.web_root);
    if (!cc.web_root.empty()) {
      std::filesystem::path p = cc.web_root;
      if (p.is_relative()) p = base / p;
      cc.web_root = p.lexically_normal().string();
    }
  }
  return errors;
}

rules::TableCatalog table_catalog(const Config& c) {
  rules::TableCatalog catalog;
  for (const auto& t : c.tables) catalog.tables.push_back(t.schema);
  return catalog;
}

std::vector<ConfigError> load_config(const std::string& file, Config& out) {
  std::ifstream in(file);
  if (!in) return {{"", 0, 0, "cannot read the config file; check the path (examples/tocsin.yaml is a documented example)"}};
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), file, out);
}

}  // namespace tocsin::app
