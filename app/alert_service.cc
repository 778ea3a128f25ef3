#include "app/alert_service.h"

#include <utility>  // before asio: Boost 1.74 misses it under C++20

#include <spdlog/spdlog.h>
#include <simdjson.h>

#include <atomic>
#include <boost/asio.hpp>
#include <future>
#include <limits>
#include <mutex>
#include <thread>
#include <tuple>

#include "alerts/desk.h"
#include "alerts/records.h"
#include "app/alert_views.h"
#include "connectors/alert_topic.h"
#include "connectors/kannel_sms.h"
#include "connectors/rocksdb_store.h"
#include "connectors/webhook.h"
#include "pipeline/decoder.h"
#include "pipeline/json_writer.h"
#include "rules/expr.h"

namespace tocsin::app {
namespace {

namespace asio = boost::asio;
using connectors::HttpRequest;
using connectors::HttpResponse;

HttpResponse json_response(int status, std::string body) { return {status, "application/json", std::move(body)}; }
HttpResponse error_response(int status, const std::string& message) {
  std::string body;
  JsonWriter w(body);
  w.begin_object().key("error").str(message).end_object();
  return json_response(status, std::move(body));
}

// Reads {"note": ..., "assignee": ...} from an action's body (it may be empty).
bool action_body(const std::string& body, std::string& note, std::string& assignee, std::string& error) {
  if (body.empty()) return true;
  simdjson::dom::parser p;
  simdjson::dom::object o;
  if (p.parse(body).get(o)) return error = "the body must be a JSON object", false;
  std::string_view v;
  if (o["note"].get(v) == simdjson::SUCCESS) note = std::string(v);
  if (o["assignee"].get(v) == simdjson::SUCCESS) assignee = std::string(v);
  return true;
}

// The desk's lifecycle changes, queued for the alerts topic.
class TopicFeed final : public alerts::LifecycleListener {
 public:
  TopicFeed(const alerts::Desk*& desk, connectors::Console& console) : desk_(desk), console_(console) {}
  void on_alert(const alerts::Alert& a, const alerts::AuditEntry& change) override {
    std::string rec;
    alerts::lifecycle_json(a, change, rec);
    console_.publish("alert", alert_summary_json(*desk_, a, true), alert_summary_json(*desk_, a, false));
    std::lock_guard lk(mu_);
    pending_.emplace_back(a.id, std::move(rec));
  }
  void on_notification(const alerts::Notification& n, const alerts::AuditEntry& change) override {
    console_.publish("notification", notification_event_json(n, change.action, true),
                     notification_event_json(n, change.action, false));
  }
  std::vector<std::pair<std::string, std::string>> take() {
    std::lock_guard lk(mu_);
    return std::exchange(pending_, {});
  }

 private:
  const alerts::Desk*& desk_;
  connectors::Console& console_;
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> pending_;
};

}  // namespace

struct AlertService::Impl {
  const Config& cfg;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  asio::steady_timer ticker{io};
  WallClock clock;
  std::unique_ptr<StateStore> store;
  std::unique_ptr<alerts::Desk> desk;
  std::unique_ptr<connectors::KannelSmsChannel> sms;
  std::unique_ptr<connectors::WebhookChannel> webhooks;
  std::shared_ptr<const connectors::KannelCallbackStats> callbacks;
  std::unique_ptr<connectors::AlertTopic> topic;
  connectors::Console& console;
  rules::ClockBoard* clocks = nullptr;  // the engines' running clocks (SLA board); null: none shown
  const alerts::Desk* desk_view = nullptr;
  TopicFeed feed{desk_view, console};
  int64_t last_keepalive_ms = 0;
  std::atomic<bool> stopping{false};
  std::atomic<int64_t> bad_alerts{0};
  std::thread io_thread, topic_thread;
  std::string public_url;  // how the SMS gateway reaches us (dlr-url)
  std::string origin;      // how a browser or an API client reaches us: the listener's scheme, host and port

  Impl(const Config& c, connectors::Console& con) : cfg(c), console(con) {}

  // Runs `f` on the desk's thread and waits up to 5 s for its result.
  template <class F>
  auto on_desk(F f) -> decltype(f()) {
    using R = decltype(f());
    auto task = std::make_shared<std::packaged_task<R()>>(std::move(f));
    auto fut = task->get_future();
    asio::post(io, [task] { (*task)(); });
    if (fut.wait_for(std::chrono::seconds(5)) != std::future_status::ready)
      throw std::runtime_error("the alert desk did not answer within 5 s");
    return fut.get();
  }

  void tick() {
    ticker.expires_after(std::chrono::milliseconds(cfg.alerting.tick_ms));
    ticker.async_wait([this](boost::system::error_code ec) {
      if (ec) return;
      try {
        desk->tick();
        if (const int64_t now = clock.now_ms(); now - last_keepalive_ms >= 15000) {
          last_keepalive_ms = now;
          console.keepalive();
        }
      } catch (const std::exception& e) {
        spdlog::error("alerts: desk tick failed: {}", e.what());
      }
      tick();
    });
  }

  void read_topic() {
    while (!stopping.load()) {
      try {
        const auto batch = topic->poll(100);
        if (!batch.empty()) {
          std::vector<std::string> copies(batch.begin(), batch.end());
          on_desk([&] {
            for (const auto& json : copies)
              if (const std::string err = desk->raise(json); !err.empty()) {
                bad_alerts.fetch_add(1, std::memory_order_relaxed);
                spdlog::warn("alerts: skipped a message on the alerts topic that is not an alert: {}", err);
              }
            return 0;
          });
          topic->commit();  // only after the desk persisted them
        }
        for (const auto& [key, rec] : feed.take()) topic->publish(key, rec);
        topic->serve();
      } catch (const std::exception& e) {
        spdlog::error("alerts: reading the alerts topic: {}", e.what());
      }
    }
    for (const auto& [key, rec] : feed.take()) topic->publish(key, rec);
  }

  void add_routes(connectors::HttpServer& http);
  void add_metrics(monitoring::Metrics& metrics);
};

AlertService::AlertService(const Config& cfg, const alerts::AlertingConfig& alerting, const rules::TableRegistry* tables,
                           monitoring::Metrics& metrics, connectors::HttpServer& http, connectors::Console& console)
    : impl_(std::make_unique<Impl>(cfg, console)) {
  Impl& m = *impl_;
  m.store = connectors::open_rocksdb_state_store(cfg.alerting.state_dir);
  alerts::TableLookup lookup;
  if (tables)
    lookup = [tables](std::string_view table, std::string_view column, std::string_view key) -> std::string {
      const auto& cat = tables->catalog();
      const int id = cat.index_of(table);
      if (id < 0) return {};
      const auto& cols = cat.tables[static_cast<size_t>(id)].columns;
      size_t c = 0;
      while (c < cols.size() && cols[c].first != column) ++c;
      const auto snap = tables->snapshot();
      const Value* row = snap->find(id, key);
      if (!row || c == cols.size() || !row[c].present || row[c].type != FieldType::kString) return {};
      return std::string(row[c].s);
    };
  m.desk = std::make_unique<alerts::Desk>(alerting, *m.store, m.clock, std::move(lookup));
  m.desk_view = m.desk.get();
  m.desk->add_listener(&m.feed);
  {
    std::string host;
    uint16_t port = 0;
    split_host_port(cfg.http_listen, host, port);
    m.origin = (cfg.http_tls_cert.empty() ? "http://" : "https://") + host + ":" + std::to_string(http.port());
  }
  m.public_url = cfg.alerting.public_url.empty() ? m.origin : cfg.alerting.public_url;
  if (!cfg.alerting.sms.sendsms_url.empty()) {
    connectors::KannelSmsConfig k;
    const auto& g = cfg.alerting.sms;
    k.sendsms_url = g.sendsms_url;
    k.username = g.username;
    k.password = g.password;
    k.from = g.from;
    k.smsc = g.smsc;
    k.dlr_mask = g.dlr_mask;
    k.timeout_ms = static_cast<int>(g.timeout_ms);
    k.max_parts = g.max_parts;
    k.dlr_url = m.public_url + "/sms/dlr";
    for (const auto& ch : alerting.channels)  // enough connections for every sms channel's in-flight cap
      if (ch.kind == "sms") k.max_connections = std::max<size_t>(k.max_connections, static_cast<size_t>(ch.max_in_flight));
    try {
      m.sms = std::make_unique<connectors::KannelSmsChannel>(m.io, k);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(std::string("alerting.sms: ") + e.what());
    }
  }
  if (!cfg.alerting.webhooks.empty()) {
    connectors::WebhookConfig w;
    w.urls = cfg.alerting.webhooks;
    w.timeout_ms = static_cast<int>(cfg.alerting.webhook_timeout_ms);
    try {
      m.webhooks = std::make_unique<connectors::WebhookChannel>(m.io, w);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(std::string("alerting.webhooks: ") + e.what());
    }
  }
  for (const auto& ch : alerting.channels) {
    if (ch.kind == "sms") {
      if (!m.sms) spdlog::warn("alerts: channel '{}' sends SMS but alerting.sms.sendsms_url is not set: its notifications will fail", ch.name);
      m.desk->set_channel(ch.name, m.sms.get());
    } else if (ch.kind == "webhook") {
      if (!m.webhooks) spdlog::warn("alerts: channel '{}' calls webhooks but alerting.webhooks is empty: its notifications will fail", ch.name);
      m.desk->set_channel(ch.name, m.webhooks.get());
    }
  }
  m.desk->recover();
  m.add_routes(http);
  m.add_metrics(metrics);
  m.topic = std::make_unique<connectors::AlertTopic>(cfg.kafka);
}

AlertService::~AlertService() { stop(); }

void AlertService::show_clocks(rules::ClockBoard& board) { impl_->clocks = &board; }

void AlertService::start() {
  Impl& m = *impl_;
  asio::post(m.io, [&m] { m.tick(); });
  m.io_thread = std::thread([&m] { m.io.run(); });
  m.topic_thread = std::thread([&m] { m.read_topic(); });
}

void AlertService::stop() {
  Impl& m = *impl_;
  if (m.stopping.exchange(true)) return;
  if (m.topic_thread.joinable()) m.topic_thread.join();
  if (m.io_thread.joinable()) {
    // Let in-flight gateway requests finish briefly, then stop.
    asio::post(m.io, [&m] { m.ticker.cancel(); });
    m.work.reset();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!m.io.stopped() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    m.io.stop();
    m.io_thread.join();
  }
  m.topic->close(5000);
}

std::string AlertService::describe() const {
  const Impl& m = *impl_;
  std::string s = "  alert desk:        " + std::to_string(m.desk->config().policies.size()) + " policies, state in " +
                  m.cfg.alerting.state_dir + "\n";
  if (m.sms) s += "  sms gateway:       " + m.cfg.alerting.sms.sendsms_url + " (receipts to " + m.public_url + "/sms/dlr)\n";
  // The API is served by our own listener: its address, not public_url (which is
  // the gateway's way in, and may name another host or a proxy).
  s += "  alerts API:        " + m.origin + "/api/v1/alerts\n";
  return s;
}

void AlertService::Impl::add_routes(connectors::HttpServer& http) {
  using connectors::Principal;
  using connectors::Role;
  callbacks = connectors::add_kannel_routes(
      http, [this](alerts::Receipt r) { asio::post(io, [this, r = std::move(r)] { desk->on_receipt(r); }); },
      [this](alerts::Reply r) { asio::post(io, [this, r = std::move(r)] { desk->on_reply(r); }); });

  http.route("/api/v1/alerts", console.guard(Role::kViewer, [this](const HttpRequest& req, const Principal& who) {
    if (req.method != "GET") return error_response(405, "GET only");
    const bool all = req.query.find("state=all") != std::string::npos;
    return json_response(200, on_desk([&] { return alert_list_json(*desk, all, who.sees_numbers()); }));
  }));

  http.route("/api/v1/alerts/*", console.guard(Role::kViewer, [this](const HttpRequest& req, const Principal& who) {
    std::string_view rest = std::string_view(req.path).substr(std::string_view("/api/v1/alerts/").size());
    const size_t slash = rest.find('/');
    const std::string id(rest.substr(0, slash));
    const std::string action(slash == std::string_view::npos ? "" : rest.substr(slash + 1));
    if (action.empty()) {
      if (req.method != "GET") return error_response(405, "GET an alert; POST to /api/v1/alerts/<id>/<action>");
      return on_desk([&] {
        const alerts::Alert* a = desk->alert(id);
        return a ? json_response(200, alert_detail_json(*desk, *a, who.sees_numbers())) : error_response(404, "unknown alert " + id);
      });
    }
    if (req.method != "POST") return error_response(405, "POST only");
    if (!who.can_act()) return error_response(403, "viewers cannot act on alerts");
    std::string note, assignee, error;
    if (!action_body(req.body, note, assignee, error)) return error_response(400, error);
    const std::string by = "operator:" + who.user;
    const std::string err = on_desk([&] {
      if (!desk->alert(id)) return std::string("unknown alert " + id);
      if (action == "ack") return desk->acknowledge(id, by, note);
      if (action == "resolve") return desk->resolve(id, by, note);
      if (action == "assign") return assignee.empty() ? std::string("\"assignee\" is required") : desk->assign(id, by, assignee);
      if (action == "note") return note.empty() ? std::string("\"note\" is required") : desk->add_note(id, by, note);
      if (action == "escalate") return desk->escalate_now(id, by);
      return std::string("unknown action '" + action + "' (ack, resolve, assign, note, escalate)");
    });
    if (err.empty()) return json_response(200, "{\"ok\":true}");
    return error_response(err.starts_with("unknown alert") ? 404 : err.starts_with("unknown action") || err.starts_with("\"") ? 400 : 409, err);
  }));

  http.route("/api/v1/incidents", console.guard(Role::kViewer, [this](const HttpRequest&, const Principal& who) {
    return json_response(200, on_desk([&] { return incidents_json(*desk, who.sees_numbers()); }));
  }));

  // The SLA board's open clocks: the engines publish on demand (rules/clock_board.h), so the
  // first call after a quiet minute returns what they published last (published_at says when).
  http.route("/api/v1/sla/clocks", console.guard(Role::kViewer, [this](const HttpRequest& req, const Principal& who) {
    size_t limit = 200;
    if (const size_t at = req.query.find("limit="); at != std::string::npos) limit = std::clamp<size_t>(std::strtoul(req.query.c_str() + at + 6, nullptr, 10), 1, 1000);
    const int64_t now = clock.now_ms();
    int64_t published = 0;
    std::vector<rules::ClockEntry> entries;
    if (clocks) entries = clocks->read(now, limit, &published);
    return json_response(200, sla_clocks_json(entries, now, published, who.sees_numbers()));
  }));

  http.route("/api/v1/kpis", console.guard(Role::kViewer, [this](const HttpRequest&, const Principal&) {
    return json_response(200, on_desk([&] { return kpis_json(*desk, clock.now_ms(), console.config().utc_offset_ms); }));
  }));

  http.route("/api/v1/audit", console.guard(Role::kAdmin, [this](const HttpRequest& req, const Principal&) {
    size_t limit = 500;
    if (const size_t at = req.query.find("limit="); at != std::string::npos) limit = std::clamp<size_t>(std::strtoul(req.query.c_str() + at + 6, nullptr, 10), 1, 10000);
    return json_response(200, on_desk([&] {
      struct Row {
        const alerts::Alert* a;
        const alerts::AuditEntry* e;
      };
      std::vector<Row> rows;
      for (const auto& [id, a] : desk->alerts())
        for (const auto& e : a.audit) rows.push_back({&a, &e});
      std::stable_sort(rows.begin(), rows.end(), [](const Row& x, const Row& y) { return x.e->at_ms > y.e->at_ms; });
      std::string out;
      JsonWriter w(out);
      w.begin_object().key("entries").begin_array();
      for (size_t i = 0; i < rows.size() && i < limit; ++i) {
        w.begin_object().key("alert").str(rows[i].a->id).key("type").str(rows[i].a->type).key("at").time(rows[i].e->at_ms)
            .key("action").str(rows[i].e->action).key("by").str(rows[i].e->by);
        if (!rows[i].e->detail.empty()) w.key("detail").str(rows[i].e->detail);
        w.end_object();
      }
      w.end_array().end_object();
      return out;
    }));
  }));

  http.route("/api/v1/silences", console.guard(Role::kViewer, [this](const HttpRequest& req, const Principal& who) {
    if (req.method == "GET")
      return json_response(200, on_desk([&] { return silences_json(*desk, clock.now_ms(), who.sees_numbers()); }));
    if (req.method != "POST") return error_response(405, "GET or POST");
    if (!who.can_act()) return error_response(403, "viewers cannot create silences");
    // {"matchers": ["type=~hotline\\..*"], "duration": "2h" | "ends_at": RFC 3339, "comment": "..."}
    simdjson::dom::parser p;
    simdjson::dom::object o;
    if (p.parse(req.body).get(o)) return error_response(400, "the body must be a JSON object");
    alerts::Silence s;
    simdjson::dom::array ms;
    if (o["matchers"].get(ms)) return error_response(400, "\"matchers\" must be a list such as [\"type=~hotline\\\\..*\"]");
    for (auto m : ms) {
      std::string_view t;
      alerts::Matcher x;
      std::string err;
      if (m.get(t) || !alerts::parse_matcher(t, x, err)) return error_response(400, err.empty() ? "each matcher is a string" : err);
      s.matchers.push_back(std::move(x));
      s.matcher_text.emplace_back(t);
    }
    if (s.matchers.empty()) return error_response(400, "a silence needs at least one matcher");
    std::string_view v;
    const int64_t now = clock.now_ms();
    if (o["duration"].get(v) == simdjson::SUCCESS) {
      const auto dur = rules::parse_duration_ms(v);
      if (!dur || *dur <= 0) return error_response(400, "\"duration\" must be like 30m or 2h");
      s.ends_at_ms = now + *dur;
    } else if (o["ends_at"].get(v) == simdjson::SUCCESS) {
      if (parse_rfc3339_ms(v, s.ends_at_ms) != DecodeError::kOk || s.ends_at_ms <= now)
        return error_response(400, "\"ends_at\" must be a future RFC 3339 time");
    } else {
      return error_response(400, "give \"duration\" or \"ends_at\"");
    }
    if (o["comment"].get(v) == simdjson::SUCCESS) s.comment = std::string(v);
    s.created_by = "operator:" + who.user;
    s.starts_at_ms = now;
    const std::string id = on_desk([&] { return desk->add_silence(std::move(s)); });
    return json_response(200, "{\"id\":\"" + id + "\"}");
  }));
  http.route("/api/v1/silences/*", console.guard(Role::kOperator, [this](const HttpRequest& req, const Principal& who) {
    if (req.method != "DELETE") return error_response(405, "DELETE /api/v1/silences/<id> expires a silence");
    const std::string id = req.path.substr(std::string_view("/api/v1/silences/").size());
    const std::string err = on_desk([&] { return desk->expire_silence(id, "operator:" + who.user); });
    return err.empty() ? json_response(200, "{\"ok\":true}") : error_response(404, err);
  }));
}

void AlertService::Impl::add_metrics(monitoring::Metrics& metrics) {
  metrics.add_collector([this](monitoring::Families& out) {
    using prometheus::MetricType;
    using monitoring::add_sample;
    using monitoring::make_family;
    const alerts::DeskMetrics d = desk->metrics();
    auto raised = make_family("tocsin_alerts_raised_total", "Alerts the desk took in, by type, severity and complaint category (top level, closed set; none without one), duplicates excluded", MetricType::Counter);
    for (const auto& [k, v] : d.alerts_raised)
      add_sample(raised, {{"type", std::get<0>(k)}, {"severity", std::get<1>(k)}, {"category", std::get<2>(k)}}, static_cast<double>(v));
    auto by_state = make_family("tocsin_alerts", "Alerts held by the desk, by lifecycle state", MetricType::Gauge);
    for (const char* s : {"pending", "firing", "acknowledged", "resolved", "silenced", "escalated", "expired"})
      add_sample(by_state, {{"state", s}}, static_cast<double>(d.alerts_by_state.count(s) ? d.alerts_by_state.at(s) : 0));
    auto transitions = make_family("tocsin_alert_transitions_total", "Alert lifecycle changes, by action", MetricType::Counter);
    for (const auto& [k, v] : d.transitions) add_sample(transitions, {{"action", k}}, static_cast<double>(v));
    auto notes = make_family("tocsin_notifications_total", "Notifications that reached a final state, by channel and outcome", MetricType::Counter);
    for (const auto& [k, v] : d.notifications) add_sample(notes, {{"channel", k.first}, {"outcome", k.second}}, static_cast<double>(v));
    auto submits = make_family("tocsin_notification_submits_total", "Submissions to a gateway (first tries and retries)", MetricType::Counter);
    auto retries = make_family("tocsin_notification_retries_total", "Submissions that failed in a retryable way (refused, timeout, 5xx)", MetricType::Counter);
    auto depth = make_family("tocsin_notification_queue_depth", "Notifications queued, not yet submitted", MetricType::Gauge);
    auto oldest = make_family("tocsin_notification_queue_oldest_seconds", "Age of the oldest queued notification", MetricType::Gauge);
    auto inflight = make_family("tocsin_notifications_in_flight", "Submissions awaiting the gateway's answer", MetricType::Gauge);
    for (const auto& ch : desk->config().channels) {
      auto get = [&](const std::map<std::string, int64_t>& m) { return static_cast<double>(m.count(ch.name) ? m.at(ch.name) : 0); };
      add_sample(submits, {{"channel", ch.name}}, get(d.submits));
      add_sample(retries, {{"channel", ch.name}}, get(d.retries));
      add_sample(depth, {{"channel", ch.name}}, get(d.queue_depth));
      add_sample(inflight, {{"channel", ch.name}}, get(d.in_flight));
      add_sample(oldest, {{"channel", ch.name}}, d.oldest_queued_s.count(ch.name) ? d.oldest_queued_s.at(ch.name) : 0.0);
    }
    auto must = make_family("tocsin_must_reach_alerts_total", "Must-reach alerts (policy with stop_when: reached; reach rate denominator), by type", MetricType::Counter);
    auto reached = make_family("tocsin_alerts_reached_total", "Must-reach alerts whose target confirmed receipt on a handset (reach rate numerator), by type", MetricType::Counter);
    auto unreached = make_family("tocsin_alerts_unreached_total", "Alerts nobody was reached for within the policy's deadline, by type", MetricType::Counter);
    for (const auto& [k, v] : d.must_reach) {
      add_sample(must, {{"type", k}}, static_cast<double>(v));
      add_sample(reached, {{"type", k}}, static_cast<double>(d.reached.count(k) ? d.reached.at(k) : 0));
      add_sample(unreached, {{"type", k}}, static_cast<double>(d.unreached.count(k) ? d.unreached.at(k) : 0));
    }
    auto ttr = make_family("tocsin_alert_time_to_reach_seconds", "Time from a must-reach alert's arrival to its first handset receipt", MetricType::Histogram);
    prometheus::ClientMetric h;
    for (size_t b = 0; b < std::size(alerts::DeskMetrics::kReachBuckets); ++b)
      h.histogram.bucket.push_back({static_cast<uint64_t>(d.reach_bucket_counts[b]), alerts::DeskMetrics::kReachBuckets[b]});
    h.histogram.bucket.push_back({static_cast<uint64_t>(d.reach_count), std::numeric_limits<double>::infinity()});
    h.histogram.sample_count = static_cast<uint64_t>(d.reach_count);
    h.histogram.sample_sum = d.reach_sum_s;
    ttr.metric.push_back(std::move(h));
    auto esc = make_family("tocsin_escalations_total", "Escalations past a policy's first step, by the step reached (1 = second step)", MetricType::Counter);
    for (const auto& [k, v] : d.escalations) add_sample(esc, {{"level", std::to_string(k)}}, static_cast<double>(v));
    auto unresolved = make_family("tocsin_notification_targets_unresolved_total",
                                  "Notify targets of a policy step that named nobody for the alert (e.g. key.callee on an alert without that key field), by policy",
                                  MetricType::Counter);
    for (const auto& p : desk->config().policies) add_sample(unresolved, {{"policy", p.name}}, static_cast<double>(d.targets_unresolved.count(p.name) ? d.targets_unresolved.at(p.name) : 0));
    auto incidents = make_family("tocsin_incidents_open", "Open incidents", MetricType::Gauge);
    add_sample(incidents, {}, static_cast<double>(d.open_incidents));
    auto cb = make_family("tocsin_sms_callbacks_total", "Callbacks from the SMS gateway, by kind (bad: answered 400)", MetricType::Counter);
    if (callbacks) {
      add_sample(cb, {{"kind", "receipt"}}, static_cast<double>(callbacks->receipts.load()));
      add_sample(cb, {{"kind", "reply"}}, static_cast<double>(callbacks->replies.load()));
      add_sample(cb, {{"kind", "bad"}}, static_cast<double>(callbacks->bad_requests.load()));
    }
    auto unmatched = make_family("tocsin_sms_callbacks_unmatched_total", "Receipts for unknown notifications and replies from numbers with no open alert", MetricType::Counter);
    add_sample(unmatched, {{"kind", "receipt"}}, static_cast<double>(d.receipts_unknown));
    add_sample(unmatched, {{"kind", "reply"}}, static_cast<double>(d.replies_unknown));
    auto topic_records = make_family("tocsin_alerts_topic_records_total", "Alerts-topic records: raised alerts read, lifecycle records written or failed, bad messages", MetricType::Counter);
    if (topic) {
      add_sample(topic_records, {{"record", "raised"}, {"result", "read"}}, static_cast<double>(topic->stats().raised_read.load()));
      add_sample(topic_records, {{"record", "lifecycle"}, {"result", "written"}}, static_cast<double>(topic->stats().lifecycle_written.load()));
      add_sample(topic_records, {{"record", "lifecycle"}, {"result", "failed"}}, static_cast<double>(topic->stats().lifecycle_failed.load()));
    }
    add_sample(topic_records, {{"record", "raised"}, {"result", "bad"}}, static_cast<double>(bad_alerts.load()));
    for (auto* f : {&raised, &by_state, &transitions, &notes, &submits, &retries, &depth, &oldest, &inflight, &must, &reached,
                    &unreached, &ttr, &esc, &unresolved, &incidents, &cb, &unmatched, &topic_records})
      out.push_back(std::move(*f));
  });
}

}  // namespace tocsin::app
