// The alert desk on a virtual clock: lifecycle, escalation, fallbacks,
// receipts, replies, silences, inhibition, incidents and restart recovery.
#include "alerts/desk.h"

#include <gtest/gtest.h>

#include <deque>
#include <set>
#include <tuple>

#include "alerts/alerting_config.h"
#include "alerts/records.h"

namespace tocsin::alerts {
namespace {

constexpr int64_t kT0 = 1'790'000'000'000;  // 2026-09-21

// Records every submit; the test answers them.
class FakeChannel : public Channel {
 public:
  struct Sent {
    std::string id, to, text;
    std::function<void(SubmitResult)> done;
  };
  void submit(const OutboundMessage& m, std::function<void(SubmitResult)> done) override {
    sent.push_back({std::string(m.notification_id), std::string(m.to), std::string(m.text), std::move(done)});
  }
  void answer(size_t i, SubmitOutcome o, int status = 202, std::string detail = "0: Accepted for delivery") {
    ASSERT_LT(i, sent.size());
    sent[i].done(SubmitResult{o, status, std::move(detail)});
  }
  std::vector<Sent> sent;
};

class Recorder : public LifecycleListener {
 public:
  void on_alert(const Alert& a, const AuditEntry& c) override { changes.push_back(a.id + " " + c.action); }
  std::vector<std::string> changes;
};

const char* kConfig = R"YAML(
channels:
  sms: {kind: sms, rate: 1000, max_in_flight: 100, max_attempts: 3, backoff: 1s, backoff_max: 10s, receipt_timeout: 2m}
  console: {kind: console}
  voice: {kind: webhook, max_attempts: 2}
contacts:
  duty: {phone: "13900000099"}
  community: {phone: "13900000001"}
  street: {phone: "13900000002"}
  district: {phone: "13900000003", language: en}
groups:
  operators: [duty]
templates:
  victim:
    zh: "【反诈预警】{title}。回复1确认。"
    en: "[Anti-fraud] {title}. Reply 1."
  ladder:
    zh: "工单超时：{title}（{key.ticket_id!full}）"
    en: "Ticket overdue: {title} ({key.ticket_id!full})"
policies:
  - name: fraud-victim
    match: ['type=fraud.must_reach']
    stop_when: reached
    steps:
      - notify: [{channel: sms, to: subject, as: victim, template: victim}]
        wait: 5m
      - notify: [{channel: sms, to: lookup:vulnerable_residents.family_contacts, as: family, template: victim}]
        wait: 5m
      - notify: [{channel: console, to: group:operators, as: operator}, {channel: voice, to: police-voice, as: voice}]
        wait: 10m
    unreached: {after: 15m, type: fraud.unreached_victim, severity: critical}
  - name: hotline-ladder
    match: ['type=~hotline\..*']
    stop_when: acknowledged
    steps:
      - {notify: [{channel: sms, to: contact:community, template: ladder}], wait: 1h}
      - {notify: [{channel: sms, to: contact:street, template: ladder}], wait: 1h}
      - {notify: [{channel: sms, to: contact:district, template: ladder}], wait: 1h}
  - name: held
    match: ['type=held.alert']
    hold: 2m
    steps:
      - {notify: [{channel: sms, to: contact:duty}], wait: 5m}
  - name: unreached-to-operators
    match: ['type=fraud.unreached_victim']
    stop_when: acknowledged
    steps:
      - {notify: [{channel: sms, to: group:operators}], wait: 10m}
incidents:
  - {name: heat-station, match: ['type=~heating\..*'], group_by: [station]}
inhibit:
  - {source: ['type=heating.outage'], target: ['type=heating.complaint_cluster'], equal: [station]}
resolve:
  - {source: ['type=heating.restored'], target: ['type=heating.outage'], equal: [station]}
maintenance:
  - {name: nightly, matchers: ['type=maint.alert'], start: "02:00", end: "04:00", utc_offset: 8h}
)YAML";

std::string raised(std::string id, std::string type, std::string severity, std::string key_json,
                   std::string labels_json = "{}", std::string title = "title") {
  return R"({"id":")" + id + R"(","rule":"r.)" + type + R"(","rule_set_version":"v1","type":")" + type +
         R"(","severity":")" + severity + R"(","title":")" + title + R"(","key":)" + key_json + R"(,"labels":)" +
         labels_json + "}";
}

class DeskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto diags = parse_alerting_config(kConfig, "alerting.yaml", nullptr, config);
    for (const auto& d : diags) ADD_FAILURE() << rules::format_text(d);
    store = make_memory_state_store();
    make_desk();
  }
  void make_desk() {
    desk = std::make_unique<Desk>(config, *store, clock, [](std::string_view table, std::string_view column, std::string_view key) {
      if (table == "vulnerable_residents" && column == "family_contacts" && key == "13100000001")
        return std::string("13200000001; +86 150 0000 0001");
      if (table == "building_residents" && key == "B1")
        return std::string(column == "vulnerable_phones" ? "13300000001" : "13300000001;13300000002");
      return std::string();
    });
    desk->set_channel("sms", &sms);
    desk->set_channel("voice", &voice);
    desk->add_listener(&recorder);
  }
  // Advances the clock in 1 s ticks.
  void run_for(int64_t ms) {
    for (int64_t t = 0; t < ms; t += 1000) {
      clock.advance(1000);
      desk->tick();
    }
  }
  const Alert& alert(const std::string& id) {
    const Alert* a = desk->alert(id);
    EXPECT_NE(a, nullptr) << id;
    static Alert none;
    return a ? *a : none;
  }
  Notification n_of(const std::string& id, size_t i) { return *desk->notifications_of(id).at(i); }

  AlertingConfig config;
  ManualClock clock{kT0};
  std::unique_ptr<StateStore> store;
  FakeChannel sms, voice;
  Recorder recorder;
  std::unique_ptr<Desk> desk;
};

TEST_F(DeskTest, DeliveredOnFirstTryStopsTheChain) {
  ASSERT_EQ(desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})")), "");
  desk->tick();
  ASSERT_EQ(sms.sent.size(), 1u);
  EXPECT_EQ(sms.sent[0].to, "+8613100000001");
  EXPECT_EQ(sms.sent[0].text, "【反诈预警】title。回复1确认。");
  EXPECT_EQ(n_of("a1", 0).state, NotificationState::kSubmitted);
  sms.answer(0, SubmitOutcome::kAccepted);
  EXPECT_EQ(n_of("a1", 0).state, NotificationState::kAccepted);
  clock.advance(3000);
  desk->on_receipt({sms.sent[0].id, ReceiptState::kDelivered, "stat:DELIVRD"});
  EXPECT_EQ(n_of("a1", 0).state, NotificationState::kDelivered);
  EXPECT_EQ(alert("a1").reached_at_ms, kT0 + 3000);
  EXPECT_TRUE(alert("a1").chain_done);
  run_for(30 * 60 * 1000);  // past every step and the unreached deadline
  EXPECT_EQ(sms.sent.size(), 1u) << "a reached victim gets no fallback";
  EXPECT_EQ(alert("a1").state, AlertState::kFiring);
  EXPECT_FALSE(alert("a1").unreached_raised);
  const DeskMetrics m = desk->metrics();
  EXPECT_EQ(m.reached.at("fraud.must_reach"), 1);
  EXPECT_EQ(m.must_reach.at("fraud.must_reach"), 1);
  EXPECT_EQ(m.reach_bucket_counts[0], 1);  // reached within 5 s
}

TEST_F(DeskTest, FinalReceiptWinsOverALateIntermediateOne) {
  desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->tick();
  // DLR 1 arrives before the submit answer and before DLR 8.
  desk->on_receipt({sms.sent[0].id, ReceiptState::kDelivered, ""});
  desk->on_receipt({sms.sent[0].id, ReceiptState::kSmscAccepted, "ACK/"});
  sms.answer(0, SubmitOutcome::kAccepted);
  EXPECT_EQ(n_of("a1", 0).state, NotificationState::kDelivered);
  EXPECT_EQ(n_of("a1", 0).receipt, ReceiptState::kDelivered);
}

TEST_F(DeskTest, UndeliverableVictimFallsBackToFamilyAtOnce) {
  desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->tick();
  sms.answer(0, SubmitOutcome::kAccepted);
  desk->on_receipt({sms.sent[0].id, ReceiptState::kUndeliverable, "stat:UNDELIV"});
  desk->tick();
  ASSERT_EQ(sms.sent.size(), 3u) << "both family contacts, without waiting for the step's 5 min";
  EXPECT_EQ((std::set<std::string>{sms.sent[1].to, sms.sent[2].to}), (std::set<std::string>{"+8613200000001", "+8615000000001"}));
  EXPECT_EQ(alert("a1").state, AlertState::kEscalated);
  sms.answer(1, SubmitOutcome::kAccepted);
  sms.answer(2, SubmitOutcome::kAccepted);
  desk->on_receipt({sms.sent[2].id, ReceiptState::kDelivered, ""});
  EXPECT_EQ(alert("a1").reached_via, sms.sent[2].id);
  run_for(30 * 60 * 1000);
  EXPECT_EQ(sms.sent.size(), 3u);
  EXPECT_TRUE(voice.sent.empty());
}

TEST_F(DeskTest, NoReceiptEverEscalatesToOperatorsThenRaisesUnreached) {
  desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->tick();
  sms.answer(0, SubmitOutcome::kAccepted);
  run_for(2 * 60 * 1000);  // receipt timeout: no-receipt, step settled → family now
  EXPECT_EQ(n_of("a1", 0).state, NotificationState::kNoReceipt);
  ASSERT_EQ(sms.sent.size(), 3u);
  sms.answer(1, SubmitOutcome::kAccepted);
  sms.answer(2, SubmitOutcome::kQueued, 202, "3: Queued for later delivery");
  run_for(2 * 60 * 1000);
  // family never answered: operator task on the console and a voice-call webhook
  ASSERT_EQ(voice.sent.size(), 1u);
  EXPECT_EQ(voice.sent[0].to, "police-voice");
  EXPECT_NE(voice.sent[0].text.find(R"("version":"4")"), std::string::npos);
  const auto ns = desk->notifications_of("a1");
  ASSERT_EQ(ns.size(), 5u);
  EXPECT_EQ(ns[3]->channel, "console");
  EXPECT_EQ(ns[3]->state, NotificationState::kAccepted);
  voice.answer(0, SubmitOutcome::kAccepted, 200, "ok");
  run_for(11 * 60 * 1000);  // 15 min after the raise
  EXPECT_TRUE(alert("a1").unreached_raised);
  const Alert* u = nullptr;
  for (const auto& [id, a] : desk->alerts())
    if (a.type == "fraud.unreached_victim") u = &a;
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->severity, "critical");
  EXPECT_EQ(u->field("unreached_alert"), "a1");
  EXPECT_EQ(u->policy, "unreached-to-operators");
  EXPECT_EQ(sms.sent.back().to, "+8613900000099") << "the unreached alert goes to the operators";
}

TEST_F(DeskTest, RetriesWithBackoffThenGivesUpAndFallsBack) {
  desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->tick();
  sms.answer(0, SubmitOutcome::kRetry, 0, "connection refused");
  EXPECT_EQ(n_of("a1", 0).state, NotificationState::kQueued);
  const int64_t first_retry = n_of("a1", 0).next_attempt_at_ms - clock.now_ms();
  EXPECT_GE(first_retry, 500);
  EXPECT_LE(first_retry, 1000);
  desk->tick();
  EXPECT_EQ(sms.sent.size(), 1u) << "not before the backoff";
  run_for(1000);
  ASSERT_EQ(sms.sent.size(), 2u);
  EXPECT_EQ(sms.sent[1].id, sms.sent[0].id) << "a retry is the same notification";
  sms.answer(1, SubmitOutcome::kRetry, 503, "Temporal failure, try again later.");
  const int64_t second_retry = n_of("a1", 0).next_attempt_at_ms - clock.now_ms();
  EXPECT_GE(second_retry, 1000);
  EXPECT_LE(second_retry, 2000);
  run_for(2000);
  ASSERT_EQ(sms.sent.size(), 3u);
  sms.answer(2, SubmitOutcome::kRetry, 0, "timeout");
  EXPECT_EQ(n_of("a1", 0).state, NotificationState::kFailed) << "max_attempts 3";
  desk->tick();
  EXPECT_EQ(sms.sent.size(), 5u) << "falls back to the family";
  EXPECT_EQ(desk->metrics().retries.at("sms"), 3);
}

TEST_F(DeskTest, PermanentRefusalGoesToTheNextRouteWithoutRetry) {
  desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->tick();
  sms.answer(0, SubmitOutcome::kRejected, 403, "Not routable. Do not try again.");
  EXPECT_EQ(n_of("a1", 0).state, NotificationState::kFailed);
  desk->tick();
  EXPECT_EQ(sms.sent.size(), 3u);
  EXPECT_EQ(desk->metrics().notifications.at({"sms", "failed"}), 1);
}

TEST_F(DeskTest, SmsReplyAcknowledgesAndStopsTheChain) {
  desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->tick();
  sms.answer(0, SubmitOutcome::kAccepted);
  desk->on_reply({"013100000001", "1 收到"});
  EXPECT_EQ(alert("a1").state, AlertState::kAcknowledged);
  EXPECT_EQ(alert("a1").audit.back().by, "sms:+86131****0001");
  run_for(30 * 60 * 1000);
  EXPECT_EQ(sms.sent.size(), 1u) << "acknowledged: no fallback, no unreached alert";
  EXPECT_FALSE(alert("a1").unreached_raised);
  desk->on_reply({"13999999999", "1"});
  EXPECT_EQ(desk->metrics().replies_unknown, 1);
}

TEST_F(DeskTest, HotlineLadderEscalatesUntilAcknowledged) {
  desk->raise(raised("h1", "hotline.contact_overdue", "high", R"({"ticket_id":"T-1"})"));
  desk->tick();
  ASSERT_EQ(sms.sent.size(), 1u);
  EXPECT_EQ(sms.sent[0].to, "+8613900000001");
  EXPECT_EQ(sms.sent[0].text, "工单超时：title（T-1）");
  sms.answer(0, SubmitOutcome::kAccepted);
  desk->on_receipt({sms.sent[0].id, ReceiptState::kDelivered, ""});
  EXPECT_FALSE(alert("h1").chain_done) << "stop_when: acknowledged — a receipt does not stop it";
  run_for(3600 * 1000);
  ASSERT_EQ(sms.sent.size(), 2u);
  EXPECT_EQ(sms.sent[1].to, "+8613900000002");
  EXPECT_EQ(alert("h1").state, AlertState::kEscalated);
  EXPECT_EQ(alert("h1").step, 1);
  run_for(3600 * 1000);
  ASSERT_EQ(sms.sent.size(), 3u);
  EXPECT_EQ(sms.sent[2].text, "Ticket overdue: title (T-1)") << "the district contact reads English";
  EXPECT_EQ(desk->acknowledge("h1", "operator:li", "called back"), "");
  run_for(3 * 3600 * 1000);
  EXPECT_EQ(sms.sent.size(), 3u);
  EXPECT_EQ(desk->metrics().escalations.at(1), 1);
  EXPECT_EQ(desk->metrics().escalations.at(2), 1);
}

// The reach rate counts must-reach alerts only (stop_when: reached, docs/alerting.md):
// a handset receipt for an operator notice (stop_when: acknowledged) is no reach.
TEST_F(DeskTest, ReachRateCountsOnlyMustReachAlerts) {
  desk->raise(raised("f1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->raise(raised("h1", "hotline.contact_overdue", "high", R"({"ticket_id":"T-1"})"));
  desk->raise(raised("n1", "nothing.matches", "low", R"({"x":"1"})"));
  desk->tick();
  ASSERT_EQ(sms.sent.size(), 2u);
  EXPECT_TRUE(desk->must_reach(alert("f1")));
  EXPECT_FALSE(desk->must_reach(alert("h1"))) << "stop_when: acknowledged is an operator notice";
  EXPECT_FALSE(desk->must_reach(alert("n1"))) << "no policy";
  for (size_t i = 0; i < 2; ++i) {
    sms.answer(i, SubmitOutcome::kAccepted);
    desk->on_receipt({sms.sent[i].id, ReceiptState::kDelivered, ""});
  }
  EXPECT_NE(alert("h1").reached_at_ms, 0) << "the receipt is still recorded on the notice";
  const DeskMetrics m = desk->metrics();
  EXPECT_EQ(m.must_reach, (std::map<std::string, int64_t>{{"fraud.must_reach", 1}}));
  EXPECT_EQ(m.reached, (std::map<std::string, int64_t>{{"fraud.must_reach", 1}}));
  EXPECT_EQ(m.reach_count, 1);
}

TEST_F(DeskTest, RaisedAlertsAreCountedByACategoryFromAClosedSet) {
  auto with_context = [](std::string id, std::string category) {
    std::string j = raised(id, "hotline.sla.contact", "high", R"({"ticket_id":")" + id + R"("})");
    j.pop_back();
    return j + R"(,"context":{"district":"D1","category":")" + category + R"("}})";
  };
  ASSERT_EQ(desk->raise(with_context("t1", "heating.no_heat")), "");
  ASSERT_EQ(desk->raise(with_context("t2", "heating.leak")), "");
  ASSERT_EQ(desk->raise(with_context("t3", "roads.pothole")), "");
  ASSERT_EQ(desk->raise(with_context("t4", "12345-20261126-000101")), "") << "an id in the field";
  ASSERT_EQ(desk->raise(raised("t5", "hotline.sla.contact", "critical", R"({"ticket_id":"t5"})")), "");
  using K = std::tuple<std::string, std::string, std::string>;
  EXPECT_EQ(desk->metrics().alerts_raised, (std::map<K, int64_t>{{{"hotline.sla.contact", "critical", "none"}, 1},
                                                                 {{"hotline.sla.contact", "high", "heating"}, 2},
                                                                 {{"hotline.sla.contact", "high", "other"}, 1},
                                                                 {{"hotline.sla.contact", "high", "road"}, 1}}));
  EXPECT_EQ(category_bucket("water.outage"), "water");
  EXPECT_EQ(category_bucket("water"), "water");
  EXPECT_EQ(category_bucket("13812348000"), "other");
  EXPECT_EQ(category_bucket(""), "none");
}

TEST_F(DeskTest, AcknowledgeCancelsQueuedNotifications) {
  config.channels[0].max_in_flight = 1;
  make_desk();
  desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->tick();
  sms.answer(0, SubmitOutcome::kRejected, 403, "Not routable");
  desk->tick();  // family: one in flight, one queued behind the cap
  ASSERT_EQ(sms.sent.size(), 2u);
  desk->acknowledge("a1", "operator:wang");
  const auto ns = desk->notifications_of("a1");
  EXPECT_EQ(ns[1]->state == NotificationState::kCancelled ? 1 : 0, ns[2]->state == NotificationState::kCancelled ? 0 : 1)
      << "exactly one of the family notifications was still queued, and it was cancelled";
  sms.answer(1, SubmitOutcome::kAccepted);
  desk->tick();
  EXPECT_EQ(sms.sent.size(), 2u);
}

TEST_F(DeskTest, RateLimitAndInFlightCapPaceSubmissions) {
  config.channels[0].rate_per_s = 2;
  config.channels[0].max_in_flight = 3;
  make_desk();
  for (int i = 0; i < 10; ++i)
    desk->raise(raised("c" + std::to_string(i), "hotline.contact_overdue", "high", R"({"ticket_id":"T-)" + std::to_string(i) + "\"}"));
  desk->tick();
  EXPECT_EQ(sms.sent.size(), 2u) << "burst = rate";
  clock.advance(500);
  desk->tick();
  EXPECT_EQ(sms.sent.size(), 3u);
  clock.advance(5000);
  desk->tick();
  EXPECT_EQ(sms.sent.size(), 3u) << "in-flight cap";
  for (size_t i = 0; i < 3; ++i) sms.answer(i, SubmitOutcome::kAccepted);
  desk->tick();
  EXPECT_EQ(sms.sent.size(), 5u) << "tokens are capped at one second's worth";
  clock.advance(1000);
  desk->tick();
  EXPECT_EQ(sms.sent.size(), 6u) << "two in flight: room for one";
  EXPECT_EQ(desk->metrics().queue_depth.at("sms"), 4);
  EXPECT_EQ(desk->metrics().in_flight.at("sms"), 3);
}

TEST_F(DeskTest, CriticalAlertsAreSentFirst) {
  config.channels[0].max_in_flight = 1;
  make_desk();
  desk->raise(raised("first", "hotline.contact_overdue", "low", R"({"ticket_id":"T-0"})"));
  ASSERT_EQ(sms.sent.size(), 1u) << "sent at once, not at the next tick";
  desk->raise(raised("low", "hotline.contact_overdue", "low", R"({"ticket_id":"T-1"})"));
  desk->raise(raised("crit", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  sms.answer(0, SubmitOutcome::kAccepted);  // frees the only slot: the next goes at once
  ASSERT_EQ(sms.sent.size(), 2u);
  EXPECT_EQ(sms.sent[1].to, "+8613100000001") << "the critical one overtakes the earlier low one";
}

TEST_F(DeskTest, DuplicateRaiseIsDeduplicated) {
  const std::string a = raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})");
  desk->raise(a);
  desk->tick();
  desk->raise(a);
  desk->tick();
  EXPECT_EQ(sms.sent.size(), 1u);
  EXPECT_EQ(alert("a1").duplicates, 1);
  EXPECT_NE(desk->raise("{\"record\":\"lifecycle\",\"id\":\"x\"}"), "");
  EXPECT_NE(desk->raise("not json"), "");
}

TEST_F(DeskTest, HoldKeepsAlertPendingAndAResolveMeanwhileNeverNotifies) {
  desk->raise(raised("p1", "held.alert", "high", R"({"x":"1"})"));
  desk->raise(raised("p2", "held.alert", "high", R"({"x":"2"})"));
  desk->tick();
  EXPECT_EQ(alert("p1").state, AlertState::kPending);
  EXPECT_TRUE(sms.sent.empty());
  EXPECT_EQ(desk->resolve("p2", "operator:li", "false alarm"), "");
  run_for(2 * 60 * 1000);
  EXPECT_EQ(alert("p1").state, AlertState::kFiring);
  ASSERT_EQ(sms.sent.size(), 1u);
  EXPECT_EQ(alert("p2").state, AlertState::kResolved);
  EXPECT_NE(desk->acknowledge("p2", "operator:li"), "") << "closed alerts cannot be acknowledged";
}

TEST_F(DeskTest, IncidentsInhibitionAndResolution) {
  desk->raise(raised("o1", "heating.outage", "high", R"({"network_id":"N1"})", R"({"station":"S1"})"));
  desk->raise(raised("c1", "heating.complaint_cluster", "medium", R"({"building":"B1"})", R"({"station":"S1"})"));
  desk->raise(raised("c2", "heating.complaint_cluster", "medium", R"({"building":"B9"})", R"({"station":"S2"})"));
  EXPECT_EQ(alert("c1").state, AlertState::kSilenced);
  EXPECT_EQ(alert("c1").silenced_by, "inhibited:o1");
  EXPECT_EQ(alert("c2").state, AlertState::kFiring) << "another station";
  EXPECT_EQ(alert("o1").incident, alert("c1").incident);
  EXPECT_NE(alert("o1").incident, alert("c2").incident);
  const Incident& inc = desk->incidents().at(alert("o1").incident);
  EXPECT_EQ(inc.alerts, (std::vector<std::string>{"o1", "c1"}));
  desk->raise(raised("r1", "heating.restored", "info", R"({"network_id":"N1"})", R"({"station":"S1"})"));
  EXPECT_EQ(alert("o1").state, AlertState::kResolved);
  EXPECT_EQ(alert("c1").state, AlertState::kResolved) << "inhibited alerts close with their source";
  EXPECT_EQ(alert("c2").state, AlertState::kFiring);
}

TEST_F(DeskTest, LaterComplaintsJoinASuspectedOutageAndAFaultIsLinkedToIt) {
  config = AlertingConfig{};
  const auto diags = parse_alerting_config(R"YAML(
incidents:
  - {name: building, match: ['type=heating.suspected_outage'], group_by: [building]}
  - {name: later_complaints, match: ['type=heating.complaint'], group_by: [building], join: building}
  - {name: network, match: ['type=heating.outage'], group_by: [network_id], link: [building]}
)YAML", "alerting.yaml", nullptr, config);
  for (const auto& d : diags) ADD_FAILURE() << rules::format_text(d);
  make_desk();
  desk->raise(raised("k0", "heating.complaint", "info", R"({"ticket_id":"T0"})", R"({"building":"B1"})"));
  EXPECT_EQ(alert("k0").incident, "") << "a complaint before any suspected outage opens nothing";
  desk->raise(raised("s1", "heating.suspected_outage", "high", R"({"building":"B1"})"));
  desk->raise(raised("k1", "heating.complaint", "info", R"({"ticket_id":"T1"})", R"({"building":"B1"})"));
  desk->raise(raised("k2", "heating.complaint", "info", R"({"ticket_id":"T2"})", R"({"building":"B2"})"));
  ASSERT_NE(alert("s1").incident, "");
  EXPECT_EQ(alert("k1").incident, alert("s1").incident) << "a later complaint joins the building's incident";
  EXPECT_EQ(alert("k2").incident, "") << "another building has no open incident";
  // The utility reports the fault an hour later: its incident is linked to the suspected one.
  ASSERT_EQ(desk->raise(raised("f1", "heating.outage", "critical", R"({"network_id":"N1"})", R"({"building":"B1"})")), "");
  ASSERT_NE(alert("f1").incident, "");
  const Incident& building = desk->incidents().at(alert("s1").incident);
  const Incident& network = desk->incidents().at(alert("f1").incident);
  EXPECT_EQ(building.alerts, (std::vector<std::string>{"s1", "k1"}));
  EXPECT_EQ(network.linked, std::vector<std::string>{building.id});
  EXPECT_EQ(building.linked, std::vector<std::string>{network.id});
  bool audited = false;
  for (const auto& e : alert("f1").audit) audited |= e.detail.find("linked incident") != std::string::npos;
  EXPECT_TRUE(audited);
  // Links survive a restart.
  const std::string network_id = network.id, building_id = building.id;
  desk.reset();
  make_desk();
  desk->recover();
  EXPECT_EQ(desk->incidents().at(network_id).linked, std::vector<std::string>{building_id});
}

TEST_F(DeskTest, LookupTargetsMayBeKeyedByAFieldOfTheAlert) {
  config = AlertingConfig{};
  const auto diags = parse_alerting_config(R"YAML(
channels: {sms: {kind: sms}}
policies:
  - name: outage
    match: ['type=heating.outage']
    steps:
      - notify: [{channel: sms, to: lookup:building_residents.vulnerable_phones@building, as: vulnerable},
                 {channel: sms, to: lookup:building_residents.phones@building, as: resident}]
        wait: 30m
)YAML", "alerting.yaml", nullptr, config);
  for (const auto& d : diags) ADD_FAILURE() << rules::format_text(d);
  make_desk();
  ASSERT_EQ(desk->raise(R"({"id":"f1","rule":"heating.outage.opened","rule_set_version":"v1","type":"heating.outage",)"
                        R"("severity":"critical","title":"outage","key":{},"context":{"building":"B1","network_id":"N1"}})"), "");
  run_for(2000);
  std::vector<std::pair<std::string, std::string>> sent;
  for (const auto& n : desk->notifications_of("f1")) sent.emplace_back(n->recipient, n->address);
  // The vulnerable resident first, with their own notice; everyone else once (no second copy).
  EXPECT_EQ(sent, (std::vector<std::pair<std::string, std::string>>{{"vulnerable", "+8613300000001"}, {"resident", "+8613300000002"}}));
}

TEST_F(DeskTest, ARuleSayingItsAlertIsOverResolvesIt) {
  desk->raise(raised("e1", "hotline.escalation", "medium", R"({"ticket_id":"T1"})"));
  ASSERT_TRUE(is_open(alert("e1").state));
  std::string over = raised("e1", "hotline.escalation", "medium", R"({"ticket_id":"T1"})");
  over.insert(1, R"("status":"resolved",)");
  EXPECT_EQ(desk->raise(over), "");
  EXPECT_EQ(alert("e1").state, AlertState::kResolved);
  EXPECT_EQ(alert("e1").audit.back().by, "rule:r.hotline.escalation");
  EXPECT_EQ(alert("e1").duplicates, 0) << "not a duplicate raise";
  // Over for an alert the desk never saw, or one already closed: nothing happens.
  std::string unknown = raised("e9", "hotline.escalation", "medium", R"({"ticket_id":"T9"})");
  unknown.insert(1, R"("status":"resolved",)");
  EXPECT_EQ(desk->raise(unknown), "");
  EXPECT_EQ(desk->alert("e9"), nullptr);
  EXPECT_EQ(desk->raise(over), "");
}

TEST(AlertingConfig, AnIncidentJoinsOnlyAnIncidentRuleAboveIt) {
  AlertingConfig c;
  const auto diags = parse_alerting_config(R"YAML(
incidents:
  - {name: later, match: ['type=a'], group_by: [building], join: building}
  - {name: building, match: ['type=b'], group_by: [building]}
)YAML", "alerting.yaml", nullptr, c);
  ASSERT_EQ(diags.size(), 1u);
  EXPECT_EQ(diags[0].code, "A011");
  EXPECT_EQ(diags[0].line, 3);
  EXPECT_NE(diags[0].message.find("joins 'building'"), std::string::npos) << diags[0].message;
}

TEST_F(DeskTest, SilenceHoldsMatchingAlertsUntilItEnds) {
  Silence s;
  s.matchers.resize(1);
  std::string err;
  ASSERT_TRUE(parse_matcher("type=~hotline\\..*", s.matchers[0], err));
  s.matcher_text = {"type=~hotline\\..*"};
  s.ends_at_ms = kT0 + 10 * 60 * 1000;
  s.created_by = "operator:li";
  const std::string sid = desk->add_silence(s);
  desk->raise(raised("h1", "hotline.contact_overdue", "high", R"({"ticket_id":"T-1"})"));
  desk->tick();
  EXPECT_EQ(alert("h1").state, AlertState::kSilenced);
  EXPECT_TRUE(sms.sent.empty());
  run_for(10 * 60 * 1000 + 1000);
  EXPECT_EQ(alert("h1").state, AlertState::kFiring);
  EXPECT_EQ(sms.sent.size(), 1u) << "notified once the silence ended";
  // expiring a silence early also releases
  s.id = "";
  s.ends_at_ms = clock.now_ms() + 3600 * 1000;
  const std::string sid2 = desk->add_silence(s);
  desk->raise(raised("h2", "hotline.contact_overdue", "high", R"({"ticket_id":"T-2"})"));
  EXPECT_EQ(alert("h2").state, AlertState::kSilenced);
  EXPECT_EQ(desk->expire_silence(sid2, "operator:li"), "");
  desk->tick();
  EXPECT_EQ(alert("h2").state, AlertState::kFiring);
  EXPECT_EQ(alert("h1").state, AlertState::kFiring) << "the second silence held h1 too";
  EXPECT_EQ(sms.sent.size(), 3u) << "h2, and h1 again in a new round";
}

TEST_F(DeskTest, MaintenanceWindowSilences) {
  // 02:30 in UTC+8 is 18:30 UTC the day before.
  clock.set(1'790'000'000'000 - (1'790'000'000'000 % 86'400'000) + 18 * 3600 * 1000 + 30 * 60 * 1000);
  make_desk();
  desk->raise(raised("m1", "maint.alert", "low", R"({"x":"1"})"));
  EXPECT_EQ(alert("m1").state, AlertState::kSilenced);
  EXPECT_EQ(alert("m1").silenced_by, "maintenance:nightly");
  run_for(91 * 60 * 1000);  // past 04:00
  EXPECT_EQ(alert("m1").state, AlertState::kFiring);
}

TEST_F(DeskTest, RestartNeverResendsASubmittedNotification) {
  desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->tick();
  ASSERT_EQ(sms.sent.size(), 1u);
  const std::string nid = sms.sent[0].id;
  // The process dies here: submitted, no answer, no receipt.
  desk.reset();
  FakeChannel fresh;
  desk = std::make_unique<Desk>(config, *store, clock);
  desk->set_channel("sms", &fresh);
  desk->recover();
  run_for(60 * 1000);
  EXPECT_TRUE(fresh.sent.empty()) << "not sent twice";
  desk->on_receipt({nid, ReceiptState::kDelivered, ""});
  EXPECT_EQ(desk->notification(nid)->state, NotificationState::kDelivered);
  EXPECT_GT(alert("a1").reached_at_ms, 0);
  run_for(30 * 60 * 1000);
  EXPECT_TRUE(fresh.sent.empty());
}

TEST_F(DeskTest, RestartResumesQueuedNotificationsAndFallsBackWithoutReceipt) {
  config.channels[0].max_in_flight = 1;
  make_desk();
  desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->raise(raised("h1", "hotline.contact_overdue", "high", R"({"ticket_id":"T-1"})"));
  desk->tick();
  ASSERT_EQ(sms.sent.size(), 1u);  // the victim's; the ladder's is queued
  desk.reset();
  FakeChannel fresh;
  desk = std::make_unique<Desk>(config, *store, clock);
  desk->set_channel("sms", &fresh);
  desk->recover();
  desk->tick();
  ASSERT_EQ(fresh.sent.size(), 1u);
  EXPECT_EQ(fresh.sent[0].to, "+8613900000001") << "the queued one is sent after the restart";
  fresh.answer(0, SubmitOutcome::kAccepted);
  run_for(2 * 60 * 1000 + 1000);  // the victim's receipt never comes
  EXPECT_EQ(desk->notifications_of("a1")[0]->state, NotificationState::kNoReceipt);
  const auto victim = desk->notifications_of("a1");
  ASSERT_EQ(victim.size(), 3u) << "no lookup after this restart: the family step has nobody; console and voice are next";
  EXPECT_EQ(victim[1]->channel, "console");
  EXPECT_EQ(victim[2]->state, NotificationState::kFailed) << "no voice gateway in this desk";
  ASSERT_EQ(fresh.sent.size(), 2u);
  EXPECT_EQ(fresh.sent[1].to, "+8613900000002") << "the ladder's community SMS had no receipt either: street is next";
}

TEST_F(DeskTest, LifecycleChangesArePublishedAndPersisted) {
  desk->raise(raised("a1", "fraud.must_reach", "critical", R"({"callee":"13100000001"})"));
  desk->assign("a1", "operator:li", "unit-7");
  desk->add_note("a1", "operator:li", "called the family");
  EXPECT_EQ(recorder.changes.front(), "a1 raised");
  EXPECT_EQ(recorder.changes.back(), "a1 note");
  std::string stored;
  ASSERT_TRUE(store->get("alerts", "a1", stored));
  Alert back;
  std::string err;
  ASSERT_TRUE(from_json(stored, back, err)) << err;
  EXPECT_EQ(back.assignee, "unit-7");
  EXPECT_EQ(back.audit.size(), alert("a1").audit.size());
  std::string rec;
  lifecycle_json(back, back.audit.back(), rec);
  EXPECT_NE(rec.find(R"("record":"lifecycle")"), std::string::npos);
  EXPECT_NE(rec.find(R"("action":"note")"), std::string::npos);
  EXPECT_EQ(rec.find("13100000001"), std::string::npos) << "no phone numbers on the lifecycle record";
}

// A target that names nobody for an alert (here `subject` and a lookup keyed by
// it, on an alert without a key) is said in the audit and counted per policy,
// and the chain moves on at once.
TEST_F(DeskTest, ATargetThatNamesNobodyIsAuditedAndCounted) {
  ASSERT_EQ(desk->raise(raised("nokey", "fraud.must_reach", "critical", "{}")), "");
  desk->tick();
  EXPECT_EQ(desk->metrics().targets_unresolved["fraud-victim"], 2) << "subject (step 1) and lookup (step 2) both need the key";
  std::string audit;
  for (const auto& e : alert("nokey").audit) audit += e.action + ": " + e.detail + "\n";
  EXPECT_NE(audit.find("notifying: step 1 of 3: nobody to notify (no address for sms to subject)"), std::string::npos) << audit;
  EXPECT_NE(audit.find("escalated: step 2 of 3: nobody to notify (no address for sms to lookup:vulnerable_residents.family_contacts)"),
            std::string::npos) << audit;
  EXPECT_TRUE(sms.sent.empty());
  EXPECT_EQ(desk->metrics().targets_unresolved.count("hotline-ladder"), 0u);
}

TEST_F(DeskTest, EscalateNowSkipsTheWait) {
  desk->raise(raised("h1", "hotline.contact_overdue", "high", R"({"ticket_id":"T-1"})"));
  desk->tick();
  EXPECT_EQ(desk->escalate_now("h1", "operator:li"), "");
  desk->tick();
  ASSERT_EQ(sms.sent.size(), 2u);
  EXPECT_EQ(sms.sent[1].to, "+8613900000002");
}

TEST(AlertingConfigTest, ErrorsNameFileLineAndColumn) {
  AlertingConfig c;
  const auto diags = parse_alerting_config(R"(channels:
  sms: {kind: sms}
policies:
  - name: p
    match: ['type=~(']
    steps:
      - notify: [{channel: pager, to: contact:nobody}]
        wait: soon
)", "a.yaml", nullptr, c);
  std::vector<std::string> got;
  for (const auto& d : diags) got.push_back(d.code + "@" + std::to_string(d.line) + ":" + std::to_string(d.column));
  EXPECT_EQ(got, (std::vector<std::string>{"A004@5:13", "A010@8:15", "A005@7:28", "A006@7:39"}));
}

// check_targets: a notify target that names a field the matched rules' alerts do
// not carry is a warning at its file:line:column, before any alert exists.
TEST(AlertingConfigTest, TargetsThatWouldReachNobodyAreWarnedAbout) {
  const auto loaded = rules::load_rules({{"r.yaml", R"(rules:
  - id: spoof_nokey
    stream: calls
    where: origin == "international"
    alert: {type: fraud.spoofing, severity: critical}
  - id: spoof_keyed
    stream: calls
    key: [callee]
    where: origin == "international"
    alert: {type: fraud.spoofing, severity: critical}
  - id: fan_out
    stream: calls
    window: {group_by: [caller], size: 1h}
    aggregates: {n: count_distinct(callee)}
    having: n >= 20
    alert: {type: fraud.fan_out, severity: high, labels: {team: fraud}}
  - id: outage
    stream: faults
    on: [opened]
    alert: {type: heating.outage, severity: critical}
  - id: sla
    stream: complaints
    absence:
      key: [ticket_id]
      start: {on: [signed]}
      deadlines:
        - {name: contact, after: 1h, until: {on: [contacted]}, labels: {level: community}}
        - {name: resolve, after: 24h, until: {on: [resolved]}, labels: {level: street}}
    alert: {type: hotline.overdue, severity: high}
)"}});
  ASSERT_TRUE(loaded.ok()) << rules::format_text(loaded.diagnostics.front());
  AlertingConfig c;
  const auto diags = parse_alerting_config(R"(channels:
  sms: {kind: sms}
policies:
  - name: spoofing
    match: ['type=fraud.spoofing']
    steps:
      - notify: [{channel: sms, to: key.callee}]
  - name: any-fraud
    match: ['type=~fraud\..*', 'team!=ops']
    steps:
      - notify: [{channel: sms, to: subject}]
  - name: residents
    match: ['type=heating.outage']
    steps:
      - notify: [{channel: sms, to: 'lookup:residents.phone@asset_id'}, {channel: sms, to: 'lookup:residents.phone@ticket_id'}]
  - name: street-level
    match: ['level=street']
    steps:
      - notify: [{channel: sms, to: key.ticket_id}, {channel: sms, to: key.caller}]
  - name: fraud-team-only
    match: ['team=fraud']
    steps:
      - notify: [{channel: sms, to: key.callee}]
)", "a.yaml", nullptr, c);
  ASSERT_TRUE(diags.empty()) << rules::format_text(diags.front());
  std::vector<std::string> got;
  for (const auto& d : check_targets(c, *loaded.rules)) {
    EXPECT_EQ(d.level, rules::Diagnostic::Level::kWarning);
    EXPECT_EQ(d.code, "A101");
    const size_t q = d.message.find("rule '");
    got.push_back(std::to_string(d.line) + ":" + std::to_string(d.column) + " " +
                  d.message.substr(q + 6, d.message.find('\'', q + 6) - q - 6));
  }
  // spoofing: only the unkeyed rule; any-fraud: subject is the unkeyed rule's empty key
  // (team!=ops cannot be decided on spoof rules without a team label, so it may match);
  // residents: faults carry asset_id as context, not ticket_id; street-level: the
  // street deadline has ticket_id but not caller; fraud-team-only: fan_out has no callee.
  EXPECT_EQ(got, (std::vector<std::string>{"7:37 spoof_nokey", "11:37 spoof_nokey", "15:92 outage", "19:72 sla",
                                            "23:37 fan_out"}));
  for (const auto& d : check_targets(c, *loaded.rules)) EXPECT_FALSE(d.snippet.empty());
}

TEST(AlertingConfigTest, MatcherForms) {
  Alert a;
  a.type = "fraud.spoofing";
  a.severity = "high";
  a.key = {{"callee", "138"}};
  a.labels = {{"pack", "fraud"}};
  auto m = [&](const char* t) {
    Matcher x;
    std::string e;
    EXPECT_TRUE(parse_matcher(t, x, e)) << e;
    return x.matches(a);
  };
  EXPECT_TRUE(m("type=fraud.spoofing"));
  EXPECT_TRUE(m("type=~fraud\\..*"));
  EXPECT_FALSE(m("type=~fraud"));  // anchored
  EXPECT_TRUE(m("severity!=low"));
  EXPECT_TRUE(m("pack=\"fraud\""));
  EXPECT_TRUE(m("key.callee=138"));
  EXPECT_TRUE(m("severity!~low|info"));
}

}  // namespace
}  // namespace tocsin::alerts
