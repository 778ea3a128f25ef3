#pragma once
// SMS through Kannel (1.4.5): MT via smsbox's sendsms HTTP interface, delivery
// reports (DLR) and handset replies (MO) back through our HttpServer.
// Kannel facts used here: shared/reference/kannel/README.md.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "alerts/channel.h"
#include "connectors/http_client.h"
#include "connectors/http_server.h"

namespace tocsin::connectors {

struct KannelSmsConfig {
  std::string sendsms_url = "http://127.0.0.1:13013/cgi-bin/sendsms";
  std::string username;
  std::string password;
  std::string from;     // sender id
  std::string smsc;     // forced route (sendsms `smsc=`), "" = Kannel's routing
  // Our DLR callback base, e.g. "http://127.0.0.1:9464/sms/dlr"; "" = no DLR asked for.
  // The channel appends id=<notification_id>&type=%d&status=%A&ts=%T.
  std::string dlr_url;
  int dlr_mask = 31;    // 1 delivered | 2 undeliverable | 4 buffered | 8 smsc ack | 16 smsc nack
  int timeout_ms = 5000;
  int max_parts = 10;   // must not exceed the sendsms-user's max-messages
  size_t max_connections = 16;  // sendsms requests on the wire at once (match the channel's max_in_flight)
};

// The sendsms request for one message, before it is sent.
struct SendsmsRequest {
  std::string target;   // path?query, URL-encoded
  bool ucs2 = false;    // charset=UTF-8&coding=2 (the text is not plain 7-bit ASCII)
  bool truncated = false;
  size_t length = 0;    // of the text sent: UCS-2 code units, or GSM septets
  size_t parts = 0;     // SMS parts Kannel will send
};

// Builds the request. A text longer than max_parts concatenated parts (UCS-2:
// 70 single / 67 per part; GSM 7-bit: 160 / 153 septets) is cut at a character
// boundary and ends in "…" (UCS-2) or "..." (7-bit). Invalid UTF-8 becomes U+FFFD.
// `base_path` is the sendsms URL's target.
SendsmsRequest format_sendsms(const KannelSmsConfig& config, std::string_view base_path,
                              const alerts::OutboundMessage& message);

// Maps a sendsms answer (status 0 = transport error) to a submit result:
// 202 "0: Accepted" -> kAccepted, 202 "3: Queued" -> kQueued, other 2xx -> kAccepted,
// 5xx / 408 / 429 / no answer -> kRetry, other 4xx -> kRejected, anything else -> kRetry.
alerts::SubmitResult map_sendsms_answer(const HttpClientResponse& answer);

class KannelSmsChannel : public alerts::Channel {
 public:
  // Throws std::invalid_argument on a malformed sendsms_url or dlr_url.
  KannelSmsChannel(boost::asio::io_context& io, KannelSmsConfig config);
  // `done` runs on the io_context's thread. An id that is not URL-safe
  // ([A-Za-z0-9._~-], at most 64) is rejected (kRejected): Kannel would read a
  // '%' in the DLR URL as an escape.
  void submit(const alerts::OutboundMessage& message, std::function<void(alerts::SubmitResult)> done) override;

 private:
  boost::asio::io_context& io_;
  KannelSmsConfig config_;
  HttpUrl sendsms_;
  HttpClient client_;
};

// The DLR callback (GET ?id=..&type=%d&status=%A[&ts=%T]); nullopt when id or
// type is missing or malformed (type must be an integer 0..255).
std::optional<alerts::Receipt> receipt_from_dlr(const HttpRequest& request);
// The MO callback (post-url ?from=%p&to=%P, body = UTF-8 text; or GET with
// &text=%a). nullopt without a plausible `from` or with a text over 8 KiB.
// Invalid UTF-8 in the text becomes U+FFFD.
std::optional<alerts::Reply> reply_from_mo(const HttpRequest& request);

struct KannelCallbackStats {
  std::atomic<uint64_t> receipts{0};
  std::atomic<uint64_t> replies{0};
  std::atomic<uint64_t> bad_requests{0};  // answered 400 (or 405)
};

// Registers GET /sms/dlr and GET+POST /sms/mo. The callbacks run on the
// server's thread and must not block. Bad requests get 400, are counted and
// logged (phone numbers masked). Returns the counters (for metrics/tests).
std::shared_ptr<const KannelCallbackStats> add_kannel_routes(HttpServer& server,
                                                             std::function<void(alerts::Receipt)> on_receipt,
                                                             std::function<void(alerts::Reply)> on_reply);

}  // namespace tocsin::connectors
