#pragma once
// The seam between must-reach delivery (alerts/) and the gateways that carry
// notifications (connectors/: Kannel SMS, webhooks, the console). A Channel
// submits one message at a time and answers each submit exactly once; what
// happens to the message after the gateway accepted it (the handset receipt,
// an SMS reply) comes back later as a Receipt or a Reply.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace tocsin::alerts {

// One message to one address. Views are valid only during submit().
struct OutboundMessage {
  std::string_view notification_id;  // 16 hex digits; the gateway echoes it in receipts
  std::string_view to;               // full address (E.164 number, URL name, console user)
  std::string_view text;             // UTF-8; a webhook's JSON body
};

enum class SubmitOutcome : uint8_t {
  kAccepted,  // the gateway took it (Kannel 202 "0: Accepted for delivery", webhook 2xx)
  kQueued,    // the gateway took it but has no route up yet (Kannel 202 "3: Queued for later delivery")
  kRetry,     // not taken, try again later: connection refused, timeout, 5xx, 429
  kRejected,  // not taken, never will be: 4xx (Kannel 403 "Not routable", 400 bad number)
};

struct SubmitResult {
  SubmitOutcome outcome = SubmitOutcome::kRetry;
  int http_status = 0;  // 0 when there was no HTTP answer
  std::string detail;   // the gateway's answer or the transport error, for the timeline
};

class Channel {
 public:
  virtual ~Channel() = default;
  // Starts one submission; `done` runs exactly once, on the thread that drives
  // delivery (the channel posts it there), never inside submit() itself.
  virtual void submit(const OutboundMessage& message, std::function<void(SubmitResult)> done) = 0;
};

// Delivery receipt states, ordered so that a final state wins over an
// intermediate one whatever order they arrive in (Kannel sends DLR 8 and 1
// concurrently).
enum class ReceiptState : uint8_t {
  kEnroute,        // Kannel DLR 4 (buffered)
  kSmscAccepted,   // DLR 8
  kDelivered,      // DLR 1: reached the handset
  kUndeliverable,  // DLR 2
  kSmscRejected,   // DLR 16
  kExpired,        // DLR 34 (0x20|2)
  kUnknown,        // anything else: recorded, changes nothing
};
bool is_final(ReceiptState s);
std::string_view name(ReceiptState s);
ReceiptState receipt_state_from_kannel_dlr(int dlr_type);

struct Receipt {
  std::string notification_id;
  ReceiptState state = ReceiptState::kUnknown;
  std::string detail;  // the SMSC's receipt text, e.g. "id:1 ... stat:DELIVRD err:000"
};

// A message from a handset to us (Kannel MO), e.g. "1" to acknowledge.
struct Reply {
  std::string from;  // as the gateway gave it; normalised by the receiver
  std::string text;  // UTF-8
};

}  // namespace tocsin::alerts
