#pragma once
// The expression language used in rule `where` and `having` clauses.
//
//   duration_s < 30 and answered and not starts_with(callee, "96110")
//   caller_class in ["virtual_170", "international"] or matches(display_number, "^95[0-9]{3}$")
//   strangers >= 20 and calls / 1h > 0.5
//
// Compiled once at load time: names are resolved to event slots or aggregate
// indices, types are checked (comparing a string to a number is a load
// error), constants are folded and regular expressions compiled. A compiled
// Expr is immutable and may be evaluated from any thread; evaluation does not
// allocate. A missing optional field is null: arithmetic and comparisons with
// null are false/null, `x == null` and `exists(x)` test for it.
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/event.h"

namespace tocsin::rules {

enum class Type : uint8_t { kBool, kInt, kDouble, kString, kTime, kNull, kList };
std::string_view to_string(Type t);
// The expression type of an event field type.
Type type_of(FieldType t);

// What a name in an expression refers to.
struct NameRef {
  enum Kind : uint8_t {
    kEventField,  // a field of the current event
    kAggregate,   // a window aggregate (having) or a score feature
    kPriorField,  // a field of the earlier event of a sequence (`first.caller`)
  } kind;
  int index;  // event slot or aggregate index
  Type type;
};

class TableSet;  // reference tables (rules/tables.h)

// A reference table as the compiler sees it: its id in a TableSet and its
// columns with their types. Column 0 is the key.
struct TableRef {
  int id = -1;
  std::vector<std::pair<std::string, Type>> columns;
  int column(std::string_view name) const {
    for (size_t i = 0; i < columns.size(); ++i)
      if (columns[i].first == name) return static_cast<int>(i);
    return -1;
  }
};

class Scope {
 public:
  virtual ~Scope() = default;
  virtual std::optional<NameRef> resolve(std::string_view name) const = 0;
  // Tables the expression may look up; nullopt when unknown.
  virtual std::optional<TableRef> table(std::string_view name) const {
    (void)name;
    return std::nullopt;
  }
};

// Position of an error inside the expression text (0-based byte offset).
struct ExprError {
  size_t offset = 0;
  std::string code;  // e.g. "E201"
  std::string message;
};

// Values seen during evaluation.
struct EvalContext {
  const Event* event = nullptr;
  const double* aggregates = nullptr;
  const Event* prior = nullptr;      // the earlier event of a sequence
  const TableSet* tables = nullptr;  // the worker's current table snapshot
};

class Expr {
 public:
  ~Expr();
  Expr(Expr&&) noexcept;
  Expr& operator=(Expr&&) noexcept;
  // Compiles `text`. On failure returns nullopt and fills `error`.
  static std::optional<Expr> compile(std::string_view text, const Scope& scope,
                                     ExprError& error);
  Type type() const;
  // Evaluates a boolean expression; null counts as false.
  bool test(const EvalContext& ctx) const;
  // The value by the general evaluator, which test() (present and true) and
  // number() (NaN: absent) must always agree with; slower: for tests.
  Value evaluate(const EvalContext& ctx) const;
  // Evaluates a numeric expression as double (null -> NaN).
  double number(const EvalContext& ctx) const;
  const std::string& text() const;

  // Conditions every event this boolean expression holds for passes, each as
  // a one-condition Expr: the leaves of the compiled form that each way to
  // true takes with the same outcome (`a`, `b` and `not c` of
  // `a and b and not c`; none of `a or b`). Only leaves one kernel tests: a
  // field against a constant, a string test of a field, a boolean field.
  std::vector<Expr> necessary_conditions() const;
  // Whether two conditions from necessary_conditions() test the same thing
  // (false for any other expression).
  bool same_condition(const Expr& other) const;

  struct Program;  // implementation detail (expr.cc)

 private:
  explicit Expr(std::unique_ptr<Program> p);
  std::unique_ptr<Program> program_;  // immutable once compiled
  const void* steps_;                 // program_->steps.data(), read by test() directly
};

// Parses a duration such as "30s", "15m", "1h30m", "2d", "500ms" (one or more
// <number><unit> parts; units ms, s, m, h, d, w).
std::optional<int64_t> parse_duration_ms(std::string_view text);

}  // namespace tocsin::rules
