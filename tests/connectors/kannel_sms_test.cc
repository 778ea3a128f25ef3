#include "connectors/kannel_sms.h"

#include <gtest/gtest.h>

#include "tests/connectors/test_http.h"

namespace tocsin::connectors {
namespace {

using namespace std::chrono_literals;
using alerts::ReceiptState;
using alerts::SubmitOutcome;
using testing::RawServer;
using testing::run_until;

KannelSmsConfig config() {
  KannelSmsConfig c;
  c.username = "tester";
  c.password = "foo bar&";
  c.from = "12110";
  c.dlr_url = "http://127.0.0.1:9464/sms/dlr";
  return c;
}

std::string param(const std::string& target, const char* name) {
  return query_param(target.substr(target.find('?') + 1), name).value_or("<absent>");
}

std::string repeat(std::string_view s, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

alerts::OutboundMessage msg(std::string_view text, std::string_view to = "+8613800138001") {
  return {"00000000000000a1", to, text};
}

TEST(FormatSendsms, AsciiIsSentAsGsmWithEveryParameterEncoded) {
  auto r = format_sendsms(config(), "/cgi-bin/sendsms", msg("Fraud warning: a+b & 100%"));
  EXPECT_FALSE(r.ucs2);
  EXPECT_FALSE(r.truncated);
  EXPECT_EQ(r.parts, 1u);
  EXPECT_TRUE(r.target.starts_with("/cgi-bin/sendsms?username=tester&password=foo%20bar%26&from=12110&to=%2B8613800138001&"
                                    "text=Fraud%20warning%3A%20a%2Bb%20%26%20100%25&"))
      << r.target;
  EXPECT_EQ(param(r.target, "text"), "Fraud warning: a+b & 100%");
  EXPECT_EQ(param(r.target, "charset"), "<absent>");
  EXPECT_EQ(param(r.target, "coding"), "<absent>");
  EXPECT_EQ(param(r.target, "smsc"), "<absent>");
  EXPECT_EQ(param(r.target, "dlr-mask"), "31");
  // Kannel must see the escapes literally: %d -> %25d on the wire.
  EXPECT_EQ(param(r.target, "dlr-url"), "http://127.0.0.1:9464/sms/dlr?id=00000000000000a1&type=%d&status=%A&ts=%T");
  EXPECT_NE(r.target.find("dlr-url=http%3A%2F%2F127.0.0.1%3A9464%2Fsms%2Fdlr%3Fid%3D00000000000000a1%26type%3D%25d"),
            std::string::npos);
}

TEST(FormatSendsms, NonAsciiTextUsesUtf8AndUcs2) {
  auto c = config();
  c.smsc = "smpp1";
  c.dlr_url = "http://h:1/dlr?tenant=x";
  auto r = format_sendsms(c, "/cgi-bin/sendsms", msg("【反诈中心】请勿转账"));
  EXPECT_TRUE(r.ucs2);
  EXPECT_EQ(r.length, 10u);
  EXPECT_EQ(param(r.target, "text"), "【反诈中心】请勿转账");
  EXPECT_NE(r.target.find("text=%E3%80%90%E5%8F%8D"), std::string::npos);
  EXPECT_EQ(param(r.target, "charset"), "UTF-8");
  EXPECT_EQ(param(r.target, "coding"), "2");
  EXPECT_EQ(param(r.target, "smsc"), "smpp1");
  EXPECT_EQ(param(r.target, "dlr-url"), "http://h:1/dlr?tenant=x&id=00000000000000a1&type=%d&status=%A&ts=%T");
  // One accented letter is enough: GSM would turn anything outside ASCII into '?'.
  EXPECT_TRUE(format_sendsms(c, "/s", msg("café")).ucs2);
  c.dlr_url.clear();
  r = format_sendsms(c, "/s", msg("x"));
  EXPECT_EQ(param(r.target, "dlr-url"), "<absent>");
  EXPECT_EQ(param(r.target, "dlr-mask"), "<absent>");
}

TEST(FormatSendsms, PartsAndTruncationAtCharacterBoundaries) {
  const auto c = config();  // max_parts 10: 670 UCS-2 units, 1530 septets
  auto r = format_sendsms(c, "/s", msg(repeat("收", 70)));
  EXPECT_EQ(r.parts, 1u);
  r = format_sendsms(c, "/s", msg(repeat("收", 71)));
  EXPECT_EQ(r.parts, 2u);
  r = format_sendsms(c, "/s", msg(repeat("收", 670)));
  EXPECT_FALSE(r.truncated);
  EXPECT_EQ(r.parts, 10u);
  r = format_sendsms(c, "/s", msg(repeat("收", 700)));
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(r.length, 670u);
  EXPECT_EQ(r.parts, 10u);
  EXPECT_EQ(param(r.target, "text"), repeat("收", 669) + "…");
  // An emoji is a surrogate pair (2 units) and is never split.
  r = format_sendsms(c, "/s", msg(repeat("收", 668) + "😀" + "tail"));
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(param(r.target, "text"), repeat("收", 668) + "…");
  EXPECT_EQ(r.length, 669u);
  r = format_sendsms(c, "/s", msg(repeat("收", 667) + "😀" + "tail"));
  EXPECT_EQ(param(r.target, "text"), repeat("收", 667) + "😀…");
  EXPECT_EQ(r.length, 670u);
  // 7-bit: 1530 septets; '[' takes two (GSM escape).
  r = format_sendsms(c, "/s", msg(repeat("a", 1530)));
  EXPECT_FALSE(r.truncated);
  r = format_sendsms(c, "/s", msg(repeat("a", 2000)));
  EXPECT_TRUE(r.truncated);
  EXPECT_FALSE(r.ucs2) << "ASCII ellipsis keeps the message 7-bit";
  EXPECT_EQ(param(r.target, "text"), repeat("a", 1527) + "...");
  r = format_sendsms(c, "/s", msg(repeat("[", 800)));
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(param(r.target, "text"), repeat("[", 763) + "...");
  auto one = c;
  one.max_parts = 1;
  r = format_sendsms(one, "/s", msg(repeat("收", 71)));
  EXPECT_EQ(param(r.target, "text"), repeat("收", 69) + "…");
  EXPECT_EQ(r.parts, 1u);
}

TEST(FormatSendsms, InvalidUtf8BecomesReplacementCharacters) {
  auto r = format_sendsms(config(), "/s", msg("ok\xff\xc3("));
  EXPECT_TRUE(r.ucs2);
  EXPECT_EQ(param(r.target, "text"), "ok\xEF\xBF\xBD\xEF\xBF\xBD(");
  r = format_sendsms(config(), "/s", msg("\xed\xa0\x80x"));  // an encoded surrogate
  EXPECT_EQ(param(r.target, "text").substr(0, 3), "\xEF\xBF\xBD");
}

TEST(MapSendsmsAnswer, KannelAnswers) {
  auto m = [](int status, std::string body) { return map_sendsms_answer({status, std::move(body), ""}); };
  EXPECT_EQ(m(202, "0: Accepted for delivery").outcome, SubmitOutcome::kAccepted);
  EXPECT_EQ(m(202, "0: Accepted for delivery").detail, "HTTP 202 0: Accepted for delivery");
  EXPECT_EQ(m(202, "3: Queued for later delivery").outcome, SubmitOutcome::kQueued);
  EXPECT_EQ(m(503, "Temporal failure, try again later.").outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(m(500, "").outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(m(403, "Not routable. Do not try again.").outcome, SubmitOutcome::kRejected);
  EXPECT_EQ(m(403, "Authorization failed for sendsms").outcome, SubmitOutcome::kRejected);
  EXPECT_EQ(m(400, "Missing receiver number, rejected").outcome, SubmitOutcome::kRejected);
  EXPECT_EQ(m(429, "").outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(m(302, "").outcome, SubmitOutcome::kRetry);
  auto t = map_sendsms_answer({0, "", "connecting 127.0.0.1:13013: Connection refused"});
  EXPECT_EQ(t.outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(t.http_status, 0);
  EXPECT_EQ(t.detail, "connecting 127.0.0.1:13013: Connection refused");
}

class KannelChannelTest : public ::testing::Test {
 protected:
  alerts::SubmitResult submit(KannelSmsChannel& ch, const alerts::OutboundMessage& m) {
    std::optional<alerts::SubmitResult> out;
    bool inside = true;
    ch.submit(m, [&](alerts::SubmitResult r) {
      EXPECT_FALSE(inside) << "done ran inside submit()";
      out = std::move(r);
    });
    inside = false;
    EXPECT_TRUE(run_until(io, [&] { return out.has_value(); }));
    return out.value_or(alerts::SubmitResult{});
  }
  KannelSmsChannel channel(uint16_t port, int timeout_ms = 3000) {
    auto c = config();
    c.sendsms_url = "http://127.0.0.1:" + std::to_string(port) + "/cgi-bin/sendsms";
    c.timeout_ms = timeout_ms;
    return KannelSmsChannel(io, c);
  }
  boost::asio::io_context io;
};

TEST_F(KannelChannelTest, MapsRealAnswersFromAServer) {
  // The answer is chosen by the last digit of `to`.
  RawServer server(io, [](const testing::RawRequest& r) {
    const auto line = r.request_line();
    switch (line[line.find("&text=") - 1]) {
      case '0': return RawServer::answer(202, "Accepted", "0: Accepted for delivery");
      case '3': return RawServer::answer(202, "Accepted", "3: Queued for later delivery");
      case '5': return RawServer::answer(503, "Service Unavailable", "Temporal failure, try again later.");
      case '4': return RawServer::answer(403, "Forbidden", "Not routable. Do not try again.");
      default: return RawServer::answer(400, "Bad Request", "Number(s) has/have been denied");
    }
  });
  auto ch = channel(server.port());
  auto r = submit(ch, msg("x", "13800138000"));
  EXPECT_EQ(r.outcome, SubmitOutcome::kAccepted);
  EXPECT_EQ(r.http_status, 202);
  EXPECT_EQ(r.detail, "HTTP 202 0: Accepted for delivery");
  EXPECT_EQ(submit(ch, msg("x", "13800138003")).outcome, SubmitOutcome::kQueued);
  EXPECT_EQ(submit(ch, msg("x", "13800138005")).outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(submit(ch, msg("x", "13800138004")).outcome, SubmitOutcome::kRejected);
  r = submit(ch, msg("x", "13800138009"));
  EXPECT_EQ(r.outcome, SubmitOutcome::kRejected);
  EXPECT_EQ(r.http_status, 400);
  EXPECT_EQ(server.connections(), 1) << "keep-alive";
  ASSERT_EQ(server.requests().size(), 5u);
  EXPECT_TRUE(server.requests()[0].request_line().starts_with("GET /cgi-bin/sendsms?username=tester&"));
  // A truncated text says so in the detail.
  r = submit(ch, msg(repeat("收", 700), "13800138000"));
  EXPECT_EQ(r.outcome, SubmitOutcome::kAccepted);
  EXPECT_NE(r.detail.find("text truncated to 670 UCS-2 characters in 10 parts"), std::string::npos) << r.detail;
}

TEST_F(KannelChannelTest, RefusedAndSilentGatewaysAreRetried) {
  auto refused = channel(testing::closed_port());
  auto r = submit(refused, msg("x"));
  EXPECT_EQ(r.outcome, SubmitOutcome::kRetry);
  EXPECT_EQ(r.http_status, 0);
  EXPECT_NE(r.detail.find("refused"), std::string::npos) << r.detail;
  testing::SilentPort silent(io);
  auto slow = channel(silent.port(), 200);
  r = submit(slow, msg("x"));
  EXPECT_EQ(r.outcome, SubmitOutcome::kRetry);
  EXPECT_NE(r.detail.find("timeout after 200 ms"), std::string::npos) << r.detail;
}

TEST_F(KannelChannelTest, RejectsIdsKannelWouldMangleAndBadConfig) {
  auto ch = channel(testing::closed_port());
  auto r = submit(ch, {"ab%41", "13800138000", "x"});
  EXPECT_EQ(r.outcome, SubmitOutcome::kRejected);
  EXPECT_EQ(r.http_status, 0);
  auto c = config();
  c.sendsms_url = "https://x/cgi-bin/sendsms";
  EXPECT_THROW(KannelSmsChannel(io, c), std::invalid_argument);
  c = config();
  c.dlr_url = "http://h/dlr?x=%41";
  EXPECT_THROW(KannelSmsChannel(io, c), std::invalid_argument);
}

HttpRequest get(std::string path, std::string query) { return {"GET", std::move(path), std::move(query), ""}; }

TEST(ReceiptFromDlr, ParsesKannelCallbacks) {
  auto r = receipt_from_dlr(get("/sms/dlr",
                                "id=00000000000000a1&type=1&status=id%3A1000001+sub%3A001+dlvrd%3A001+stat%3ADELIVRD"
                                "+err%3A000&ts=1732630000"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->notification_id, "00000000000000a1");
  EXPECT_EQ(r->state, ReceiptState::kDelivered);
  EXPECT_EQ(r->detail, "id:1000001 sub:001 dlvrd:001 stat:DELIVRD err:000");
  EXPECT_EQ(receipt_from_dlr(get("/", "id=a&type=8&status=ACK%2F"))->detail, "ACK/");
  EXPECT_EQ(receipt_from_dlr(get("/", "id=a&type=8"))->state, ReceiptState::kSmscAccepted);
  EXPECT_EQ(receipt_from_dlr(get("/", "id=a&type=2"))->state, ReceiptState::kUndeliverable);
  EXPECT_EQ(receipt_from_dlr(get("/", "id=a&type=4"))->state, ReceiptState::kEnroute);
  EXPECT_EQ(receipt_from_dlr(get("/", "id=a&type=16"))->state, ReceiptState::kSmscRejected);
  EXPECT_EQ(receipt_from_dlr(get("/", "id=a&type=34"))->state, ReceiptState::kExpired);
  EXPECT_EQ(receipt_from_dlr(get("/", "id=a&type=66"))->state, ReceiptState::kUnknown);
  EXPECT_EQ(receipt_from_dlr(get("/", "id=a&type=0"))->state, ReceiptState::kUnknown);
  EXPECT_EQ(receipt_from_dlr(get("/", "type=1&id=a&status="))->detail, "");
}

TEST(ReceiptFromDlr, RejectsGarbage) {
  for (const char* q : {"", "id=a", "type=1", "id=&type=1", "id=a&type=", "id=a&type=abc", "id=a&type=-1",
                        "id=a&type=256", "id=a&type=1.5", "id=a&type=99999999999999999999", "id=a&type=%d",
                        "id=a%25b&type=1", "id=a+b&type=1", "id=%zz&type=1", "id=a&type=%zz", "id=a&type=1x",
                        "id=a&type=+1", "id=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&type=1"})
    EXPECT_FALSE(receipt_from_dlr(get("/sms/dlr", q))) << q;
  // A malformed status still yields the receipt, with an empty detail.
  auto r = receipt_from_dlr(get("/", "id=a&type=1&status=%zz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->detail, "");
}

TEST(ReplyFromMo, ParsesPostAndGet) {
  auto r = reply_from_mo({"POST", "/sms/mo", "from=13800138000&to=12110&smsc=fake1", "1 收到"});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->from, "13800138000");
  EXPECT_EQ(r->text, "1 收到");
  r = reply_from_mo(get("/sms/mo", "from=%2B8613800138000&text=1+%E6%94%B6%E5%88%B0"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->from, "+8613800138000");
  EXPECT_EQ(r->text, "1 收到");
  r = reply_from_mo({"POST", "/sms/mo", "from=1", "\xff" "1"});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->text, "\xEF\xBF\xBD" "1");
  EXPECT_EQ(reply_from_mo(get("/", "from=1"))->text, "");
  for (const char* q : {"", "to=1", "from=", "from=%zz", "from=1%0A2", "from=123456789012345678901234567890123"})
    EXPECT_FALSE(reply_from_mo({"POST", "/sms/mo", q, "1"})) << q;
  EXPECT_FALSE(reply_from_mo({"POST", "/sms/mo", "from=1", std::string(8193, 'x')}));
}

TEST(KannelRoutes, AnswerCountAndNeverCrash) {
  HttpServer server("127.0.0.1", 0);
  std::mutex mu;
  std::vector<alerts::Receipt> receipts;
  std::vector<alerts::Reply> replies;
  auto stats = add_kannel_routes(
      server,
      [&](alerts::Receipt r) {
        std::lock_guard lock(mu);
        receipts.push_back(std::move(r));
      },
      [&](alerts::Reply r) {
        std::lock_guard lock(mu);
        replies.push_back(std::move(r));
      });
  server.start();
  boost::asio::io_context io;
  HttpClient client(io);
  auto call = [&](std::string method, std::string target, std::string body = "") {
    HttpClientRequest r;
    r.method = std::move(method);
    r.host = "127.0.0.1";
    r.port = server.port();
    r.target = std::move(target);
    r.body = std::move(body);
    r.content_type = "text/plain; charset=UTF-8";
    std::optional<int> status;
    client.request(r, [&](HttpClientResponse a) { status = a.status; });
    EXPECT_TRUE(run_until(io, [&] { return status.has_value(); }));
    return status.value_or(-1);
  };
  EXPECT_EQ(call("GET", "/sms/dlr?id=00000000000000a1&type=1&status=x&ts=1"), 200);
  EXPECT_EQ(call("GET", "/sms/dlr?id=00000000000000a1&type=banana"), 400);
  EXPECT_EQ(call("GET", "/sms/dlr"), 400);
  EXPECT_EQ(call("POST", "/sms/dlr?id=a&type=1", "x"), 405);
  EXPECT_EQ(call("POST", "/sms/mo?from=13800138000&to=12110", "1 收到"), 200);
  EXPECT_EQ(call("GET", "/sms/mo?from=13800138000&text=2"), 200);
  EXPECT_EQ(call("POST", "/sms/mo?to=12110", "1"), 400);
  EXPECT_EQ(call("DELETE", "/sms/mo?from=1"), 405);
  server.stop();
  std::lock_guard lock(mu);
  ASSERT_EQ(receipts.size(), 1u);
  EXPECT_EQ(receipts[0].state, ReceiptState::kDelivered);
  EXPECT_EQ(receipts[0].detail, "x");
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[0].text, "1 收到");
  EXPECT_EQ(replies[1].text, "2");
  EXPECT_EQ(stats->receipts, 1u);
  EXPECT_EQ(stats->replies, 2u);
  EXPECT_EQ(stats->bad_requests, 5u);
}

TEST(ReceiptState, FinalStatesAndNames) {
  EXPECT_TRUE(alerts::is_final(ReceiptState::kDelivered));
  EXPECT_TRUE(alerts::is_final(ReceiptState::kUndeliverable));
  EXPECT_TRUE(alerts::is_final(ReceiptState::kSmscRejected));
  EXPECT_TRUE(alerts::is_final(ReceiptState::kExpired));
  EXPECT_FALSE(alerts::is_final(ReceiptState::kEnroute));
  EXPECT_FALSE(alerts::is_final(ReceiptState::kSmscAccepted));
  EXPECT_FALSE(alerts::is_final(ReceiptState::kUnknown));
  EXPECT_EQ(alerts::name(ReceiptState::kSmscAccepted), "smsc_accepted");
  EXPECT_EQ(alerts::name(ReceiptState::kExpired), "expired");
}

}  // namespace
}  // namespace tocsin::connectors
