#pragma once
// Webhook notifications: message.text (a JSON document, e.g. the Alertmanager
// webhook v4 payload built in alerts/) POSTed as application/json to the URL
// configured under the name message.to. Plain http:// only.
#include <chrono>
#include <functional>
#include <map>
#include <string>

#include "alerts/channel.h"
#include "connectors/http_client.h"

namespace tocsin::connectors {

struct WebhookConfig {
  std::map<std::string, std::string> urls;  // name -> http:// URL
  int timeout_ms = 5000;
};

// 2xx -> kAccepted; 408, 429, 5xx, no answer -> kRetry; other 4xx -> kRejected;
// 1xx/3xx -> kRetry (redirects are not followed).
alerts::SubmitResult map_webhook_answer(const HttpClientResponse& answer);

class WebhookChannel : public alerts::Channel {
 public:
  // Throws std::invalid_argument naming the first malformed URL.
  WebhookChannel(boost::asio::io_context& io, WebhookConfig config);
  // An unknown name is kRejected. `done` runs on the io_context's thread.
  void submit(const alerts::OutboundMessage& message, std::function<void(alerts::SubmitResult)> done) override;

 private:
  boost::asio::io_context& io_;
  std::map<std::string, HttpUrl, std::less<>> urls_;
  std::chrono::milliseconds timeout_;
  HttpClient client_;
};

}  // namespace tocsin::connectors
