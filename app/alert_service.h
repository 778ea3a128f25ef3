#pragma once
// The alert desk wired to the outside world (docs/alerting.md): raised alerts
// read from the alerts topic, lifecycle changes written back to it, SMS
// through Kannel with DLR and MO callbacks on our HTTP server, webhooks, the
// durable store, the REST API for operator actions and /metrics.
//
// Threads: one runs the desk, its timers and its gateways (an asio
// io_context); one reads and writes the alerts topic. HTTP handlers hand their
// work to the desk's thread and wait (bounded) for the answer.
#include <memory>
#include <string>

#include "app/config.h"
#include "connectors/console.h"
#include "connectors/http_server.h"
#include "monitoring/metrics.h"
#include "rules/tables.h"

namespace tocsin::alerts {
struct AlertingConfig;
}
namespace tocsin::rules {
class ClockBoard;
}

namespace tocsin::app {

class AlertService {
 public:
  // Opens the state store and recovers from it; registers the HTTP routes
  // (call before http.start()). Throws std::runtime_error with a message that
  // says how to fix the setup (a locked state_dir, a bad gateway URL).
  // API routes go through `console` (sessions, roles, CSRF) and it receives
  // every lifecycle change as a live update.
  AlertService(const Config& cfg, const alerts::AlertingConfig& alerting, const rules::TableRegistry* tables,
               monitoring::Metrics& metrics, connectors::HttpServer& http, connectors::Console& console);
  ~AlertService();  // stops
  AlertService(const AlertService&) = delete;
  AlertService& operator=(const AlertService&) = delete;

  // The engines' running clocks, served to the SLA board (/api/v1/sla/clocks). Before start().
  void show_clocks(rules::ClockBoard& board);
  // Starts the desk's thread and the alerts-topic reader.
  void start();
  // Stops reading, lets the desk finish what is in hand, commits, closes.
  void stop();
  // For the banner: channels and where the gateway calls back.
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tocsin::app
