// Test driver for KannelSmsChannel against a real Kannel (tests/integration/
// test_kannel_channel.py). Serves /sms/dlr and /sms/mo on 127.0.0.1:<port>,
// submits what stdin asks for and prints every event as one JSON line:
//   {"event":"ready","port":N}                       first, once listening
//   {"event":"submit","id":..,"outcome":..,"http_status":..,"detail":..}
//   {"event":"receipt","id":..,"state":..,"final":..,"detail":..}
//   {"event":"reply","from":..,"text":..}
// stdin, one command per line, fields separated by TABs:
//   send <route> <id> <to> <text>    route: an smsc-id (e.g. smpp1) or "-" for Kannel's routing
//   quit
// Exits 0 on quit or end of input, 2 at the --deadline-s deadline.
#include <utility>  // before asio: Boost 1.74 misses it under C++20

#include <boost/asio.hpp>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "connectors/kannel_sms.h"
#include "pipeline/json_writer.h"

namespace {

using namespace tocsin;
namespace asio = boost::asio;

const char* outcome_name(alerts::SubmitOutcome o) {
  switch (o) {
    case alerts::SubmitOutcome::kAccepted: return "accepted";
    case alerts::SubmitOutcome::kQueued: return "queued";
    case alerts::SubmitOutcome::kRetry: return "retry";
    case alerts::SubmitOutcome::kRejected: return "rejected";
  }
  return "?";
}

void emit(const std::string& line) { std::cout << line << '\n' << std::flush; }

std::vector<std::string> split_tabs(const std::string& line, size_t max_fields) {
  std::vector<std::string> out;
  size_t start = 0;
  while (out.size() + 1 < max_fields) {
    const size_t tab = line.find('\t', start);
    if (tab == std::string::npos) break;
    out.push_back(line.substr(start, tab - start));
    start = tab + 1;
  }
  out.push_back(line.substr(start));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  connectors::KannelSmsConfig base;
  base.sendsms_url = "http://127.0.0.1:13013/cgi-bin/sendsms";
  int deadline_s = 300;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--sendsms") base.sendsms_url = v;
    else if (k == "--user") base.username = v;
    else if (k == "--password") base.password = v;
    else if (k == "--from") base.from = v;
    else if (k == "--timeout-ms") base.timeout_ms = std::stoi(v);
    else if (k == "--deadline-s") deadline_s = std::stoi(v);
    else {
      std::cerr << "kannel_probe: unknown option " << k << "\n";
      return 64;
    }
  }

  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  connectors::HttpServer server("127.0.0.1", 0);
  connectors::add_kannel_routes(
      server,
      [&io](alerts::Receipt r) {
        asio::post(io, [r = std::move(r)] {
          std::string out;
          JsonWriter w(out);
          w.begin_object().key("event").str("receipt").key("id").str(r.notification_id);
          w.key("state").str(alerts::name(r.state)).key("final").boolean(alerts::is_final(r.state));
          w.key("detail").str(r.detail).end_object();
          emit(out);
        });
      },
      [&io](alerts::Reply r) {
        asio::post(io, [r = std::move(r)] {
          std::string out;
          JsonWriter w(out);
          w.begin_object().key("event").str("reply").key("from").str(r.from).key("text").str(r.text).end_object();
          emit(out);
        });
      });
  server.start();
  base.dlr_url = "http://127.0.0.1:" + std::to_string(server.port()) + "/sms/dlr";

  std::map<std::string, std::unique_ptr<connectors::KannelSmsChannel>> channels;  // by route
  int exit_code = 0;
  auto stop = [&](int code) {
    exit_code = code;
    guard.reset();
    io.stop();
  };
  asio::steady_timer deadline(io, std::chrono::seconds(deadline_s));
  deadline.async_wait([&](boost::system::error_code ec) {
    if (!ec) {
      std::cerr << "kannel_probe: deadline reached\n";
      stop(2);
    }
  });

  auto handle = [&](const std::string& line) {
    const auto f = split_tabs(line, 5);
    if (f[0] == "quit") return stop(0);
    if (f[0] != "send" || f.size() != 5) {
      std::cerr << "kannel_probe: bad command: " << line << "\n";
      return;
    }
    auto& ch = channels[f[1]];
    if (!ch) {
      auto c = base;
      c.smsc = f[1] == "-" ? "" : f[1];
      ch = std::make_unique<connectors::KannelSmsChannel>(io, c);
    }
    const std::string id = f[2];
    ch->submit({f[2], f[3], f[4]}, [id](alerts::SubmitResult r) {
      std::string out;
      JsonWriter w(out);
      w.begin_object().key("event").str("submit").key("id").str(id).key("outcome").str(outcome_name(r.outcome));
      w.key("http_status").num(int64_t{r.http_status}).key("detail").str(r.detail).end_object();
      emit(out);
    });
  };
  // stdin is read on its own thread (blocking); the commands run on the io thread.
  std::thread reader([&io, &handle] {
    std::string line;
    while (std::getline(std::cin, line)) asio::post(io, [&handle, line] { handle(line); });
    asio::post(io, [&handle] { handle("quit"); });
  });
  reader.detach();  // may stay blocked in getline; the process exits regardless

  {
    std::string out;
    JsonWriter w(out);
    w.begin_object().key("event").str("ready").key("port").num(int64_t{server.port()}).end_object();
    emit(out);
  }
  io.run();
  server.stop();
  channels.clear();
  std::_Exit(exit_code);  // the reader thread may still be blocked on stdin
}
