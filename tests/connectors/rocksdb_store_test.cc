// The durable StateStore: namespaces, ordered scans, and state that outlives
// the process's handle on it.
#include "connectors/rocksdb_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

namespace tocsin::connectors {
namespace {

class RocksStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("tocsin-rocks-" + std::to_string(getpid()) + "-" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::filesystem::path dir;
};

TEST_F(RocksStoreTest, NamespacesAreSeparateAndScansOrdered) {
  auto s = open_rocksdb_state_store(dir.string());
  s->put("a", "k2", "v2");
  s->put("a", "k1", "v1");
  s->put("ab", "k0", "other namespace");
  s->put("b", "k1", std::string_view("with\0nul", 8));
  std::vector<std::string> seen;
  s->scan("a", [&](std::string_view k, std::string_view v) { seen.push_back(std::string(k) + "=" + std::string(v)); });
  EXPECT_EQ(seen, (std::vector<std::string>{"k1=v1", "k2=v2"}));
  EXPECT_EQ(s->size("a"), 2u);
  std::string v;
  ASSERT_TRUE(s->get("b", "k1", v));
  EXPECT_EQ(v, std::string("with\0nul", 8));
  s->erase("a", "k1");
  EXPECT_FALSE(s->get("a", "k1", v));
  EXPECT_FALSE(s->get("c", "k1", v));
}

TEST_F(RocksStoreTest, StateSurvivesReopening) {
  {
    auto s = open_rocksdb_state_store(dir.string());
    s->put("outbox", "n1", "submitted");
  }
  auto s = open_rocksdb_state_store(dir.string());
  std::string v;
  ASSERT_TRUE(s->get("outbox", "n1", v));
  EXPECT_EQ(v, "submitted");
}

TEST_F(RocksStoreTest, ASecondOwnerIsRefusedWithAClearMessage) {
  auto s = open_rocksdb_state_store(dir.string());
  try {
    open_rocksdb_state_store(dir.string());
    FAIL() << "a second open must fail";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("state_dir"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tocsin::connectors
