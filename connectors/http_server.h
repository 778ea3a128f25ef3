#pragma once
// A small HTTP/1.1 server (Boost.Beast) on its own thread: exact-path routes,
// keep-alive, bounded request size. Handlers run on the server thread and must
// not block. Used for /metrics and /healthz now; the console, DLR callbacks
// and admin API will register routes on it.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace tocsin::connectors {

struct HttpRequest {
  std::string method;
  std::string path;   // without the query string
  std::string query;  // after '?', undecoded
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  // Binds address:port (port 0: an ephemeral port). Throws std::runtime_error
  // with the address when binding fails.
  HttpServer(const std::string& address, uint16_t port);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Register before start(). A path ending in '*' matches every path that
  // starts with what precedes it; exact paths win, then the longest prefix.
  void route(const std::string& path, Handler handler);
  void start();
  void stop();
  uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tocsin::connectors
