#pragma once
// A small HTTP/1.1 server (Boost.Beast) on its own thread: exact-path routes,
// keep-alive, bounded request size. Handlers run on the server thread and must
// not block. Used for /metrics and /healthz now; the console, DLR callbacks
// and admin API will register routes on it.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tocsin::connectors {

struct HttpRequest {
  std::string method;
  std::string path;   // without the query string
  std::string query;  // after '?', undecoded
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-case
  std::string peer;   // the client's IP address

  // The first header named `name` (lower-case), "" if absent.
  std::string_view header(std::string_view name) const;
  // The value of cookie `name`, "" if absent.
  std::string_view cookie(std::string_view name) const;
};

// An open Server-Sent Events response. send() may be called from any thread;
// each chunk must be complete SSE text ("id: ..\ndata: ..\n\n"). A client
// that falls more than 1000 chunks behind is disconnected (it resumes with
// Last-Event-ID), so a slow browser never holds memory or the sender.
class EventStream {
 public:
  virtual ~EventStream() = default;
  // False once the client is gone; the chunk is dropped.
  virtual bool send(std::shared_ptr<const std::string> chunk) = 0;
  virtual bool open() const = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers, e.g. Set-Cookie
  // When set, the response is an event stream: the server sends the status and
  // headers (text/event-stream, no length), then `body` if any, then hands the
  // open stream to this callback (on the server's thread).
  std::function<void(std::shared_ptr<EventStream>)> stream;
};

// PEM files for HTTPS.
struct HttpTls {
  std::string cert_file;  // certificate chain
  std::string key_file;   // private key
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;
  // Binds address:port (port 0: an ephemeral port); with `tls`, serves HTTPS
  // only (TLS 1.2+). Throws std::runtime_error with the address when binding
  // fails, or naming the file when the certificate or key cannot be read.
  HttpServer(const std::string& address, uint16_t port, const HttpTls* tls = nullptr);
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
