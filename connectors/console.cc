#include "connectors/console.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "pipeline/json_writer.h"

namespace tocsin::connectors {

// Generated at build time from connectors/web/ (embed_web.cmake).
struct WebAsset {
  const char* path;
  const unsigned char* data;
  size_t size;
};
extern const WebAsset kWebAssets[];
extern const size_t kWebAssetCount;

namespace {

constexpr char kCookie[] = "tocsin_session";
constexpr size_t kRingSize = 10000;

std::string hex(const unsigned char* p, size_t n) {
  static constexpr char k[] = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; ++i) s[2 * i] = k[p[i] >> 4], s[2 * i + 1] = k[p[i] & 15];
  return s;
}

bool unhex(std::string_view s, std::vector<unsigned char>& out) {
  if (s.size() % 2) return false;
  out.resize(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    unsigned v = 0;
    if (std::from_chars(s.data() + 2 * i, s.data() + 2 * i + 2, v, 16).ptr != s.data() + 2 * i + 2) return false;
    out[i] = static_cast<unsigned char>(v);
  }
  return true;
}

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> b(bytes);
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) throw std::runtime_error("console: no randomness for a session");
  return hex(b.data(), b.size());
}

HttpResponse json(int status, std::string body) { return {status, "application/json", std::move(body), {}, {}}; }
HttpResponse error(int status, std::string_view message) {
  std::string body;
  JsonWriter w(body);
  w.begin_object().key("error").str(message).end_object();
  return json(status, std::move(body));
}

std::string me_json(const Principal& p) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().key("user").str(p.user).key("role").str(name(p.role)).key("csrf").str(p.csrf);
  if (p.expires_at_ms) w.key("expires_at").time(p.expires_at_ms);
  w.end_object();
  return out;
}

std::string_view content_type(std::string_view path) {
  auto ends = [&](std::string_view e) { return path.ends_with(e); };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js") || ends(".mjs")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".png")) return "image/png";
  if (ends(".json")) return "application/json";
  if (ends(".wav")) return "audio/wav";
  return "application/octet-stream";
}

}  // namespace

std::string_view name(Role r) {
  switch (r) {
    case Role::kViewer: return "viewer";
    case Role::kOperator: return "operator";
    case Role::kAdmin: return "admin";
  }
  return "viewer";
}

bool parse_role(std::string_view t, Role& out) {
  for (Role r : {Role::kViewer, Role::kOperator, Role::kAdmin})
    if (name(r) == t) return out = r, true;
  return false;
}

std::string sha256_hex(std::string_view data) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d);
  return hex(d, sizeof d);
}

std::string hash_password(std::string_view password, int iterations) {
  unsigned char salt[16], key[32];
  if (RAND_bytes(salt, sizeof salt) != 1) throw std::runtime_error("no randomness for a salt");
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt, sizeof salt, iterations, EVP_sha256(),
                    sizeof key, key);
  return "pbkdf2-sha256$" + std::to_string(iterations) + "$" + hex(salt, sizeof salt) + "$" + hex(key, sizeof key);
}

namespace {
bool split_hash(std::string_view h, int& iterations, std::vector<unsigned char>& salt, std::vector<unsigned char>& key) {
  constexpr std::string_view kPrefix = "pbkdf2-sha256$";
  if (!h.starts_with(kPrefix)) return false;
  h.remove_prefix(kPrefix.size());
  const size_t a = h.find('$'), b = a == std::string_view::npos ? a : h.find('$', a + 1);
  if (b == std::string_view::npos) return false;
  if (std::from_chars(h.data(), h.data() + a, iterations).ptr != h.data() + a || iterations < 1000) return false;
  return unhex(h.substr(a + 1, b - a - 1), salt) && unhex(h.substr(b + 1), key) && !salt.empty() && key.size() == 32;
}
}  // namespace

bool is_password_hash(std::string_view hash) {
  int it;
  std::vector<unsigned char> salt, key;
  return split_hash(hash, it, salt, key);
}

bool verify_password(std::string_view password, std::string_view hash) {
  int it;
  std::vector<unsigned char> salt, key;
  if (!split_hash(hash, it, salt, key)) return false;
  unsigned char got[32];
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt.data(), static_cast<int>(salt.size()), it,
                    EVP_sha256(), sizeof got, got);
  return CRYPTO_memcmp(got, key.data(), sizeof got) == 0;
}

Console::Console(ConsoleConfig config, const Clock& clock) : config_(std::move(config)), clock_(clock) {}
Console::~Console() = default;

bool Console::authenticate(const HttpRequest& req, Principal& out) {
  if (!config_.auth()) {
    out = Principal{"anonymous", Role::kOperator, false, "", 0};
    return true;
  }
  if (const std::string_view auth = req.header("authorization"); auth.starts_with("Bearer ")) {
    const std::string h = "sha256$" + sha256_hex(auth.substr(7));
    for (const auto& t : config_.tokens)
      if (t.token_hash.size() == h.size() && CRYPTO_memcmp(t.token_hash.data(), h.data(), h.size()) == 0) {
        out = Principal{"token:" + t.name, t.role, false, "", 0};
        return true;
      }
    return false;
  }
  const std::string_view token = req.cookie(kCookie);
  if (token.empty()) return false;
  std::lock_guard lk(mu_);
  auto it = sessions_.find(token);
  if (it == sessions_.end()) return false;
  if (it->second.principal.expires_at_ms <= clock_.now_ms()) {
    sessions_.erase(it);
    return false;
  }
  out = it->second.principal;
  return true;
}

HttpServer::Handler Console::guard(Role min, Handler handler) {
  return [this, min, handler = std::move(handler)](const HttpRequest& req) {
    Principal p;
    if (!authenticate(req, p)) return error(401, "log in first (POST /api/v1/login) or send an API token");
    if (p.role < min) return error(403, "your role (" + std::string(name(p.role)) + ") may not do this");
    const bool mutating = req.method == "POST" || req.method == "DELETE" || req.method == "PUT";
    if (mutating && p.via_session) {
      const std::string_view sent = req.header("x-csrf-token");
      if (sent.size() != p.csrf.size() || CRYPTO_memcmp(sent.data(), p.csrf.data(), sent.size()) != 0)
        return error(403, "missing or wrong X-CSRF-Token");
    }
    return handler(req, p);
  };
}

HttpResponse Console::login(const HttpRequest& req) {
  if (req.method != "POST") return error(405, "POST {\"user\", \"password\"}");
  simdjson::dom::parser parser;
  simdjson::dom::object o;
  std::string_view user, password;
  if (parser.parse(req.body).get(o) || o["user"].get(user) || o["password"].get(password))
    return error(400, "the body must be {\"user\": ..., \"password\": ...}");
  const int64_t now = clock_.now_ms();
  {
    std::lock_guard lk(mu_);
    auto& f = failures_[std::string(user)];
    f.erase(std::remove_if(f.begin(), f.end(), [now](int64_t t) { return now - t > 300000; }), f.end());
    if (f.size() >= 5) return error(429, "too many failed logins for this user; try again in 5 minutes");
  }
  const ConsoleUser* found = nullptr;
  for (const auto& u : config_.users)
    if (u.name == user) found = &u;
  // Verify even for an unknown user, so timing does not tell which names exist.
  static const std::string kDummy = hash_password("dummy");
  const bool ok = verify_password(password, found ? found->password_hash : kDummy) && found;
  if (!ok) {
    std::lock_guard lk(mu_);
    failures_[std::string(user)].push_back(now);
    spdlog::info("console: failed login for '{}' from {}", user, req.peer);
    return error(401, "wrong user or password");
  }
  Principal p{found->name, found->role, true, random_hex(16), now + config_.session_ttl_ms};
  const std::string token = random_hex(32);
  {
    std::lock_guard lk(mu_);
    failures_.erase(std::string(user));
    std::erase_if(sessions_, [now](const auto& kv) { return kv.second.principal.expires_at_ms <= now; });
    sessions_[token] = Session{p};
  }
  spdlog::info("console: {} ({}) logged in from {}", p.user, name(p.role), req.peer);
  HttpResponse r = json(200, me_json(p));
  r.headers.emplace_back("Set-Cookie", std::string(kCookie) + "=" + token + "; HttpOnly; SameSite=Strict; Path=/; Max-Age=" +
                                           std::to_string(config_.session_ttl_ms / 1000));
  return r;
}

void Console::publish(std::string_view event, std::string_view data) { publish(event, data, data); }

void Console::publish(std::string_view event, std::string_view full, std::string_view masked) {
  std::lock_guard lk(mu_);
  const uint64_t seq = ++seq_;
  auto chunk = [&](std::string_view data) {
    return std::make_shared<const std::string>("id: " + std::to_string(seq) + "\nevent: " + std::string(event) +
                                               "\ndata: " + std::string(data) + "\n\n");
  };
  Update u{seq, chunk(full), nullptr};
  u.masked = masked == full ? u.full : chunk(masked);
  ring_.push_back(u);
  if (ring_.size() > kRingSize) ring_.pop_front();
  std::erase_if(streams_, [&](const Subscriber& s) { return !s.out->send(s.full ? u.full : u.masked); });
}

void Console::keepalive() {
  static const auto kPing = std::make_shared<const std::string>(": keepalive\n\n");
  std::lock_guard lk(mu_);
  std::erase_if(streams_, [&](const Subscriber& s) { return !s.out->send(kPing); });
}

HttpResponse Console::events(const HttpRequest& req, const Principal& who) {
  uint64_t last = 0;
  bool resume = false;
  std::string_view id = req.header("last-event-id");
  std::string from_query;
  if (id.empty()) {
    const size_t at = req.query.find("last_event_id=");
    if (at != std::string::npos) from_query = req.query.substr(at + 14, req.query.find('&', at) - at - 14);
    id = from_query;
  }
  if (!id.empty()) resume = std::from_chars(id.data(), id.data() + id.size(), last).ec == std::errc();
  HttpResponse r;
  const bool full = who.sees_numbers();
  r.stream = [this, last, resume, full](std::shared_ptr<EventStream> s) {
    std::lock_guard lk(mu_);
    s->send(std::make_shared<const std::string>("retry: 1000\nevent: hello\ndata: {\"seq\":" + std::to_string(seq_) + "}\n\n"));
    if (resume) {
      const uint64_t oldest = ring_.empty() ? seq_ + 1 : ring_.front().seq;
      if (last + 1 < oldest && last < seq_) s->send(std::make_shared<const std::string>("event: reset\ndata: {}\n\n"));
      else
        for (const Update& u : ring_)
          if (u.seq > last) s->send(full ? u.full : u.masked);
    }
    streams_.push_back({std::move(s), full});
  };
  return r;
}

HttpResponse Console::static_file(const HttpRequest& req) {
  if (req.path.starts_with("/api/") || req.path.starts_with("/-/")) {
    Principal p;
    return authenticate(req, p) ? error(404, "no such endpoint (docs/openapi.yaml)") : error(401, "log in first");
  }
  if (req.method != "GET" && req.method != "HEAD") return error(405, "GET only");
  std::string path = req.path == "/" || req.path.empty() ? "index.html" : req.path.substr(1);
  if (path.find("..") != std::string::npos || path.find('/') != std::string::npos) return error(404, "not found");
  HttpResponse r{200, std::string(content_type(path)), {}, {{"Cache-Control", "no-cache"}}, {}};
  if (!config_.web_root.empty()) {
    std::ifstream in(std::filesystem::path(config_.web_root) / path, std::ios::binary);
    if (!in) return error(404, "not found");
    std::ostringstream ss;
    ss << in.rdbuf();
    r.body = ss.str();
    return r;
  }
  for (size_t i = 0; i < kWebAssetCount; ++i)
    if (path == kWebAssets[i].path) {
      r.body.assign(reinterpret_cast<const char*>(kWebAssets[i].data), kWebAssets[i].size);
      return r;
    }
  return error(404, "not found");
}

void Console::add_routes(HttpServer& http) {
  http.route("/api/v1/login", [this](const HttpRequest& req) { return login(req); });
  http.route("/api/v1/logout", guard(Role::kViewer, [this](const HttpRequest& req, const Principal&) {
               std::lock_guard lk(mu_);
               if (auto it = sessions_.find(req.cookie(kCookie)); it != sessions_.end()) sessions_.erase(it);
               HttpResponse r = json(200, "{\"ok\":true}");
               r.headers.emplace_back("Set-Cookie", std::string(kCookie) + "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
               return r;
             }));
  http.route("/api/v1/me", guard(Role::kViewer, [](const HttpRequest&, const Principal& p) { return json(200, me_json(p)); }));
  http.route("/api/v1/events", guard(Role::kViewer, [this](const HttpRequest& req, const Principal& who) { return events(req, who); }));
  http.route("/", [this](const HttpRequest& req) { return static_file(req); });
  http.route("/*", [this](const HttpRequest& req) { return static_file(req); });
}

}  // namespace tocsin::connectors
