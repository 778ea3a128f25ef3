#include "connectors/webhook.h"

#include <gtest/gtest.h>

#include "tests/connectors/test_http.h"

namespace tocsin::connectors {
namespace {

using alerts::SubmitOutcome;
using testing::RawServer;
using testing::run_until;

class WebhookTest : public ::testing::Test {
 protected:
  alerts::SubmitResult submit(WebhookChannel& ch, std::string_view to, std::string_view body) {
    std::optional<alerts::SubmitResult> out;
    ch.submit({"00000000000000a1", to, body}, [&](alerts::SubmitResult r) { out = std::move(r); });
    EXPECT_TRUE(run_until(io, [&] { return out.has_value(); }));
    return out.value_or(alerts::SubmitResult{});
  }
  boost::asio::io_context io;
};

TEST_F(WebhookTest, PostsJsonToTheNamedUrlAndMapsStatuses) {
  // The status to answer is the path: POST /hook/<status>.
  RawServer server(io, [](const testing::RawRequest& r) {
    const auto line = r.request_line();
    const int status = std::stoi(line.substr(line.find("/hook/") + 6, 3));
    return RawServer::answer(status, "X", status == 200 ? "" : "nope");
  });
  const std::string base = "http://127.0.0.1:" + std::to_string(server.port()) + "/hook/";
  WebhookConfig c;
  for (int s : {200, 204, 400, 404, 408, 429, 500, 503, 301}) c.urls["s" + std::to_string(s)] = base + std::to_string(s);
  c.urls["refused"] = "http://127.0.0.1:" + std::to_string(testing::closed_port()) + "/";
  WebhookChannel ch(io, c);
  const std::string body = R"({"version":"4","status":"firing","alerts":[{"labels":{"alertname":"收"}}]})";
  auto r = submit(ch, "s200", body);
  EXPECT_EQ(r.outcome, SubmitOutcome::kAccepted);
  EXPECT_EQ(r.http_status, 200);
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(server.requests()[0].request_line(), "POST /hook/200 HTTP/1.1");
  EXPECT_NE(server.requests()[0].head.find("Content-Type: application/json"), std::string::npos);
  EXPECT_EQ(server.requests()[0].body, body);
  EXPECT_EQ(submit(ch, "s204", body).outcome, SubmitOutcome::kAccepted);
  r = submit(ch, "s400", body);
  EXPECT_EQ(r.outcome, SubmitOutcome::kRejected);
  EXPECT_EQ(r.detail, "HTTP 400 nope");
  EXPECT_EQ(submit(ch, "s404", body).outcome, SubmitOutcome::kRejected);
  EXPECT_EQ(submit(ch, "s408", body).outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(submit(ch, "s429", body).outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(submit(ch, "s500", body).outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(submit(ch, "s503", body).outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(submit(ch, "s301", body).outcome, SubmitOutcome::kRetry);
  r = submit(ch, "refused", body);
  EXPECT_EQ(r.outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(r.http_status, 0);
  r = submit(ch, "nosuch", body);
  EXPECT_EQ(r.outcome, SubmitOutcome::kRejected);
  EXPECT_EQ(r.detail, "no webhook named 'nosuch'");
}

TEST_F(WebhookTest, MalformedUrlIsAConfigError) {
  WebhookConfig c;
  c.urls["x"] = "https://example.org/hook";
  EXPECT_THROW(WebhookChannel(io, c), std::invalid_argument);
}

}  // namespace
}  // namespace tocsin::connectors
