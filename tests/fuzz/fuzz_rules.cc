// libFuzzer target for the rule loader: the input is the text of one rule file.
//
// Loading must never crash or throw, whatever the text: errors become
// diagnostics. Every diagnostic is formatted (text and JSON), and when a rule
// set results, every rule's where/having expression is evaluated against an
// event of the rule's stream (once with every field absent, once with every
// field present with a neutral value of its type) to exercise evaluation of
// whatever the compiler accepted.
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "pipeline/event.h"
#include "rules/rule_set.h"

namespace {

using namespace tocsin;
using namespace tocsin::rules;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_rules: invariant violated: %s\n", what);
  std::abort();
}

Event neutral_event(Stream stream, bool present) {
  Event e;
  e.stream = stream;
  const StreamSchema& schema = schema_of(stream);
  e.kind = schema.kind_slot >= 0 ? 0 : -1;
  for (size_t i = 0; i < schema.fields.size(); ++i) {
    Value& v = e.slots[i];
    v.type = schema.fields[i].type;
    v.present = present;
    if (present && v.type == FieldType::kString)
      v.s = static_cast<int>(i) == schema.kind_slot ? schema.kinds[0] : std::string_view("x");
  }
  return e;
}

void evaluate(const Rule& rule) {
  for (const bool nan : {false, true}) {
    std::vector<double> values(rule.value_count() + 1, nan ? std::nan("") : 0.0);
    for (const bool present : {false, true}) {
      const Event e = neutral_event(rule.stream(), present);
      const Event t = neutral_event(rule.then.stream, present);
      const EvalContext ctx{&e, values.data(), &e};
      for (const auto* m : {&rule.match, &rule.then}) {
        if (!m->where) continue;
        volatile bool b = m->where->test(m == &rule.then ? EvalContext{&t, values.data(), &e} : ctx);
        (void)b;
        if (m->where->text().size() > (1u << 20)) fail("absurd expression text");
      }
      for (const auto& d : rule.deadlines)
        if (d.until.where) { volatile bool b = d.until.where->test(ctx); (void)b; }
      if (rule.score)
        for (const auto& f : rule.score->features) { volatile double v = f.value->number(ctx); (void)v; }
      if (rule.having) { volatile bool b = rule.having->test(ctx); (void)b; }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  const LoadResult r = load_rules({{"fuzz.yaml", std::move(text)}});

  bool any_error = false;
  for (const Diagnostic& d : r.diagnostics) {
    const std::string t = format_text(d);
    if (t.empty()) fail("empty formatted diagnostic");
    if (d.file != "fuzz.yaml") fail("diagnostic names another file");
    any_error |= d.level == Diagnostic::Level::kError;
  }
  const std::string j = format_json(r.diagnostics);
  if (j.empty() || j.front() != '[' || j.back() != ']') fail("format_json is not an array");

  if (r.ok() == any_error) fail("a rule set must result exactly when there is no error");
  if (r.ok()) {
    const RuleSet& set = *r.rules;
    if (set.version.size() != 16) fail("version is not 16 hex digits");
    for (const Rule& rule : set.rules) {
      if (rule.windowed() && !rule.having) fail("windowed rule without having");
      if (rule.score && rule.score->features.size() > static_cast<size_t>(kMaxFeatures)) fail("too many features");
      if (rule.aggregates.size() > static_cast<size_t>(kMaxAggregates)) fail("too many aggregates");
      evaluate(rule);
    }
  }
  return 0;
}
