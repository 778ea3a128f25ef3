#pragma once
// The operator console's server side (docs/console.md, docs/openapi.yaml):
// users and API tokens with roles, sessions with expiry and CSRF tokens, the
// page's static files (built into the binary, or read from a web root in
// development), and live updates as Server-Sent Events that a reconnecting
// browser resumes with Last-Event-ID.
//
// The API routes themselves belong to whoever owns the data (app/alert_service);
// they register through guard(), which answers 401 without a session or token,
// 403 below the route's role, and 403 for a session's POST/DELETE without its
// CSRF token. With no users and no tokens configured, auth is off and every
// caller acts as an operator (loopback development).
//
// Thread-safe: routes run on the HTTP server's thread, publish() on any.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "connectors/http_server.h"
#include "pipeline/clock.h"

namespace tocsin::connectors {

enum class Role : uint8_t { kViewer, kOperator, kAdmin };
std::string_view name(Role r);
bool parse_role(std::string_view text, Role& out);

struct ConsoleUser {
  std::string name;
  Role role = Role::kViewer;
  std::string password_hash;  // hash_password()
};

struct ConsoleToken {
  std::string name;
  Role role = Role::kViewer;
  std::string token_hash;  // "sha256$<hex of SHA-256(token)>"
};

struct ConsoleConfig {
  std::vector<ConsoleUser> users;
  std::vector<ConsoleToken> tokens;
  int64_t session_ttl_ms = 8 * 3600 * 1000LL;
  int64_t utc_offset_ms = 8 * 3600 * 1000LL;  // "today" for the KPIs
  std::string web_root;                        // serve the page from here instead of the built-in copy
  bool auth() const { return !users.empty() || !tokens.empty(); }
};

struct Principal {
  std::string user;
  Role role = Role::kViewer;
  bool via_session = false;
  std::string csrf;
  int64_t expires_at_ms = 0;
  bool can_act() const { return role >= Role::kOperator; }
  bool sees_numbers() const { return role == Role::kAdmin; }
};

// "pbkdf2-sha256$<iterations>$<salt hex>$<key hex>" (PBKDF2-HMAC-SHA256, 32-byte key).
std::string hash_password(std::string_view password, int iterations = 120000);
bool verify_password(std::string_view password, std::string_view hash);
bool is_password_hash(std::string_view hash);
std::string sha256_hex(std::string_view data);

class Console {
 public:
  Console(ConsoleConfig config, const Clock& clock);
  ~Console();
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  // POST /api/v1/login, /api/v1/logout, GET /api/v1/me, GET /api/v1/events and
  // the static files ("/" and any file of the page). Call before http.start().
  void add_routes(HttpServer& http);

  using Handler = std::function<HttpResponse(const HttpRequest&, const Principal&)>;
  HttpServer::Handler guard(Role min, Handler handler);
  // The caller's principal, or nullopt-like (empty user) when not authenticated.
  bool authenticate(const HttpRequest& req, Principal& out);

  // One live update to every open event stream; kept (last 10 000) for resume.
  void publish(std::string_view event, std::string_view json);
  // The same, as two views of one update: `full` for streams of callers who
  // see phone numbers (Principal::sees_numbers), `masked` for the others.
  void publish(std::string_view event, std::string_view full, std::string_view masked);
  // A comment line to every stream, so proxies and browsers keep them open.
  void keepalive();

  const ConsoleConfig& config() const { return config_; }

 private:
  struct Session {
    Principal principal;
  };
  HttpResponse login(const HttpRequest& req);
  HttpResponse events(const HttpRequest& req, const Principal& who);
  HttpResponse static_file(const HttpRequest& req);

  const ConsoleConfig config_;
  const Clock& clock_;
  std::mutex mu_;
  std::map<std::string, Session, std::less<>> sessions_;  // token -> session
  std::map<std::string, std::vector<int64_t>, std::less<>> failures_;  // user -> recent failed logins
  struct Update {
    uint64_t seq;
    std::shared_ptr<const std::string> full, masked;  // the same pointer when both views are equal
  };
  struct Subscriber {
    std::shared_ptr<EventStream> out;
    bool full;  // sees phone numbers
  };
  uint64_t seq_ = 0;
  std::deque<Update> ring_;
  std::vector<Subscriber> streams_;
};

}  // namespace tocsin::connectors
