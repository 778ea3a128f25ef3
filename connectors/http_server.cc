#include "connectors/http_server.h"

#include <optional>
#include <utility>  // before asio: Boost 1.74 misses it under C++20

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <array>
#include <atomic>
#include <cctype>
#include <deque>
#include <map>
#include <thread>

namespace tocsin::connectors {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

using Routes = std::map<std::string, HttpServer::Handler>;

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// A Server-Sent Events response on a connection taken over from its Session.
template <class Stream>
class SseStream final : public EventStream, public std::enable_shared_from_this<SseStream<Stream>> {
 public:
  explicit SseStream(Stream stream) : stream_(std::move(stream)) {}

  void start(std::shared_ptr<const std::string> first) {
    beast::get_lowest_layer(stream_).expires_never();
    if (first && !first->empty()) queue_.push_back(std::move(first));
    write_next();
    watch_close();
  }

  bool send(std::shared_ptr<const std::string> chunk) override {
    if (!open_.load()) return false;
    asio::post(stream_.get_executor(), [self = this->shared_from_this(), chunk = std::move(chunk)]() mutable {
      if (!self->open_.load()) return;
      if (self->queue_.size() >= 1000) return self->close();  // too slow: it will resume
      self->queue_.push_back(std::move(chunk));
      if (self->queue_.size() == 1) self->write_next();
    });
    return true;
  }
  bool open() const override { return open_.load(); }

 private:
  void write_next() {
    if (queue_.empty() || !open_.load()) return;
    asio::async_write(stream_, asio::buffer(*queue_.front()), [self = this->shared_from_this()](beast::error_code ec, size_t) {
      // A write may complete after close() emptied the queue (the client left while it was
      // in flight): popping then would corrupt the deque.
      if (ec || !self->open_.load() || self->queue_.empty()) return self->close();
      self->queue_.pop_front();
      self->write_next();
    });
  }
  // The client sends nothing more: a completed read means it went away.
  void watch_close() {
    stream_.async_read_some(asio::buffer(sink_), [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->watch_close();
    });
  }
  void close() {
    if (!open_.exchange(false)) return;
    beast::error_code ec;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(stream_).socket().close(ec);
    // queue_ is kept until the stream is destroyed: an aborted write may still name its front.
  }

  Stream stream_;
  std::deque<std::shared_ptr<const std::string>> queue_;
  std::array<char, 256> sink_{};
  std::atomic<bool> open_{true};
};

template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(Stream stream, const Routes& routes) : stream_(std::move(stream)), routes_(routes) {}
  void run() {
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(30));
      stream_.async_handshake(asio::ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (!ec) self->read();
      });
    } else {
      read();
    }
  }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(1 << 20);
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(60));
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec) return shutdown();
    const auto& req = parser_->get();
    HttpRequest r;
    r.method = std::string(req.method_string());
    const std::string target(req.target());
    const auto q = target.find('?');
    r.path = target.substr(0, q);
    if (q != std::string::npos) r.query = target.substr(q + 1);
    r.body = req.body();
    for (const auto& f : req) {
      std::string name(f.name_string());
      for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      r.headers.emplace_back(std::move(name), std::string(f.value()));
    }
    beast::error_code peer_ec;
    const auto remote = beast::get_lowest_layer(stream_).socket().remote_endpoint(peer_ec);
    if (!peer_ec) r.peer = remote.address().to_string();
    HttpResponse out;
    auto it = routes_.find(r.path);
    if (it == routes_.end())  // prefix routes ("/api/v1/alerts/*"): the longest match wins
      for (auto p = routes_.begin(); p != routes_.end(); ++p)
        if (p->first.ends_with('*') && r.path.starts_with(std::string_view(p->first).substr(0, p->first.size() - 1)) &&
            (it == routes_.end() || p->first.size() > it->first.size()))
          it = p;
    if (it == routes_.end()) {
      out.status = 404;
      out.body = "not found\n";
    } else {
      try {
        out = it->second(r);
      } catch (const std::exception& e) {
        out.status = 500;
        out.body = std::string("internal error: ") + e.what() + "\n";
      }
    }
    if (out.stream) return start_stream(std::move(out), req.version());
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(out.status), req.version());
    res->set(http::field::server, "tocsin");
    res->set(http::field::content_type, out.content_type);
    for (const auto& [k, v] : out.headers) res->insert(k, v);
    res->keep_alive(req.keep_alive());
    res->body() = std::move(out.body);
    res->prepare_payload();
    http::async_write(stream_, *res, [self = this->shared_from_this(), res](beast::error_code ec, size_t) {
      if (ec || !res->keep_alive()) return self->shutdown();
      self->read();
    });
  }

  void shutdown() {
    beast::error_code ec;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  // Hands the socket to an SseStream after the header block.
  void start_stream(HttpResponse out, unsigned version) {
    std::string head = "HTTP/" + std::to_string(version / 10) + "." + std::to_string(version % 10) + " " +
                       std::to_string(out.status) + " " + std::string(http::obsolete_reason(static_cast<http::status>(out.status))) +
                       "\r\nServer: tocsin\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
                       "Connection: keep-alive\r\nX-Accel-Buffering: no\r\n";
    for (const auto& [k, v] : out.headers) head += k + ": " + v + "\r\n";
    head += "\r\n" + out.body;
    auto sse = std::make_shared<SseStream<Stream>>(std::move(stream_));
    sse->start(std::make_shared<const std::string>(std::move(head)));
    out.stream(sse);
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const Routes& routes_;
};

}  // namespace

struct HttpServer::Impl {
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  Routes routes;
  std::thread thread;
  std::optional<asio::ssl::context> tls;

  void accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;  // acceptor closed
      if (tls) std::make_shared<Session<TlsStream>>(TlsStream(beast::tcp_stream(std::move(socket)), *tls), routes)->run();
      else std::make_shared<Session<beast::tcp_stream>>(beast::tcp_stream(std::move(socket)), routes)->run();
      accept();
    });
  }
};

std::string_view HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return {};
}

std::string_view HttpRequest::cookie(std::string_view name) const {
  std::string_view all = header("cookie");
  while (!all.empty()) {
    const size_t semi = all.find(';');
    std::string_view one = all.substr(0, semi);
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    if (one.size() > name.size() && one.starts_with(name) && one[name.size()] == '=') return one.substr(name.size() + 1);
    if (semi == std::string_view::npos) break;
    all.remove_prefix(semi + 1);
  }
  return {};
}

HttpServer::HttpServer(const std::string& address, uint16_t port, const HttpTls* tls) : impl_(std::make_unique<Impl>()) {
  beast::error_code ec;
  if (tls) {
    auto& ctx = impl_->tls.emplace(asio::ssl::context::tls_server);
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                    asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    ctx.use_certificate_chain_file(tls->cert_file, ec);
    if (ec) throw std::runtime_error("http: cannot read the TLS certificate " + tls->cert_file + ": " + ec.message());
    ctx.use_private_key_file(tls->key_file, asio::ssl::context::pem, ec);
    if (ec) throw std::runtime_error("http: cannot read the TLS key " + tls->key_file + ": " + ec.message());
  }
  const auto addr = asio::ip::make_address(address, ec);
  if (ec) throw std::runtime_error("http: '" + address + "' is not an IP address");
  const tcp::endpoint ep(addr, port);
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("http: cannot listen on " + address + ":" + std::to_string(port) + ": " + ec.message());
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::route(const std::string& path, Handler handler) { impl_->routes[path] = std::move(handler); }

void HttpServer::start() {
  impl_->accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

void HttpServer::stop() {
  if (!impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
    impl_->io.stop();
  });
  impl_->thread.join();
}

uint16_t HttpServer::port() const { return impl_->acceptor.local_endpoint().port(); }

}  // namespace tocsin::connectors
