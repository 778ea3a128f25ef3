#include "connectors/webhook.h"

#include <utility>  // before asio: Boost 1.74 misses it under C++20

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <stdexcept>

namespace tocsin::connectors {

alerts::SubmitResult map_webhook_answer(const HttpClientResponse& answer) {
  using alerts::SubmitOutcome;
  alerts::SubmitResult r;
  r.http_status = answer.status;
  const int s = answer.status;
  if (s == 0) {
    r.outcome = SubmitOutcome::kRetry;
    r.detail = answer.error.empty() ? "no answer" : answer.error;
    return r;
  }
  std::string_view body = answer.body;
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r' || body.back() == ' ')) body.remove_suffix(1);
  r.detail = "HTTP ";  // not "HTTP " + to_string(): GCC 12 -Wrestrict false positive
  r.detail += std::to_string(s);
  if (!body.empty()) {
    r.detail += ' ';
    r.detail += body.substr(0, 200);
    if (body.size() > 200) r.detail += "...";
  }
  if (s >= 200 && s < 300)
    r.outcome = SubmitOutcome::kAccepted;
  else if (s >= 400 && s < 500 && s != 408 && s != 429)
    r.outcome = SubmitOutcome::kRejected;
  else
    r.outcome = SubmitOutcome::kRetry;
  return r;
}

WebhookChannel::WebhookChannel(boost::asio::io_context& io, WebhookConfig config)
    : io_(io), timeout_(config.timeout_ms), client_(io) {
  if (config.timeout_ms <= 0) throw std::invalid_argument("webhook: timeout_ms must be positive");
  for (const auto& [name, url] : config.urls) {
    auto parsed = parse_http_url(url);
    if (!parsed) throw std::invalid_argument("webhook '" + name + "': '" + url + "' is not an http:// URL");
    urls_.emplace(name, std::move(*parsed));
  }
}

void WebhookChannel::submit(const alerts::OutboundMessage& message, std::function<void(alerts::SubmitResult)> done) {
  const auto it = urls_.find(message.to);
  if (it == urls_.end()) {
    alerts::SubmitResult r{alerts::SubmitOutcome::kRejected, 0, "no webhook named '" + std::string(message.to) + "'"};
    boost::asio::post(io_, [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
    return;
  }
  client_.post(it->second, "application/json", std::string(message.text), timeout_,
               [done = std::move(done)](HttpClientResponse answer) { done(map_webhook_answer(answer)); });
}

}  // namespace tocsin::connectors
