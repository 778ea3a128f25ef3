#pragma once
// Test helpers: a raw HTTP/1.1 server on the test's own io_context (answers
// scripted per request, may stay silent or close after answering), a port
// that refuses connections, and a bounded run loop.
#include <utility>  // before asio: Boost 1.74 misses it under C++20

#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tocsin::connectors::testing {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct RawRequest {
  std::string head;  // request line + headers
  std::string body;
  std::string request_line() const { return head.substr(0, head.find("\r\n")); }
};

// Runs `io` until `done()` holds or `timeout` passes; returns done().
template <class F>
bool run_until(asio::io_context& io, F done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  io.restart();
  while (!done() && std::chrono::steady_clock::now() < deadline) io.run_one_for(std::chrono::milliseconds(20));
  return done();
}

class RawServer {
 public:
  // respond(request) -> the full raw answer, or nullopt to never answer.
  using Respond = std::function<std::optional<std::string>(const RawRequest&)>;
  RawServer(asio::io_context& io, Respond respond, bool close_after_answer = false)
      : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        respond_(std::move(respond)),
        close_after_(close_after_answer) {
    accept();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  int connections() const { return *connections_; }
  const std::vector<RawRequest>& requests() const { return *requests_; }

  static std::string answer(int status, std::string_view reason, std::string_view body) {
    return "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
           "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
           std::string(body);
  }

 private:
  struct Conn {
    explicit Conn(tcp::socket s) : socket(std::move(s)) {}
    tcp::socket socket;
    std::string buffer;
  };

  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      ++*connections_;
      auto c = std::make_shared<Conn>(std::move(s));
      conns_.push_back(c);
      read(c);
      accept();
    });
  }

  void read(std::shared_ptr<Conn> c) {
    asio::async_read_until(c->socket, asio::dynamic_buffer(c->buffer), "\r\n\r\n",
                           [this, c](boost::system::error_code ec, size_t n) {
                             if (ec) return;
                             RawRequest r;
                             r.head = c->buffer.substr(0, n);
                             c->buffer.erase(0, n);
                             size_t len = 0;
                             const auto p = lower(r.head).find("content-length:");
                             if (p != std::string::npos) len = std::stoul(r.head.substr(p + 15));
                             read_body(c, std::move(r), len);
                           });
  }

  void read_body(std::shared_ptr<Conn> c, RawRequest r, size_t len) {
    if (c->buffer.size() < len) {
      asio::async_read(c->socket, asio::dynamic_buffer(c->buffer), asio::transfer_exactly(len - c->buffer.size()),
                       [this, c, r = std::move(r), len](boost::system::error_code ec, size_t) mutable {
                         if (!ec) read_body(c, std::move(r), len);
                       });
      return;
    }
    r.body = c->buffer.substr(0, len);
    c->buffer.erase(0, len);
    requests_->push_back(r);
    auto out = respond_(r);
    if (!out) return;  // silent: the connection stays open, unanswered
    auto data = std::make_shared<std::string>(std::move(*out));
    asio::async_write(c->socket, asio::buffer(*data), [this, c, data](boost::system::error_code ec, size_t) {
      if (ec) return;
      if (close_after_) {
        c->socket.close(ec);
        return;
      }
      read(c);
    });
  }

  static std::string lower(std::string s) {
    for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  }

  tcp::acceptor acceptor_;
  Respond respond_;
  bool close_after_;
  std::shared_ptr<int> connections_ = std::make_shared<int>(0);
  std::shared_ptr<std::vector<RawRequest>> requests_ = std::make_shared<std::vector<RawRequest>>();
  std::vector<std::shared_ptr<Conn>> conns_;
};

// A loopback port with nothing listening (bound once, then released).
inline uint16_t closed_port() {
  asio::io_context io;
  tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

// A listening socket that never accepts: connects succeed (the kernel's
// backlog), nothing is ever answered.
class SilentPort {
 public:
  explicit SilentPort(asio::io_context& io) : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}
  uint16_t port() const { return acceptor_.local_endpoint().port(); }

 private:
  tcp::acceptor acceptor_;
};

}  // namespace tocsin::connectors::testing
