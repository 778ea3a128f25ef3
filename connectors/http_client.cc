#include "connectors/http_client.h"

#include <utility>  // before asio: Boost 1.74 misses it under C++20

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <deque>
#include <map>
#include <unordered_set>

namespace tocsin::connectors {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// ---------------------------------------------------------------- URL helpers

std::optional<HttpUrl> parse_http_url(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (url.substr(0, kScheme.size()) != kScheme) return std::nullopt;
  url.remove_prefix(kScheme.size());
  const size_t slash = url.find_first_of("/?");
  std::string_view authority = url.substr(0, slash);
  HttpUrl out;
  if (slash != std::string_view::npos) {
    out.target = std::string(url.substr(slash));
    if (out.target[0] == '?') out.target.insert(0, "/");
  }
  if (authority.empty() || authority.find('@') != std::string_view::npos) return std::nullopt;
  std::string_view host = authority;
  if (authority.front() == '[') {  // [IPv6]:port
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    authority.remove_prefix(close + 1);
    if (!authority.empty() && authority.front() != ':') return std::nullopt;
  } else {
    const size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    authority = colon == std::string_view::npos ? std::string_view{} : authority.substr(colon);
  }
  if (!authority.empty()) {  // ":port"
    const std::string_view p = authority.substr(1);
    unsigned port = 0;
    const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (p.empty() || ec != std::errc{} || end != p.data() + p.size() || port == 0 || port > 65535) return std::nullopt;
    out.port = static_cast<uint16_t>(port);
  }
  if (host.empty()) return std::nullopt;
  for (char c : host)
    if (c <= ' ' || c == '/' || c == '#' || c == '%' || static_cast<unsigned char>(c) >= 0x7f) return std::nullopt;
  out.host = std::string(host);
  return out;
}

std::string url_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::optional<std::string> url_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view part = query.substr(0, amp);
    const size_t eq = part.find('=');
    if (part.substr(0, eq) == name) return url_decode(eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- the client

namespace {

struct Conn {
  explicit Conn(asio::io_context& io) : socket(io), idle_timer(io) {}
  tcp::socket socket;
  beast::flat_buffer buffer;
  asio::steady_timer idle_timer;
};

}  // namespace

struct HttpClient::Impl : std::enable_shared_from_this<HttpClient::Impl> {
  struct Op {
    Op(asio::io_context& io, HttpClientRequest r, Callback cb)
        : req(std::move(r)), done(std::move(cb)), timer(io), resolver(io) {}
    HttpClientRequest req;
    Callback done;
    asio::steady_timer timer;
    tcp::resolver resolver;
    std::shared_ptr<Conn> conn;
    http::request<http::string_body> msg;
    std::optional<http::response_parser<http::string_body>> parser;
    std::string key;
    const char* phase = "waiting for a connection";
    bool dispatched = false;  // holds one of the host's connection slots
    bool finished = false;
    bool reused = false;
    bool resent = false;
  };
  using OpPtr = std::shared_ptr<Op>;

  struct Host {
    std::vector<std::shared_ptr<Conn>> idle;
    size_t active = 0;
    std::deque<OpPtr> waiting;
  };

  Impl(asio::io_context& io, HttpClientOptions o) : io(io), options(o) {}

  asio::io_context& io;
  HttpClientOptions options;
  std::map<std::string, Host> hosts;
  std::unordered_set<OpPtr> inflight;
  bool closed = false;

  void start(OpPtr op) {
    if (closed) return;
    op->key = op->req.host + ":" + std::to_string(op->req.port);
    inflight.insert(op);
    op->timer.expires_after(op->req.timeout);
    op->timer.async_wait([self = shared_from_this(), op](beast::error_code ec) {
      if (!ec) self->on_timeout(op);
    });
    Host& h = hosts[op->key];
    if (h.active < options.max_connections_per_host)
      dispatch(op);
    else
      h.waiting.push_back(op);
  }

  void dispatch(const OpPtr& op) {
    Host& h = hosts[op->key];
    ++h.active;
    op->dispatched = true;
    while (!h.idle.empty()) {
      auto conn = std::move(h.idle.back());
      h.idle.pop_back();
      conn->idle_timer.cancel();
      if (!conn->socket.is_open()) continue;
      op->conn = std::move(conn);
      op->reused = true;
      write(op);
      return;
    }
    connect(op);
  }

  void connect(const OpPtr& op) {
    op->conn = std::make_shared<Conn>(io);
    op->reused = false;
    op->phase = "connecting";
    beast::error_code ec;
    const auto addr = asio::ip::make_address(op->req.host, ec);
    // Handlers hold the connection: a composed operation may touch its socket
    // and buffer after an abort, even when the op has moved on.
    auto on_connect = [self = shared_from_this(), op, conn = op->conn](beast::error_code ec) {
      if (op->finished) return;
      if (ec) return self->fail(op, ec);
      beast::error_code ignored;
      op->conn->socket.set_option(tcp::no_delay(true), ignored);
      self->write(op);
    };
    if (!ec) {
      op->conn->socket.async_connect(tcp::endpoint(addr, op->req.port), std::move(on_connect));
      return;
    }
    op->phase = "resolving";
    op->resolver.async_resolve(
        op->req.host, std::to_string(op->req.port),
        [self = shared_from_this(), op, on_connect](beast::error_code ec, tcp::resolver::results_type results) {
          if (op->finished) return;
          if (ec) return self->fail(op, ec);
          op->phase = "connecting";
          asio::async_connect(op->conn->socket, results,
                              [on_connect](beast::error_code ec, const tcp::endpoint&) { on_connect(ec); });
        });
  }

  void write(const OpPtr& op) {
    op->phase = "sending";
    auto& m = op->msg;
    m = {};
    m.method_string(op->req.method);
    m.target(op->req.target);
    m.version(11);
    m.set(http::field::host, op->req.port == 80 ? op->req.host : op->req.host + ":" + std::to_string(op->req.port));
    m.set(http::field::user_agent, "tocsin");
    if (!op->req.body.empty() || op->req.method == "POST" || op->req.method == "PUT") {
      if (!op->req.content_type.empty()) m.set(http::field::content_type, op->req.content_type);
      m.body() = op->req.body;
    }
    m.keep_alive(true);
    m.prepare_payload();
    http::async_write(op->conn->socket, m, [self = shared_from_this(), op, conn = op->conn](beast::error_code ec, size_t) {
      if (op->finished) return;
      if (ec) return self->fail(op, ec);
      self->read(op);
    });
  }

  void read(const OpPtr& op) {
    op->phase = "waiting for the answer";
    op->parser.emplace();
    op->parser->body_limit(options.max_response_bytes);
    if (op->req.method == "HEAD") op->parser->skip(true);
    http::async_read(op->conn->socket, op->conn->buffer, *op->parser,
                     [self = shared_from_this(), op, conn = op->conn](beast::error_code ec, size_t) {
                       if (op->finished) return;
                       if (ec) return self->fail(op, ec);
                       auto res = op->parser->release();
                       HttpClientResponse out;
                       out.status = static_cast<int>(res.result_int());
                       out.body = std::move(res.body());
                       self->finish(op, std::move(out), res.keep_alive());
                     });
  }

  void fail(const OpPtr& op, beast::error_code ec) {
    // A kept-alive connection the server closed meanwhile: send once more on a new one.
    const bool stale = ec == http::error::end_of_stream || ec == asio::error::eof ||
                       ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
    if (stale && op->reused && !op->resent && !(op->parser && op->parser->got_some())) {
      op->resent = true;
      beast::error_code ignored;
      op->conn->socket.close(ignored);
      connect(op);
      return;
    }
    HttpClientResponse out;
    out.error = std::string(op->phase) + " " + op->key + ": " + ec.message();
    finish(op, std::move(out), false);
  }

  void on_timeout(const OpPtr& op) {
    if (op->finished) return;
    HttpClientResponse out;
    out.error = "timeout after " + std::to_string(op->req.timeout.count()) + " ms " + op->phase + " " + op->key;
    finish(op, std::move(out), false);
  }

  // Reports the answer, returns the connection to the pool (or closes it) and
  // hands the freed slot to the next waiting request.
  void finish(const OpPtr& op, HttpClientResponse out, bool reusable) {
    op->finished = true;
    op->timer.cancel();
    op->resolver.cancel();
    inflight.erase(op);
    Host& h = hosts[op->key];
    if (op->dispatched) {
      --h.active;
      auto conn = std::move(op->conn);
      if (conn && reusable && h.idle.size() < options.max_idle_per_host) {
        park(h, conn);
      } else if (conn) {
        beast::error_code ignored;
        conn->socket.close(ignored);
      }
    } else {
      std::erase(h.waiting, op);
    }
    auto done = std::move(op->done);
    pump(op->key);
    if (done) done(std::move(out));
  }

  void park(Host& h, const std::shared_ptr<Conn>& conn) {
    conn->buffer.clear();
    h.idle.push_back(conn);
    conn->idle_timer.expires_after(options.idle_timeout);
    conn->idle_timer.async_wait([conn](beast::error_code ec) {
      if (ec) return;  // reused or client closed
      beast::error_code ignored;
      conn->socket.close(ignored);  // dropped from `idle` lazily by dispatch()
    });
  }

  void pump(const std::string& key) {
    Host& h = hosts[key];
    std::vector<OpPtr> expired;  // past their deadline, their timer not run yet: never dispatched
    const auto now = std::chrono::steady_clock::now();
    while (h.active < options.max_connections_per_host && !h.waiting.empty()) {
      OpPtr next = std::move(h.waiting.front());
      h.waiting.pop_front();
      if (next->finished) continue;
      if (next->timer.expiry() <= now)
        expired.push_back(std::move(next));
      else
        dispatch(next);
    }
    if (h.active == 0 && h.waiting.empty()) {
      std::erase_if(h.idle, [](const auto& c) { return !c->socket.is_open(); });
      if (h.idle.empty()) hosts.erase(key);
    }
    for (const auto& op : expired) on_timeout(op);
  }

  void close_all() {
    closed = true;
    beast::error_code ignored;
    for (const auto& op : inflight) {
      op->finished = true;
      op->done = nullptr;
      op->timer.cancel();
      op->resolver.cancel();
      if (op->conn) op->conn->socket.close(ignored);
    }
    inflight.clear();
    for (auto& [key, h] : hosts)
      for (auto& c : h.idle) {
        c->idle_timer.cancel();
        c->socket.close(ignored);
      }
    hosts.clear();
  }
};

HttpClient::HttpClient(asio::io_context& io, HttpClientOptions options)
    : impl_(std::make_shared<Impl>(io, options)) {}

HttpClient::~HttpClient() { impl_->close_all(); }

void HttpClient::request(HttpClientRequest request, Callback done) {
  auto op = std::make_shared<Impl::Op>(impl_->io, std::move(request), std::move(done));
  asio::post(impl_->io, [impl = impl_, op] { impl->start(op); });
}

void HttpClient::get(const HttpUrl& url, std::chrono::milliseconds timeout, Callback done) {
  HttpClientRequest r;
  r.host = url.host;
  r.port = url.port;
  r.target = url.target;
  r.timeout = timeout;
  request(std::move(r), std::move(done));
}

void HttpClient::post(const HttpUrl& url, std::string content_type, std::string body, std::chrono::milliseconds timeout,
                      Callback done) {
  HttpClientRequest r;
  r.method = "POST";
  r.host = url.host;
  r.port = url.port;
  r.target = url.target;
  r.content_type = std::move(content_type);
  r.body = std::move(body);
  r.timeout = timeout;
  request(std::move(r), std::move(done));
}

}  // namespace tocsin::connectors
