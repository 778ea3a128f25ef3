// The hot path must not allocate: this executable replaces the global
// operator new with a counting one (its own binary, so no other test is
// affected) and evaluates in_table() / lookup() against a snapshot, matches(),
// sequence steps that come and go on a bounded set of keys, and absence
// clocks that start, are met or fire, and end.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "rules/engine.h"
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

class CountingSink final : public SignalSink {
 public:
  void on_signal(const Signal&) override { ++signals; }
  uint64_t signals = 0;
};

// An engine over the rules in `yaml` that counts its signals.
struct CountingEngine {
  explicit CountingEngine(const char* yaml) {
    const auto loaded = load_rules({{"t.yaml", yaml}});
    EXPECT_TRUE(loaded.ok()) << (loaded.ok() ? "" : format_text(loaded.diagnostics.front()));
    if (loaded.ok()) engine = std::make_unique<Engine>(loaded.rules, sink);
  }
  CountingSink sink;
  std::unique_ptr<Engine> engine;
};

size_t slot_of(Stream s, std::string_view field) { return static_cast<size_t>(schema_of(s).slot_of(field)); }

// Once a sequence rule's keys and steps have been seen, later `first` steps
// reuse the storage of finished ones: a key's entry, its list of steps and
// each step's packed event.
TEST(Sequences, StepsComeAndGoWithoutAllocating) {
  CountingEngine counted(R"(rules:
  - id: seq
    sequence:
      within: 2h
      first: {stream: calls, where: 'caller_class == "virtual_170"', key: [callee]}
      then: {stream: calls, where: 'duration_s > 600', key: [caller]}
    alert: {severity: critical, title: "{caller} after {callee}"}
)");
  ASSERT_TRUE(counted.engine);
  Engine& engine = *counted.engine;
  const CountingSink& sink = counted.sink;
  const auto slot = [](std::string_view f) { return slot_of(Stream::kCalls, f); };
  std::vector<std::string> victims;
  for (int v = 0; v < 50; ++v) victims.push_back("1390000" + std::to_string(1000 + v));
  const std::string fraudster = "17012345678", id = "call-with-an-id-longer-than-sso";
  Event first, then;
  for (Event* e : {&first, &then}) {
    e->stream = Stream::kCalls;
    e->slots[slot("call_id")] = Value::of_string(id);
    e->slots[slot("answered")] = Value::of_bool(true);
  }
  first.slots[slot("caller")] = Value::of_string(fraudster);
  first.slots[slot("caller_class")] = Value::of_string("virtual_170");
  first.slots[slot("duration_s")] = Value::of_int(40);
  then.slots[slot("duration_s")] = Value::of_int(900);
  then.slots[slot("callee")] = Value::of_string("13700000000");
  int64_t t = 1'795'000'000'000;
  const auto round = [&] {
    for (const std::string& v : victims) {
      first.time_ms = t;
      first.slots[slot("start_time")] = Value::of_time(t);
      first.slots[slot("callee")] = Value::of_string(v);
      engine.on_event(first);
      then.time_ms = t + 60'000;
      then.slots[slot("start_time")] = Value::of_time(t + 60'000);
      then.slots[slot("caller")] = Value::of_string(v);
      engine.on_event(then);
      t += 1000;
    }
  };
  round();
  round();
  const uint64_t signals = sink.signals, before = g_allocs.load();
  for (int i = 0; i < 10; ++i) round();
  EXPECT_EQ(g_allocs.load() - before, 0u);
  EXPECT_EQ(sink.signals - signals, 10 * victims.size()) << "every pair matched";
}

// Absence clocks of ever new tickets (a hotline's usual traffic) reuse the
// entries and storage of ended ones once as many have run at once: a key, its
// packed start event, its timers' room in the queue.
TEST(AbsenceClocks, StartMeetFireAndEndWithoutAllocating) {
  CountingEngine counted(R"(rules:
  - id: contact
    stream: complaints
    absence:
      key: [ticket_id]
      start: {on: [signed]}
      deadlines: [{name: contact, after: 1h, until: {on: [contacted]}}]
    alert: {severity: high, title: "ticket {ticket_id} missed its contact deadline"}
)");
  ASSERT_TRUE(counted.engine);
  Engine& engine = *counted.engine;
  const CountingSink& sink = counted.sink;
  const StreamSchema& complaints = schema_of(Stream::kComplaints);
  const auto slot = [](std::string_view f) { return slot_of(Stream::kComplaints, f); };
  Event signed_, contacted;
  for (auto [e, status] : {std::pair{&signed_, "signed"}, std::pair{&contacted, "contacted"}}) {
    e->stream = Stream::kComplaints;
    e->kind = complaints.kind_index(status);
    e->slots[slot("status")] = Value::of_string(status);
  }
  std::vector<std::string> ids(100);
  int64_t t = 1'795'000'000'000;
  int round_no = 0;
  const auto round = [&] {  // 100 new tickets; every other one is contacted in time
    for (size_t i = 0; i < ids.size(); ++i) {
      ids[i] = "T-" + std::to_string(100000 + round_no) + "-" + std::to_string(1000 + i);  // short: no allocation
      signed_.time_ms = t;
      signed_.slots[slot("time")] = Value::of_time(t);
      signed_.slots[slot("ticket_id")] = Value::of_string(ids[i]);
      engine.on_event(signed_);
      if (i % 2 == 0) {
        contacted.time_ms = t + 60'000;
        contacted.slots[slot("time")] = Value::of_time(t + 60'000);
        contacted.slots[slot("ticket_id")] = Value::of_string(ids[i]);
        engine.on_event(contacted);
      }
      t += 1000;
    }
    t += 2 * 3'600'000;
    engine.on_tick(t);  // every deadline of the round is due: the met ones end, the others fire and end
    ++round_no;
  };
  round();
  round();
  const uint64_t signals = sink.signals;
  uint64_t allocs = 0;
  for (int i = 0; i < 10; ++i) {
    const uint64_t before = g_allocs.load();
    round();
    allocs += g_allocs.load() - before;
  }
  EXPECT_EQ(allocs, 0u);
  EXPECT_EQ(sink.signals - signals, 10 * ids.size() / 2) << "the tickets not contacted fired";
}

}  // namespace
}  // namespace tocsin::rules
