#include "rules/expr.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <regex>

#include "rules/tables.h"

namespace tocsin::rules {
namespace {

enum class Op : uint8_t {
  kConst, kField, kPriorField, kAgg, kNot, kNeg, kAnd, kOr, kAdd, kSub, kMul, kDiv, kMod,
  kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn,
  kStartsWith, kEndsWith, kContains, kMatches, kExists, kHour, kWeekday, kLen, kAbs,
  kInTable, kLookup,  // reference tables: index = table id, column = column (never folded)
};

enum class Tok : uint8_t { kEnd, kIdent, kNumber, kDuration, kString, kPunct };

struct Token {
  Tok kind = Tok::kEnd;
  std::string_view text;  // for kString: the raw text between quotes
  size_t offset = 0;
  int64_t int_value = 0;
  double double_value = 0;
  bool is_double = false;
};

bool is_numeric(Type t) { return t == Type::kInt || t == Type::kDouble || t == Type::kTime; }

Value null_value() { return Value{}; }

double as_double(const Value& v) {
  return v.type == FieldType::kDouble ? v.d : static_cast<double>(v.i);
}

// matches(): a byte-level NFA for ECMAScript patterns without back-references
// or look-around (literals, escapes, '.', classes, \d \w \s and their
// negations, ^ $ \b \B, groups, '|', * + ? {n} {n,} {n,m}, lazy or greedy), run
// as a Pike VM: matches() only asks whether a match exists, which is
// independent of ECMAScript's match priority. Runs in O(text x program) with
// scratch space on the stack: no allocation and no backtracking, so no input
// can make a rule slow. Patterns outside the subset are a load error (E207).
class Nfa {
 public:
  static constexpr size_t kMaxProgram = 1024;

  // Returns nullopt when the pattern is outside the subset or too large.
  static std::optional<Nfa> compile(std::string_view pattern) {
    Nfa nfa;
    Builder b{pattern, nfa};
    int root = b.alt();
    if (root < 0 || b.pos != pattern.size()) return std::nullopt;
    if (!b.emit(root) || !b.push({Inst::kMatch})) return std::nullopt;
    return nfa;
  }

  bool search(std::string_view s) const {
    std::array<uint16_t, kMaxProgram> a{}, b{}, stack{};
    std::array<uint64_t, kMaxProgram / 64> seen{};
    uint16_t* cur = a.data();
    uint16_t* next = b.data();
    size_t ncur = 0, nnext = 0;
    // Adds the thread at `pc` and everything reachable from it without input at `at`.
    auto add = [&](uint16_t* list, size_t& count, uint16_t pc, size_t at) {
      size_t top = 0;
      auto push = [&](uint16_t p) {  // each pc at most once per position: the stack cannot overflow
        if (seen[p >> 6] >> (p & 63) & 1) return;
        seen[p >> 6] |= 1ull << (p & 63);
        stack[top++] = p;
      };
      push(pc);
      while (top) {
        const uint16_t p = stack[--top];
        const Inst& in = prog_[p];
        switch (in.op) {
          case Inst::kMatch: return true;
          case Inst::kSet: list[count++] = p; break;
          case Inst::kJmp: push(in.x); break;
          case Inst::kSplit: push(in.y); push(in.x); break;
          case Inst::kBol: if (at == 0) push(static_cast<uint16_t>(p + 1)); break;
          case Inst::kEol: if (at == s.size()) push(static_cast<uint16_t>(p + 1)); break;
          case Inst::kWordBoundary:
          case Inst::kNotWordBoundary: {
            const bool boundary = (at > 0 && is_word(s[at - 1])) != (at < s.size() && is_word(s[at]));
            if (boundary == (in.op == Inst::kWordBoundary)) push(static_cast<uint16_t>(p + 1));
            break;
          }
        }
      }
      return false;
    };
    for (size_t i = 0;; ++i) {
      if (add(cur, ncur, 0, i)) return true;  // a match may start here
      if (i == s.size()) return false;
      seen.fill(0);
      nnext = 0;
      const auto c = static_cast<unsigned char>(s[i]);
      for (size_t t = 0; t < ncur; ++t) {
        const Inst& in = prog_[cur[t]];
        if (sets_[in.x][c >> 6] >> (c & 63) & 1)
          if (add(next, nnext, static_cast<uint16_t>(cur[t] + 1), i + 1)) return true;
      }
      std::swap(cur, next);
      ncur = nnext;
    }
  }

 private:
  struct Inst {
    enum Op : uint8_t { kSet, kJmp, kSplit, kBol, kEol, kWordBoundary, kNotWordBoundary, kMatch } op;
    uint16_t x = 0, y = 0;  // kSet: set index; kJmp: target; kSplit: both targets
  };
  using Set = std::array<uint64_t, 4>;

  struct Node {
    enum Kind : uint8_t { kSet, kCat, kAlt, kRepeat, kBol, kEol, kWordBoundary, kNotWordBoundary, kEmpty } kind;
    int a = -1, b = -1;   // kCat, kAlt: children; kRepeat: a
    int set = -1;         // kSet
    int min = 0, max = 0; // kRepeat; max -1 = unbounded
  };

  static bool is_word(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }
  static int hex(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
  }

  struct Builder {
    std::string_view p;
    Nfa& nfa;
    size_t pos = 0;
    std::vector<Node> nodes;

    bool push(Inst in) {
      if (nfa.prog_.size() >= kMaxProgram) return false;
      nfa.prog_.push_back(in);
      return true;
    }
    int node(Node n) { nodes.push_back(n); return static_cast<int>(nodes.size() - 1); }
    int set(const Set& s) { nfa.sets_.push_back(s); return node({Node::kSet, -1, -1, static_cast<int>(nfa.sets_.size() - 1)}); }
    static void add(Set& s, unsigned c) { s[c >> 6] |= 1ull << (c & 63); }
    static void add_class(Set& s, char cls) {
      Set t{};
      for (unsigned c = 0; c < 256; ++c) {
        const bool in = cls == 'd' || cls == 'D' ? (c >= '0' && c <= '9')
                        : cls == 'w' || cls == 'W' ? ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
                                                   : (c == ' ' || (c >= '\t' && c <= '\r'));
        if (in != (cls >= 'A' && cls <= 'Z')) add(t, c);
      }
      for (size_t i = 0; i < 4; ++i) s[i] |= t[i];
    }
    // An escape usable inside and outside classes: a class letter or a
    // punctuation character standing for itself. Returns false otherwise.
    bool escape(Set& s) {
      if (pos >= p.size()) return false;
      const char e = p[pos++];
      if (std::strchr("dDwWsS", e)) { add_class(s, e); return true; }
      if (e == 'n') { add(s, '\n'); return true; }
      if (e == 't') { add(s, '\t'); return true; }
      if (e == 'r') { add(s, '\r'); return true; }
      if (e == 'f') { add(s, '\f'); return true; }
      if (e == 'v') { add(s, '\v'); return true; }
      if (e == 'x' && pos + 1 < p.size() && hex(p[pos]) >= 0 && hex(p[pos + 1]) >= 0) {
        add(s, static_cast<unsigned>(hex(p[pos]) * 16 + hex(p[pos + 1])));
        pos += 2;
        return true;
      }
      if (e && std::strchr("^$\\.*+?()[]{}|/-", e)) { add(s, static_cast<unsigned char>(e)); return true; }
      return false;
    }
    int alt() {
      int l = seq();
      while (l >= 0 && pos < p.size() && p[pos] == '|') {
        ++pos;
        const int r = seq();
        if (r < 0) return -1;
        l = node({Node::kAlt, l, r});
      }
      return l;
    }
    int seq() {
      int l = node({Node::kEmpty});
      while (pos < p.size() && p[pos] != '|' && p[pos] != ')') {
        int a = atom();
        if (a < 0) return -1;
        a = quantified(a);
        if (a < 0) return -1;
        l = node({Node::kCat, l, a});
      }
      return l;
    }
    int atom() {
      const char c = p[pos++];
      switch (c) {
        case '^': return node({Node::kBol});
        case '$': return node({Node::kEol});
        case '.': {
          Set s;
          s.fill(~0ull);
          s[0] &= ~(1ull << '\n' | 1ull << '\r');
          return set(s);
        }
        case '(': {
          if (p.substr(pos, 2) == "?:") pos += 2;
          else if (pos < p.size() && p[pos] == '?') return -1;  // lookahead
          const int a = alt();
          if (a < 0 || pos >= p.size() || p[pos] != ')') return -1;
          ++pos;
          return a;
        }
        case '[': return bracket();
        case '\\': {
          if (pos < p.size() && (p[pos] == 'b' || p[pos] == 'B'))
            return node({p[pos++] == 'b' ? Node::kWordBoundary : Node::kNotWordBoundary});
          Set s{};
          return escape(s) ? set(s) : -1;
        }
        case '*': case '+': case '?': case '{': case '}': case ']': case ')': return -1;
        default: {
          Set s{};
          add(s, static_cast<unsigned char>(c));
          return set(s);
        }
      }
    }
    int bracket() {
      Set s{};
      bool negate = false;
      if (pos < p.size() && p[pos] == '^') { negate = true; ++pos; }
      bool first = true;
      while (true) {
        if (pos >= p.size()) return -1;
        char c = p[pos];
        if (c == ']' && !first) { ++pos; break; }
        if (c == ']' || c == '[') return -1;  // empty and nested classes: not supported
        first = false;
        ++pos;
        if (c == '\\') {
          if (!escape(s)) return -1;
          if (pos < p.size() && p[pos] == '-' && pos + 1 < p.size() && p[pos + 1] != ']') return -1;
          continue;
        }
        if (pos + 1 < p.size() && p[pos] == '-' && p[pos + 1] != ']') {
          const char hi = p[pos + 1];
          if (hi == '\\' || hi == '[' || static_cast<unsigned char>(hi) < static_cast<unsigned char>(c)) return -1;
          pos += 2;
          for (unsigned x = static_cast<unsigned char>(c); x <= static_cast<unsigned char>(hi); ++x) add(s, x);
          continue;
        }
        if (c == '-' && pos < p.size() && p[pos] != ']' && !first) return -1;
        add(s, static_cast<unsigned char>(c));
      }
      if (negate)
        for (auto& w : s) w = ~w;
      return set(s);
    }
    bool number(int& out) {
      const size_t start = pos;
      out = 0;
      while (pos < p.size() && p[pos] >= '0' && p[pos] <= '9') {
        out = out * 10 + (p[pos++] - '0');
        if (out > 1000) return false;
      }
      return pos > start;
    }
    int quantified(int a) {
      while (pos < p.size()) {
        int min, max;
        const char c = p[pos];
        if (c == '*') { min = 0; max = -1; ++pos; }
        else if (c == '+') { min = 1; max = -1; ++pos; }
        else if (c == '?') { min = 0; max = 1; ++pos; }
        else if (c == '{') {
          ++pos;
          if (!number(min)) return -1;
          max = min;
          if (pos < p.size() && p[pos] == ',') {
            ++pos;
            max = -1;
            if (pos < p.size() && p[pos] != '}' && (!number(max) || max < min)) return -1;
          }
          if (pos >= p.size() || p[pos] != '}') return -1;
          ++pos;
        } else {
          return a;
        }
        const Node::Kind k = nodes[static_cast<size_t>(a)].kind;
        if (k == Node::kBol || k == Node::kEol || k == Node::kWordBoundary || k == Node::kNotWordBoundary) return -1;
        if (pos < p.size() && p[pos] == '?') ++pos;  // lazy: same language
        if (pos < p.size() && (p[pos] == '*' || p[pos] == '+' || p[pos] == '?' || p[pos] == '{')) return -1;
        Node r{Node::kRepeat, a};
        r.min = min;
        r.max = max;
        a = node(r);
      }
      return a;
    }
    uint16_t here() const { return static_cast<uint16_t>(nfa.prog_.size()); }
    bool emit(int i) {
      const Node n = nodes[static_cast<size_t>(i)];
      switch (n.kind) {
        case Node::kEmpty: return true;
        case Node::kSet: return push({Inst::kSet, static_cast<uint16_t>(n.set)});
        case Node::kBol: return push({Inst::kBol});
        case Node::kEol: return push({Inst::kEol});
        case Node::kWordBoundary: return push({Inst::kWordBoundary});
        case Node::kNotWordBoundary: return push({Inst::kNotWordBoundary});
        case Node::kCat: return emit(n.a) && emit(n.b);
        case Node::kAlt: {
          const uint16_t split = here();
          if (!push({Inst::kSplit}) || !emit(n.a)) return false;
          const uint16_t jmp = here();
          if (!push({Inst::kJmp})) return false;
          nfa.prog_[split].x = static_cast<uint16_t>(split + 1);
          nfa.prog_[split].y = here();
          if (!emit(n.b)) return false;
          nfa.prog_[jmp].x = here();
          return true;
        }
        case Node::kRepeat: {
          for (int k = 0; k < n.min; ++k)
            if (!emit(n.a)) return false;
          if (n.max < 0) {  // L: split body, out; body; jmp L
            const uint16_t split = here();
            if (!push({Inst::kSplit}) || !emit(n.a) || !push({Inst::kJmp, split})) return false;
            nfa.prog_[split].x = static_cast<uint16_t>(split + 1);
            nfa.prog_[split].y = here();
            return true;
          }
          for (int k = n.min; k < n.max; ++k) {  // optional copies
            const uint16_t split = here();
            if (!push({Inst::kSplit}) || !emit(n.a)) return false;
            nfa.prog_[split].x = static_cast<uint16_t>(split + 1);
            nfa.prog_[split].y = here();
          }
          return true;
        }
      }
      return false;
    }
  };

  std::vector<Inst> prog_;
  std::vector<Set> sets_;
};

}  // namespace

std::optional<int64_t> parse_duration_ms(std::string_view t) {
  // One or more <digits><unit> parts: "30s", "1h30m", "2d12h".
  if (t.empty()) return std::nullopt;
  int64_t total = 0;
  size_t i = 0;
  while (i < t.size()) {
    const size_t d0 = i;
    int64_t n = 0;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') {
      if (n > INT64_MAX / 10 - 10) return std::nullopt;
      n = n * 10 + (t[i++] - '0');
    }
    const size_t u0 = i;
    while (i < t.size() && t[i] >= 'a' && t[i] <= 'z') ++i;
    const std::string_view unit = t.substr(u0, i - u0);
    int64_t mult;
    if (u0 == d0 || unit.empty()) return std::nullopt;  // digits and a unit, both required
    if (unit == "ms") mult = 1;
    else if (unit == "s") mult = 1000;
    else if (unit == "m") mult = 60'000;
    else if (unit == "h") mult = 3'600'000;
    else if (unit == "d") mult = 86'400'000;
    else if (unit == "w") mult = 7 * 86'400'000LL;
    else return std::nullopt;
    if (n > (INT64_MAX / 4) / mult || total > INT64_MAX / 4) return std::nullopt;
    total += n * mult;
  }
  return total;
}

Type type_of(FieldType t) {
  switch (t) {
    case FieldType::kString: return Type::kString;
    case FieldType::kInt: return Type::kInt;
    case FieldType::kDouble: return Type::kDouble;
    case FieldType::kBool: return Type::kBool;
    case FieldType::kTime: return Type::kTime;
  }
  return Type::kNull;
}

std::string_view to_string(Type t) {
  switch (t) {
    case Type::kBool: return "bool";
    case Type::kInt: return "int";
    case Type::kDouble: return "double";
    case Type::kString: return "string";
    case Type::kTime: return "time";
    case Type::kNull: return "null";
    case Type::kList: return "list";
  }
  return "?";
}

struct Expr::Program {
  struct Node {
    Op op = Op::kConst;
    Type type = Type::kNull;
    int a = -1, b = -1;
    int index = -1;  // field slot, aggregate index or regex index
    Value k;         // constant
    int column = -1;  // kLookup: the table column returned
    std::vector<Value> list;
  };
  // The program as a condition, compiled to jumping code (the short-circuit
  // code compilers emit for boolean expressions): `and`, `or` and `not` become
  // the targets of the steps, one step per other node they combine. A step's
  // kernel tests a field or aggregate against a constant from the step alone;
  // kGeneric hands its node to test(). Step 0 is the entry.
  struct Step {
    enum Kernel : uint8_t {
      kGeneric, kBool, kStrEq, kStrNe, kStrIn, kStrNotIn, kStartsWith, kEndsWith, kContains,
      kInt,                      // + kEq..kGe: an int or time field against an int or time constant
      kDouble = kInt + 6,        // + kEq..kGe: a numeric field against a number, compared as doubles
      kAggregate = kDouble + 6,  // + kEq..kGe: an aggregate (NaN: absent) against a number
    };
    // Comparisons, in Op's order: kInt + kLt is "an int field < a constant".
    static constexpr uint8_t kEq = 0, kNe = 1, kLt = 2, kLe = 3, kGt = 4, kGe = 5;
    static constexpr int32_t kTrue = -1, kFalse = -2;
    uint8_t kernel = kGeneric;
    int32_t on_true = kTrue, on_false = kFalse;  // the next step, or kTrue / kFalse
    int32_t index = 0;  // the field slot or aggregate index the kernel reads
    int32_t node = 0;   // the node, for the general path
    struct Chars { const char* p; size_t n; };
    struct Values { const Value* p; size_t n; };
    union {
      int64_t i;
      double d;
      Chars str;    // kStr*, kStartsWith, kEndsWith, kContains
      Values list;  // kStrIn, kStrNotIn: present strings only
    } k{};
  };
  // number() of the shapes scores use most, without eval(): an aggregate, a
  // numeric field or constant (op kConst), or a double-typed + - * / % of two
  // of them. NaN stands for absent, as number() returns it.
  struct Arithmetic {
    struct Operand {
      enum Source : uint8_t { kNone, kConstant, kField, kAggregate } source = kNone;
      int32_t index = 0;
      double k = 0;
      double of(const EvalContext& c) const {
        if (source == kConstant) return k;
        if (source == kAggregate) return c.aggregates[index];
        const Value& v = c.event->at(index);
        return v.present ? as_double(v) : std::numeric_limits<double>::quiet_NaN();
      }
    };
    bool fast = false;
    Op op = Op::kConst;
    Operand x, y;
    double run(const EvalContext& c) const;
  };
  std::string text;
  std::vector<Node> nodes;
  std::vector<Step> steps;
  Arithmetic arithmetic;
  std::deque<std::string> strings;  // storage for string constants (stable addresses)
  std::deque<Nfa> nfas;
  int root = -1;

  Value eval(int n, const EvalContext& c) const;
  // eval(n, c) read as a condition (present and true) for the leaves of a
  // condition no step kernel takes, without building the intermediate Values
  // of comparisons, lists and string tests of fields and constants.
  static bool test(const Node* nodes, const Program& p, int n, const EvalContext& c);
  // The program as a condition, by its steps. Static, so that Expr::test goes
  // from the rule to its steps without first loading the Program (one
  // dependent cache miss less per filter); `p` is read by the general path only.
  static bool run(const Step* steps, const Program& p, const EvalContext& c);
  // run() from step `s` on, for a program with a step that needs test().
  [[gnu::noinline]] static bool run_general(const Step* steps, const Step* s, const Program& p,
                                            const EvalContext& c);
  static int number_kernel(const Step& s, const EvalContext& c);
  static int kernel(const Step& s, const EvalContext& c);
  // The value of a field or constant node in place; nullptr for other nodes.
  static const Value* ref(const Node* nodes, int n, const EvalContext& c);
  // Puts the cheaper operand of each `and`/`or` first, once the program is built.
  void specialise();
  // Compiles `steps` and `arithmetic` from the nodes (after specialise()).
  void build_steps();

 private:
  // Appends the steps of node `n` that continue at `t` when it holds, else at
  // `f` (step indices in emission order, or kTrue / kFalse); returns its entry.
  int32_t emit(int n, int32_t t, int32_t f);
  Step leaf(int n) const;
  Arithmetic::Operand operand(int n) const;
};

namespace {
// A rough count of the work evaluating node `n` does, given its operands':
// fields and constants are free, functions (time of day, regular
// expressions, table lookups) dear.
int node_cost(Op op, size_t list_size, int operands) {
  switch (op) {
    case Op::kConst: case Op::kField: case Op::kPriorField: case Op::kAgg: return 1;
    case Op::kIn: case Op::kNotIn: return operands + 2 + static_cast<int>(list_size / 4);
    case Op::kStartsWith: case Op::kEndsWith: case Op::kContains: case Op::kLen: return operands + 4;
    case Op::kMatches: case Op::kHour: case Op::kWeekday: return operands + 20;
    case Op::kInTable: case Op::kLookup: return operands + 50;
    default: return operands + 2;
  }
}
}  // namespace

void Expr::Program::specialise() {
  // `a and b` is `b and a`: both operands are pure, and test() and eval() read
  // a null operand as false. Short-circuiting then skips the dear one more often.
  // Operands precede their node, so one pass in order costs every node.
  std::vector<int> cost(nodes.size());
  auto of = [&cost](int i) { return i < 0 ? 0 : cost[static_cast<size_t>(i)]; };
  for (size_t i = 0; i < nodes.size(); ++i) {
    Node& n = nodes[i];
    cost[i] = node_cost(n.op, n.list.size(), of(n.a) + of(n.b));
    if ((n.op == Op::kAnd || n.op == Op::kOr) && of(n.b) < of(n.a)) std::swap(n.a, n.b);
  }
}

void Expr::Program::build_steps() {
  steps.clear();
  emit(root, Step::kTrue, Step::kFalse);
  // Emitted operands last (emit() needs its targets first): reverse, so that
  // the entry is step 0 and jumps go forward.
  std::reverse(steps.begin(), steps.end());
  const auto last = static_cast<int32_t>(steps.size()) - 1;
  for (Step& s : steps) {
    if (s.on_true >= 0) s.on_true = last - s.on_true;
    if (s.on_false >= 0) s.on_false = last - s.on_false;
  }
  const Node& r = nodes[static_cast<size_t>(root)];
  arithmetic = Arithmetic{};
  if (r.op == Op::kAgg || r.op == Op::kField || r.op == Op::kConst) {
    arithmetic.x = operand(root);
    arithmetic.fast = arithmetic.x.source != Arithmetic::Operand::kNone;
  } else if (r.type == Type::kDouble &&
             (r.op == Op::kAdd || r.op == Op::kSub || r.op == Op::kMul || r.op == Op::kDiv || r.op == Op::kMod)) {
    arithmetic.op = r.op;
    arithmetic.x = operand(r.a);
    arithmetic.y = operand(r.b);
    arithmetic.fast = arithmetic.x.source != Arithmetic::Operand::kNone && arithmetic.y.source != Arithmetic::Operand::kNone;
  }
}

Expr::Program::Arithmetic::Operand Expr::Program::operand(int n) const {
  const Node& node = nodes[static_cast<size_t>(n)];
  Arithmetic::Operand o;
  o.index = node.index;
  if (node.op == Op::kAgg) o.source = Arithmetic::Operand::kAggregate;
  else if (node.op == Op::kField && is_numeric(node.type)) o.source = Arithmetic::Operand::kField;
  else if (node.op == Op::kConst && is_numeric(node.type) && node.k.present) {
    o.source = Arithmetic::Operand::kConstant;
    o.k = as_double(node.k);
  }
  return o;
}

double Expr::Program::Arithmetic::run(const EvalContext& c) const {
  const double a = x.of(c);
  if (op == Op::kConst) return a;
  const double b = y.of(c);
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  switch (op) {
    case Op::kAdd: return a + b;
    case Op::kSub: return a - b;
    case Op::kMul: return a * b;
    case Op::kDiv: return b == 0 ? std::numeric_limits<double>::quiet_NaN() : a / b;
    default: return b == 0 ? std::numeric_limits<double>::quiet_NaN() : std::fmod(a, b);
  }
}

int32_t Expr::Program::emit(int n, int32_t t, int32_t f) {
  const Node& node = nodes[static_cast<size_t>(n)];
  switch (node.op) {
    case Op::kAnd: return emit(node.a, emit(node.b, t, f), f);
    case Op::kOr: {
      const int32_t b = emit(node.b, t, f);
      return emit(node.a, t, b);
    }
    case Op::kNot: return emit(node.a, f, t);
    default: {
      Step s = leaf(n);
      s.on_true = t;
      s.on_false = f;
      steps.push_back(s);
      return static_cast<int32_t>(steps.size()) - 1;
    }
  }
}

Expr::Program::Step Expr::Program::leaf(int n) const {
  Step s;
  s.node = n;  // kGeneric unless a kernel fits below
  const Node& node = nodes[static_cast<size_t>(n)];
  const auto numeric = [](FieldType t) { return t == FieldType::kInt || t == FieldType::kTime || t == FieldType::kDouble; };
  if (node.op == Op::kField && node.type == Type::kBool) {
    s.kernel = Step::kBool;
    s.index = node.index;
    return s;
  }
  if (node.a < 0) return s;
  const Node& a = nodes[static_cast<size_t>(node.a)];
  // The constant right operand, if any (`== null` tests stay on the general path, which reads absence).
  const Node* b = node.b >= 0 ? &nodes[static_cast<size_t>(node.b)] : nullptr;
  const Value* k = b && b->op == Op::kConst && b->type != Type::kNull && b->k.present ? &b->k : nullptr;
  const bool comparison = node.op >= Op::kEq && node.op <= Op::kGe;
  const auto cmp = static_cast<uint8_t>(static_cast<int>(node.op) - static_cast<int>(Op::kEq));
  if (comparison && k && a.op == Op::kAgg && numeric(k->type)) {
    s.kernel = static_cast<uint8_t>(Step::kAggregate + cmp);
    s.k.d = as_double(*k);
  } else if (a.op != Op::kField) {
    return s;
  } else if (comparison && k && (a.type == Type::kInt || a.type == Type::kTime) &&
             (k->type == FieldType::kInt || k->type == FieldType::kTime)) {
    s.kernel = static_cast<uint8_t>(Step::kInt + cmp);
    s.k.i = k->i;
  } else if (comparison && k && is_numeric(a.type) && numeric(k->type)) {
    s.kernel = static_cast<uint8_t>(Step::kDouble + cmp);
    s.k.d = as_double(*k);
  } else if ((node.op == Op::kEq || node.op == Op::kNe) && k && a.type == Type::kString && k->type == FieldType::kString) {
    s.kernel = node.op == Op::kEq ? Step::kStrEq : Step::kStrNe;
    s.k.str = {k->s.data(), k->s.size()};  // views `strings`, which does not move
  } else if ((node.op == Op::kIn || node.op == Op::kNotIn) && a.type == Type::kString &&
             std::all_of(node.list.begin(), node.list.end(),
                         [](const Value& v) { return v.present && v.type == FieldType::kString; })) {
    s.kernel = node.op == Op::kIn ? Step::kStrIn : Step::kStrNotIn;
    s.k.list = {node.list.data(), node.list.size()};
  } else if ((node.op == Op::kStartsWith || node.op == Op::kEndsWith || node.op == Op::kContains) && k) {
    s.kernel = node.op == Op::kStartsWith ? Step::kStartsWith : node.op == Op::kEndsWith ? Step::kEndsWith : Step::kContains;
    s.k.str = {k->s.data(), k->s.size()};
  } else {
    return s;
  }
  s.index = a.index;
  return s;
}

// A step's kernel on numbers and booleans: 1 or 0, or -1 for any other kernel
// or when the general path (test()) must decide. An absent field fails every
// test, as in test(); a value of another type than the kernel's (never from the
// decoder) takes the general path. One case per kernel and comparison: a
// single jump, not one per kind and then one per comparison.
[[gnu::always_inline]] inline int Expr::Program::number_kernel(const Step& s, const EvalContext& c) {
#define TOCSIN_CMP(BASE, CHECK, X, Y)                                            \
  case BASE + Step::kEq: { CHECK return (X) == (Y); }                            \
  case BASE + Step::kNe: { CHECK return !((X) == (Y)); }                         \
  case BASE + Step::kLt: { CHECK return (X) < (Y); }                             \
  case BASE + Step::kLe: { CHECK return !((X) > (Y)); } /* NaN as compare_values */ \
  case BASE + Step::kGt: { CHECK return (X) > (Y); }                             \
  case BASE + Step::kGe: { CHECK return !((X) < (Y)); }
#define TOCSIN_INT_FIELD                       \
  const Value& v = c.event->at(s.index);       \
  if (!v.present) return 0;                    \
  if (v.type == FieldType::kDouble) return -1;
#define TOCSIN_NUMBER_FIELD                                                        \
  const Value& v = c.event->at(s.index);                                           \
  if (!v.present) return 0;                                                        \
  if (v.type == FieldType::kString || v.type == FieldType::kBool) return -1;       \
  const double x = as_double(v);
#define TOCSIN_AGGREGATE                \
  const double x = c.aggregates[s.index]; \
  if (std::isnan(x)) return 0; /* absent */
  switch (s.kernel) {
    case Step::kBool: {
      const Value& v = c.event->at(s.index);
      return v.present && v.b;
    }
    TOCSIN_CMP(Step::kInt, TOCSIN_INT_FIELD, v.i, s.k.i)
    TOCSIN_CMP(Step::kDouble, TOCSIN_NUMBER_FIELD, x, s.k.d)
    TOCSIN_CMP(Step::kAggregate, TOCSIN_AGGREGATE, x, s.k.d)
    default: return -1;
  }
#undef TOCSIN_AGGREGATE
#undef TOCSIN_NUMBER_FIELD
#undef TOCSIN_INT_FIELD
#undef TOCSIN_CMP
}

// number_kernel() and the string kernels: 1 or 0, or -1 when test() must decide.
[[gnu::always_inline]] inline int Expr::Program::kernel(const Step& s, const EvalContext& c) {
  switch (s.kernel) {
    case Step::kStrEq: case Step::kStrNe: {
      const Value& v = c.event->at(s.index);
      if (!v.present) return 0;
      if (v.type != FieldType::kString) return -1;
      const bool eq = v.s == std::string_view(s.k.str.p, s.k.str.n);
      return s.kernel == Step::kStrEq ? eq : !eq;
    }
    case Step::kStrIn: case Step::kStrNotIn: {
      const Value& v = c.event->at(s.index);
      if (!v.present) return 0;
      if (v.type != FieldType::kString) return -1;
      bool found = false;
      for (size_t i = 0; i < s.k.list.n && !found; ++i) found = v.s == s.k.list.p[i].s;
      return s.kernel == Step::kStrIn ? found : !found;
    }
    case Step::kStartsWith: case Step::kEndsWith: case Step::kContains: {
      const Value& v = c.event->at(s.index);
      const std::string_view k(s.k.str.p, s.k.str.n);
      return v.present && (s.kernel == Step::kStartsWith ? v.s.starts_with(k)
                           : s.kernel == Step::kEndsWith ? v.s.ends_with(k)
                                                         : v.s.find(k) != std::string_view::npos);
    }
    default: return number_kernel(s, c);
  }
}

// Numbers and booleans only, and no call: a program of such steps (most
// filters and `having` conditions) saves and restores no registers. The first
// other step continues in run_general(). Inlined into Expr::test: one call per filter.
[[gnu::always_inline]] inline bool Expr::Program::run(const Step* steps, const Program& p, const EvalContext& c) {
  for (const Step* s = steps;;) {
    const int r = number_kernel(*s, c);
    if (r < 0) return run_general(steps, s, p, c);
    const int32_t next = r ? s->on_true : s->on_false;
    if (next < 0) return next == Step::kTrue;
    s = steps + next;
  }
}

bool Expr::Program::run_general(const Step* steps, const Step* s, const Program& p, const EvalContext& c) {
  for (;;) {
    int r = kernel(*s, c);
    if (r < 0) r = test(p.nodes.data(), p, s->node, c);
    const int32_t next = r ? s->on_true : s->on_false;
    if (next < 0) return next == Step::kTrue;
    s = steps + next;
  }
}

namespace {

bool equal_values(const Value& x, const Value& y) {
  if (!x.present || !y.present) return x.present == y.present;
  if (x.type == FieldType::kString || y.type == FieldType::kString)
    return x.type == y.type && x.s == y.s;
  if (x.type == FieldType::kBool || y.type == FieldType::kBool)
    return x.type == y.type && x.b == y.b;
  if (x.type == FieldType::kDouble || y.type == FieldType::kDouble)
    return as_double(x) == as_double(y);
  return x.i == y.i;
}

// <0, 0, >0; both present and of comparable types.
int compare_values(const Value& x, const Value& y) {
  if (x.type == FieldType::kString) return x.s.compare(y.s);
  if (x.type == FieldType::kDouble || y.type == FieldType::kDouble) {
    const double a = as_double(x), b = as_double(y);
    return a < b ? -1 : (a > b ? 1 : 0);
  }
  return x.i < y.i ? -1 : (x.i > y.i ? 1 : 0);
}

}  // namespace

const Value* Expr::Program::ref(const Node* nodes, int idx, const EvalContext& c) {
  static const Value kNull{};
  const Node& n = nodes[static_cast<size_t>(idx)];
  switch (n.op) {
    case Op::kConst: return &n.k;
    case Op::kField: return &c.event->at(n.index);
    case Op::kPriorField: return c.prior ? &c.prior->at(n.index) : &kNull;
    default: return nullptr;
  }
}

bool Expr::Program::test(const Node* nodes, const Program& p, int idx, const EvalContext& c) {
  const Node& n = nodes[static_cast<size_t>(idx)];
  switch (n.op) {
    case Op::kEq: case Op::kNe: case Op::kLt: case Op::kLe: case Op::kGt: case Op::kGe: {
      const Value* x = ref(nodes, n.a, c);
      const Value* y = ref(nodes, n.b, c);
      if (!x || !y) break;
      // As in eval(): `== null` / `!= null` test for absence; any other
      // comparison with a missing operand is false.
      const bool null_test = nodes[static_cast<size_t>(n.a)].type == Type::kNull ||
                             nodes[static_cast<size_t>(n.b)].type == Type::kNull;
      if (!null_test && (!x->present || !y->present)) return false;
      if (n.op == Op::kEq) return equal_values(*x, *y);
      if (n.op == Op::kNe) return !equal_values(*x, *y);
      const int r = compare_values(*x, *y);
      return n.op == Op::kLt ? r < 0 : n.op == Op::kLe ? r <= 0 : n.op == Op::kGt ? r > 0 : r >= 0;
    }
    case Op::kIn: case Op::kNotIn: {
      const Value* x = ref(nodes, n.a, c);
      if (!x) break;
      if (!x->present) return false;
      bool found = false;
      for (const Value& v : n.list)
        if (equal_values(*x, v)) { found = true; break; }
      return n.op == Op::kIn ? found : !found;
    }
    case Op::kStartsWith: case Op::kEndsWith: case Op::kContains: {
      const Value* x = ref(nodes, n.a, c);
      const Value* y = ref(nodes, n.b, c);
      if (!x || !y) break;
      if (!x->present || !y->present) return false;
      if (n.op == Op::kStartsWith) return x->s.starts_with(y->s);
      if (n.op == Op::kEndsWith) return x->s.ends_with(y->s);
      return x->s.find(y->s) != std::string_view::npos;
    }
    case Op::kMatches: {
      const Value* x = ref(nodes, n.a, c);
      if (!x) break;
      return x->present && p.nfas[static_cast<size_t>(n.index)].search(x->s);
    }
    default: break;
  }
  const Value v = p.eval(idx, c);
  return v.present && v.b;
}

Value Expr::Program::eval(int idx, const EvalContext& c) const {
  const Node& n = nodes[static_cast<size_t>(idx)];
  switch (n.op) {
    case Op::kConst: return n.k;
    case Op::kField: return c.event->at(n.index);
    case Op::kPriorField: return c.prior ? c.prior->at(n.index) : null_value();
    case Op::kAgg: {
      const double v = c.aggregates[n.index];
      return std::isnan(v) ? null_value() : Value::of_double(v);
    }
    case Op::kNot: {
      const Value v = eval(n.a, c);
      return Value::of_bool(!(v.present && v.b));
    }
    case Op::kAnd: {
      const Value v = eval(n.a, c);
      if (!(v.present && v.b)) return Value::of_bool(false);
      const Value w = eval(n.b, c);
      return Value::of_bool(w.present && w.b);
    }
    case Op::kOr: {
      const Value v = eval(n.a, c);
      if (v.present && v.b) return Value::of_bool(true);
      const Value w = eval(n.b, c);
      return Value::of_bool(w.present && w.b);
    }
    case Op::kNeg: {
      Value v = eval(n.a, c);
      if (!v.present) return v;
      if (v.type == FieldType::kDouble) v.d = -v.d; else v.i = -v.i;
      return v;
    }
    case Op::kAdd: case Op::kSub: case Op::kMul: case Op::kDiv: case Op::kMod: {
      const Value x = eval(n.a, c), y = eval(n.b, c);
      if (!x.present || !y.present) return null_value();
      if (n.type == Type::kDouble) {
        const double a = as_double(x), b = as_double(y);
        switch (n.op) {
          case Op::kAdd: return Value::of_double(a + b);
          case Op::kSub: return Value::of_double(a - b);
          case Op::kMul: return Value::of_double(a * b);
          case Op::kDiv: return b == 0 ? null_value() : Value::of_double(a / b);
          default: return b == 0 ? null_value() : Value::of_double(std::fmod(a, b));
        }
      }
      int64_t r;
      switch (n.op) {
        case Op::kAdd: r = x.i + y.i; break;
        case Op::kSub: r = x.i - y.i; break;
        case Op::kMul: r = x.i * y.i; break;
        default:
          if (y.i == 0) return null_value();
          r = x.i % y.i;
      }
      return n.type == Type::kTime ? Value::of_time(r) : Value::of_int(r);
    }
    case Op::kEq: case Op::kNe: {
      const Value x = eval(n.a, c), y = eval(n.b, c);
      // `x == null` / `x != null` test for absence; any other comparison with
      // a missing operand is false, as for < and >.
      const bool null_test = nodes[static_cast<size_t>(n.a)].type == Type::kNull ||
                             nodes[static_cast<size_t>(n.b)].type == Type::kNull;
      if (!null_test && (!x.present || !y.present)) return Value::of_bool(false);
      const bool eq = equal_values(x, y);
      return Value::of_bool(n.op == Op::kEq ? eq : !eq);
    }
    case Op::kLt: case Op::kLe: case Op::kGt: case Op::kGe: {
      const Value x = eval(n.a, c), y = eval(n.b, c);
      if (!x.present || !y.present) return Value::of_bool(false);
      const int r = compare_values(x, y);
      switch (n.op) {
        case Op::kLt: return Value::of_bool(r < 0);
        case Op::kLe: return Value::of_bool(r <= 0);
        case Op::kGt: return Value::of_bool(r > 0);
        default: return Value::of_bool(r >= 0);
      }
    }
    case Op::kIn: case Op::kNotIn: {
      const Value x = eval(n.a, c);
      if (!x.present) return Value::of_bool(false);
      bool found = false;
      for (const Value& v : n.list)
        if (equal_values(x, v)) { found = true; break; }
      return Value::of_bool(n.op == Op::kIn ? found : !found);
    }
    case Op::kStartsWith: case Op::kEndsWith: case Op::kContains: {
      const Value x = eval(n.a, c), y = eval(n.b, c);
      if (!x.present || !y.present) return Value::of_bool(false);
      if (n.op == Op::kStartsWith) return Value::of_bool(x.s.starts_with(y.s));
      if (n.op == Op::kEndsWith) return Value::of_bool(x.s.ends_with(y.s));
      return Value::of_bool(x.s.find(y.s) != std::string_view::npos);
    }
    case Op::kMatches: {
      const Value x = eval(n.a, c);
      if (!x.present) return Value::of_bool(false);
      return Value::of_bool(nfas[static_cast<size_t>(n.index)].search(x.s));
    }
    case Op::kExists: return Value::of_bool(eval(n.a, c).present);
    case Op::kHour: case Op::kWeekday: {
      const Value x = eval(n.a, c);
      if (!x.present) return x;
      int64_t offset_ms = 0;
      if (n.b >= 0) offset_ms = eval(n.b, c).i;
      const int64_t local = x.i + offset_ms;
      const int64_t days = local >= 0 ? local / 86400000 : (local - 86399999) / 86400000;
      if (n.op == Op::kHour) return Value::of_int((local - days * 86400000) / 3600000);
      return Value::of_int(((days % 7) + 7 + 3) % 7 + 1);  // 1970-01-01 was a Thursday; Mon=1
    }
    case Op::kLen: {
      const Value x = eval(n.a, c);
      return x.present ? Value::of_int(static_cast<int64_t>(x.s.size())) : x;
    }
    case Op::kAbs: {
      Value x = eval(n.a, c);
      if (!x.present) return x;
      if (x.type == FieldType::kDouble) x.d = std::fabs(x.d); else x.i = x.i < 0 ? -x.i : x.i;
      return x;
    }
    case Op::kInTable: case Op::kLookup: {
      // No snapshot (no tables configured yet): every lookup misses.
      const Value x = eval(n.a, c);
      const Value* row = (x.present && c.tables) ? c.tables->find(n.index, x.s) : nullptr;
      if (n.op == Op::kInTable) return Value::of_bool(row != nullptr);
      return row ? row[n.column] : null_value();
    }
  }
  return null_value();
}

namespace {


class Parser {
 public:
  Parser(std::string_view text, const Scope& scope, Expr::Program& p, ExprError& err)
      : text_(text), scope_(scope), p_(p), err_(err) {}

  bool parse() {
    if (!next()) return false;
    const int root = parse_or();
    if (root < 0) return false;
    if (tok_.kind != Tok::kEnd) return error(tok_.offset, "E102", "unexpected '" + std::string(tok_.text) + "' after the end of the expression");
    p_.root = root;
    p_.specialise();
    p_.build_steps();
    return true;
  }

 private:
  using N = Expr::Program::Node;

  bool error(size_t offset, const char* code, std::string msg) {
    if (err_.code.empty()) {
      err_.offset = offset;
      err_.code = code;
      err_.message = std::move(msg);
    }
    return false;
  }
  int fail(size_t offset, const char* code, std::string msg) {
    error(offset, code, std::move(msg));
    return -1;
  }

  bool next() {
    size_t i = pos_;
    while (i < text_.size() && (text_[i] == ' ' || text_[i] == '\t' || text_[i] == '\n' || text_[i] == '\r')) ++i;
    tok_ = Token{};
    tok_.offset = i;
    if (i >= text_.size()) { pos_ = i; tok_.kind = Tok::kEnd; tok_.text = "end of expression"; return true; }
    const char c = text_[i];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[j])) || text_[j] == '_' || text_[j] == '.')) ++j;
      tok_.kind = Tok::kIdent;
      tok_.text = text_.substr(i, j - i);
      pos_ = j;
      return true;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < text_.size() && std::isdigit(static_cast<unsigned char>(text_[j]))) ++j;
      bool dbl = false;
      if (j + 1 < text_.size() && text_[j] == '.' && std::isdigit(static_cast<unsigned char>(text_[j + 1]))) {
        dbl = true;
        ++j;
        while (j < text_.size() && std::isdigit(static_cast<unsigned char>(text_[j]))) ++j;
      }
      size_t u = j;
      while (u < text_.size() && std::isalpha(static_cast<unsigned char>(text_[u]))) ++u;
      if (u > j)  // compound durations: 1h30m
        while (u < text_.size() && std::isalnum(static_cast<unsigned char>(text_[u]))) ++u;
      tok_.text = text_.substr(i, u - i);
      pos_ = u;
      if (u > j) {
        if (dbl) return error(i, "E101", "a duration must be a whole number: '" + std::string(tok_.text) + "'");
        const auto d = parse_duration_ms(tok_.text);
        if (!d) return error(i, "E101", "unknown duration '" + std::string(tok_.text) + "' (units: ms, s, m, h, d, w)");
        tok_.kind = Tok::kDuration;
        tok_.int_value = *d;
        return true;
      }
      tok_.kind = Tok::kNumber;
      tok_.is_double = dbl;
      const std::string_view num = text_.substr(i, j - i);
      if (dbl) {
        tok_.double_value = std::strtod(std::string(num).c_str(), nullptr);
      } else if (std::from_chars(num.data(), num.data() + num.size(), tok_.int_value).ec != std::errc()) {
        return error(i, "E101", "number out of range");
      }
      return true;
    }
    if (c == '"' || c == '\'') {
      size_t j = i + 1;
      while (j < text_.size() && text_[j] != c) j += (text_[j] == '\\') ? 2 : 1;
      if (j >= text_.size()) return error(i, "E101", "unterminated string");
      tok_.kind = Tok::kString;
      tok_.text = text_.substr(i + 1, j - i - 1);
      pos_ = j + 1;
      return true;
    }
    static constexpr std::string_view kTwo[] = {"==", "!=", "<=", ">=", "&&", "||"};
    for (auto op : kTwo)
      if (text_.substr(i, 2) == op) { tok_.kind = Tok::kPunct; tok_.text = op; pos_ = i + 2; return true; }
    if (std::string_view("()[],+-*/%<>!=").find(c) != std::string_view::npos) {
      tok_.kind = Tok::kPunct;
      tok_.text = text_.substr(i, 1);
      pos_ = i + 1;
      return true;
    }
    return error(i, "E101", std::string("unexpected character '") + c + "'");
  }

  bool is(std::string_view t) const {
    return (tok_.kind == Tok::kPunct || tok_.kind == Tok::kIdent) && tok_.text == t;
  }
  bool expect(std::string_view t) {
    if (!is(t)) return error(tok_.offset, "E102", "expected '" + std::string(t) + "' but found '" + std::string(tok_.text) + "'");
    return next();
  }

  int add(N n) {
    p_.nodes.push_back(std::move(n));
    return static_cast<int>(p_.nodes.size() - 1);
  }
  const N& node(int i) const { return p_.nodes[static_cast<size_t>(i)]; }
  Type type(int i) const { return node(i).type; }

  // Folds a node whose operands are constants into a constant.
  int fold(int i) {
    N& n = p_.nodes[static_cast<size_t>(i)];
    if (n.op == Op::kConst || n.op == Op::kField || n.op == Op::kPriorField || n.op == Op::kAgg) return i;
    if (n.a >= 0 && node(n.a).op != Op::kConst) return i;
    if (n.b >= 0 && node(n.b).op != Op::kConst) return i;
    const Value v = p_.eval(i, EvalContext{});
    N& m = p_.nodes[static_cast<size_t>(i)];
    m.op = Op::kConst;
    m.k = v;
    m.a = m.b = -1;
    return i;
  }

  int binary(Op op, Type t, int a, int b) {
    N n;
    n.op = op;
    n.type = t;
    n.a = a;
    n.b = b;
    return fold(add(std::move(n)));
  }

  int parse_or() {
    int l = parse_and();
    while (l >= 0 && (is("or") || is("||"))) {
      const size_t at = tok_.offset;
      if (!next()) return -1;
      const int r = parse_and();
      if (r < 0) return -1;
      if (!check_bool(l, at, "or") || !check_bool(r, at, "or")) return -1;
      l = binary(Op::kOr, Type::kBool, l, r);
    }
    return l;
  }
  int parse_and() {
    int l = parse_not();
    while (l >= 0 && (is("and") || is("&&"))) {
      const size_t at = tok_.offset;
      if (!next()) return -1;
      const int r = parse_not();
      if (r < 0) return -1;
      if (!check_bool(l, at, "and") || !check_bool(r, at, "and")) return -1;
      l = binary(Op::kAnd, Type::kBool, l, r);
    }
    return l;
  }
  bool check_bool(int i, size_t at, const char* op) {
    if (type(i) == Type::kBool) return true;
    return error(at, "E201", std::string("'") + op + "' needs bool operands, got " + std::string(to_string(type(i))));
  }
  int parse_not() {
    if (is("not") || is("!")) {
      const size_t at = tok_.offset;
      if (!next()) return -1;
      const int a = parse_not();
      if (a < 0) return -1;
      if (!check_bool(a, at, "not")) return -1;
      return binary(Op::kNot, Type::kBool, a, -1);
    }
    return parse_cmp();
  }

  static bool comparable(Type a, Type b) {
    if (a == Type::kNull || b == Type::kNull) return true;
    if (is_numeric(a) && is_numeric(b)) return true;
    return a == b && a != Type::kList;
  }

  int parse_cmp() {
    const int l = parse_add();
    if (l < 0) return -1;
    static constexpr std::pair<std::string_view, Op> kOps[] = {
        {"==", Op::kEq}, {"!=", Op::kNe}, {"<", Op::kLt}, {"<=", Op::kLe}, {">", Op::kGt}, {">=", Op::kGe}};
    for (auto [t, op] : kOps) {
      if (tok_.kind == Tok::kPunct && tok_.text == t) {
        const size_t at = tok_.offset;
        if (!next()) return -1;
        const int r = parse_add();
        if (r < 0) return -1;
        if (!comparable(type(l), type(r)))
          return fail(at, "E201", "cannot compare " + std::string(to_string(type(l))) + " with " + std::string(to_string(type(r))));
        if ((op != Op::kEq && op != Op::kNe) && (type(l) == Type::kNull || type(r) == Type::kNull || type(l) == Type::kBool))
          return fail(at, "E201", "'" + std::string(t) + "' needs numbers, times or strings");
        return binary(op, Type::kBool, l, r);
      }
    }
    bool negate = false;
    if (is("not")) {
      // "x not in [...]"
      const size_t save_pos = pos_;
      const Token save = tok_;
      if (!next()) return -1;
      if (!is("in")) { pos_ = save_pos; tok_ = save; return l; }
      negate = true;
    }
    if (is("in")) {
      const size_t at = tok_.offset;
      if (!next()) return -1;
      N n;
      n.op = negate ? Op::kNotIn : Op::kIn;
      n.type = Type::kBool;
      n.a = l;
      if (!expect("[")) return -1;
      while (!is("]")) {
        const size_t item_at = tok_.offset;
        const int item = parse_add();
        if (item < 0) return -1;
        if (node(item).op != Op::kConst) return fail(item_at, "E202", "list items must be constants");
        if (!comparable(type(l), type(item)) || type(item) == Type::kNull)
          return fail(item_at, "E201", "list item of type " + std::string(to_string(type(item))) + " cannot match " + std::string(to_string(type(l))));
        n.list.push_back(node(item).k);
        if (is(",")) { if (!next()) return -1; } else if (!is("]")) return fail(tok_.offset, "E102", "expected ',' or ']' in list");
      }
      if (!next()) return -1;
      (void)at;
      return fold(add(std::move(n)));
    }
    return l;
  }

  Type arith_type(Op op, Type a, Type b) const {
    if (op == Op::kDiv) return Type::kDouble;
    if (a == Type::kDouble || b == Type::kDouble) return Type::kDouble;
    if (a == Type::kTime && b == Type::kTime) return op == Op::kSub ? Type::kInt : Type::kNull;
    if (a == Type::kTime || b == Type::kTime) return (op == Op::kAdd || op == Op::kSub) ? Type::kTime : Type::kNull;
    return Type::kInt;
  }

  int parse_add() {
    int l = parse_mul();
    while (l >= 0 && tok_.kind == Tok::kPunct && (tok_.text == "+" || tok_.text == "-")) {
      const Op op = tok_.text == "+" ? Op::kAdd : Op::kSub;
      const size_t at = tok_.offset;
      if (!next()) return -1;
      const int r = parse_mul();
      if (r < 0) return -1;
      l = arith(op, l, r, at);
    }
    return l;
  }
  int parse_mul() {
    int l = parse_unary();
    while (l >= 0 && tok_.kind == Tok::kPunct && (tok_.text == "*" || tok_.text == "/" || tok_.text == "%")) {
      const Op op = tok_.text == "*" ? Op::kMul : (tok_.text == "/" ? Op::kDiv : Op::kMod);
      const size_t at = tok_.offset;
      if (!next()) return -1;
      const int r = parse_unary();
      if (r < 0) return -1;
      l = arith(op, l, r, at);
    }
    return l;
  }
  int arith(Op op, int l, int r, size_t at) {
    if (!is_numeric(type(l)) || !is_numeric(type(r)))
      return fail(at, "E201", "arithmetic needs numbers, got " + std::string(to_string(type(l))) + " and " + std::string(to_string(type(r))));
    const Type t = arith_type(op, type(l), type(r));
    if (t == Type::kNull) return fail(at, "E201", "this arithmetic on times has no meaning");
    return binary(op, t, l, r);
  }
  int parse_unary() {
    if (tok_.kind == Tok::kPunct && tok_.text == "-") {
      const size_t at = tok_.offset;
      if (!next()) return -1;
      const int a = parse_unary();
      if (a < 0) return -1;
      if (type(a) != Type::kInt && type(a) != Type::kDouble) return fail(at, "E201", "'-' needs a number");
      return binary(Op::kNeg, type(a), a, -1);
    }
    return parse_primary();
  }

  int constant(Value v, Type t) {
    N n;
    n.op = Op::kConst;
    n.type = t;
    n.k = v;
    return add(std::move(n));
  }

  int parse_primary() {
    const Token t = tok_;
    switch (t.kind) {
      case Tok::kNumber:
        if (!next()) return -1;
        return t.is_double ? constant(Value::of_double(t.double_value), Type::kDouble)
                           : constant(Value::of_int(t.int_value), Type::kInt);
      case Tok::kDuration:
        if (!next()) return -1;
        return constant(Value::of_int(t.int_value), Type::kInt);
      case Tok::kString: {
        if (!next()) return -1;
        std::string s;
        for (size_t i = 0; i < t.text.size(); ++i) {
          if (t.text[i] == '\\' && i + 1 < t.text.size()) {
            const char e = t.text[++i];
            s += e == 'n' ? '\n' : e == 't' ? '\t' : e;
          } else {
            s += t.text[i];
          }
        }
        p_.strings.push_back(std::move(s));
        return constant(Value::of_string(p_.strings.back()), Type::kString);
      }
      case Tok::kPunct:
        if (t.text == "(") {
          if (!next()) return -1;
          const int e = parse_or();
          if (e < 0 || !expect(")")) return -1;
          return e;
        }
        return fail(t.offset, "E102", "expected a value but found '" + std::string(t.text) + "'");
      case Tok::kEnd:
        return fail(t.offset, "E102", "expression ends too early");
      case Tok::kIdent:
        break;
    }
    if (!next()) return -1;
    if (t.text == "true" || t.text == "false") return constant(Value::of_bool(t.text == "true"), Type::kBool);
    if (t.text == "null") return constant(null_value(), Type::kNull);
    if (is("(")) return parse_call(t);
    const auto ref = scope_.resolve(t.text);
    if (!ref) return fail(t.offset, "E203", "unknown name '" + std::string(t.text) + "'");
    N n;
    n.op = ref->kind == NameRef::kEventField ? Op::kField
           : ref->kind == NameRef::kPriorField ? Op::kPriorField
                                               : Op::kAgg;
    n.type = ref->type;
    n.index = ref->index;
    return add(std::move(n));
  }

  int parse_call(const Token& fn) {
    if (!next()) return -1;  // '('
    std::vector<int> args;
    std::vector<size_t> at;
    while (!is(")")) {
      at.push_back(tok_.offset);
      const int a = parse_or();
      if (a < 0) return -1;
      args.push_back(a);
      if (is(",")) { if (!next()) return -1; } else if (!is(")")) return fail(tok_.offset, "E102", "expected ',' or ')'");
    }
    if (!next()) return -1;
    const std::string name(fn.text);
    auto want = [&](size_t lo, size_t hi) {
      if (args.size() < lo || args.size() > hi)
        return error(fn.offset, "E204", name + "() takes " + (lo == hi ? std::to_string(lo) : std::to_string(lo) + " to " + std::to_string(hi)) + " arguments, got " + std::to_string(args.size()));
      return true;
    };
    auto arg_type = [&](size_t i, std::initializer_list<Type> ok) {
      for (Type t : ok) if (type(args[i]) == t) return true;
      return error(at[i], "E201", name + "() argument " + std::to_string(i + 1) + " has type " + std::string(to_string(type(args[i]))));
    };
    if (name == "starts_with" || name == "ends_with" || name == "contains") {
      if (!want(2, 2) || !arg_type(0, {Type::kString}) || !arg_type(1, {Type::kString})) return -1;
      return binary(name == "starts_with" ? Op::kStartsWith : name == "ends_with" ? Op::kEndsWith : Op::kContains, Type::kBool, args[0], args[1]);
    }
    if (name == "matches") {
      if (!want(2, 2) || !arg_type(0, {Type::kString}) || !arg_type(1, {Type::kString})) return -1;
      if (node(args[1]).op != Op::kConst) return fail(at[1], "E202", "matches() needs a constant pattern");
      const std::string_view pattern = node(args[1]).k.s;
      try {  // std::regex decides validity and words the syntax errors; it never runs
        std::regex(std::string(pattern), std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        return fail(at[1], "E205", std::string("invalid regular expression: ") + e.what());
      }
      std::optional<Nfa> nfa = Nfa::compile(pattern);
      if (!nfa)
        return fail(at[1], "E207",
                    "matches() runs in linear time and supports literals, escapes, '.', classes, \\d \\w \\s, "
                    "^ $ \\b, groups, | and * + ? {n,m}; this pattern uses a back-reference, look-around, "
                    "a POSIX or nested class, or is too large (over " + std::to_string(Nfa::kMaxProgram) +
                    " steps): rewrite it without them");
      p_.nfas.push_back(std::move(*nfa));
      N n;
      n.op = Op::kMatches;
      n.type = Type::kBool;
      n.a = args[0];
      n.index = static_cast<int>(p_.nfas.size() - 1);
      return add(std::move(n));
    }
    if (name == "exists") {
      if (!want(1, 1)) return -1;
      return binary(Op::kExists, Type::kBool, args[0], -1);
    }
    if (name == "hour_of_day" || name == "day_of_week") {
      if (!want(1, 2) || !arg_type(0, {Type::kTime})) return -1;
      if (args.size() == 2 && (!arg_type(1, {Type::kInt}) || node(args[1]).op != Op::kConst))
        return fail(at[1], "E202", name + "() time-zone offset must be a constant duration, e.g. 8h");
      return binary(name == "hour_of_day" ? Op::kHour : Op::kWeekday, Type::kInt, args[0], args.size() == 2 ? args[1] : -1);
    }
    if (name == "len") {
      if (!want(1, 1) || !arg_type(0, {Type::kString})) return -1;
      return binary(Op::kLen, Type::kInt, args[0], -1);
    }
    if (name == "abs") {
      if (!want(1, 1) || !arg_type(0, {Type::kInt, Type::kDouble})) return -1;
      return binary(Op::kAbs, type(args[0]), args[0], -1);
    }
    if (name == "in_table" || name == "lookup") {
      // in_table("table", key) -> bool; lookup("table", key, "column") -> the column's type or null.
      const bool is_lookup = name == "lookup";
      if (!want(is_lookup ? 3 : 2, is_lookup ? 3 : 2)) return -1;
      auto constant_name = [&](size_t i, const char* what) {
        if (node(args[i]).op == Op::kConst && type(args[i]) == Type::kString) return true;
        return error(at[i], "E202", name + "() needs the " + what + " name as a constant string, e.g. \"risky_numbers\"");
      };
      if (!constant_name(0, "table") || (is_lookup && !constant_name(2, "column"))) return -1;
      const std::string table(node(args[0]).k.s);
      const auto ref = scope_.table(table);
      if (!ref || ref->id < 0) {
        std::string known;
        if (ref)
          for (const auto& [t, unused] : ref->columns) known += (known.empty() ? "" : ", ") + t;
        return fail(at[0], "E206", "unknown table '" + table + "'" +
                                       (known.empty() ? " (no tables are declared; declare them under tables: in the daemon config)"
                                                      : " (tables: " + known + ")"));
      }
      if (type(args[1]) != Type::kString)
        return fail(at[1], "E201", name + "() key must be a string, got " + std::string(to_string(type(args[1]))));
      N n;
      n.op = is_lookup ? Op::kLookup : Op::kInTable;
      n.type = Type::kBool;
      n.a = args[1];
      n.index = ref->id;
      if (is_lookup) {
        const std::string column(node(args[2]).k.s);
        n.column = ref->column(column);
        if (n.column < 0) {
          std::string known;
          for (const auto& [c, unused] : ref->columns) known += (known.empty() ? "" : ", ") + c;
          return fail(at[2], "E206", "table '" + table + "' has no column '" + column + "' (columns: " + known + ")");
        }
        n.type = ref->columns[static_cast<size_t>(n.column)].second;
      }
      return add(std::move(n));  // not folded: the answer depends on the live tables
    }
    return fail(fn.offset, "E204", "unknown function '" + name + "'");
  }

  std::string_view text_;
  const Scope& scope_;
  Expr::Program& p_;
  ExprError& err_;
  size_t pos_ = 0;
  Token tok_;
};

}  // namespace

Expr::Expr(std::unique_ptr<Program> p) : program_(std::move(p)), steps_(program_->steps.data()) {}
Expr::~Expr() = default;
Expr::Expr(Expr&&) noexcept = default;
Expr& Expr::operator=(Expr&&) noexcept = default;

std::optional<Expr> Expr::compile(std::string_view text, const Scope& scope, ExprError& error) {
  auto p = std::make_unique<Program>();
  p->text = std::string(text);
  Parser parser(p->text, scope, *p, error);
  if (!parser.parse()) return std::nullopt;
  return Expr(std::move(p));
}

Type Expr::type() const { return program_->nodes[static_cast<size_t>(program_->root)].type; }
const std::string& Expr::text() const { return program_->text; }

bool Expr::test(const EvalContext& ctx) const {
  return Program::run(static_cast<const Program::Step*>(steps_), *program_, ctx);
}

Value Expr::evaluate(const EvalContext& ctx) const { return program_->eval(program_->root, ctx); }

double Expr::number(const EvalContext& ctx) const {
  if (program_->arithmetic.fast) return program_->arithmetic.run(ctx);
  const Value v = program_->eval(program_->root, ctx);
  if (!v.present) return std::nan("");
  return as_double(v);
}

std::vector<Expr> Expr::necessary_conditions() const {
  using Step = Program::Step;
  const Program& p = *program_;
  std::vector<Expr> out;
  const auto n = static_cast<int32_t>(p.steps.size());
  if (type() != Type::kBool || n == 0) return out;
  // reach[i]: whether step i can lead to true without taking step `skip`.
  // Jumps go forward, so one backward pass decides every step.
  std::vector<char> reach(static_cast<size_t>(n));
  const auto leads = [&reach](int32_t to) { return to == Step::kTrue || (to >= 0 && reach[static_cast<size_t>(to)]); };
  const auto sweep = [&](int32_t skip) {
    for (int32_t i = n - 1; i >= 0; --i) {
      const Step& st = p.steps[static_cast<size_t>(i)];
      reach[static_cast<size_t>(i)] = i != skip && (leads(st.on_true) || leads(st.on_false));
    }
    return reach[0] != 0;
  };
  if (!sweep(-1)) return out;  // never true
  const std::vector<char> from = reach;
  for (int32_t i = 0; i < n; ++i) {
    const Step& st = p.steps[static_cast<size_t>(i)];
    if (st.kernel == Step::kGeneric || st.kernel >= Step::kAggregate || sweep(i)) continue;  // not on every way
    reach = from;
    const bool on_true = leads(st.on_true), on_false = leads(st.on_false);
    if (on_true == on_false) continue;  // either outcome can still end true
    // The leaf's nodes (a field or constant operand at most) in a program of
    // their own, its string constants with them.
    auto c = std::make_unique<Program>();
    c->text = p.text;
    const auto copy = [&](const auto& self, int at) -> int {
      if (at < 0) return -1;
      Program::Node node = p.nodes[static_cast<size_t>(at)];
      node.a = self(self, node.a);
      node.b = self(self, node.b);
      const auto own = [&c](Value& v) {
        if (!v.present || v.type != FieldType::kString) return;
        c->strings.emplace_back(v.s);
        v.s = c->strings.back();
      };
      own(node.k);
      for (Value& v : node.list) own(v);
      c->nodes.push_back(std::move(node));
      return static_cast<int>(c->nodes.size()) - 1;
    };
    c->root = copy(copy, st.node);
    if (!on_true) {
      Program::Node no;
      no.op = Op::kNot;
      no.type = Type::kBool;
      no.a = c->root;
      c->nodes.push_back(no);
      c->root = static_cast<int>(c->nodes.size()) - 1;
    }
    c->build_steps();
    if (c->steps.size() != 1 || c->steps[0].kernel != st.kernel) continue;  // cannot happen: leaf() is the same
    out.push_back(Expr(std::move(c)));
  }
  return out;
}

bool Expr::same_condition(const Expr& other) const {
  using Step = Program::Step;
  const auto& xs = program_->steps;
  const auto& ys = other.program_->steps;
  if (xs.size() != 1 || ys.size() != 1) return false;
  const Step& x = xs[0];
  const Step& y = ys[0];
  if (x.kernel != y.kernel || x.kernel == Step::kGeneric || x.index != y.index || x.on_true != y.on_true ||
      x.on_false != y.on_false)
    return false;
  const auto text = [](const Step::Chars& c) { return std::string_view(c.p, c.n); };
  switch (x.kernel) {
    case Step::kBool: return true;
    case Step::kStrEq: case Step::kStrNe: case Step::kStartsWith: case Step::kEndsWith: case Step::kContains:
      return text(x.k.str) == text(y.k.str);
    case Step::kStrIn: case Step::kStrNotIn:
      if (x.k.list.n != y.k.list.n) return false;
      for (size_t i = 0; i < x.k.list.n; ++i)
        if (x.k.list.p[i].s != y.k.list.p[i].s) return false;
      return true;
    default:
      if (x.kernel >= Step::kAggregate) return false;
      if (x.kernel >= Step::kDouble) return std::memcmp(&x.k.d, &y.k.d, sizeof x.k.d) == 0;
      return x.k.i == y.k.i;
  }
}

}  // namespace tocsin::rules
