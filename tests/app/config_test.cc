#include "app/config.h"

#include <gtest/gtest.h>

#include "rules/rule_set.h"

namespace tocsin::app {
namespace {

TEST(Config, ExampleFileIsValidAndDocumentsTheDefaults) {
  Config c;
  const auto errors = load_config(TOCSIN_SOURCE_DIR "/examples/tocsin.yaml", c);
  ASSERT_TRUE(errors.empty()) << format(errors[0], "examples/tocsin.yaml");
  const Config defaults;
  EXPECT_TRUE(c.embedded_broker());
  EXPECT_EQ(c.kafka.group_id, defaults.kafka.group_id);
  EXPECT_EQ(c.kafka.topics.input, defaults.kafka.topics.input);
  EXPECT_EQ(c.kafka.topics.dead_letter, defaults.kafka.topics.dead_letter);
  EXPECT_EQ(c.pipeline.workers, defaults.pipeline.workers);
  EXPECT_EQ(c.pipeline.limits.max_event_bytes, defaults.pipeline.limits.max_event_bytes);
  EXPECT_EQ(c.pipeline.limits.max_future_skew_ms, defaults.pipeline.limits.max_future_skew_ms);
  EXPECT_EQ(c.http_listen, defaults.http_listen);
  // Relative to the config file: the first-slice rules and the hotline pack.
  EXPECT_EQ(c.rule_paths, (std::vector<std::string>{TOCSIN_SOURCE_DIR "/examples/rules",
                                                    TOCSIN_SOURCE_DIR "/examples/packs/hotline/rules.yaml",
                                                    TOCSIN_SOURCE_DIR "/examples/packs/hotline/calendar.yaml"}));
}

TEST(Config, ReadsEverySection) {
  Config c;
  const auto errors = parse_config(R"(kafka:
  bootstrap.servers: "k1:9092,k2:9092"
  group.id: city
  topics: {calls: cdr, alerts: out}
  properties: {security.protocol: plaintext}
  consumer: {fetch.wait.max.ms: "10"}
  producer: {linger.ms: "2"}
pipeline: {workers: 4, max_event_bytes: 1024, max_future_skew: 5m, poll_timeout: 20ms}
demo: {enabled: false, rate: 50, seed: 7}
http: {listen: "0.0.0.0:8080"}
)", "", c);
  ASSERT_TRUE(errors.empty()) << format(errors[0], "x");
  EXPECT_FALSE(c.embedded_broker());
  EXPECT_EQ(c.kafka.bootstrap, "k1:9092,k2:9092");
  EXPECT_EQ(c.kafka.group_id, "city");
  EXPECT_EQ(c.kafka.topics.input[0], "cdr");
  EXPECT_EQ(c.kafka.topics.input[1], "faults");
  EXPECT_EQ(c.kafka.topics.alerts, "out");
  EXPECT_EQ(c.kafka.common.at("security.protocol"), "plaintext");
  EXPECT_EQ(c.kafka.consumer.at("fetch.wait.max.ms"), "10");
  EXPECT_EQ(c.kafka.producer.at("linger.ms"), "2");
  EXPECT_EQ(c.pipeline.workers, 4);
  EXPECT_EQ(c.pipeline.limits.max_event_bytes, 1024u);
  EXPECT_EQ(c.pipeline.limits.max_future_skew_ms, 300000);
  EXPECT_EQ(c.pipeline.poll_timeout_ms, 20);
  EXPECT_FALSE(c.demo.enabled);
  EXPECT_EQ(c.demo.seed, 7u);
  EXPECT_EQ(c.http_listen, "0.0.0.0:8080");
}

TEST(Config, EveryErrorNamesItsPathAndLine) {
  Config c;
  const auto errors = parse_config(R"(pipeline:
  workers: lots
  bogus: 1
kafka:
  topics: {calls: same, faults: same}
  consumer:
    fetch.wait.max.ms: soon
  properties: {group.id: x}
http:
  listen: nowhere
rules:
  files: [no/such/dir]
log: {level: loud}
)", "/etc/tocsin.yaml", c);
  ASSERT_EQ(errors.size(), 8u);
  auto find = [&](const std::string& path) -> const ConfigError& {
    for (const auto& e : errors)
      if (e.path == path) return e;
    ADD_FAILURE() << "no error for " << path;
    return errors[0];
  };
  EXPECT_EQ(find("pipeline.workers").line, 2);
  EXPECT_NE(find("pipeline.workers").message.find("whole number"), std::string::npos);
  EXPECT_EQ(find("pipeline.bogus").line, 3);
  EXPECT_NE(find("pipeline.bogus").message.find("workers"), std::string::npos) << "lists the valid keys";
  EXPECT_EQ(find("kafka.topics.faults").line, 5);
  EXPECT_EQ(find("kafka.consumer.fetch.wait.max.ms").line, 7);
  EXPECT_EQ(find("kafka").message.find("group.id") != std::string::npos, true);
  EXPECT_EQ(find("http.listen").line, 10);
  EXPECT_EQ(find("rules.files[0]").line, 12);
  EXPECT_NE(find("rules.files[0]").message.find("/etc/no/such/dir"), std::string::npos) << "relative to the file";
  EXPECT_EQ(find("log.level").line, 13);
  EXPECT_EQ(format(find("log.level"), "/etc/tocsin.yaml").rfind("/etc/tocsin.yaml:13:", 0), 0u);
}

TEST(Config, SyntaxErrorHasALine) {
  Config c;
  const auto errors = parse_config("pipeline:\n  workers: [1\n", "f.yaml", c);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].line, 3);
  EXPECT_NE(errors[0].message.find("YAML syntax"), std::string::npos);
}

TEST(Config, MissingFile) {
  Config c;
  const auto errors = load_config("/no/such/tocsin.yaml", c);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].message.find("cannot read"), std::string::npos);
}

TEST(Config, HostPort) {
  std::string h;
  uint16_t p;
  EXPECT_TRUE(split_host_port("127.0.0.1:0", h, p));
  EXPECT_EQ(h, "127.0.0.1");
  EXPECT_EQ(p, 0);
  EXPECT_FALSE(split_host_port("127.0.0.1:99999", h, p));
  EXPECT_FALSE(split_host_port(":80", h, p));
  EXPECT_FALSE(split_host_port("host", h, p));
}

TEST(Config, ReadsTables) {
  Config c;
  const auto errors = parse_config(R"(tables:
  - name: risky_numbers
    key_normalization: phone
    columns: [{name: number, type: string}, {name: risk_level, type: int}, {name: score, type: double}, {name: active, type: bool}]
    file: risky_numbers.csv
    topic: tocsin.risky_numbers
    reload: true
  - name: watch
    columns: [{name: id}]
    topic: tocsin.watch
)", TOCSIN_SOURCE_DIR "/examples/tables/any.yaml", c);
  ASSERT_TRUE(errors.empty()) << format(errors[0], "x");
  ASSERT_EQ(c.tables.size(), 2u);
  const auto& t = c.tables[0];
  EXPECT_EQ(t.schema.name, "risky_numbers");
  EXPECT_EQ(t.schema.key, rules::KeyNormalization::kPhone);
  ASSERT_EQ(t.schema.columns.size(), 4u);
  EXPECT_EQ(t.schema.columns[1], (std::pair<std::string, rules::Type>{"risk_level", rules::Type::kInt}));
  EXPECT_EQ(t.schema.columns[2].second, rules::Type::kDouble);
  EXPECT_EQ(t.schema.columns[3].second, rules::Type::kBool);
  EXPECT_EQ(t.file, TOCSIN_SOURCE_DIR "/examples/tables/risky_numbers.csv");  // relative to the config file
  EXPECT_EQ(t.topic, "tocsin.risky_numbers");
  EXPECT_TRUE(t.reload);
  EXPECT_EQ(c.tables[1].schema.key, rules::KeyNormalization::kNone);
  EXPECT_EQ(c.tables[1].schema.columns[0].second, rules::Type::kString);  // the default type
  EXPECT_TRUE(c.tables[1].file.empty());
  const auto catalog = table_catalog(c);
  EXPECT_EQ(catalog.index_of("watch"), 1);
}

TEST(Config, TableErrorsNameTheirPathAndLine) {
  Config c;
  const auto errors = parse_config(R"(kafka:
  topics: {alerts: out}
tables:
  - name: risky numbers
    key_normalization: e164
    columns: [{name: number, type: int}, {name: level, type: float}, {name: level}]
    file: missing.csv
    reload: true
  - name: t2
    columns: []
    topic: out
    colour: red
  - name: t3
    columns: [{name: k}]
    file: risky_numbers.txt
  - columns: [{name: k}]
    reload: true
)", TOCSIN_SOURCE_DIR "/examples/tables/any.yaml", c);
  auto find = [&](const std::string& path) -> const ConfigError& {
    for (const auto& e : errors)
      if (e.path == path) return e;
    ADD_FAILURE() << "no error for " << path;
    return errors[0];
  };
  EXPECT_EQ(find("tables[0].name").line, 4);
  EXPECT_EQ(find("tables[0].key_normalization").line, 5);
  EXPECT_NE(find("tables[0].columns[0].type").message.find("the key and must be a string"), std::string::npos);
  EXPECT_EQ(find("tables[0].columns[1].type").message, "must be string, int, double or bool");
  EXPECT_NE(find("tables[0].columns[2].name").message.find("declared twice"), std::string::npos);
  EXPECT_EQ(find("tables[0].file").line, 7);
  EXPECT_NE(find("tables[0].file").message.find("does not exist"), std::string::npos);
  EXPECT_NE(find("tables[1].columns").message.find("non-empty list"), std::string::npos);
  EXPECT_NE(find("tables[1].topic").message.find("already a stream or output topic"), std::string::npos);
  EXPECT_EQ(find("tables[1].colour").line, 12);
  EXPECT_NE(find("tables[2].file").message.find(".csv or .jsonl"), std::string::npos);
  EXPECT_EQ(find("tables[3]").line, 16);
  EXPECT_NE(find("tables[3].reload").message.find("has no file"), std::string::npos);
  EXPECT_NE(find("tables[3]").message.find("needs a name"), std::string::npos);
  EXPECT_EQ(errors.size(), 13u);
  for (const auto& e : errors) EXPECT_GT(e.line, 0) << e.path;
}

TEST(Config, ExampleTablesConfigIsValidAndItsRulesCompile) {
  Config c;
  const auto errors = load_config(TOCSIN_SOURCE_DIR "/examples/tables/tocsin.yaml", c);
  ASSERT_TRUE(errors.empty()) << format(errors[0], "examples/tables/tocsin.yaml");
  ASSERT_EQ(c.tables.size(), 4u);
  const auto catalog = table_catalog(c);
  rules::TableRegistry registry(catalog);
  for (const auto& t : c.tables) EXPECT_TRUE(registry.load_file(t.schema.name, t.file).empty()) << t.file;
  const auto loaded = rules::load_rule_files(c.rule_paths, &catalog);
  for (const auto& d : loaded.diagnostics) ADD_FAILURE() << rules::format_text(d);
  EXPECT_TRUE(loaded.ok());
}

}  // namespace
}  // namespace tocsin::app

#include "app/daemon.h"

namespace tocsin::app {
namespace {

TEST(PartitionWarnings, NameRulesKeyedOffTheirPartitionKey) {
  const auto loaded = rules::load_rules({{"p.yaml", R"(rules:
  - id: by_caller
    stream: calls
    window: {group_by: [caller], size: 1h}
    having: count > 1
    alert: {severity: low}
  - id: by_building
    stream: complaints
    window: {group_by: [building], size: 2h}
    having: count > 1
    alert: {severity: low}
  - id: sla
    stream: complaints
    absence: {key: [ticket_id], start: {on: [signed]}, deadlines: [{name: c, after: 1h, until: {on: [contacted]}}]}
    alert: {severity: low}
  - id: profile_by_number
    stream: profiles
    window: {group_by: [number], size: 30d}
    having: count > 1
    alert: {severity: low}
  - id: profile_by_devices
    stream: profiles
    window: {group_by: [imeis], size: 30d}
    having: count > 1
    alert: {severity: low}
)"}});
  ASSERT_TRUE(loaded.ok());
  const auto w = partition_warnings(*loaded.rules);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_NE(w[0].find("'by_building'"), std::string::npos) << w[0];
  EXPECT_NE(w[0].find("p.yaml:7"), std::string::npos) << w[0];
  EXPECT_NE(w[0].find("ticket_id"), std::string::npos) << w[0];
  EXPECT_NE(w[1].find("'profile_by_devices'"), std::string::npos) << w[1];
  EXPECT_NE(w[1].find("(number)"), std::string::npos) << w[1];
}

TEST(Config, ProfilesTopic) {
  Config defaults;
  EXPECT_EQ(defaults.kafka.topics.input[static_cast<size_t>(Stream::kProfiles)], "profiles");
  Config c;
  auto errors = parse_config("kafka: {topics: {profiles: number-profiles}}\n", "", c);
  ASSERT_TRUE(errors.empty()) << format(errors[0], "x");
  EXPECT_EQ(c.kafka.topics.input[static_cast<size_t>(Stream::kProfiles)], "number-profiles");
  Config d;
  errors = parse_config("kafka: {topics: {calls: cdr, profiles: cdr}}\n", "", d);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].message.find("used twice"), std::string::npos) << errors[0].message;
}

}  // namespace
}  // namespace tocsin::app
