#pragma once
// A small asynchronous HTTP/1.1 client (Boost.Beast, plain TCP, no TLS) over a
// caller-supplied io_context. One total deadline per request (queueing +
// connect + write + answer), keep-alive connections reused per host:port.
//
// Threading: request()/get()/post() may be called from any thread; all work and
// every callback run on the io_context's thread, never inside the call itself.
// Each callback runs exactly once, unless the client is destroyed first: the
// destructor must run on the io_context's thread or while it is not running,
// and callbacks of requests still in flight are then dropped.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace tocsin::connectors {

// "http://host[:port][/path[?query]]" split up; the target keeps the query.
struct HttpUrl {
  std::string host;
  uint16_t port = 80;
  std::string target = "/";  // path and query, as given (already encoded)
};
// nullopt for anything but a well-formed http:// URL (https is not supported).
std::optional<HttpUrl> parse_http_url(std::string_view url);

// Percent-encodes everything except the unreserved characters A-Z a-z 0-9 - . _ ~
std::string url_encode(std::string_view s);
// Decodes %XX escapes and, when `plus_is_space`, '+' as a space (query strings).
// nullopt on a malformed escape.
std::optional<std::string> url_decode(std::string_view s, bool plus_is_space = true);
// The decoded value of the first `name=` parameter of an undecoded query string;
// nullopt when absent or malformed. A parameter without '=' has the value "".
std::optional<std::string> query_param(std::string_view query, std::string_view name);

struct HttpClientRequest {
  std::string method = "GET";
  std::string host;
  uint16_t port = 80;
  std::string target = "/";
  std::string content_type;  // sent only with a body
  std::string body;
  std::chrono::milliseconds timeout{5000};  // total, from the call to the answer
};

struct HttpClientResponse {
  int status = 0;     // 0: no HTTP answer (see error)
  std::string body;
  std::string error;  // transport error ("connection refused", "timeout ...") or ""
};

struct HttpClientOptions {
  size_t max_connections_per_host = 8;  // more requests wait for a free connection (within their deadline)
  size_t max_idle_per_host = 4;         // keep-alive connections kept for reuse
  std::chrono::milliseconds idle_timeout{4000};  // an idle connection is closed after this
  size_t max_response_bytes = 1 << 20;
};

class HttpClient {
 public:
  using Callback = std::function<void(HttpClientResponse)>;
  explicit HttpClient(boost::asio::io_context& io, HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // A request that failed on a reused keep-alive connection before any byte of
  // the answer arrived (the server had closed it) is sent once more on a new one.
  void request(HttpClientRequest request, Callback done);
  void get(const HttpUrl& url, std::chrono::milliseconds timeout, Callback done);
  void post(const HttpUrl& url, std::string content_type, std::string body, std::chrono::milliseconds timeout,
            Callback done);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tocsin::connectors
