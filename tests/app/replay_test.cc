// `tocsin replay`: the nyc311 and heatseek mappings and the summary, on small
// project-owned fixtures; plus a check on the real 2013 NYC 311 sample when
// /work/shared/data (or $TOCSIN_DATA_DIR) is there.
#include "app/replay.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

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
