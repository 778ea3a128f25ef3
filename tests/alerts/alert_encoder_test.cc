#include "alerts/alert_encoder.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include "pipeline/decoder.h"

namespace tocsin::alerts {
namespace {

class Capture final : public OutputSink {
 public:
  std::string key, json;
  int alerts = 0;
  void alert(std::string_view k, std::string_view j) override { key = k; json = j; ++alerts; }
  void dead_letter(std::string_view, const DeadLetter&) override {}
};

TEST(AlertId, IsDeterministicAndSeparatesParts) {
  const std::string_view k1[] = {"ab", "c"}, k2[] = {"a", "bc"};
  EXPECT_EQ(alert_id("r", k1, 5), alert_id("r", k1, 5));
  EXPECT_NE(alert_id("r", k1, 5), alert_id("r", k2, 5));
  EXPECT_NE(alert_id("r", k1, 5), alert_id("r", k1, 6));
  EXPECT_NE(alert_id("r", k1, 5), alert_id("s", k1, 5));
  EXPECT_EQ(alert_id("r", k1, 5).view().size(), 16u);
}

TEST(AlertEncoder, WritesTheDocumentedSchema) {
  auto loaded = rules::load_rules({{"t.yaml", R"(rules:
  - id: fan
    stream: calls
    window: {group_by: [caller], size: 1h}
    aggregates: {n: count_distinct(callee)}
    having: n >= 2
    alert: {type: fraud.fan_out, severity: high, title: "{caller}: {n}"}
)"}});
  ASSERT_TRUE(loaded.ok());
  Capture out;
  ManualClock clock(1790000100000);
  AlertEncoder enc(out, clock);
  rules::Engine engine(loaded.rules, enc);
  Decoder d;
  Event e;
  for (const char* j : {R"({"call_id":"x1","start_time":1790000000000,"caller":"13812348000","callee":"1","duration_s":5,"answered":true})",
                        R"({"call_id":"x2","start_time":1790000060000,"caller":"13812348000","callee":"2","duration_s":5,"answered":true})"}) {
    ASSERT_TRUE(d.decode(Stream::kCalls, j, clock.now_ms(), e).ok());
    e.source = {"calls", 3, 42};
    engine.on_event(e);
  }
  ASSERT_EQ(out.alerts, 1);
  simdjson::dom::parser p;
  simdjson::dom::element doc = p.parse(out.json);
  const std::string_view caller[] = {"13812348000"};
  EXPECT_EQ(out.key, alert_id("fan", caller, 1790000060000).view());
  EXPECT_EQ(std::string_view(doc["id"]), out.key);
  EXPECT_EQ(std::string_view(doc["rule"]), "fan");
  EXPECT_EQ(std::string_view(doc["rule_set_version"]), loaded.rules->version);
  EXPECT_EQ(std::string_view(doc["type"]), "fraud.fan_out");
  EXPECT_EQ(std::string_view(doc["severity"]), "high");
  EXPECT_EQ(std::string_view(doc["title"]), "138****8000: 2");
  EXPECT_EQ(std::string_view(doc["stream"]), "calls");
  EXPECT_EQ(std::string_view(doc["key"]["caller"]), "13812348000");
  EXPECT_EQ(std::string_view(doc["window"]["start"]), "2026-09-21T13:14:20.000Z");
  EXPECT_EQ(std::string_view(doc["window"]["end"]), "2026-09-21T14:14:20.000Z");
  EXPECT_EQ(int64_t(doc["window"]["size_ms"]), 3600000);
  EXPECT_EQ(int64_t(doc["evidence"]["count"]), 2);
  EXPECT_EQ(int64_t(doc["evidence"]["distinct"]), 2);
  EXPECT_EQ(std::string_view(doc["evidence"]["first_event_id"]), "x1");
  EXPECT_EQ(std::string_view(doc["evidence"]["last_event_id"]), "x2");
  EXPECT_EQ(int64_t(doc["source"]["partition"]), 3);
  EXPECT_EQ(int64_t(doc["source"]["offset"]), 42);
  EXPECT_EQ(std::string_view(doc["emitted_at"]), "2026-09-21T14:15:00.000Z");
}

}  // namespace
}  // namespace tocsin::alerts

namespace tocsin::alerts {
namespace {

TEST(AlertEncoder, ScoreSummaryAndLabels) {
  auto loaded = rules::load_rules({{"t.yaml", R"Y(rules:
  - id: risk
    stream: calls
    score:
      features:
        - {name: short, value: duration_s < 30, weight: 60, label: short_call}
        - {name: virtual, value: 'caller_class == "virtual_170"', weight: 40, label: virtual_operator}
      levels: {low: 0, high: 50}
    having: score >= 50
    alert:
      severity: from_score
      title: "{caller}: {level}"
      summary: "score {score} from a {duration_s} s call to {callee}"
      labels: {team: anti-fraud, pack: fraud}
)Y"}});
  ASSERT_TRUE(loaded.ok()) << rules::format_text(loaded.diagnostics[0]);
  Capture out;
  ManualClock clock(1790000100000);
  AlertEncoder enc(out, clock);
  rules::Engine engine(loaded.rules, enc);
  Decoder d;
  Event e;
  ASSERT_TRUE(d.decode(Stream::kCalls, R"({"call_id":"k1","start_time":1790000000000,"caller":"17012345678","callee":"13812348000","duration_s":5,"answered":true})", clock.now_ms(), e).ok());
  engine.on_event(e);
  ASSERT_EQ(out.alerts, 1);
  simdjson::dom::parser p;
  simdjson::dom::element doc = p.parse(out.json);
  EXPECT_EQ(std::string_view(doc["severity"]), "high");
  EXPECT_EQ(std::string_view(doc["title"]), "170****5678: high");
  EXPECT_EQ(std::string_view(doc["summary"]), "score 60 from a 5 s call to 138****8000");
  EXPECT_EQ(std::string_view(doc["labels"]["team"]), "anti-fraud");
  EXPECT_EQ(double(doc["score"]["value"]), 60);
  EXPECT_EQ(std::string_view(doc["score"]["level"]), "high");
  simdjson::dom::array labels = doc["score"]["labels"];
  ASSERT_EQ(labels.size(), 1u);
  EXPECT_EQ(std::string_view(labels.at(0)), "short_call");
  simdjson::dom::array features = doc["score"]["features"];
  ASSERT_EQ(features.size(), 2u);
  EXPECT_EQ(std::string_view(features.at(0)["name"]), "short");
  EXPECT_EQ(double(features.at(0)["contribution"]), 60);
  EXPECT_EQ(double(features.at(1)["contribution"]), 0);
}

}  // namespace
}  // namespace tocsin::alerts
