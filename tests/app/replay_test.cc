// `tocsin replay`: the nyc311 and heatseek mappings and the summary, on small
// project-owned fixtures; mapping files (good and bad); pacing and progress on a
// virtual clock (nothing sleeps); plus a check on the real 2013 NYC 311 sample
// when /work/shared/data (or $TOCSIN_DATA_DIR) is there. Kafka output is tested
// over the Kafka protocol in tests/integration/test_replay_kafka.py.
#include "app/replay.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <unistd.h>

namespace tocsin::app {
namespace {

const std::string kSrc = TOCSIN_SOURCE_DIR;
const std::string kFixtures = kSrc + "/tests/app/fixtures/";
const std::string kPack = kSrc + "/examples/packs/heating/rules.yaml";

ReplayOptions nyc(bool jitter, uint64_t seed = 1) {
  ReplayOptions o;
  o.inputs = {kFixtures + "nyc311_heating_sample.csv"};
  o.mapping = "nyc311";
  o.rule_files = {kPack};
  o.jitter = jitter;
  o.jitter_seed = seed;
  return o;
}

TEST(ReplayCsv, ReadsQuotedFieldsWithCommasAndQuotes) {
  std::istringstream in("a,b,c\n1,\"x, \"\"y\"\"\",\"multi\nline\"\r\n2,,\n");
  CsvReader r(in);
  std::vector<std::string> row;
  ASSERT_TRUE(r.next(row));
  EXPECT_EQ(row, (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_TRUE(r.next(row));
  EXPECT_EQ(row, (std::vector<std::string>{"1", "x, \"y\"", "multi\nline"}));
  ASSERT_TRUE(r.next(row));
  EXPECT_EQ(row, (std::vector<std::string>{"2", "", ""}));
  EXPECT_FALSE(r.next(row));
}

TEST(ReplayTime, NewYorkLocalTimeWithDaylightSaving) {
  // 2013-12-25 00:00 EST = 05:00Z; 2025-03-24 19:15 EDT = 23:15Z.
  EXPECT_EQ(parse_nyc_datetime("12/25/2013 12:00:00 AM"), 1387947600000);
  EXPECT_EQ(parse_nyc_datetime("03/24/2025 07:15:00 PM"), 1742858100000);
  EXPECT_EQ(parse_nyc_datetime("12/25/2013 12:30:00 PM"), 1387992600000);
  EXPECT_FALSE(parse_nyc_datetime("2013-12-25 00:00"));
  EXPECT_EQ(parse_sql_timestamp("2014-12-17 02:00:19.067+00"), 1418781619067);
}

TEST(ReplayNyc311, MapsHeatingRowsToComplaints) {
  std::vector<ReplayEvent> events;
  MapStats stats;
  std::string error;
  ASSERT_TRUE(read_replay_events(nyc(false), events, stats, error)) << error;
  EXPECT_EQ(stats.rows, 6);
  EXPECT_EQ(stats.mapped, 4);
  EXPECT_EQ(stats.skipped, 1);  // Blocked Driveway
  EXPECT_EQ(stats.invalid, 1);  // no address
  EXPECT_EQ(stats.jittered, 0);
  ASSERT_EQ(events.size(), 4u);
  const ReplayEvent& first = events[0];
  EXPECT_EQ(first.stream, Stream::kComplaints);
  EXPECT_EQ(first.time_ms, 1387947600000);
  for (const char* part : {R"("ticket_id":"1001")", R"("time":"2013-12-25T05:00:00.000Z")", R"("status":"received")",
                           R"("category":"heating.no_heat")", R"("district":"BRONX")", R"("street":"GRAND CONCOURSE")",
                           R"("community":"04 BRONX")", R"("building":"840 GRAND CONCOURSE, BRONX")", R"("complainant":"99)"})
    EXPECT_NE(first.json.find(part), std::string::npos) << part << " in " << first.json;
  // Spaces collapsed: the same building key as 1001.
  EXPECT_NE(events[2].json.find(R"("building":"840 GRAND CONCOURSE, BRONX")"), std::string::npos) << events[2].json;
  // Synthetic complainants differ per row.
  EXPECT_NE(first.json.substr(first.json.find("complainant")), events[1].json.substr(events[1].json.find("complainant")));
  // BBL joins the building key when present; quoted descriptor kept whole.
  const ReplayEvent& last = events[3];
  EXPECT_EQ(last.time_ms, 1742858100000);
  EXPECT_NE(last.json.find(R"("building":"1155 EAST 35 STREET, BROOKLYN [BBL 3076170017]")"), std::string::npos) << last.json;
  EXPECT_NE(last.json.find(R"("text":"HEAT/HOT WATER: ENTIRE BUILDING, \"NO HEAT\"")"), std::string::npos) << last.json;
}

TEST(ReplayNyc311, JitterSpreadsMidnightRowsDeterministically) {
  std::vector<ReplayEvent> a, b, c;
  MapStats sa, sb, sc;
  std::string error;
  ASSERT_TRUE(read_replay_events(nyc(true, 7), a, sa, error)) << error;
  ASSERT_TRUE(read_replay_events(nyc(true, 7), b, sb, error)) << error;
  ASSERT_TRUE(read_replay_events(nyc(true, 8), c, sc, error)) << error;
  EXPECT_EQ(sa.jittered, 3);  // the 2025 row has a real time
  ASSERT_EQ(a.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].json, b[i].json);
    EXPECT_GE(a[i].time_ms, 1387947600000);
  }
  int within_day = 0;
  for (const auto& e : a) within_day += e.time_ms < 1387947600000 + 86400000;
  EXPECT_EQ(within_day, 3);
  bool differs = false;
  for (size_t i = 0; i < a.size(); ++i) differs |= a[i].time_ms != c[i].time_ms;
  EXPECT_TRUE(differs) << "another seed spreads the rows differently";
}

TEST(ReplayNyc311, SummaryCountsAlertsByRuleAndInferredBuildings) {
  ReplaySummary s;
  std::ostringstream log, out;
  std::string error;
  const ReplayOptions o = nyc(false);
  ASSERT_TRUE(run_replay(o, s, log, error)) << error;
  EXPECT_EQ(s.events_sent, 4);
  EXPECT_EQ(s.rejected, 0);
  EXPECT_EQ(s.by_stream[static_cast<size_t>(Stream::kComplaints)], 4);
  EXPECT_EQ(s.alerts, 1);
  EXPECT_EQ(s.alerts_by_rule.at("heating.complaints.building_2h"), 1);
  EXPECT_EQ(s.alerts_by_rule.at("heating.complaints.community_2h"), 0);
  EXPECT_EQ(s.inferred_alerts, 1);
  EXPECT_EQ(s.inferred_buildings, (std::set<std::string>{"840 GRAND CONCOURSE, BRONX"}));
  EXPECT_EQ(s.inferred_streets, (std::set<std::string>{"GRAND CONCOURSE"}));
  EXPECT_NE(log.str().find("4/4 events sent"), std::string::npos) << log.str();
  print_replay_summary(o, s, out);
  EXPECT_NE(out.str().find("heating.complaints.building_2h   1"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("1 alerts, 1 distinct buildings, 1 distinct streets"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("synthetic"), std::string::npos) << out.str();
}

TEST(ReplaySichuan, ProfilesKeyedByNumberAtTheAsOfTimeRaiseTheFittedScore) {
  ReplayOptions o;
  o.inputs = {kFixtures + "sichuan_users_sample.csv"};
  o.mapping = "sichuan";
  o.as_of_ms = 1700000000000;
  o.rule_files = {kSrc + "/examples/packs/fraud/profile_rule.yaml"};
  std::vector<ReplayEvent> events;
  MapStats stats;
  std::string error;
  ASSERT_TRUE(read_replay_events(o, events, stats, error)) << error;
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(stats.mapped, static_cast<int64_t>(events.size()));
  for (const auto& ev : events) {
    EXPECT_EQ(ev.stream, Stream::kProfiles);
    EXPECT_EQ(ev.time_ms, o.as_of_ms);
    EXPECT_NE(ev.json.find("\"number\":\"" + ev.key + "\""), std::string::npos) << ev.json;
  }
  ReplaySummary s;
  std::ostringstream log;
  ASSERT_TRUE(run_replay(o, s, log, error)) << error;
  EXPECT_GE(s.alerts_by_rule["fraud.number_profile"], 1) << "the fixture's fraud-like number";
  EXPECT_LT(s.alerts_by_rule["fraud.number_profile"], static_cast<int64_t>(events.size())) << "not every number";
}

TEST(ReplayHeatseek, MapsReadingsToTelemetryAndAlarmsOnSustainedCold) {
  ReplayOptions o;
  o.inputs = {kFixtures + "heatseek_sample.csv"};
  o.mapping = "heatseek";
  o.rule_files = {kPack};
  std::vector<ReplayEvent> events;
  MapStats stats;
  std::string error;
  ASSERT_TRUE(read_replay_events(o, events, stats, error)) << error;
  EXPECT_EQ(stats.mapped, 4);
  EXPECT_EQ(stats.invalid, 1);  // no temperature
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].stream, Stream::kFaults);
  for (const char* part : {R"("kind":"telemetry")", R"("network_id":"heatseek-3")", R"("building":"heatseek-3")",
                           R"("asset_type":"building")", R"("indoor_temp_c":15.6)", R"("street":"930 PROSPECT PL")"})
    EXPECT_NE(events[0].json.find(part), std::string::npos) << part << " in " << events[0].json;
  ReplaySummary s;
  std::ostringstream log;
  ASSERT_TRUE(run_replay(o, s, log, error)) << error;
  EXPECT_EQ(s.events_sent, 4);
  EXPECT_EQ(s.alerts_by_rule.at("heating.telemetry.indoor_cold"), 1);
  EXPECT_EQ(s.alerts, 1);
}

TEST(Replay, BadRulesOrInputsAreErrors) {
  ReplaySummary s;
  std::ostringstream log;
  std::string error;
  ReplayOptions o = nyc(false);
  o.inputs = {kFixtures + "does_not_exist.csv"};
  EXPECT_FALSE(run_replay(o, s, log, error));
  EXPECT_NE(error.find("cannot be read"), std::string::npos) << error;
  error.clear();
  o = nyc(false);
  o.inputs = {kFixtures + "heatseek_sample.csv"};
  EXPECT_FALSE(run_replay(o, s, log, error));
  EXPECT_NE(error.find("not a nyc311 file"), std::string::npos) << error;
}

// ---------------------------------------------------------------------------------------------
// Pacing on a virtual clock: the waits the pacer asks for, never a real sleep.

class VirtualClock final : public PaceClock {
 public:
  int64_t now = 5'000'000;
  int64_t oversleep = 0;       // every sleep lasts this much longer than asked
  std::vector<int64_t> sleeps;  // every request
  int64_t now_ms() override { return now; }
  void sleep_ms(int64_t ms) override {
    sleeps.push_back(ms);
    now += ms + oversleep;
  }
  int64_t slept() const { return std::accumulate(sleeps.begin(), sleeps.end(), int64_t{0}); }
};

constexpr int64_t kT0 = 1'733'094'300'000;  // 2024-12-01T23:05:00Z
constexpr int64_t kNoSlices = INT64_MAX / 4;

// The sleeps requested for each event in turn.
std::vector<std::vector<int64_t>> waits(Pacer& p, VirtualClock& c, const std::vector<int64_t>& times) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t t : times) {
    c.sleeps.clear();
    EXPECT_TRUE(p.wait(t));
    out.push_back(c.sleeps);
  }
  return out;
}

TEST(ReplayPacer, RealTimeReproducesEventTimeGaps) {
  VirtualClock c;
  Pacer p(1, c, kNoSlices);
  using W = std::vector<std::vector<int64_t>>;
  EXPECT_EQ(waits(p, c, {kT0, kT0 + 1000, kT0 + 1000, kT0 + 3500, kT0 + 3501}), (W{{}, {1000}, {}, {2500}, {1}}));
  EXPECT_EQ(c.now, 5'000'000 + 3501);
}

TEST(ReplayPacer, NTimesSpeedDividesTheGaps) {
  VirtualClock c;
  Pacer p(60, c, kNoSlices);
  using W = std::vector<std::vector<int64_t>>;
  // One minute of event time per second; 90 s -> 1.5 s; 10 ms -> 0.17 ms, rounded to nothing.
  EXPECT_EQ(waits(p, c, {kT0, kT0 + 60'000, kT0 + 150'000, kT0 + 150'010}), (W{{}, {1000}, {1500}, {}}));
  VirtualClock half;
  Pacer slow(0.5, half, kNoSlices);
  EXPECT_EQ(waits(slow, half, {kT0, kT0 + 1000}), (W{{}, {2000}}));
}

TEST(ReplayPacer, MaxSpeedNeverWaits) {
  VirtualClock c;
  Pacer p(0, c, kNoSlices);
  for (int64_t t : {kT0, kT0 + 86'400'000, kT0 + 2 * 86'400'000}) EXPECT_TRUE(p.wait(t));
  EXPECT_TRUE(c.sleeps.empty());
}

TEST(ReplayPacer, DueTimesAreAbsoluteSoSlowSendingAndOversleepAreCaughtUp) {
  VirtualClock c;
  c.oversleep = 30;
  Pacer p(1, c, kNoSlices);
  ASSERT_TRUE(p.wait(kT0));
  c.now += 300;  // sending took 300 ms
  ASSERT_TRUE(p.wait(kT0 + 1000));
  EXPECT_EQ(c.sleeps, (std::vector<int64_t>{700}));  // woke 30 ms late: at +1030
  c.sleeps.clear();
  ASSERT_TRUE(p.wait(kT0 + 2000));
  EXPECT_EQ(c.sleeps, (std::vector<int64_t>{970}));
  c.sleeps.clear();
  c.now += 5000;  // far behind: the next events are due at once
  ASSERT_TRUE(p.wait(kT0 + 4000));
  ASSERT_TRUE(p.wait(kT0 + 6000));
  EXPECT_TRUE(c.sleeps.empty());
}

TEST(ReplayPacer, SleepsInSlicesAndStopsWhenAsked) {
  VirtualClock c;
  Pacer p(1, c, 200);
  int between = 0;
  ASSERT_TRUE(p.wait(kT0));
  ASSERT_TRUE(p.wait(kT0 + 900, nullptr, [&] { ++between; }));
  EXPECT_EQ(c.sleeps, (std::vector<int64_t>{200, 200, 200, 200, 100}));
  EXPECT_EQ(between, 5);
  std::atomic<bool> stop{false};
  c.sleeps.clear();
  EXPECT_FALSE(p.wait(kT0 + 60'000, &stop, [&] {
    if (c.sleeps.size() == 2) stop = true;
  }));
  EXPECT_EQ(c.sleeps.size(), 2u) << "stops within one slice";
  EXPECT_FALSE(p.wait(kT0 + 60'000, &stop));
  EXPECT_EQ(c.sleeps.size(), 2u);
}

TEST(ReplayPacer, ParsesSpeeds) {
  EXPECT_EQ(parse_speed("max"), 0.0);
  EXPECT_EQ(parse_speed("1"), 1.0);
  EXPECT_EQ(parse_speed("60"), 60.0);
  EXPECT_EQ(parse_speed("60x"), 60.0);
  EXPECT_EQ(parse_speed("0.5"), 0.5);
  for (const char* bad : {"0", "-1", "fast", "", "x", "1e999", "nan"}) EXPECT_FALSE(parse_speed(bad)) << bad;
}

TEST(ReplayProgress, FormatsTheBar) {
  EXPECT_EQ(format_progress_bar(2, 4, 1234.0, 3000, 10), "[#####.....]  50%  2/4 events  1.2k ev/s  ETA 0:03");
  EXPECT_EQ(format_progress_bar(0, 4, 0, -1, 4), "[....]   0%  0/4 events  0 ev/s  ETA --:--");
  EXPECT_EQ(format_progress_bar(4, 4, 25'000, 0, 4), "[####] 100%  4/4 events  25k ev/s  ETA 0:00");
  EXPECT_EQ(format_progress_bar(1, 3, 2.4, 3'600'000 + 61'000, 3), "[#..]  33%  1/3 events  2.4 ev/s  ETA 1:01:01");
}

// A complaints JSONL file whose events are a minute apart.
std::string minute_apart_complaints(const std::string& name) {
  const auto path = std::filesystem::temp_directory_path() / (name + "-" + std::to_string(getpid()) + "-complaints.jsonl");
  std::ofstream f(path);
  for (int i = 0; i < 4; ++i)
    f << R"({"ticket_id":"P)" << i << R"(","time":"2024-12-01T23:0)" << i << R"(:00Z","status":"received",)"
      << R"("category":"heating.no_heat","complainant":"1380000000)" << i << R"(","building":"B-1"})" << "\n";
  return path.string();
}

TEST(ReplayPacer, InProcessReplayAtSixtyTimesOnAVirtualClock) {
  VirtualClock c;
  ReplayOptions o;
  o.inputs = {minute_apart_complaints("paced")};
  o.mapping = "jsonl";
  o.stream = "complaints";
  o.rule_files = {kPack};
  o.speed = 60;
  o.clock = &c;
  ReplaySummary s;
  std::ostringstream log;
  std::string error;
  ASSERT_TRUE(run_replay(o, s, log, error)) << error;
  std::filesystem::remove(o.inputs[0]);
  EXPECT_EQ(c.slept(), 3000) << "3 minutes of event time at 60x";
  for (int64_t ms : c.sleeps) EXPECT_LE(ms, 200);
  EXPECT_EQ(s.events_sent, 4);
  EXPECT_EQ(s.alerts_by_rule.at("heating.complaints.building_2h"), 1) << "engine timers still follow event time";
}

TEST(ReplayProgress, BarOnATerminalLinesOtherwise) {
  VirtualClock c;
  ReplayOptions o;
  o.inputs = {minute_apart_complaints("progress")};
  o.mapping = "jsonl";
  o.stream = "complaints";
  o.rule_files = {kPack};
  o.speed = 60;
  o.clock = &c;
  o.progress_bar = true;
  o.print_alerts = true;
  ReplaySummary s;
  std::ostringstream bar;
  std::string error;
  ASSERT_TRUE(run_replay(o, s, bar, error)) << error;
  const std::string b = bar.str();
  EXPECT_NE(b.find("\rreplay [##############################] 100%  4/4 events"), std::string::npos) << b;
  EXPECT_NE(b.find("2024-12-01T23:03:00.000Z  1 alerts\033[K\n"), std::string::npos) << b;
  EXPECT_NE(b.find("\r\033[Kalert "), std::string::npos) << "the bar is cleared before an alert line: " << b;
  EXPECT_NE(b.find("ETA 0:0"), std::string::npos) << b;
  o.progress_bar = false;
  o.print_alerts = false;
  o.progress_every = 2;
  std::ostringstream lines;
  ASSERT_TRUE(run_replay(o, s, lines, error)) << error;
  std::filesystem::remove(o.inputs[0]);
  EXPECT_EQ(lines.str(),
            "replay: 2/4 events sent, event time 2024-12-01T23:01:00.000Z, 0 alerts\n"
            "replay: 4/4 events sent, event time 2024-12-01T23:03:00.000Z, 1 alerts\n"
            "replay: 4/4 events sent, event time up to 2024-12-01T23:03:00.000Z, 1 alerts\n");
}

// ---------------------------------------------------------------------------------------------
// Time formats and mapping files

TEST(ReplayTimeFormat, PatternsZonesAndEpochs) {
  TimeFormat f;
  ASSERT_EQ(parse_time_format("%m/%d/%Y %I:%M:%S %p", "America/New_York", f), "");
  EXPECT_EQ(parse_time(f, "12/25/2013 11:59:08 PM"), parse_nyc_datetime("12/25/2013 11:59:08 PM"));
  EXPECT_EQ(parse_time(f, "03/24/2025 07:15:00 PM"), 1742858100000);  // EDT
  ASSERT_EQ(parse_time_format("%Y/%m/%d %H:%M", "+08:00", f), "");
  EXPECT_EQ(parse_time(f, "2024/12/02 07:05"), kT0);
  EXPECT_EQ(parse_time(f, " 2024/12/2  7:05 "), kT0) << "one-digit fields, runs of spaces";
  EXPECT_FALSE(parse_time(f, "2024/12/02 25:10"));
  EXPECT_FALSE(parse_time(f, "2024/02/30 07:05")) << "no such day";
  EXPECT_FALSE(parse_time(f, "2024/12/02 07:05 extra"));
  ASSERT_EQ(parse_time_format("%d %b %Y %H:%M:%S.%f%z", "", f), "");
  EXPECT_EQ(parse_time(f, "01 Dec 2024 23:05:00.25Z"), kT0 + 250);
  EXPECT_EQ(parse_time(f, "02 dec 2024 07:05:00.250+0800"), kT0 + 250) << "%z in the text wins over the zone";
  ASSERT_EQ(parse_time_format("epoch_s", "", f), "");
  EXPECT_EQ(parse_time(f, "1733094300.5"), kT0 + 500);
  ASSERT_EQ(parse_time_format("epoch_ms", "", f), "");
  EXPECT_EQ(parse_time(f, "1733094300000"), kT0);
  EXPECT_FALSE(parse_time(f, "17330943e5"));
  ASSERT_EQ(parse_time_format("", "", f), "");  // RFC 3339
  EXPECT_EQ(parse_time(f, "2024-12-02T07:05:00+08:00"), kT0);

  EXPECT_NE(parse_time_format("%Y-%m-%d %Q", "", f).find("unknown directive %Q"), std::string::npos);
  EXPECT_NE(parse_time_format("%Y-%m %H", "", f).find("needs a year"), std::string::npos);
  EXPECT_NE(parse_time_format("%Y-%m-%d %I:%M", "", f).find("%I (12-hour clock) and %p"), std::string::npos);
  EXPECT_NE(parse_time_format("%Y-%m-%d %", "", f).find("lone '%'"), std::string::npos);
  EXPECT_NE(parse_time_format("iso", "", f).find("unknown time format 'iso'"), std::string::npos);
  EXPECT_NE(parse_time_format("rfc3339", "Europe/Paris", f).find("unknown zone 'Europe/Paris'"), std::string::npos);
}

// Writes `text` to a temporary file named `name`; removed at the end of the test.
class TempFiles {
 public:
  std::string write(const std::string& name, const std::string& text) {
    const auto p = std::filesystem::temp_directory_path() / ("tocsin-replay-" + std::to_string(getpid()) + "-" + name);
    std::ofstream(p) << text;
    paths_.push_back(p);
    return p.string();
  }
  ~TempFiles() {
    for (const auto& p : paths_) std::filesystem::remove(p);
  }

 private:
  std::vector<std::filesystem::path> paths_;
};

TEST(ReplayMappingFile, ShippedExampleMapsTicketsAndRaisesTheBuildingAlert) {
  ReplayOptions o;
  o.inputs = {kSrc + "/examples/replay/tickets.csv"};
  o.mapping_file = kSrc + "/examples/replay/tickets.mapping.yaml";
  o.rule_files = {kPack};
  std::vector<ReplayEvent> events;
  MapStats stats;
  std::string error;
  std::ostringstream log;
  ASSERT_TRUE(read_replay_events(o, events, stats, error, &log)) << error;
  EXPECT_EQ(stats.rows, 6);
  EXPECT_EQ(stats.mapped, 4);
  EXPECT_EQ(stats.skipped, 1);  // noise.construction: where category contains "heating."
  EXPECT_EQ(stats.invalid, 1);  // hour 25
  EXPECT_EQ(log.str(), "replay: " + o.inputs[0] + ":7: row not mapped: time: '2024/12/02 25:10' (column 'Opened At') "
                       "does not match the time format\n");
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].stream, Stream::kComplaints);
  EXPECT_EQ(events[0].key, "T-24-000101");
  EXPECT_EQ(events[0].time_ms, kT0);
  // Schema order; the constant; the quoted comma kept.
  EXPECT_EQ(events[0].json,
            R"({"ticket_id":"T-24-000101","time":"2024-12-01T23:05:00.000Z","status":"received","category":"heating.no_heat",)"
            R"("urgency":"utility","complainant":"13800001111","district":"Chaoyang","street":"Jinsong","community":"Jinsong 3rd",)"
            R"("building":"Building 12","text":"No heat since last night, radiators cold"})");
  // An empty optional column is left out.
  EXPECT_EQ(events[3].key, "T-24-000105");
  EXPECT_EQ(events[3].json.find("complainant"), std::string::npos) << events[3].json;
  ReplaySummary s;
  ASSERT_TRUE(run_replay(o, s, log, error)) << error;
  EXPECT_EQ(s.events_sent, 4);
  EXPECT_EQ(s.rejected, 0);
  EXPECT_EQ(s.alerts_by_rule.at("heating.complaints.building_2h"), 1);
  std::ostringstream out;
  print_replay_summary(o, s, out);
  EXPECT_NE(out.str().find("mapping file " + o.mapping_file), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("6 (4 mapped, 1 not taken by the mapping, 1 unreadable)"), std::string::npos) << out.str();
}

TEST(ReplayMappingFile, TypedFieldsDelimiterAndMaskedRowErrors) {
  TempFiles tmp;
  const std::string map = tmp.write("calls.yaml", R"(stream: calls
delimiter: ";"
time: {column: start, format: epoch_s}
fields:
  call_id: {column: id}
  caller: from
  callee: to
  duration_s: secs
  answered: {column: ok}
  caller_class: {value: mobile}
  sim_activated_at: sim
where: {column: kind, in: [voice, video]}
)");
  const std::string csv = tmp.write("calls.csv",
                                    "id;start;from;to;secs;ok;kind;sim\n"
                                    "c1;1733094300;13800138000;13900139000;42;yes;voice;1733000000\n"
                                    "c2;1733094301;13800138000;13900139001;0;N;sms;\n"
                                    "c3;1733094302;13800138000;13900139002;7;13912345678;video;\n"
                                    "c4;1733094303;13800138000;13900139003;7.5;1;video;\n"
                                    "c5;1733094304;13800138000;13900139004;-3;0;video;\n");
  ReplayOptions o;
  o.inputs = {csv};
  o.mapping_file = map;
  std::vector<ReplayEvent> events;
  MapStats stats;
  std::string error;
  std::ostringstream log;
  ASSERT_TRUE(read_replay_events(o, events, stats, error, &log)) << error;
  EXPECT_EQ(stats.skipped, 1);
  EXPECT_EQ(stats.invalid, 2);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].key, "13800138000") << "calls are keyed by caller";
  EXPECT_EQ(events[0].json,
            R"({"call_id":"c1","start_time":"2024-12-01T23:05:00.000Z","caller":"13800138000","callee":"13900139000",)"
            R"("duration_s":42,"answered":true,"caller_class":"mobile","sim_activated_at":"2024-11-30T20:53:20.000Z"})");
  EXPECT_NE(events[1].json.find(R"("duration_s":-3,"answered":false,"caller_class":"mobile"})"), std::string::npos) << events[1].json;
  const std::string l = log.str();
  EXPECT_NE(l.find(":4: row not mapped: answered: '139****5678' (column 'ok') is not true or false"), std::string::npos) << l;
  EXPECT_EQ(l.find("13912345678"), std::string::npos) << "phone numbers are masked in logs: " << l;
  EXPECT_NE(l.find(":5: row not mapped: duration_s: '7.5' (column 'secs') is not a whole number"), std::string::npos) << l;
}

// Loads `yaml` as a mapping file and returns its formatted errors, one per line.
std::string mapping_errors(TempFiles& tmp, const std::string& yaml) {
  const std::string path = tmp.write("bad.yaml", yaml);
  MappingFile m;
  std::string out;
  for (const auto& e : load_mapping_file(path, m)) {
    std::string line = format(e, path);
    out += line.replace(0, path.size(), "bad.yaml") + "\n";
  }
  return out;
}

TEST(ReplayMappingFile, ErrorsNameFileLineAndColumn) {
  TempFiles tmp;
  EXPECT_EQ(mapping_errors(tmp, "stream: complaint\ntime: t\nfields: {}\n"),
            "bad.yaml:1:9: stream: unknown stream 'complaint'; expected " + std::string(stream_names()) + "\n");
  EXPECT_EQ(mapping_errors(tmp, R"(stream: complaints
time: {column: Opened, format: "%Y-%m-%d %H:%M", zone: Asia/Shanghai}
delimter: ";"
fields:
  ticket_id: Ticket
  staus: Status
  time: Opened
  urgency: {value: urgent}
  status: {value: recieved}
  building: {column: B, value: x}
  text: [a, b]
)"),
            "bad.yaml:3:1: delimter: unknown key; expected one of: stream, delimiter, time, fields, where\n"
            "bad.yaml:2:56: time.zone: unknown zone 'Asia/Shanghai': use UTC, a fixed offset such as +08:00 or -05:00, "
            "or America/New_York (the one named zone built in)\n"
            "bad.yaml:6:3: fields.staus: complaints have no field 'staus'; fields: " +
                [] {
                  std::string l;
                  for (const auto& f : schema_of(Stream::kComplaints).fields) l += (l.empty() ? "" : ", ") + std::string(f.name);
                  return l;
                }() + "\n"
            "bad.yaml:7:3: fields.time: the event time comes from time: (remove it here)\n"
            "bad.yaml:9:19: fields.status.value: 'recieved' is not a status of complaints; expected one of: received, "
            "dispatched, signed, contacted, resolved, followed_up, rated, closed, returned, extended, reopened, escalated\n"
            "bad.yaml:10:13: fields.building: needs exactly one of column: (read from a CSV column) or value: (a constant)\n"
            "bad.yaml:11:9: fields.text: must be a column name, {column: NAME} or {value: CONSTANT}\n");
  EXPECT_EQ(mapping_errors(tmp, "stream: calls\ntime: {column: t, format: \"%d/%m %H\"}\nfields:\n  call_id: id\n  caller: a\n"
                                "  callee: b\n  duration_s: {value: long}\n  answered: {value: maybe}\n"
                                "where: [{column: k, equals: x, contains: y}]\n"),
            "bad.yaml:2:27: time.format: the time format needs a year (%Y or %y), a month (%m or %b) and a day (%d)\n"
            "bad.yaml:7:23: fields.duration_s.value: 'long' is not a whole number (duration_s is int)\n"
            "bad.yaml:8:21: fields.answered.value: 'maybe' is not true or false (yes/no, 1/0) (answered is bool)\n"
            "bad.yaml:9:9: where[0]: needs exactly one of equals:, contains: or in:\n");
  EXPECT_EQ(mapping_errors(tmp, "stream: faults\ntime: t\nfields:\n  fault_id: id\n"),
            "bad.yaml:4:3: fields: no mapping for 'kind', which every faults event needs (add kind: COLUMN or kind: "
            "{value: CONSTANT})\n"
            "bad.yaml:4:3: fields: no mapping for 'network_id', which every faults event needs (add network_id: COLUMN or "
            "network_id: {value: CONSTANT})\n");
  EXPECT_EQ(mapping_errors(tmp, "stream: faults\nfields: {fault_id: [\n"), "bad.yaml:3:1: YAML syntax: end of sequence flow not found\n");
  EXPECT_EQ(mapping_errors(tmp, "stream: faults\n"),
            "bad.yaml:1:1: time: missing: the column holding the event time, e.g. time: {column: Created, format: "
            "\"%Y-%m-%d %H:%M:%S\", zone: UTC}\n"
            "bad.yaml:1:1: fields: missing: the stream's fields, each from a column or a constant, e.g. fields: "
            "{ticket_id: Ticket, status: {value: received}}\n");
}

TEST(ReplayMappingFile, AColumnMissingFromTheCsvPointsAtTheMapping) {
  TempFiles tmp;
  ReplayOptions o;
  o.mapping_file = tmp.write("m.yaml", "stream: complaints\ntime: Opened\nfields:\n  ticket_id: Ticket\n  status: Statsu\n");
  o.inputs = {tmp.write("t.csv", "Ticket,Opened,Status\nT1,2024-12-01T23:05:00Z,received\n")};
  o.rule_files = {kPack};
  std::vector<ReplayEvent> events;
  MapStats stats;
  std::string error;
  EXPECT_FALSE(read_replay_events(o, events, stats, error));
  EXPECT_EQ(error, o.mapping_file + ":5:11: fields.status: no column 'Statsu' in " + o.inputs[0] +
                       " (its columns: 'Opened', 'Status', 'Ticket')");
  ReplaySummary s;
  std::ostringstream log, out, err;
  EXPECT_EQ(replay_main(o, out, err), 2);
  EXPECT_NE(err.str().find("nothing was replayed"), std::string::npos) << err.str();
}

TEST(Replay, OptionsThatDoNotGoTogether) {
  ReplayOptions o = nyc(false);
  EXPECT_EQ(check_replay_options(o), "");
  o.mapping_file = "x.yaml";
  EXPECT_NE(check_replay_options(o).find("--mapping nyc311|heatseek|sichuan|jsonl or --mapping-file"), std::string::npos);
  o = nyc(false);
  o.rule_files.clear();
  EXPECT_NE(check_replay_options(o).find("needs --rules"), std::string::npos);
  o.to = ReplayOptions::Target::kKafka;
  EXPECT_NE(check_replay_options(o).find("--to kafka needs --brokers HOST:PORT"), std::string::npos);
  o.brokers = "127.0.0.1:9092";
  EXPECT_EQ(check_replay_options(o), "");
  o.rule_files = {kPack};
  EXPECT_NE(check_replay_options(o).find("--rules is for in-process replays"), std::string::npos);
  o = nyc(false);
  o.brokers = "127.0.0.1:9092";
  EXPECT_NE(check_replay_options(o).find("--brokers needs --to kafka"), std::string::npos);
}

// The real 2013-12-25 sample (1,201 HEATING rows), when the shared data is there.
TEST(ReplaySharedData, Nyc311ChristmasSample) {
  std::filesystem::path dir;
  if (const char* env = std::getenv("TOCSIN_DATA_DIR"); env && *env) dir = env;
  else dir = std::filesystem::path(kSrc) / ".." / "shared" / "data";
  const auto file = dir / "nyc311" / "nyc311_2013-12-25_sample.csv";
  if (!std::filesystem::exists(file))
    GTEST_SKIP() << "shared data not found at " << file.string()
                 << " (set TOCSIN_DATA_DIR to the folder holding nyc311/nyc311_2013-12-25_sample.csv)";
  ReplayOptions o = nyc(true, 1);
  o.inputs = {file.string()};
  ReplaySummary a, b;
  std::ostringstream log;
  std::string error;
  ASSERT_TRUE(run_replay(o, a, log, error)) << error;
  ASSERT_TRUE(run_replay(o, b, log, error)) << error;
  EXPECT_EQ(a.map.mapped, 1201);
  EXPECT_EQ(a.map.jittered, 1201);
  EXPECT_EQ(a.events_sent, 1201);
  EXPECT_EQ(a.rejected, 0);
  EXPECT_GT(a.alerts_by_rule.at("heating.complaints.building_2h"), 0);
  EXPECT_EQ(a.alerts_by_rule, b.alerts_by_rule) << "the same seed replays the same";
  EXPECT_EQ(a.inferred_buildings, b.inferred_buildings);
}

}  // namespace
}  // namespace tocsin::app
