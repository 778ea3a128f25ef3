// Table lookups on the hot path must not allocate: this executable replaces
// the global operator new with a counting one (its own binary, so no other
// test is affected) and evaluates in_table() / lookup() against a snapshot.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "rules/tables.h"

namespace {
std::atomic<uint64_t> g_allocs{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace tocsin::rules {
namespace {

class CallScope final : public Scope {
 public:
  explicit CallScope(const TableCatalog& c) : c_(c) {}
  std::optional<NameRef> resolve(std::string_view name) const override {
    const int slot = schema_of(Stream::kCalls).slot_of(name);
    if (slot < 0) return std::nullopt;
    return NameRef{NameRef::kEventField, slot, Type::kString};
  }
  std::optional<TableRef> table(std::string_view name) const override { return c_.find(name); }

 private:
  const TableCatalog& c_;
};

TEST(TableLookups, DoNotAllocate) {
  const TableCatalog catalog{{
      {"risky_numbers", {{"number", Type::kString}, {"risk_level", Type::kInt}, {"source", Type::kString}}, KeyNormalization::kPhone},
      {"buildings", {{"building", Type::kString}, {"district", Type::kString}}},
  }};
  TableRegistry reg(catalog);
  std::string error;
  std::vector<TableChange> rows;
  for (int i = 0; i < 1000; ++i) {
    const std::string n = "1706564" + std::to_string(1000 + i);
    rows.push_back({n, parse_json_row(catalog.tables[0], n, R"({"risk_level":2,"source":"a long enough source text"})", error)});
  }
  ASSERT_EQ(reg.apply("risky_numbers", rows), "");
  ASSERT_EQ(reg.replace("buildings", parse_csv(catalog.tables[1], "building,district\nB-D1-S1-C1-01-with-a-long-id,D1\n", "b").rows), "");
  const CallScope scope(catalog);
  ExprError err;
  const auto e = Expr::compile(R"(in_table("risky_numbers", caller) and lookup("risky_numbers", caller, "risk_level") >= 2 and )"
                               R"(lookup("risky_numbers", caller, "source") != "" and not in_table("buildings", callee))",
                               scope, err);
  ASSERT_TRUE(e) << err.message;
  const auto snap = reg.snapshot();
  Event ev;
  const auto caller = static_cast<size_t>(schema_of(Stream::kCalls).slot_of("caller"));
  const auto callee = static_cast<size_t>(schema_of(Stream::kCalls).slot_of("callee"));
  const char* callers[] = {"+86 170-6564-1500", "17065641999", "0086 170 6564 2500", "not a number", "95588",
                           "+86 170 6564 1000 0000 0000 0000"};
  ev.slots[callee] = Value::of_string("B-D1-S1-C1-02-with-a-long-id");
  int hits = 0;
  const uint64_t before = g_allocs.load();
  for (int round = 0; round < 100; ++round)
    for (const char* c : callers) {
      ev.slots[caller] = Value::of_string(c);
      hits += e->test(EvalContext{&ev, nullptr, nullptr, snap.get()});
      hits += e->test(EvalContext{&ev, nullptr, nullptr, nullptr});
    }
  EXPECT_EQ(g_allocs.load() - before, 0u);
  EXPECT_EQ(hits, 200);  // the first two callers are listed; no tables: no hits
}

TEST(Matches, DoesNotAllocate) {
  const TableCatalog catalog;
  const CallScope scope(catalog);
  ExprError err;
  const auto e = Expr::compile(R"(matches(caller, "^95[0-9]{3}$") or matches(caller, "(?:110|120)\\d*x?$"))", scope, err);
  ASSERT_TRUE(e) << err.message;
  Event ev;
  const auto caller = static_cast<size_t>(schema_of(Stream::kCalls).slot_of("caller"));
  const char* callers[] = {"95588", "955880", "17012345678", "1101234", "x110", ""};
  int hits = 0;
  const uint64_t before = g_allocs.load();
  for (int round = 0; round < 100; ++round)
    for (const char* c : callers) {
      ev.slots[caller] = Value::of_string(c);
      hits += e->test(EvalContext{&ev});
    }
  EXPECT_EQ(g_allocs.load() - before, 0u);
  EXPECT_EQ(hits, 300);
}

}  // namespace
}  // namespace tocsin::rules
