#include "pipeline/state_store.h"

#include <gtest/gtest.h>

namespace tocsin {
namespace {

TEST(MemoryStateStore, PutGetEraseScanByNamespace) {
  auto s = make_memory_state_store();
  s->put("timers", "b", "2");
  s->put("timers", "a", "1");
  s->put("other", "a", "x");
  std::string v;
  ASSERT_TRUE(s->get("timers", "a", v));
  EXPECT_EQ(v, "1");
  s->put("timers", "a", "3");
  ASSERT_TRUE(s->get("timers", "a", v));
  EXPECT_EQ(v, "3");
  std::string order;
  s->scan("timers", [&](std::string_view k, std::string_view val) { order += std::string(k) + "=" + std::string(val) + ";"; });
  EXPECT_EQ(order, "a=3;b=2;");
  s->erase("timers", "a");
  EXPECT_FALSE(s->get("timers", "a", v));
  EXPECT_EQ(s->size("timers"), 1u);
  EXPECT_EQ(s->size("other"), 1u);
  EXPECT_EQ(s->size("none"), 0u);
}

}  // namespace
}  // namespace tocsin
