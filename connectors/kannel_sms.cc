#include "connectors/kannel_sms.h"

#include <utility>  // before asio: Boost 1.74 misses it under C++20

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <vector>

#include "pipeline/json_writer.h"

namespace tocsin::connectors {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

// UTF-8 -> code points; every invalid sequence (overlong, surrogate, > U+10FFFF,
// truncated) becomes one U+FFFD.
std::vector<char32_t> decode_utf8(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      out.push_back(b0);
      ++i;
      continue;
    }
    size_t len = 0;
    char32_t cp = 0, min = 0;
    if ((b0 & 0xE0) == 0xC0) len = 2, cp = b0 & 0x1F, min = 0x80;
    else if ((b0 & 0xF0) == 0xE0) len = 3, cp = b0 & 0x0F, min = 0x800;
    else if ((b0 & 0xF8) == 0xF0) len = 4, cp = b0 & 0x07, min = 0x10000;
    size_t n = 1;
    bool ok = len != 0;
    for (; ok && n < len; ++n) {
      if (i + n >= s.size() || (static_cast<unsigned char>(s[i + n]) & 0xC0) != 0x80) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + n]) & 0x3F);
    }
    if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    out.push_back(ok ? cp : kReplacement);
    i += ok ? len : std::max<size_t>(n, 1);
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : decode_utf8(s)) append_utf8(out, cp);
  return out;
}

// Septets a 7-bit ASCII character takes in the GSM 03.38 alphabet (the
// extension table's characters need an escape).
size_t gsm_septets(char32_t c) {
  switch (c) {
    case '^': case '{': case '}': case '\\': case '[': case ']': case '~': case '|':
      return 2;
    default:
      return 1;
  }
}

bool url_safe_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
          c == '_' || c == '~'))
      return false;
  return true;
}

std::string clip(std::string_view s, size_t max) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.remove_suffix(1);
  if (s.size() <= max) return std::string(s);
  return std::string(s.substr(0, max)) + "...";
}

void add_param(std::string& q, std::string_view name, std::string_view value) {
  if (!q.empty() && q.back() != '?') q += '&';
  q += name;
  q += '=';
  q += url_encode(value);
}

}  // namespace

SendsmsRequest format_sendsms(const KannelSmsConfig& config, std::string_view base_path,
                              const alerts::OutboundMessage& message) {
  SendsmsRequest r;
  std::vector<char32_t> cps = decode_utf8(message.text);
  bool ascii = true;
  for (char32_t c : cps) ascii = ascii && c < 0x80;
  r.ucs2 = !ascii;
  const size_t max_parts = static_cast<size_t>(std::max(config.max_parts, 1));
  // Capacity of one part alone and of each concatenated part (the UDH takes the rest).
  const size_t single = r.ucs2 ? 70 : 160, per_part = r.ucs2 ? 67 : 153;
  auto units = [&](char32_t c) -> size_t { return r.ucs2 ? (c >= 0x10000 ? 2 : 1) : gsm_septets(c); };
  size_t total = 0;
  for (char32_t c : cps) total += units(c);
  const size_t capacity = max_parts == 1 ? single : per_part * max_parts;
  if (total > capacity) {
    const std::u32string_view ellipsis = r.ucs2 ? U"\u2026" : U"...";
    const size_t room = capacity - (r.ucs2 ? 1 : 3);
    size_t used = 0, keep = 0;
    while (keep < cps.size() && used + units(cps[keep]) <= room) used += units(cps[keep++]);
    cps.resize(keep);
    cps.insert(cps.end(), ellipsis.begin(), ellipsis.end());
    total = used + (r.ucs2 ? 1 : 3);
    r.truncated = true;
  }
  r.length = total;
  r.parts = total <= single ? 1 : (total + per_part - 1) / per_part;
  std::string text;
  text.reserve(message.text.size() + 8);
  for (char32_t c : cps) append_utf8(text, c);

  std::string q;
  add_param(q, "username", config.username);
  add_param(q, "password", config.password);
  add_param(q, "from", config.from);
  add_param(q, "to", message.to);
  add_param(q, "text", text);
  if (r.ucs2) {
    add_param(q, "charset", "UTF-8");  // both: without coding=2 Kannel down-converts to GSM ("???")
    add_param(q, "coding", "2");
  }
  if (!config.smsc.empty()) add_param(q, "smsc", config.smsc);
  if (!config.dlr_url.empty()) {
    std::string dlr = config.dlr_url;
    dlr += dlr.find('?') == std::string::npos ? '?' : '&';
    dlr += "id=";
    dlr += message.notification_id;  // URL-safe: checked by submit()
    dlr += "&type=%d&status=%A&ts=%T";  // Kannel's escapes, substituted (URL-encoded) per DLR
    add_param(q, "dlr-mask", std::to_string(config.dlr_mask));
    add_param(q, "dlr-url", dlr);
  }
  r.target.assign(base_path);
  r.target += r.target.find('?') == std::string::npos ? '?' : '&';
  r.target += q;
  return r;
}

alerts::SubmitResult map_sendsms_answer(const HttpClientResponse& answer) {
  using alerts::SubmitOutcome;
  alerts::SubmitResult r;
  r.http_status = answer.status;
  if (answer.status == 0) {
    r.outcome = SubmitOutcome::kRetry;
    r.detail = answer.error.empty() ? "no answer" : answer.error;
    return r;
  }
  const std::string body = clip(answer.body, 200);
  r.detail = "HTTP " + std::to_string(answer.status) + (body.empty() ? "" : " " + body);
  const int s = answer.status;
  if (s >= 200 && s < 300) {
    // "0: Accepted for delivery" / "3: Queued for later delivery" (no SMSC connected yet)
    const bool queued = body.starts_with("3:") || body.find("Queued") != std::string::npos;
    r.outcome = queued ? SubmitOutcome::kQueued : SubmitOutcome::kAccepted;
  } else if (s >= 500 || s == 408 || s == 429) {
    r.outcome = SubmitOutcome::kRetry;  // 503 "Temporal failure, try again later."
  } else if (s >= 400) {
    r.outcome = SubmitOutcome::kRejected;  // 403 not routable / bad credentials, 400 bad number
  } else {
    r.outcome = SubmitOutcome::kRetry;  // 1xx/3xx: not an answer sendsms gives
  }
  return r;
}

KannelSmsChannel::KannelSmsChannel(boost::asio::io_context& io, KannelSmsConfig config)
    : io_(io), config_(std::move(config)),
      client_(io, HttpClientOptions{.max_connections_per_host = std::max<size_t>(1, config_.max_connections),
                                    .max_idle_per_host = std::max<size_t>(4, config_.max_connections)}) {
  auto url = parse_http_url(config_.sendsms_url);
  if (!url) throw std::invalid_argument("kannel: sendsms_url '" + config_.sendsms_url + "' is not an http:// URL");
  sendsms_ = std::move(*url);
  if (!config_.dlr_url.empty() && !parse_http_url(config_.dlr_url))
    throw std::invalid_argument("kannel: dlr_url '" + config_.dlr_url + "' is not an http:// URL");
  if (config_.dlr_url.find('%') != std::string::npos)
    throw std::invalid_argument("kannel: dlr_url must not contain '%' (Kannel reads it as an escape)");
  if (config_.timeout_ms <= 0) throw std::invalid_argument("kannel: timeout_ms must be positive");
}

void KannelSmsChannel::submit(const alerts::OutboundMessage& message,
                              std::function<void(alerts::SubmitResult)> done) {
  if (!config_.dlr_url.empty() && !url_safe_id(message.notification_id)) {
    alerts::SubmitResult r{alerts::SubmitOutcome::kRejected, 0,
                           "notification id is not URL-safe: " + std::string(message.notification_id)};
    boost::asio::post(io_, [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
    return;
  }
  SendsmsRequest req = format_sendsms(config_, sendsms_.target, message);
  HttpClientRequest http;
  http.host = sendsms_.host;
  http.port = sendsms_.port;
  http.target = std::move(req.target);
  http.timeout = std::chrono::milliseconds(config_.timeout_ms);
  std::string note;
  if (req.truncated)
    note = "; text truncated to " + std::to_string(req.length) + (req.ucs2 ? " UCS-2 characters" : " GSM characters") +
           " in " + std::to_string(req.parts) + " parts";
  client_.request(std::move(http), [done = std::move(done), note = std::move(note)](HttpClientResponse answer) {
    alerts::SubmitResult r = map_sendsms_answer(answer);
    r.detail += note;
    done(std::move(r));
  });
}

// ---------------------------------------------------------------- callbacks

std::optional<alerts::Receipt> receipt_from_dlr(const HttpRequest& request) {
  auto id = query_param(request.query, "id");
  auto type = query_param(request.query, "type");
  if (!id || !url_safe_id(*id) || !type || type->empty() || type->size() > 3) return std::nullopt;
  int t = 0;
  const auto [end, ec] = std::from_chars(type->data(), type->data() + type->size(), t);
  if (ec != std::errc{} || end != type->data() + type->size() || t < 0 || t > 255) return std::nullopt;
  alerts::Receipt r;
  r.notification_id = std::move(*id);
  r.state = alerts::receipt_state_from_kannel_dlr(t);
  if (auto status = query_param(request.query, "status")) r.detail = sanitize_utf8(clip(*status, 512));
  return r;
}

std::optional<alerts::Reply> reply_from_mo(const HttpRequest& request) {
  auto from = query_param(request.query, "from");
  if (!from || from->empty() || from->size() > 32) return std::nullopt;
  for (unsigned char c : *from)
    if (c < 0x20 || c >= 0x7f) return std::nullopt;
  std::string text;
  if (!request.body.empty()) {
    text = request.body;
  } else if (auto t = query_param(request.query, "text")) {
    text = std::move(*t);
  }
  if (text.size() > 8192) return std::nullopt;
  return alerts::Reply{std::move(*from), sanitize_utf8(text)};
}

namespace {

void log_bad(KannelCallbackStats& stats, std::string_view what, const HttpRequest& req, std::string_view reason) {
  const uint64_t n = ++stats.bad_requests;
  if (n > 10 && n % 1000 != 0) return;  // a flood of garbage must not flood the log
  std::string masked;
  append_masked_text(masked, clip(req.query, 300));
  spdlog::warn("sms: bad {} callback #{} ({} {}?{}): {}", what, n, req.method, req.path, masked, reason);
}

HttpResponse answer(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

}  // namespace

std::shared_ptr<const KannelCallbackStats> add_kannel_routes(HttpServer& server,
                                                             std::function<void(alerts::Receipt)> on_receipt,
                                                             std::function<void(alerts::Reply)> on_reply) {
  auto stats = std::make_shared<KannelCallbackStats>();
  server.route("/sms/dlr", [stats, on_receipt = std::move(on_receipt)](const HttpRequest& req) {
    if (req.method != "GET") {
      log_bad(*stats, "DLR", req, "method not allowed");
      return answer(405, "GET only\n");
    }
    auto receipt = receipt_from_dlr(req);
    if (!receipt) {
      log_bad(*stats, "DLR", req, "needs id=<notification id>&type=<0..255>");
      return answer(400, "bad DLR: needs id and type\n");
    }
    ++stats->receipts;
    if (on_receipt) on_receipt(std::move(*receipt));
    return answer(200, "");
  });
  // Kannel sends the answer's body back to the handset unless the sms-service
  // says max-messages = 0 / omit-empty: answer with nothing.
  server.route("/sms/mo", [stats, on_reply = std::move(on_reply)](const HttpRequest& req) {
    if (req.method != "GET" && req.method != "POST") {
      log_bad(*stats, "MO", req, "method not allowed");
      return answer(405, "");
    }
    auto reply = reply_from_mo(req);
    if (!reply) {
      log_bad(*stats, "MO", req, "needs from=<number> and a text of at most 8 KiB");
      return answer(400, "");
    }
    ++stats->replies;
    if (on_reply) on_reply(std::move(*reply));
    return answer(200, "");
  });
  return stats;
}

}  // namespace tocsin::connectors
