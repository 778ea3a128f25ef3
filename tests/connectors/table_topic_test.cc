#include "connectors/table_topic.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "connectors/embedded_broker.h"
#include "connectors/kafka_io.h"

namespace tocsin::connectors {
namespace {

using namespace std::chrono_literals;
using rules::KeyNormalization;
using rules::Type;

// Polls `done` until it holds or the deadline passes.
template <class F>
bool eventually(F done, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

rules::TableCatalog catalog() {
  return {{{"risky_numbers", {{"number", Type::kString}, {"risk_level", Type::kInt}, {"source", Type::kString}}, KeyNormalization::kPhone},
           {"buildings", {{"building", Type::kString}, {"district", Type::kString}}}}};
}

class TableTopicTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker.create_topic("tocsin.risky_numbers", 3);
    kafka.bootstrap = broker.bootstrap();
    apply_embedded_defaults(kafka);
  }
  // The risk level of `number`, or -1 when the table does not have it.
  int level(const char* number) const {
    const Value* row = registry.snapshot()->find(0, number);
    return row ? static_cast<int>(row[1].i) : -1;
  }
  size_t rows() const { return registry.snapshot()->size(0); }

  EmbeddedBroker broker{1};
  KafkaOptions kafka;
  rules::TableRegistry registry{catalog()};
};

TEST_F(TableTopicTest, ReadsFromTheBeginningAndFollowsUpsertsAndTombstones) {
  KafkaProducer producer(kafka);
  producer.produce("tocsin.risky_numbers", "17065643907", R"({"risk_level":1,"source":"first"})");
  producer.produce("tocsin.risky_numbers", "+86 171 6564 3907", R"({"risk_level":2})");
  producer.produce("tocsin.risky_numbers", "17018902012", R"({"risk_level":3})");
  producer.produce("tocsin.risky_numbers", "170-6564-3907", R"({"risk_level":3,"source":"later"})");  // same key: latest wins
  producer.produce("tocsin.risky_numbers", "17018902012", {});                                    // tombstone
  producer.produce("tocsin.risky_numbers", "17072160117", R"({"risk_level":"high"})");          // bad value
  producer.produce("tocsin.risky_numbers", "not a number", R"({"risk_level":1})");              // bad key
  producer.produce("tocsin.risky_numbers", "17025418222", "{not json");                         // bad value
  ASSERT_EQ(producer.flush(10000), 0);

  TableTopicReader reader(kafka, "tocsin.risky_numbers", "risky_numbers", registry);
  reader.start();
  ASSERT_TRUE(reader.wait_caught_up(20s));
  EXPECT_EQ(rows(), 2u);
  EXPECT_EQ(level("17065643907"), 3);
  EXPECT_EQ(registry.snapshot()->find(0, "17065643907")[2].s, "later");
  EXPECT_EQ(level("17165643907"), 2);
  EXPECT_EQ(level("17018902012"), -1);
  EXPECT_EQ(reader.stats().records.load(), 8u);
  EXPECT_EQ(reader.stats().tombstones.load(), 1u);
  EXPECT_EQ(reader.stats().bad_records.load(), 3u);

  // Live: the reader keeps following the topic.
  producer.produce("tocsin.risky_numbers", "17078606706", R"({"risk_level":2})");
  producer.produce("tocsin.risky_numbers", "+86 170 6564 3907", {});
  ASSERT_EQ(producer.flush(10000), 0);
  ASSERT_TRUE(eventually([&] { return level("17078606706") == 2 && level("17065643907") == -1; }));
  EXPECT_EQ(rows(), 2u);
  reader.stop();
}

TEST_F(TableTopicTest, EmptyTopicCatchesUpAtOnceAndUnknownTablesAreRefused) {
  TableTopicReader reader(kafka, "tocsin.risky_numbers", "risky_numbers", registry);
  reader.start();
  EXPECT_TRUE(reader.wait_caught_up(20s));
  EXPECT_EQ(rows(), 0u);
  EXPECT_THROW(TableTopicReader(kafka, "tocsin.risky_numbers", "nope", registry), std::invalid_argument);
}

TEST(TableFileWatcher, ReloadsChangedFilesAndKeepsContentsOnErrors) {
  const auto dir = std::filesystem::temp_directory_path() / ("tocsin_watch_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "buildings.csv").string();
  auto write = [&](const std::string& text) {
    const std::string tmp = path + ".tmp";
    std::ofstream(tmp) << text;
    std::filesystem::rename(tmp, path);  // as an operator's tooling should: never half-written
  };
  write("building,district\nB-1,D1\n");
  rules::TableRegistry registry(catalog());
  ASSERT_TRUE(registry.load_file("buildings", path).empty());
  auto district = [&](const char* b) -> std::string {
    const Value* row = registry.snapshot()->find(1, b);
    return row ? std::string(row[1].s) : "";
  };
  EXPECT_EQ(district("B-1"), "D1");

  TableFileWatcher watcher(registry, {{"buildings", path}}, 10ms);
  watcher.start();
  write("building,district\nB-1,D2\nB-2,D3\n");
  ASSERT_TRUE(eventually([&] { return district("B-2") == "D3"; }));
  EXPECT_EQ(district("B-1"), "D2");
  EXPECT_EQ(watcher.reloads(), 1u);

  write("building,district\nB-1,D4\nB-2\n");  // bad: the previous contents stay
  ASSERT_TRUE(eventually([&] { return watcher.failures() == 1u; }));
  EXPECT_EQ(district("B-1"), "D2");

  write("building,district\nB-9,D9\n");
  ASSERT_TRUE(eventually([&] { return district("B-9") == "D9"; }));
  EXPECT_EQ(district("B-1"), "");
  watcher.stop();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tocsin::connectors
