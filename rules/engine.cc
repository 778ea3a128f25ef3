#include "rules/engine.h"

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "pipeline/json_writer.h"

namespace tocsin::rules {
namespace {

uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h ^ (h >> 29);
}

// Multiset of 64-bit hashes with counts: open addressing with linear probing
// and backward-shift deletion. Grows by doubling; never shrinks, so a key's
// steady state does not allocate.
class DistinctCounter {
 public:
  size_t size() const { return size_; }
  void add(uint64_t h) {
    if ((size_ + 1) * 4 > slots_.size() * 3) grow();
    size_t i = h & mask();
    while (slots_[i].count && slots_[i].hash != h) i = (i + 1) & mask();
    if (!slots_[i].count) { slots_[i].hash = h; ++size_; }
    ++slots_[i].count;
  }
  void remove(uint64_t h) {
    if (slots_.empty()) return;
    size_t i = h & mask();
    while (slots_[i].count && slots_[i].hash != h) i = (i + 1) & mask();
    if (!slots_[i].count || --slots_[i].count) return;
    --size_;
    for (size_t j = (i + 1) & mask(); slots_[j].count; j = (j + 1) & mask()) {
      const size_t home = slots_[j].hash & mask();
      if (((j - home) & mask()) >= ((j - i) & mask())) {
        slots_[i] = slots_[j];
        slots_[j].count = 0;
        i = j;
      }
    }
  }

 private:
  struct Slot { uint64_t hash = 0; uint32_t count = 0; };
  size_t mask() const { return slots_.size() - 1; }
  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(old.empty() ? 16 : old.size() * 2, Slot{});
    size_ = 0;
    for (const Slot& s : old)
      for (uint32_t c = 0; c < s.count; ++c) add(s.hash);
  }
  std::vector<Slot> slots_;
  size_t size_ = 0;
};

// One event inside a window: its time, id (for evidence) and the value each
// aggregate took from it (hash for count_distinct, the number for sum/avg).
struct Entry {
  int64_t time = 0;
  std::array<uint64_t, kMaxAggregates> payload{};
  std::array<char, 40> id{};
  uint8_t id_len = 0;
};

// A FIFO ring that reuses its storage.
class EntryRing {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  Entry& front() { return buf_[head_]; }
  Entry& back() { return buf_[(head_ + size_ - 1) & (buf_.size() - 1)]; }
  Entry& push() {
    if (size_ == buf_.size()) grow();
    ++size_;
    return back();
  }
  void pop() { head_ = (head_ + 1) & (buf_.size() - 1); --size_; }

 private:
  void grow() {
    std::vector<Entry> b(buf_.empty() ? 8 : buf_.size() * 2);
    for (size_t i = 0; i < size_; ++i) b[i] = buf_[(head_ + i) & (buf_.size() - 1)];
    buf_.swap(b);
    head_ = 0;
  }
  std::vector<Entry> buf_;
  size_t head_ = 0, size_ = 0;
};

struct KeyState {
  EntryRing window;
  std::array<DistinctCounter, kMaxAggregates> distinct;
  std::array<double, kMaxAggregates> sums{};
  int64_t newest = INT64_MIN;
  bool firing = false;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return hash_bytes(s); }
};

uint64_t double_bits(double d) { uint64_t u; std::memcpy(&u, &d, sizeof u); return u; }
double bits_double(uint64_t u) { double d; std::memcpy(&d, &u, sizeof d); return d; }

}  // namespace

struct Engine::RuleState {
  std::unordered_map<std::string, KeyState, StringHash, std::equal_to<>> keys;
  int64_t newest = INT64_MIN;  // newest event time seen by the rule (its watermark)
};

Engine::Engine(std::shared_ptr<const RuleSet> rules, SignalSink& sink, const RuleFeed* feed,
               const TableSource* tables)
    : rules_(std::move(rules)), sink_(sink), feed_(feed), table_source_(tables),
      counters_(new RuleCounters[rules_->rules.size()]()) {
  if (feed_) feed_version_ = feed_->version();
  if (table_source_) {
    tables_version_ = table_source_->version();
    tables_ = table_source_->snapshot();
  }
  for (size_t i = 0; i < rules_->rules.size(); ++i) state_.push_back(std::make_unique<RuleState>());
}

void Engine::replace_rules(std::shared_ptr<const RuleSet> next) {
  std::shared_ptr<RuleCounters[]> counters(new RuleCounters[next->rules.size()]());
  std::vector<std::unique_ptr<RuleState>> state(next->rules.size());
  for (size_t i = 0; i < next->rules.size(); ++i) {
    const Rule& r = next->rules[i];
    for (size_t j = 0; j < rules_->rules.size(); ++j) {
      const Rule& old = rules_->rules[j];
      if (old.id != r.id) continue;
      // Counters are monotonic per rule id, whatever the definition.
      const RuleCounters& oc = counters_[j];
      for (auto [to, from] : {std::pair{&counters[i].evaluations, &oc.evaluations}, {&counters[i].matches, &oc.matches},
                              {&counters[i].signals, &oc.signals}, {&counters[i].late, &oc.late}})
        to->store(from->load(std::memory_order_relaxed), std::memory_order_relaxed);
      if (old.definition_hash == r.definition_hash && state_[j]) {
        state[i] = std::move(state_[j]);
        counters[i].keys.store(oc.keys.load(std::memory_order_relaxed), std::memory_order_relaxed);
      }
      break;
    }
    if (!state[i]) state[i] = std::make_unique<RuleState>();
  }
  std::lock_guard lock(snapshot_mu_);
  rules_ = std::move(next);
  counters_ = std::move(counters);
  state_ = std::move(state);
}

EngineSnapshot Engine::snapshot() const {
  std::lock_guard lock(snapshot_mu_);
  return {rules_, counters_};
}

Engine::~Engine() = default;

std::span<const RuleCounters> Engine::counters() const {
  return {counters_.get(), rules_->rules.size()};
}

void Engine::fire(const Rule& rule, const Event& e, std::span<const std::string_view> key,
                  int64_t start, int64_t end, std::span<const double> aggs,
                  std::string_view first_id, int64_t first_time, uint64_t count) {
  title_buffer_.clear();
  for (const TemplatePart& p : rule.title) {
    switch (p.kind) {
      case TemplatePart::kLiteral: title_buffer_ += p.literal; break;
      case TemplatePart::kAggregate: {
        const double v = aggs[static_cast<size_t>(p.index)];
        char buf[32];
        const int n = v == std::floor(v) && std::fabs(v) < 1e15
                          ? std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v))
                          : std::snprintf(buf, sizeof buf, "%.2f", v);
        title_buffer_.append(buf, static_cast<size_t>(n));
        break;
      }
      case TemplatePart::kField: {
        const Value& v = e.at(p.index);
        if (!v.present) { title_buffer_ += "-"; break; }
        char buf[32];
        switch (v.type) {
          case FieldType::kString:
            if (p.masked) append_masked_text(title_buffer_, v.s); else title_buffer_ += v.s;
            break;
          case FieldType::kInt: title_buffer_ += std::to_string(v.i); break;
          case FieldType::kDouble: title_buffer_.append(buf, static_cast<size_t>(std::snprintf(buf, sizeof buf, "%.1f", v.d))); break;
          case FieldType::kBool: title_buffer_ += v.b ? "true" : "false"; break;
          case FieldType::kTime: title_buffer_ += format_rfc3339_ms(v.i, buf); break;
        }
        break;
      }
    }
  }
  Signal s;
  s.rule_set = rules_.get();
  s.rule = &rule;
  s.event = &e;
  s.key = key;
  s.title = title_buffer_;
  s.window_start_ms = start;
  s.window_end_ms = end;
  s.aggregates = aggs;
  s.first_event_id = first_id;
  s.first_event_time_ms = first_time;
  s.count = count;
  sink_.on_signal(s);
}

void Engine::on_event(const Event& e) {
  const RuleSet& set = *rules_;
  for (const int ri : set.rules_for(e.stream, e.kind)) {
    const Rule& rule = set.rules[static_cast<size_t>(ri)];
    RuleCounters& c = counters_[static_cast<size_t>(ri)];
    bump(c.evaluations);
    const EvalContext ctx{&e, nullptr, nullptr, tables_.get()};
    if (rule.where && !rule.where->test(ctx)) continue;
    bump(c.matches);
    if (!rule.windowed) {
      bump(c.signals);
      fire(rule, e, {}, e.time_ms, e.time_ms, {}, e.id(), e.time_ms, 1);
      continue;
    }
    RuleState& rs = *state_[static_cast<size_t>(ri)];
    if (rs.newest != INT64_MIN && e.time_ms <= rs.newest - rule.window_ms) {
      bump(c.late);
      continue;
    }
    rs.newest = std::max(rs.newest, e.time_ms);

    // The key is the group-by values joined by \x1f; key_values view its parts.
    std::array<std::pair<size_t, size_t>, kMaxGroupBy> parts{};
    key_buffer_.clear();
    for (size_t g = 0; g < rule.group_by.size(); ++g) {
      const Value& v = e.at(rule.group_by[g]);
      if (g) key_buffer_ += '\x1f';
      const size_t start = key_buffer_.size();
      if (!v.present) {
      } else if (v.type == FieldType::kString) {
        key_buffer_ += v.s;
      } else {
        char buf[24];
        key_buffer_.append(buf, static_cast<size_t>(std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v.i))));
      }
      parts[g] = {start, key_buffer_.size() - start};
    }
    std::array<std::string_view, kMaxGroupBy> key_values{};
    for (size_t g = 0; g < rule.group_by.size(); ++g)
      key_values[g] = std::string_view(key_buffer_).substr(parts[g].first, parts[g].second);
    auto it = rs.keys.find(std::string_view(key_buffer_));
    if (it == rs.keys.end()) {
      it = rs.keys.emplace(key_buffer_, KeyState{}).first;
      c.keys.store(static_cast<int64_t>(rs.keys.size()), std::memory_order_relaxed);
    }
    KeyState& ks = it->second;
    const size_t naggs = rule.aggregates.size();

    // Evict what fell out of the window ending at this event.
    const int64_t horizon = std::max(ks.newest, e.time_ms) - rule.window_ms;
    while (!ks.window.empty() && ks.window.front().time <= horizon) {
      const Entry& old = ks.window.front();
      for (size_t a = 0; a < naggs; ++a) {
        const Aggregate& agg = rule.aggregates[a];
        if (agg.kind == AggregateKind::kCountDistinct) ks.distinct[a].remove(old.payload[a]);
        else if (agg.kind != AggregateKind::kCount) ks.sums[a] -= bits_double(old.payload[a]);
      }
      ks.window.pop();
    }
    Entry& entry = ks.window.push();
    entry.time = e.time_ms;
    const std::string_view id = e.id();
    entry.id_len = static_cast<uint8_t>(std::min(id.size(), entry.id.size()));
    std::memcpy(entry.id.data(), id.data(), entry.id_len);
    for (size_t a = 0; a < naggs; ++a) {
      const Aggregate& agg = rule.aggregates[a];
      if (agg.kind == AggregateKind::kCount) continue;
      const Value& v = e.at(agg.slot);
      if (agg.kind == AggregateKind::kCountDistinct) {
        const uint64_t h = !v.present ? 0
                           : v.type == FieldType::kString ? hash_bytes(v.s)
                           : v.type == FieldType::kDouble ? double_bits(v.d) : static_cast<uint64_t>(v.i);
        entry.payload[a] = h;
        ks.distinct[a].add(h);
      } else {
        const double x = !v.present ? 0.0 : v.type == FieldType::kDouble ? v.d : static_cast<double>(v.i);
        entry.payload[a] = double_bits(x);
        ks.sums[a] += x;
      }
    }
    ks.newest = std::max(ks.newest, e.time_ms);

    std::array<double, kMaxAggregates> values{};
    const double n = static_cast<double>(ks.window.size());
    for (size_t a = 0; a < naggs; ++a) {
      switch (rule.aggregates[a].kind) {
        case AggregateKind::kCount: values[a] = n; break;
        case AggregateKind::kCountDistinct: values[a] = static_cast<double>(ks.distinct[a].size()); break;
        case AggregateKind::kSum: values[a] = ks.sums[a]; break;
        case AggregateKind::kAvg: values[a] = ks.sums[a] / n; break;
      }
    }
    const bool hit = rule.having->test(EvalContext{&e, values.data(), nullptr, tables_.get()});
    if (hit && !ks.firing) {
      bump(c.signals);
      const Entry& first = ks.window.front();
      fire(rule, e, {key_values.data(), rule.group_by.size()}, e.time_ms - rule.window_ms,
           e.time_ms, {values.data(), naggs}, {first.id.data(), first.id_len}, first.time,
           ks.window.size());
    }
    ks.firing = hit;
  }
}

void Engine::on_tick(int64_t now_ms) {
  if (table_source_ && table_source_->version() != tables_version_) {
    tables_version_ = table_source_->version();
    tables_ = table_source_->snapshot();
  }
  if (feed_ && feed_->version() != feed_version_) {
    feed_version_ = feed_->version();
    if (auto next = feed_->current(); next && next != rules_) replace_rules(std::move(next));
  }
  // Drop keys whose whole window lies behind the rule's watermark, at most
  // every 10 s, so memory follows the live key set.
  if (now_ms - last_sweep_ms_ < 10'000) return;
  last_sweep_ms_ = now_ms;
  for (size_t ri = 0; ri < state_.size(); ++ri) {
    const Rule& rule = rules_->rules[ri];
    if (!rule.windowed) continue;
    RuleState& rs = *state_[ri];
    for (auto it = rs.keys.begin(); it != rs.keys.end();) {
      if (it->second.newest <= rs.newest - rule.window_ms) it = rs.keys.erase(it);
      else ++it;
    }
    counters_[ri].keys.store(static_cast<int64_t>(rs.keys.size()), std::memory_order_relaxed);
  }
}

}  // namespace tocsin::rules
