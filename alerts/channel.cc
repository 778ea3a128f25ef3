#include "alerts/channel.h"

namespace tocsin::alerts {

bool is_final(ReceiptState s) {
  switch (s) {
    case ReceiptState::kDelivered:
    case ReceiptState::kUndeliverable:
    case ReceiptState::kSmscRejected:
    case ReceiptState::kExpired:
      return true;
    default:
      return false;
  }
}

std::string_view name(ReceiptState s) {
  switch (s) {
    case ReceiptState::kEnroute: return "enroute";
    case ReceiptState::kSmscAccepted: return "smsc_accepted";
    case ReceiptState::kDelivered: return "delivered";
    case ReceiptState::kUndeliverable: return "undeliverable";
    case ReceiptState::kSmscRejected: return "smsc_rejected";
    case ReceiptState::kExpired: return "expired";
    case ReceiptState::kUnknown: return "unknown";
  }
  return "unknown";
}

// Kannel DLR types: 1 delivered, 2 undeliverable, 4 buffered, 8 SMSC ack,
// 16 SMSC nack, 34 (0x20|2) expired; anything else (e.g. 66) is unknown.
ReceiptState receipt_state_from_kannel_dlr(int dlr_type) {
  switch (dlr_type) {
    case 1: return ReceiptState::kDelivered;
    case 2: return ReceiptState::kUndeliverable;
    case 4: return ReceiptState::kEnroute;
    case 8: return ReceiptState::kSmscAccepted;
    case 16: return ReceiptState::kSmscRejected;
    case 34: return ReceiptState::kExpired;
    default: return ReceiptState::kUnknown;
  }
}

}  // namespace tocsin::alerts
