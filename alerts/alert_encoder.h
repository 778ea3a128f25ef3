#pragma once
// Turns rule signals into alert messages (docs/schemas/alert.schema.json) on
// the worker's OutputSink. One encoder per worker; reuses its buffer, so
// encoding allocates nothing in steady state.
#include <array>
#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <string_view>

#include "pipeline/clock.h"
#include "pipeline/io.h"
#include "rules/engine.h"

namespace tocsin::alerts {

// Deterministic alert id: 16 hex digits of a hash of the rule id, the key
// values and the window end, so a replay of the same events yields the same id.
struct AlertId {
  std::array<char, 16> hex{};
  std::string_view view() const { return {hex.data(), hex.size()}; }
  bool operator==(const AlertId&) const = default;
};
std::ostream& operator<<(std::ostream& os, const AlertId& id);
AlertId alert_id(std::string_view rule_id, std::span<const std::string_view> key, int64_t window_end_ms);

class AlertEncoder final : public rules::SignalSink {
 public:
  AlertEncoder(OutputSink& out, const Clock& clock) : out_(out), clock_(clock) {}
  void on_signal(const rules::Signal& s) override;

 private:
  OutputSink& out_;
  const Clock& clock_;
  std::string json_;
};

}  // namespace tocsin::alerts
