#include "connectors/http_client.h"

#include <gtest/gtest.h>

#include "tests/connectors/test_http.h"

namespace tocsin::connectors {
namespace {

using namespace std::chrono_literals;
using testing::RawServer;
using testing::run_until;

TEST(HttpUrl, ParsesHostPortAndTarget) {
  auto u = parse_http_url("http://127.0.0.1:13013/cgi-bin/sendsms");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 13013);
  EXPECT_EQ(u->target, "/cgi-bin/sendsms");
  u = parse_http_url("http://example.org");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->target, "/");
  u = parse_http_url("http://[::1]:8080?x=1");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->target, "/?x=1");
  for (const char* bad : {"https://x/", "http://", "http://:80/", "http://h:0/", "http://h:99999/", "http://h:8x/",
                          "http://u@h/", "ftp://h/", "http://h h/"})
    EXPECT_FALSE(parse_http_url(bad)) << bad;
}

TEST(UrlEncoding, EncodesAllButUnreservedAndDecodesQueries) {
  EXPECT_EQ(url_encode("a b&c=d+e/%~._-"), "a%20b%26c%3Dd%2Be%2F%25~._-");
  EXPECT_EQ(url_encode("收"), "%E6%94%B6");
  EXPECT_EQ(url_decode("a+b%20c%E6%94%B6"), "a b c收");
  EXPECT_EQ(url_decode("a+b", false), "a+b");
  EXPECT_FALSE(url_decode("%"));
  EXPECT_FALSE(url_decode("%4"));
  EXPECT_FALSE(url_decode("%zz"));
  EXPECT_EQ(query_param("a=1&bb=2&b=3&e=&f", "b"), "3");
  EXPECT_EQ(query_param("a=1&e=&f", "e"), "");
  EXPECT_EQ(query_param("a=1&e=&f", "f"), "");
  EXPECT_FALSE(query_param("a=1", "b"));
  EXPECT_FALSE(query_param("a=%zz", "a"));
}

class HttpClientTest : public ::testing::Test {
 protected:
  // Sends `r` and runs the io_context until its callback ran (or 10 s passed).
  HttpClientResponse call(HttpClient& client, HttpClientRequest r) {
    std::optional<HttpClientResponse> out;
    client.request(std::move(r), [&](HttpClientResponse a) { out = std::move(a); });
    EXPECT_TRUE(run_until(io, [&] { return out.has_value(); }));
    return out.value_or(HttpClientResponse{});
  }
  HttpClientRequest get(uint16_t port, std::string target = "/") {
    HttpClientRequest r;
    r.host = "127.0.0.1";
    r.port = port;
    r.target = std::move(target);
    r.timeout = 3s;
    return r;
  }
  boost::asio::io_context io;
};

TEST_F(HttpClientTest, GetAndPostAndKeepAliveReuse) {
  RawServer server(io, [](const testing::RawRequest& r) {
    return RawServer::answer(200, "OK", r.request_line() + "|" + r.body);
  });
  HttpClient client(io);
  auto a = call(client, get(server.port(), "/x?y=%20"));
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, "GET /x?y=%20 HTTP/1.1|");
  EXPECT_EQ(a.error, "");
  auto post = get(server.port(), "/p");
  post.method = "POST";
  post.content_type = "application/json";
  post.body = R"({"k":"收"})";
  a = call(client, post);
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, "POST /p HTTP/1.1|{\"k\":\"收\"}");
  EXPECT_NE(server.requests().back().head.find("Content-Type: application/json"), std::string::npos);
  EXPECT_EQ(server.connections(), 1) << "the second request reuses the kept-alive connection";
}

TEST_F(HttpClientTest, CallbackNeverRunsInsideTheCall) {
  RawServer server(io, [](const testing::RawRequest&) { return RawServer::answer(204, "No Content", ""); });
  HttpClient client(io);
  bool inside = true, called = false;
  client.request(get(server.port()), [&](HttpClientResponse a) {
    called = true;
    EXPECT_FALSE(inside);
    EXPECT_EQ(a.status, 204);
  });
  inside = false;
  EXPECT_TRUE(run_until(io, [&] { return called; }));
}

TEST_F(HttpClientTest, SendsAgainWhenTheServerClosedTheKeptAliveConnection) {
  // Answers without "Connection: close", then closes: the client parks a dead connection.
  RawServer server(io, [](const testing::RawRequest&) { return RawServer::answer(200, "OK", "ok"); }, true);
  HttpClient client(io);
  EXPECT_EQ(call(client, get(server.port())).status, 200);
  auto a = call(client, get(server.port()));
  EXPECT_EQ(a.status, 200) << a.error;
  EXPECT_EQ(server.connections(), 2);
  EXPECT_EQ(server.requests().size(), 2u);
}

TEST_F(HttpClientTest, ConnectionRefusedIsStatusZeroWithTheError) {
  HttpClient client(io);
  auto a = call(client, get(testing::closed_port()));
  EXPECT_EQ(a.status, 0);
  EXPECT_NE(a.error.find("refused"), std::string::npos) << a.error;
}

TEST_F(HttpClientTest, TimeoutCoversAServerThatNeverAnswers) {
  testing::SilentPort silent(io);
  RawServer mute(io, [](const testing::RawRequest&) { return std::nullopt; });
  HttpClient client(io);
  for (uint16_t port : {silent.port(), mute.port()}) {
    auto r = get(port);
    r.timeout = 300ms;
    const auto t0 = std::chrono::steady_clock::now();
    auto a = call(client, r);
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(a.status, 0);
    EXPECT_NE(a.error.find("timeout after 300 ms"), std::string::npos) << a.error;
    EXPECT_GE(took, 290ms);
    EXPECT_LT(took, 3s);
  }
}

TEST_F(HttpClientTest, ConnectionCapQueuesRequestsWithinTheirDeadline) {
  RawServer mute(io, [](const testing::RawRequest&) { return std::nullopt; });
  HttpClientOptions o;
  o.max_connections_per_host = 1;
  HttpClient client(io, o);
  std::vector<HttpClientResponse> out;
  for (int i = 0; i < 3; ++i) {
    auto r = get(mute.port());
    r.timeout = i == 0 ? 400ms : 100ms;  // the first holds the only connection past the others' deadline
    client.request(r, [&](HttpClientResponse a) { out.push_back(std::move(a)); });
  }
  ASSERT_TRUE(run_until(io, [&] { return out.size() == 3; }));
  EXPECT_EQ(mute.connections(), 1) << "one connection; the others waited for it and timed out waiting";
  int waiting = 0;
  for (const auto& a : out) waiting += a.error.find("waiting for a connection") != std::string::npos;
  EXPECT_EQ(waiting, 2);
}

TEST_F(HttpClientTest, DestroyedClientDropsCallbacks) {
  RawServer mute(io, [](const testing::RawRequest&) { return std::nullopt; });
  bool called = false;
  {
    HttpClient client(io);
    client.request(get(mute.port()), [&](HttpClientResponse) { called = true; });
    run_until(io, [&] { return mute.requests().size() == 1; });
  }
  run_until(io, [] { return false; }, 100ms);
  EXPECT_FALSE(called);
}

}  // namespace
}  // namespace tocsin::connectors
