// The shipped demo files working together: a spoofed call through the rule in
// examples/rules/first_slice.yaml, encoded as the daemon encodes it, raised on
// a desk configured by examples/alerting.yaml, must text the callee first.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "alerts/alert_encoder.h"
#include "alerts/alerting_config.h"
#include "alerts/desk.h"
#include "pipeline/clock.h"
#include "pipeline/decoder.h"
#include "pipeline/io.h"
#include "pipeline/state_store.h"
#include "rules/engine.h"
#include "rules/rule_set.h"

namespace tocsin {
namespace {

std::string read(const std::string& rel) {
  std::ifstream in(std::string(TOCSIN_SOURCE_DIR) + "/" + rel);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Captured final : OutputSink {
  std::vector<std::string> alerts;
  void alert(std::string_view, std::string_view json) override { alerts.emplace_back(json); }
  void dead_letter(std::string_view, const DeadLetter&) override {}
};

struct Recorded final : alerts::Channel {
  std::vector<std::string> to;
  void submit(const alerts::OutboundMessage& m, std::function<void(alerts::SubmitResult)> done) override {
    to.emplace_back(m.to);
    done(alerts::SubmitResult{alerts::SubmitOutcome::kAccepted, 202, "0: Accepted for delivery"});
  }
};

TEST(DemoDelivery, ASpoofedCallTextsTheCalleeFirst) {
  const auto loaded = rules::load_rules({rules::Source{"first_slice.yaml", read("examples/rules/first_slice.yaml")}});
  ASSERT_TRUE(loaded.ok()) << rules::format_text(loaded.diagnostics.front());
  alerts::AlertingConfig config;
  for (const auto& d : alerts::parse_alerting_config(read("examples/alerting.yaml"), "alerting.yaml", nullptr, config))
    ADD_FAILURE() << rules::format_text(d);

  ManualClock clock{1795000000000};
  Captured out;
  alerts::AlertEncoder encoder(out, clock);
  rules::Engine engine(loaded.rules, encoder);
  Decoder decoder;
  Event e;
  ASSERT_TRUE(decoder.decode(Stream::kCalls,
      R"({"call_id":"sp1","start_time":1794999990000,"caller":"+85251230001","callee":"13900190001",)"
      R"("duration_s":60,"answered":true,"origin":"international","display_number":"110"})",
      clock.now_ms(), e).ok());
  engine.on_event(e);
  ASSERT_EQ(out.alerts.size(), 1u);
  EXPECT_NE(out.alerts[0].find(R"("key":{"callee":"13900190001"})"), std::string::npos) << out.alerts[0];

  auto store = make_memory_state_store();
  alerts::Desk desk(config, *store, clock);
  Recorded sms, console;
  desk.set_channel("sms", &sms);
  desk.set_channel("console", &console);
  ASSERT_EQ(desk.raise(out.alerts[0]), "");
  desk.tick();
  ASSERT_FALSE(sms.to.empty()) << "the victim warning reached nobody";
  EXPECT_EQ(sms.to.front(), "+8613900190001");
}

}  // namespace
}  // namespace tocsin
