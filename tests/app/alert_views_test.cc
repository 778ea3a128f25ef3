// The console's views of the alert desk: phone numbers are masked for
// viewers and operators wherever they appear, and nothing else is; admins
// see them in full. The reach-rate KPI counts must-reach alerts only.
#include "app/alert_views.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <regex>

#include "alerts/alerting_config.h"
#include "alerts/desk.h"
#include "pipeline/clock.h"
#include "pipeline/state_store.h"
#include "rules/rule_set.h"

namespace tocsin::app {
namespace {

using namespace tocsin::alerts;

constexpr int64_t kT0 = 1'790'000'000'000;  // 2026-09-21T14:13:20Z

class FakeSms : public Channel {
 public:
  void submit(const OutboundMessage& m, std::function<void(SubmitResult)> done) override {
    ids.emplace_back(m.notification_id);
    done(SubmitResult{SubmitOutcome::kAccepted, 202, "0: Accepted for delivery"});
  }
  std::vector<std::string> ids;
};

const char* kConfig = R"YAML(
channels:
  sms: {kind: sms}
  console: {kind: console}
contacts:
  duty: {phone: "13900000099"}
groups:
  operators: [duty]
templates:
  victim: {zh: "预警：{title}（{key.callee!full}）"}
policies:
  - name: victim
    match: ['type=fraud.must_reach']
    stop_when: reached
    steps:
      - notify: [{channel: sms, to: subject, as: victim, template: victim}]
        wait: 5m
      - notify: [{channel: console, to: group:operators, as: operator}]
        wait: 5m
  - name: notice
    match: ['type=~hotline\..*']
    stop_when: acknowledged
    steps:
      - notify: [{channel: sms, to: contact:duty, as: duty}]
        wait: 1h
incidents:
  - {name: victim, match: ['type=fraud.must_reach'], group_by: [callee]}
  - {name: building, match: ['type=~heating\..*'], group_by: [building]}
)YAML";

// A raised alert whose every part holds a number somewhere, and a building id.
const char* kFraud = R"({"id":"f000000000000001","rule":"fraud.victim","rule_set_version":"v1","type":"fraud.must_reach",
  "severity":"critical","title":"Victim 13100000001 on a call with +8617000000002",
  "summary":"family 13200000001; landline 010-12345678","stream":"calls","key":{"callee":"13100000001"},
  "labels":{"pack":"fraud","caller":"+8617000000002"},"context":{"building":"B-D2-S3-C1-05"},
  "window":{"start":"2026-09-21T14:00:00.000Z","end":"2026-09-21T14:13:20.000Z","size_ms":800000},
  "evidence":{"count":2,"first_event_id":"call-13100000001-1","first_event_time":"2026-09-21T14:00:00.000Z",
              "aggregates":{"calls":2,"callee_number":13100000001}},
  "score":{"value":85,"level":"high","labels":["fan_out"],"features":[{"name":"fan_out","value":1,"weight":30,"contribution":30}]},
  "emitted_at":"2026-09-21T14:13:20.000Z"})";

const char* kHeating = R"({"id":"h000000000000001","rule":"heating.cluster","rule_set_version":"v1","type":"heating.suspected_outage",
  "severity":"high","title":"Building B-D2-S3-C1-05: 3 residents without heat","stream":"complaints",
  "key":{"building":"B-D2-S3-C1-05"},"labels":{"pack":"heating"},
  "context":{"district":"D2","grid":"G-0417","building":"B-D2-S3-C1-05","category":"heating.no_heat"}})";

const char* kHotline = R"({"id":"t000000000000001","rule":"hotline.contact_1h","rule_set_version":"v1","type":"hotline.sla.contact",
  "severity":"high","title":"Ticket 12345-20261126-000101 not contacted","stream":"complaints",
  "key":{"ticket_id":"12345-20261126-000101"},"labels":{"pack":"hotline"},"context":{"category":"heating.no_heat"}})";

class AlertViewsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& d : parse_alerting_config(kConfig, "alerting.yaml", nullptr, config)) ADD_FAILURE() << rules::format_text(d);
    store = make_memory_state_store();
    desk = std::make_unique<Desk>(config, *store, clock);
    desk->set_channel("sms", &sms);
  }
  static bool valid_json(const std::string& s) {
    simdjson::dom::parser p;
    simdjson::dom::element e;
    return p.parse(s).get(e) == simdjson::SUCCESS;
  }
  // A full mobile (13x-19x and 11 digits) not glued to other digits.
  static bool has_full_mobile(const std::string& s) {
    static const std::regex re(R"((^|[^0-9])1[3-9][0-9]{9}($|[^0-9]))");
    return std::regex_search(s, re);
  }

  AlertingConfig config;
  ManualClock clock{kT0};
  std::unique_ptr<StateStore> store;
  FakeSms sms;
  std::unique_ptr<Desk> desk;
};

TEST_F(AlertViewsTest, ViewersSeeNoNumberAnywhereAndEveryBuildingId) {
  ASSERT_EQ(desk->raise(kFraud), "");
  ASSERT_EQ(desk->raise(kHeating), "");
  ASSERT_EQ(desk->assign("f000000000000001", "operator:li", "13800000077"), "");
  ASSERT_EQ(desk->add_note("f000000000000001", "operator:li", "called 13200000001 back"), "");
  desk->tick();
  ASSERT_EQ(sms.ids.size(), 1u);
  desk->on_reply({"+8613100000001", "谢谢"});  // a reply that is not an ack: on the audit trail
  Silence s;
  s.matchers.resize(1);
  std::string err;
  ASSERT_TRUE(parse_matcher("key.callee=13100000001", s.matchers[0], err)) << err;
  s.matcher_text = {"key.callee=13100000001"};
  s.ends_at_ms = kT0 + 3600 * 1000;
  s.created_by = "operator:admin";
  s.comment = "family at 13200000001 was told";
  desk->add_silence(s);

  const Alert& fraud = *desk->alert("f000000000000001");
  const Alert& heating = *desk->alert("h000000000000001");
  const auto& n = *desk->notifications_of(fraud.id).at(0);
  const std::vector<std::string> viewer = {
      alert_detail_json(*desk, fraud, false), alert_detail_json(*desk, heating, false), alert_list_json(*desk, true, false),
      alert_summary_json(*desk, fraud, false), notification_event_json(n, "submitted", false), incidents_json(*desk, false),
      silences_json(*desk, clock.now_ms(), false)};
  for (const auto& v : viewer) {
    EXPECT_TRUE(valid_json(v)) << v;
    EXPECT_FALSE(has_full_mobile(v)) << "a phone number leaks to a viewer: " << v;
    EXPECT_EQ(v.find("12345678"), std::string::npos) << "the landline leaks: " << v;
  }
  const std::string& detail = viewer[0];
  EXPECT_NE(detail.find(R"("callee":"131****0001")"), std::string::npos) << detail;
  EXPECT_NE(detail.find(R"("address":"+86131****0001")"), std::string::npos) << detail;
  EXPECT_NE(detail.find(R"("callee_number":"131****0001")"), std::string::npos) << "a number-typed number too";
  EXPECT_NE(detail.find("010-****5678"), std::string::npos);
  // Building ids, grids, alert and notification ids are not numbers: shown as they are.
  EXPECT_NE(detail.find(R"("building":"B-D2-S3-C1-05")"), std::string::npos) << detail;
  EXPECT_NE(detail.find(R"("district":"D2","street":"D2-S3","community":"D2-S3-C1")"), std::string::npos) << detail;
  EXPECT_NE(detail.find(n.id), std::string::npos);
  const std::string& heat = viewer[1];
  EXPECT_NE(heat.find(R"("key":{"building":"B-D2-S3-C1-05"})"), std::string::npos) << heat;
  EXPECT_NE(heat.find(R"("grid":"G-0417")"), std::string::npos) << heat;
  EXPECT_NE(heat.find("Building B-D2-S3-C1-05: 3 residents"), std::string::npos) << heat;
  EXPECT_EQ(heat.find('*'), std::string::npos) << "nothing in a heating alert is a number: " << heat;
  EXPECT_NE(viewer[5].find(R"("building":"B-D2-S3-C1-05")"), std::string::npos) << viewer[5];

  // Admins see every number.
  const std::string admin = alert_detail_json(*desk, fraud, true);
  EXPECT_TRUE(valid_json(admin));
  EXPECT_NE(admin.find(R"("callee":"13100000001")"), std::string::npos);
  EXPECT_NE(admin.find(R"("address":"+8613100000001")"), std::string::npos);
  EXPECT_NE(admin.find("called 13200000001 back"), std::string::npos);
  EXPECT_NE(incidents_json(*desk, true).find("13100000001"), std::string::npos);
  EXPECT_NE(silences_json(*desk, clock.now_ms(), true).find("key.callee=13100000001"), std::string::npos);
  EXPECT_NE(admin.find(R"("title":"Victim 13100000001 on a call with +8617000000002")"), std::string::npos);
}

TEST_F(AlertViewsTest, TicketIdsAreNotMasked) {
  ASSERT_EQ(desk->raise(kHotline), "");
  const std::string v = alert_detail_json(*desk, *desk->alert("t000000000000001"), false);
  EXPECT_NE(v.find(R"("ticket_id":"12345-20261126-000101")"), std::string::npos) << v;
  EXPECT_NE(v.find("Ticket 12345-20261126-000101 not contacted"), std::string::npos) << v;
  // The notification goes to a contact's number: masked.
  EXPECT_NE(v.find(R"("address":"+86139****0099")"), std::string::npos) << v;
}

double reach_rate(const std::string& kpis) {
  simdjson::dom::parser p;
  simdjson::dom::element e;
  if (p.parse(kpis).get(e)) return -1;
  double r = -2;
  if (e["reach_rate"].get(r) != simdjson::SUCCESS) return -3;
  return r;
}

TEST_F(AlertViewsTest, ReachRateCountsOnlyMustReachAlerts) {
  ASSERT_EQ(desk->raise(kFraud), "");
  ASSERT_EQ(desk->raise(kHotline), "");
  desk->tick();
  ASSERT_EQ(sms.ids.size(), 2u);
  EXPECT_TRUE(desk->must_reach(*desk->alert("f000000000000001")));
  EXPECT_FALSE(desk->must_reach(*desk->alert("t000000000000001")));
  // The operator notice's SMS is delivered; the victim's is not (yet).
  const auto* hotline_sms = desk->notifications_of("t000000000000001").at(0);
  desk->on_receipt({hotline_sms->id, ReceiptState::kDelivered, "stat:DELIVRD"});
  std::string k = kpis_json(*desk, clock.now_ms(), 8 * 3600 * 1000LL);
  EXPECT_EQ(reach_rate(k), 0.0) << "a delivered operator notice is no reach: " << k;
  EXPECT_NE(k.find(R"("must_reach_today":1,"reached_today":0)"), std::string::npos) << k;
  const auto* victim_sms = desk->notifications_of("f000000000000001").at(0);
  desk->on_receipt({victim_sms->id, ReceiptState::kDelivered, "stat:DELIVRD"});
  k = kpis_json(*desk, clock.now_ms(), 8 * 3600 * 1000LL);
  EXPECT_EQ(reach_rate(k), 1.0) << k;
  EXPECT_NE(alert_summary_json(*desk, *desk->alert("f000000000000001"), false).find(R"("must_reach":true)"), std::string::npos);
  EXPECT_NE(alert_summary_json(*desk, *desk->alert("t000000000000001"), false).find(R"("must_reach":false)"), std::string::npos);
}

TEST_F(AlertViewsTest, NoMustReachAlertMeansNoReachRate) {
  ASSERT_EQ(desk->raise(kHotline), "");
  const std::string k = kpis_json(*desk, clock.now_ms(), 8 * 3600 * 1000LL);
  EXPECT_NE(k.find(R"("reach_rate":null)"), std::string::npos) << k;
}

}  // namespace
}  // namespace tocsin::app
