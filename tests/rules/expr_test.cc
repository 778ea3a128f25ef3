#include "rules/expr.h"

#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <random>
#include <regex>
#include <set>

#include "pipeline/decoder.h"

namespace tocsin::rules {
namespace {

class CallScope final : public Scope {
 public:
  std::optional<NameRef> resolve(std::string_view name) const override {
    if (name == "strangers") return NameRef{NameRef::kAggregate, 0, Type::kDouble};
    const int slot = schema_of(Stream::kCalls).slot_of(name);
    if (slot < 0) return std::nullopt;
    static constexpr Type kTypes[] = {Type::kString, Type::kInt, Type::kDouble, Type::kBool, Type::kTime};
    return NameRef{NameRef::kEventField, slot, kTypes[static_cast<int>(schema_of(Stream::kCalls).fields[static_cast<size_t>(slot)].type)]};
  }
};

class ExprTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(decoder.decode(Stream::kCalls,
        R"({"call_id":"c1","start_time":"2026-11-17T23:30:00Z","caller":"17012345678","callee":"13900139000",)"
        R"("duration_s":17,"answered":true,"caller_class":"virtual_170","display_number":"95588"})",
        1795000000000, event).ok());
  }
  bool eval(std::string_view text, double agg = 0) {
    ExprError err;
    auto e = Expr::compile(text, scope, err);
    EXPECT_TRUE(e.has_value()) << text << ": " << err.code << " " << err.message << " at " << err.offset;
    if (!e) return false;
    const double aggs[] = {agg};
    return e->test(EvalContext{&event, aggs});
  }
  ExprError error(std::string_view text) {
    ExprError err;
    EXPECT_FALSE(Expr::compile(text, scope, err).has_value()) << text;
    return err;
  }
  CallScope scope;
  Decoder decoder;
  Event event;
};

TEST_F(ExprTest, ComparisonsAndLogic) {
  EXPECT_TRUE(eval("duration_s < 30 and answered"));
  EXPECT_FALSE(eval("duration_s >= 30 or not answered"));
  EXPECT_TRUE(eval("!(duration_s == 18) && duration_s != 18"));
  EXPECT_TRUE(eval("duration_s * 2 + 1 == 35"));
  EXPECT_TRUE(eval("duration_s / 2 == 8.5"));
  EXPECT_TRUE(eval("duration_s % 5 == 2"));
  EXPECT_TRUE(eval("-duration_s < 0"));
  EXPECT_TRUE(eval("caller > \"1\" and caller == '17012345678'"));
}

// Random conditions over some leaves, and calls with random values of the
// fields the leaves read (absent ones included), to test them on.
class RandomConditions {
 public:
  RandomConditions(std::vector<std::string> leaves, unsigned seed) : leaves_(std::move(leaves)), rng_(seed) {}
  // `depth` levels of `not`, `and` and `or` above the leaves.
  std::string condition(int depth) {
    const int shape = depth == 0 ? 0 : std::uniform_int_distribution<int>(0, 3)(rng_);
    if (shape == 0) return pick(leaves_);
    if (shape == 1) return "not (" + condition(depth - 1) + ")";
    return "(" + condition(depth - 1) + (shape == 2 ? " and " : " or ") + condition(depth - 1) + ")";
  }
  Event call(const Event& base) {
    const auto slot = [](std::string_view name) { return static_cast<size_t>(schema_of(Stream::kCalls).slot_of(name)); };
    const Value absent{};
    Event ev = base;
    ev.slots[slot("duration_s")] = pick(std::vector<Value>{absent, Value::of_int(16), Value::of_int(17), Value::of_int(18),
                                                           Value::of_double(17.0) /* mistyped: the general path */});
    ev.slots[slot("answered")] = pick(std::vector<Value>{absent, Value::of_bool(true), Value::of_bool(false)});
    ev.slots[slot("caller_class")] =
        pick(std::vector<Value>{absent, Value::of_string("virtual_170"), Value::of_string("mobile")});
    ev.slots[slot("origin")] =
        pick(std::vector<Value>{absent, Value::of_string("international"), Value::of_string("domestic")});
    ev.slots[slot("display_number")] =
        pick(std::vector<Value>{absent, Value::of_string("95588"), Value::of_string("1234555")});
    return ev;
  }
  template <typename T>
  T pick(const std::vector<T>& v) {
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng_)];
  }

 private:
  std::vector<std::string> leaves_;
  std::mt19937 rng_;
};

// A comparison of a field or an aggregate with a constant is one step of its own
// (Program::leaf); `x + 0` keeps the general path. Both must agree,
// absent (NaN) aggregates included.
TEST_F(ExprTest, StepsAgreeWithTheGeneralEvaluator) {
  RandomConditions random(
      {"answered", "duration_s < 17", "duration_s <= 17", "duration_s == 17", "duration_s != 17", "duration_s > 17",
       "duration_s >= 17", "duration_s > 16.5", "duration_s <= 17.0", "duration_s != 17.0", "start_time > 1795000000000",
       R"(caller_class == "virtual_170")", R"(caller_class != "mobile")", R"(origin == "international")",
       R"(caller_class in ["virtual_170", "international"])", R"(origin not in ["domestic"])", "duration_s in [1, 17]",
       R"(starts_with(callee, "139"))", R"(ends_with(caller, "678"))", R"(contains(display_number, "55"))",
       "strangers >= 3", "strangers != 3", "strangers < 2.5", "strangers == 3", R"(matches(display_number, "^95"))",
       "hour_of_day(start_time, 8h) < 8", R"(caller > "1")", "answered == true", "duration_s + 0 > 10",
       "sim_activated_at < start_time", "cell_id == null", "true", "false"},
      7);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  int held = 0, checked = 0;
  for (int i = 0; i < 1500; ++i) {
    const std::string text = random.condition(4);
    ExprError err;
    const auto e = Expr::compile(text, scope, err);
    ASSERT_TRUE(e) << text << ": " << err.code << " " << err.message;
    for (int j = 0; j < 20; ++j) {
      const Event ev = random.call(event);
      const double aggs[] = {random.pick(std::vector<double>{nan, 2, 3, 4})};
      const EvalContext ctx{&ev, aggs};
      const bool got = e->test(ctx);
      const Value want = e->evaluate(ctx);
      ASSERT_EQ(got, want.present && want.b) << text << " with strangers " << aggs[0];
      held += got;
      ++checked;
    }
  }
  EXPECT_GT(held, checked / 10);  // both answers were exercised
  EXPECT_LT(held, checked * 9 / 10);
}

// A condition from necessary_conditions() holds whenever its expression does
// (the engine skips a rule whose condition fails without evaluating it).
TEST_F(ExprTest, NecessaryConditionsHoldWheneverTheExpressionDoes) {
  RandomConditions random(
      {"answered", "duration_s < 17", "duration_s >= 17", "duration_s > 16.5", R"(caller_class == "virtual_170")",
       R"(origin != "domestic")", R"(caller_class in ["virtual_170", "international"])",
       R"(starts_with(display_number, "95"))", R"(matches(display_number, "^95"))", "duration_s + 0 > 10"},
      11);
  size_t found = 0, held = 0;
  for (int i = 0; i < 1500; ++i) {
    const std::string text = random.condition(3);
    ExprError err;
    const auto e = Expr::compile(text, scope, err);
    ASSERT_TRUE(e) << text << ": " << err.code << " " << err.message;
    const std::vector<Expr> conditions = e->necessary_conditions();
    found += conditions.size();
    for (int j = 0; j < 20; ++j) {
      const Event ev = random.call(event);
      const EvalContext ctx{&ev};
      if (!e->test(ctx)) continue;
      ++held;
      for (const Expr& c : conditions) ASSERT_TRUE(c.test(ctx)) << text << ": its condition failed";
    }
  }
  EXPECT_GT(found, 1000u);  // the property was exercised
  EXPECT_GT(held, 3000u);
}

TEST_F(ExprTest, NecessaryConditionsAreTheConjunctsOneKernelTests) {
  const auto conditions = [this](std::string_view text) {
    ExprError err;
    auto e = Expr::compile(text, scope, err);
    EXPECT_TRUE(e) << text;
    return e ? e->necessary_conditions() : std::vector<Expr>{};
  };
  EXPECT_EQ(conditions("duration_s < 30 and answered").size(), 2u);
  EXPECT_EQ(conditions("duration_s < 30 or answered").size(), 0u);
  EXPECT_EQ(conditions(R"(matches(display_number, "^95") and duration_s + 0 > 1)").size(), 0u);  // no kernel
  EXPECT_EQ(conditions("not (duration_s < 30 or answered)").size(), 2u);
  const auto one = conditions("(duration_s > 600 or answered) and not answered");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_FALSE(one[0].test(EvalContext{&event}));  // `not answered`, and the event was answered

  // The same test of the same field against the same constant, whatever the rest.
  const auto a = conditions(R"(caller_class in ["virtual_170", "international"] and duration_s > 0)");
  const auto b = conditions(R"(duration_s > 100 and caller_class in ["virtual_170", "international"])");
  const auto c = conditions(R"(caller_class in ["virtual_170", "mobile"] and not answered)");
  const auto d = conditions("answered and duration_s > 0");
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  ASSERT_EQ(c.size(), 2u);
  ASSERT_EQ(d.size(), 2u);
  const auto shares = [](const std::vector<Expr>& x, const std::vector<Expr>& y) {
    size_t n = 0;
    for (const Expr& p : x)
      for (const Expr& q : y) n += p.same_condition(q);
    return n;
  };
  EXPECT_EQ(shares(a, b), 1u);  // the list; not duration_s > 0 and > 100
  EXPECT_EQ(shares(a, c), 0u);  // another list
  EXPECT_EQ(shares(a, d), 1u);  // duration_s > 0
  EXPECT_EQ(shares(c, d), 0u);  // `not answered` is not `answered`
  EXPECT_EQ(shares(c, c), 2u);
  ExprError err;
  const auto two = Expr::compile("answered and duration_s > 0", scope, err);
  ASSERT_TRUE(two);
  EXPECT_FALSE(two->same_condition(d[0])) << "an expression of two tests is no condition";
}

// number() reads the shapes scores use (an aggregate, a field, a constant, or
// one double-typed operation on two of them) without the general evaluator:
// with absent (NaN) aggregates, absent fields and zero divisors it must agree with it.
TEST_F(ExprTest, ArithmeticAgreesWithTheGeneralEvaluator) {
  const std::vector<std::string> operands = {"strangers", "duration_s", "20", "0", "2.5", "sim_activated_at - start_time"};
  std::vector<std::string> texts = operands;
  for (const auto& x : operands)
    for (const auto& y : operands)
      for (const char* op : {" + ", " - ", " * ", " / ", " % "}) texts.push_back(x + op + y);
  const size_t duration = static_cast<size_t>(schema_of(Stream::kCalls).slot_of("duration_s"));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  int compiled = 0;
  for (const std::string& text : texts) {
    ExprError err;
    const auto e = Expr::compile(text, scope, err);
    if (!e) continue;  // e.g. time arithmetic without meaning
    ++compiled;
    for (const Value& d : {Value{}, Value::of_int(0), Value::of_int(17)}) {
      for (double agg : {nan, 0.0, 3.0, -2.5}) {
        Event ev = event;
        ev.slots[duration] = d;
        const double aggs[] = {agg};
        const EvalContext ctx{&ev, aggs};
        const Value want = e->evaluate(ctx);
        const double got = e->number(ctx);
        if (!want.present) {
          EXPECT_TRUE(std::isnan(got)) << text << " with strangers " << agg;
        } else {
          const double w = want.type == FieldType::kDouble ? want.d : static_cast<double>(want.i);
          EXPECT_TRUE(got == w || (std::isnan(got) && std::isnan(w))) << text << ": " << got << " != " << w;
        }
      }
    }
  }
  EXPECT_GT(compiled, 150);
}

TEST_F(ExprTest, ListsAndStrings) {
  EXPECT_TRUE(eval(R"(caller_class in ["virtual_170", "international"])"));
  EXPECT_FALSE(eval(R"(caller_class not in ["virtual_170"])"));
  EXPECT_TRUE(eval(R"(duration_s in [1, 17, 30])"));
  EXPECT_TRUE(eval(R"(starts_with(caller, "170") and ends_with(callee, "000") and contains(callee, "0139"))"));
  EXPECT_TRUE(eval(R"(matches(display_number, "^95[0-9]{3}$"))"));
  EXPECT_FALSE(eval(R"(matches(callee, "^95[0-9]{3}$"))"));
  EXPECT_TRUE(eval("len(caller) == 11"));
}

// matches() runs on its own linear-time matcher: it must agree with std::regex_search,
// and a pattern it cannot run is a load error (E207), never a silent difference.
// (Short texts: std::regex backtracks exponentially on patterns like ^(a*)*$.)
TEST_F(ExprTest, MatchesAgreesWithStdRegex) {
  const char* patterns[] = {
      "^95[0-9]{3}$", "95", "^$", "", "a|b", "^(ab|cd)+$", "(?:x|y)*z", "a.c", "^a.*c$", "[^0-9]+",
      "\\d{2,4}", "\\D", "\\w+@\\w+\\.com$", "\\s", "\\S+", "^[a-f0-9-]{8,}$", "colou?r", "a{2}b{0,1}c{1,}",
      "^(a*)*$", "(a|)+b", "[]a]", "[.]", "\\.", "a+?b", "x??y", "^\\+?[0-9]{3,20}$", "[a\\-z]", "[\\d_]",
      "ab\\b", "\\x41", "(?=a)a", "(a)\\1", "[[:digit:]]", "^\\(170\\)", "a{,3}", "\\bcd\\b", "\\Bb",
      "^\\b$", "\\x2B86", "a\\fb\\v", "(?!a)b", "[]a]"};
  // Valid ECMAScript that matches() refuses with E207 (back-references, look-around, classes it does not read).
  const std::set<std::string> refused = {"(?=a)a", "(a)\\1", "[[:digit:]]", "(?!a)b", "[]a]"};
  const char* texts[] = {"", "a", "b", "95588", "955880", "x95123", "abcd", "abab", "abc", "a\nc", "A-c",
                         "colour", "color", "aab", "aabcc", "bc", "zz", "xyzz", "user@host.com", "user@host.co",
                         "+8613800138000", "3f2a-00bc", "]", ".", "a-z", "_", "(170)1", "aaaaaa!",
                         "a\r", " \t", "\xe4\xb8\xad\xe6\x96\x87", "ab cd"};
  const size_t slot = static_cast<size_t>(schema_of(Stream::kCalls).slot_of("display_number"));
  for (const char* pattern : patterns) {
    std::optional<std::regex> re;
    try {
      re.emplace(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error&) {
    }
    std::string text = "matches(display_number, \"";
    for (const char* c = pattern; *c; ++c) {
      if (*c == '\\' || *c == '"') text += '\\';
      text += *c;
    }
    text += "\")";
    ExprError err;
    const auto e = Expr::compile(text, scope, err);
    if (!re) {
      EXPECT_FALSE(e) << pattern;
      EXPECT_EQ(err.code, "E205") << pattern;
      continue;
    }
    if (refused.count(pattern)) {
      EXPECT_FALSE(e) << pattern;
      EXPECT_EQ(err.code, "E207") << pattern << ": " << err.message;
      continue;
    }
    ASSERT_TRUE(e.has_value()) << pattern << ": " << err.code << " " << err.message;
    for (const char* t : texts) {
      event.slots[slot] = Value::of_string(t);
      EXPECT_EQ(e->test(EvalContext{&event}), std::regex_search(std::string(t), *re)) << pattern << " on '" << t << "'";
    }
  }
}

TEST_F(ExprTest, NullHandling) {
  EXPECT_FALSE(eval("cell_id == \"x\""));
  EXPECT_FALSE(eval("cell_id != \"x\"")) << "a comparison with a missing operand is false";
  EXPECT_FALSE(eval("cell_id == city")) << "two missing fields are not equal";
  EXPECT_TRUE(eval("(cell_id != null) == false and cell_id == null"));
  EXPECT_TRUE(eval("caller != null"));
  EXPECT_TRUE(eval("cell_id == null and not exists(cell_id) and exists(caller)"));
  EXPECT_FALSE(eval("sim_activated_at > start_time"));  // null compares false
  EXPECT_TRUE(eval("not (sim_activated_at > start_time)"));
}

TEST_F(ExprTest, TimeFunctionsAndDurations) {
  EXPECT_TRUE(eval("hour_of_day(start_time) == 23"));
  EXPECT_TRUE(eval("hour_of_day(start_time, 8h) == 7"));  // Beijing time
  EXPECT_TRUE(eval("day_of_week(start_time) == 2"));       // 2026-11-17 is a Tuesday
  EXPECT_TRUE(eval("start_time - 1h < start_time and 90m == 5400000 and 1h30m == 90m"));
}

TEST_F(ExprTest, Aggregates) {
  EXPECT_TRUE(eval("strangers >= 20", 25));
  EXPECT_FALSE(eval("strangers >= 20", 19));
}

TEST_F(ExprTest, TypeErrorsAreLoadErrors) {
  auto e = error("caller > 5");
  EXPECT_EQ(e.code, "E201");
  EXPECT_EQ(e.offset, 7u);
  EXPECT_EQ(error("duration_s and answered").code, "E201");
  EXPECT_EQ(error("caller + 1 > 2").code, "E201");
  EXPECT_EQ(error("caller_class in [1, 2]").code, "E201");
}

TEST_F(ExprTest, SyntaxAndNameErrors) {
  auto e = error("duration_s < ");
  EXPECT_EQ(e.code, "E102");
  e = error("callr == \"1\"");
  EXPECT_EQ(e.code, "E203");
  EXPECT_EQ(e.offset, 0u);
  EXPECT_NE(e.message.find("callr"), std::string::npos);
  EXPECT_EQ(error("duration_s < 5 5").code, "E102");
  EXPECT_EQ(error("\"abc").code, "E101");
  EXPECT_EQ(error("duration_s < 3x").code, "E101");
  EXPECT_EQ(error("matches(caller, \"[\")").code, "E205");
  EXPECT_EQ(error("nosuch(caller)").code, "E204");
  EXPECT_EQ(error("starts_with(caller)").code, "E204");
  EXPECT_EQ(error("duration_s @ 2").code, "E101");
}

TEST_F(ExprTest, ConstantsAreFolded) {
  ExprError err;
  auto e = Expr::compile("1h / 2 == 1800000 and 3 > 2", scope, err);
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->test(EvalContext{}));  // no event needed: folded to a constant
}

TEST(Duration, Parses) {
  EXPECT_EQ(parse_duration_ms("500ms"), 500);
  EXPECT_EQ(parse_duration_ms("2d"), 172800000);
  EXPECT_FALSE(parse_duration_ms("5y"));
  EXPECT_FALSE(parse_duration_ms("h"));
  EXPECT_EQ(parse_duration_ms("1h30m"), 5400000);
  EXPECT_EQ(parse_duration_ms("2d12h"), 216000000);
  EXPECT_FALSE(parse_duration_ms("1h30"));
  EXPECT_FALSE(parse_duration_ms("30"));
}

}  // namespace
}  // namespace tocsin::rules
