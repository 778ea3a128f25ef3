#include "rules/engine.h"

#include <algorithm>
#include <deque>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <queue>

#include "pipeline/json_writer.h"
#include "rules/hash.h"

namespace tocsin::rules {
namespace {

// Multiset of 64-bit hashes with counts. Up to kInline distinct hashes live
// in the counter itself, so the usual key (a caller with a handful of callees)
// costs no pointer to follow. Beyond that: open addressing with linear
// probing and backward-shift deletion, grown by doubling and never freed, so
// a key's steady state does not allocate. clear() goes back to inline and
// keeps the table as a spare, zeroed only if the counter outgrows inline
// again: a recycled key (most have a handful of values) never touches it.
class DistinctCounter {
 public:
  static constexpr uint32_t kInline = 3;
  size_t size() const { return size_; }
  void clear() {
    if (cap_) {
      spare_ = cap_;
      cap_ = 0;
    }
    size_ = 0;
  }
  void add(uint64_t h) {
    if (!cap_) {
      for (uint32_t i = 0; i < size_; ++i)
        if (inline_hash_[i] == h) {
          ++inline_count_[i];
          return;
        }
      if (size_ < kInline) {
        inline_hash_[size_] = h;
        inline_count_[size_++] = 1;
        return;
      }
    }
    if ((size_ + 1) * 4 > cap_ * 3) grow();
    size_t i = h & mask();
    while (slots_[i].count && slots_[i].hash != h) i = (i + 1) & mask();
    if (!slots_[i].count) { slots_[i].hash = h; ++size_; }
    ++slots_[i].count;
  }
  void remove(uint64_t h) {
    if (!cap_) {
      for (uint32_t i = 0; i < size_; ++i)
        if (inline_hash_[i] == h) {
          if (--inline_count_[i] == 0) {  // the last one takes its place
            --size_;
            inline_hash_[i] = inline_hash_[size_];
            inline_count_[i] = inline_count_[size_];
          }
          return;
        }
      return;
    }
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
  size_t mask() const { return cap_ - 1; }
  // Moves every hash into a table twice as large (from inline: the spare, if any).
  void grow() {
    const uint32_t old_cap = cap_, old_size = size_;
    size_ = 0;
    if (old_cap == 0 && spare_) {
      cap_ = spare_;
      spare_ = 0;
      std::fill_n(slots_.get(), cap_, Slot{});
      for (uint32_t i = 0; i < old_size; ++i) insert(inline_hash_[i], inline_count_[i]);
      return;
    }
    std::unique_ptr<Slot[]> old = std::move(slots_);
    cap_ = cap_ == 0 ? 16 : cap_ * 2;
    slots_ = std::make_unique<Slot[]>(cap_);
    if (old_cap == 0) {
      for (uint32_t i = 0; i < old_size; ++i) insert(inline_hash_[i], inline_count_[i]);
    } else {
      for (uint32_t i = 0; i < old_cap; ++i)
        if (old[i].count) insert(old[i].hash, old[i].count);
    }
  }
  // Into the table: `h` is not there yet, and there is room.
  void insert(uint64_t h, uint32_t count) {
    size_t i = h & mask();
    while (slots_[i].count) i = (i + 1) & mask();
    slots_[i] = {h, count};
    ++size_;
  }
  // 56 bytes: a window key holds its first counter in one cache line.
  std::array<uint64_t, kInline> inline_hash_{};  // while cap_ == 0
  std::array<uint32_t, kInline> inline_count_{};
  uint32_t cap_ = 0;  // of slots_, a power of two; 0: inline
  uint32_t size_ = 0;
  uint32_t spare_ = 0;  // while inline: the size of slots_ kept from before (0: none)
  std::unique_ptr<Slot[]> slots_;
};
static_assert(sizeof(DistinctCounter) == 56);

// Distinct counting in bounded memory: HyperLogLog with 512 registers
// (standard error about 4.6%). A sliding window keeps one sketch per eighth of
// the window and merges those that overlap it, so old values age out with a
// granularity of size/8; other windows use one sketch, reset with the window.
class ApproxDistinct {
 public:
  static constexpr int kSlices = 8;
  static constexpr int kRegisters = 512;
  explicit ApproxDistinct(int64_t window_ms, bool sliding)
      : slice_ms_(sliding ? std::max<int64_t>(window_ms / kSlices, 1) : 0), window_ms_(window_ms) {
    slice_start_.fill(INT64_MIN);
  }
  void clear() {
    for (auto& r : regs_) r.fill(0);
    slice_start_.fill(INT64_MIN);
  }
  void add(int64_t t, uint64_t h) {
    h = mix(h);
    size_t s = 0;
    if (slice_ms_) {
      const int64_t start = (t >= 0 ? t / slice_ms_ : (t - slice_ms_ + 1) / slice_ms_) * slice_ms_;
      s = static_cast<size_t>((start / slice_ms_) % kSlices + kSlices) % kSlices;
      if (slice_start_[s] != start) {
        if (slice_start_[s] > start) return;  // older than what this slice holds: too late to count
        regs_[s].fill(0);
        slice_start_[s] = start;
      }
    }
    const size_t idx = h >> 55;                                 // top 9 bits pick the register
    const uint8_t rank = static_cast<uint8_t>(std::countl_zero((h << 9) | (1ull << 8)) + 1);
    regs_[s][idx] = std::max(regs_[s][idx], rank);
  }
  double estimate(int64_t now) const {
    std::array<uint8_t, kRegisters> m{};
    for (int s = 0; s < (slice_ms_ ? kSlices : 1); ++s) {
      if (slice_ms_ && (slice_start_[static_cast<size_t>(s)] == INT64_MIN ||
                        slice_start_[static_cast<size_t>(s)] + slice_ms_ <= now - window_ms_))
        continue;
      for (int i = 0; i < kRegisters; ++i) m[static_cast<size_t>(i)] = std::max(m[static_cast<size_t>(i)], regs_[static_cast<size_t>(s)][static_cast<size_t>(i)]);
    }
    double sum = 0;
    int zeros = 0;
    static const std::array<double, 64> kInversePowers = [] {
      std::array<double, 64> t{};
      for (size_t r = 0; r < t.size(); ++r) t[r] = std::ldexp(1.0, -static_cast<int>(r));
      return t;
    }();
    for (uint8_t r : m) {
      sum += kInversePowers[r & 63];
      zeros += r == 0;
    }
    const double mm = kRegisters, e = 0.7213 / (1 + 1.079 / mm) * mm * mm / sum;
    return (e <= 2.5 * mm && zeros) ? mm * std::log(mm / zeros) : e;  // small-range correction
  }

 private:
  static uint64_t mix(uint64_t x) {  // splitmix64 finaliser: HyperLogLog needs well-spread bits
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull; x ^= x >> 27; x *= 0x94d049bb133111ebull; return x ^ (x >> 31);
  }
  int64_t slice_ms_, window_ms_;
  std::array<int64_t, kSlices> slice_start_{};
  std::array<std::array<uint8_t, kRegisters>, kSlices> regs_{};
};

uint64_t double_bits(double d) { uint64_t u; std::memcpy(&u, &d, sizeof u); return u; }
double bits_double(uint64_t u) { double d; std::memcpy(&d, &u, sizeof d); return d; }

// What count_distinct counts of a value.
uint64_t value_hash(const Value& v) {
  return !v.present ? 0
         : v.type == FieldType::kString ? key_hash(v.s)
         : v.type == FieldType::kDouble ? double_bits(v.d) : static_cast<uint64_t>(v.i);
}

// One event inside a sliding window: its time, then the columns the rule's
// aggregates read (Columns): the hash of a field for count_distinct, its
// number for sum/avg/min/max (one column however many of those read it), 1/0
// for a count_if. Only those are stored (Entry::words): most rules keep 16-
// or 24-byte entries, so that expiring one reads a line that holds the next
// too. The event's id (evidence, read only when the rule fires) is kept apart.
struct Entry {
  int64_t time;
  uint64_t* payload() { return reinterpret_cast<uint64_t*>(this + 1); }
  const uint64_t* payload() const { return reinterpret_cast<const uint64_t*>(this + 1); }
  static size_t words(size_t columns) { return sizeof(Entry) / 8 + columns; }
};
static_assert(sizeof(Entry) % 8 == 0);

// Where in an Entry's payload each aggregate of a rule finds what it took
// from the event: aggregates of the same field and kind of value share a
// column (avg, max and sum of duration_s: one). count, rate, baseline and
// approx_count_distinct store nothing.
struct Columns {
  std::array<uint8_t, kMaxAggregates> of{};  // by aggregate
  uint8_t count = 0;
};
Columns entry_columns(const Rule& r) {
  Columns c;
  std::array<std::pair<int, int>, kMaxAggregates> source{};  // per column: (value kind, slot)
  for (size_t a = 0; a < r.aggregates.size(); ++a) {
    const Aggregate& agg = r.aggregates[a];
    int kind;
    switch (agg.kind) {
      case AggregateKind::kCount: case AggregateKind::kRate: case AggregateKind::kBaseline:
      case AggregateKind::kApproxDistinct: continue;
      case AggregateKind::kCountIf: kind = -1 - static_cast<int>(a); break;  // a column of its own
      case AggregateKind::kCountDistinct: kind = 1; break;  // the value's hash
      default: kind = 2;                                     // the value as a number
    }
    size_t col = 0;
    while (col < c.count && source[col] != std::pair{kind, agg.slot}) ++col;
    if (col == c.count) source[c.count++] = {kind, agg.slot};
    c.of[a] = static_cast<uint8_t>(col);
  }
  return c;
}

// What the window keys of one rule have in common, worked out once.
struct WindowShape {
  Columns columns;  // sliding: of the ring's entries
  // A bit per aggregate that an event entering or leaving the window changes
  // (not count, rate, baseline: they need no per-event work).
  uint8_t per_event = 0;
  // A bit per aggregate kept in WindowKey::acc (count_if, sum, avg, min, max):
  // the only accumulators a new key or window zeroes, so that one whose
  // aggregates need none of the key's second line does not write it.
  uint8_t accumulated = 0;
  uint8_t distinct0 = 0xff;  // the first count_distinct aggregate (0xff: none)
  bool more_distincts = false;  // a second count_distinct: counters in WindowKey::more
  bool approx = false;          // approx_count_distinct: WindowKey::approx
  // more_distincts, approx or a history: state past the key's third cache
  // line, which other rules never read.
  bool cold = false;
};
WindowShape window_shape(const Rule& r) {
  WindowShape w;
  w.columns = entry_columns(r);
  size_t distincts = 0;
  for (size_t a = 0; a < r.aggregates.size(); ++a) {
    const AggregateKind kind = r.aggregates[a].kind;
    if (kind != AggregateKind::kCount && kind != AggregateKind::kRate && kind != AggregateKind::kBaseline)
      w.per_event |= static_cast<uint8_t>(1u << a);
    if (kind == AggregateKind::kCountIf || kind == AggregateKind::kSum || kind == AggregateKind::kAvg ||
        kind == AggregateKind::kMin || kind == AggregateKind::kMax)
      w.accumulated |= static_cast<uint8_t>(1u << a);
    if (kind == AggregateKind::kCountDistinct && distincts++ == 0) w.distinct0 = static_cast<uint8_t>(a);
    w.approx |= kind == AggregateKind::kApproxDistinct;
  }
  w.more_distincts = distincts > 1;
  w.cold = w.more_distincts || w.approx || r.history_windows > 0;
  return w;
}

// A FIFO ring of entries of one size (set_columns) and of their events'
// ids (up to kIdBytes), in one allocation that it reuses: the entries first,
// then the ids, so that the entries an event reads are dense. Id slots are as
// wide as the longest id pushed so far needs (16 bytes for ids up to 15), so
// that ids, written on every push but read only by a firing, do not take three
// times the entries' memory. Its fields take 19 bytes: a WindowKey keeps its
// flags in the rest of the ring's 24, so that the fields every event reads fit
// the first cache line with two accumulators.
class EntryRing {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Entries of `columns` payload words; drops the storage if that changes the size.
  void set_columns(size_t columns) {
    const auto w = static_cast<uint8_t>(Entry::words(columns));
    if (w == words_) return;
    buf_.reset();
    log2_cap_ = 0;
    head_ = size_ = 0;
    words_ = w;
  }
  static constexpr size_t kIdBytes = 40;
  Entry& front() { return entry(head_); }
  const void* front_address() const { return size_ ? &entry(head_) : nullptr; }
  std::string_view front_id() const {
    const char* id = id_at(head_);
    return {id + 1, static_cast<unsigned char>(id[0])};
  }
  const Entry& at(size_t i) const { return entry((head_ + static_cast<uint32_t>(i)) & mask()); }
  // The new last entry, for event `id` (cut to kIdBytes).
  Entry& push(std::string_view id) {
    const size_t len = std::min(id.size(), kIdBytes);
    const auto id_words = static_cast<uint8_t>((len + 1 + 7) / 8);  // a length byte, then the id
    if (!buf_ || size_ == cap()) relayout(buf_ ? log2_cap_ + 1 : 1, std::max(id_words, id_words_));
    else if (id_words > id_words_) relayout(log2_cap_, id_words);
    ++size_;
    const uint32_t i = (head_ + size_ - 1) & mask();
    char* to = id_at(i);
    to[0] = static_cast<char>(len);
    copy_id(to + 1, id.data(), len);
    return entry(i);
  }
  void pop() { head_ = (head_ + 1) & mask(); --size_; }
  void clear() { head_ = size_ = 0; }  // keeps the storage

 private:
  // memcpy of len <= kIdBytes inline, as overlapping fixed-size moves: a call
  // to memcpy per push cost ~20 instructions more.
  static void copy_id(char* to, const char* from, size_t len) {
    static_assert(kIdBytes <= 48);
    if (len >= 16) {
      std::memcpy(to, from, 16);
      if (len > 32) std::memcpy(to + 16, from + 16, 16);
      std::memcpy(to + len - 16, from + len - 16, 16);
    } else if (len >= 8) {
      std::memcpy(to, from, 8);
      std::memcpy(to + len - 8, from + len - 8, 8);
    } else if (len >= 4) {
      std::memcpy(to, from, 4);
      std::memcpy(to + len - 4, from + len - 4, 4);
    } else {
      for (size_t i = 0; i < len; ++i) to[i] = from[i];
    }
  }
  uint32_t cap() const { return buf_ ? uint32_t{1} << log2_cap_ : 0; }
  uint32_t mask() const { return (uint32_t{1} << log2_cap_) - 1; }
  Entry& entry(uint32_t i) const { return *reinterpret_cast<Entry*>(buf_.get() + size_t{i} * words_); }
  char* id_at(uint32_t i) const { return reinterpret_cast<char*>(buf_.get() + size_t{cap()} * words_ + size_t{i} * id_words_); }
  // Moves the entries and ids into new storage of 2^log2_cap entries (at
  // least size_) and id slots of `id_words` (at least id_words_).
  void relayout(int log2_cap, uint8_t id_words) {
    const size_t cap = size_t{1} << log2_cap;
    std::unique_ptr<uint64_t[]> b(new uint64_t[cap * (words_ + id_words)]);
    for (uint32_t i = 0; i < size_; ++i) {
      const uint32_t from = (head_ + i) & mask();
      std::memcpy(b.get() + size_t{i} * words_, &entry(from), size_t{words_} * 8);
      std::memcpy(b.get() + cap * words_ + size_t{i} * id_words, id_at(from), size_t{id_words_} * 8);
    }
    buf_ = std::move(b);
    log2_cap_ = static_cast<uint8_t>(log2_cap);
    id_words_ = id_words;
    head_ = 0;
  }
  std::unique_ptr<uint64_t[]> buf_;  // 2^log2_cap_ entries, or none
  uint32_t head_ = 0;
  uint32_t size_ = 0;
  uint8_t log2_cap_ = 0;
  uint8_t words_ = static_cast<uint8_t>(Entry::words(kMaxAggregates));  // per entry
  uint8_t id_words_ = 2;  // per id slot
};
static_assert(sizeof(EntryRing) == 24);

// The aggregates of one key's current window, for one rule (a slot of a
// KeyTable): distinct counters exist only for the aggregates that need them.
//
// Laid out by use: the first cache line holds what every event reads and
// writes and the first two accumulators, the second the other accumulators,
// the third the distinct counters, the fourth what only some rules or a
// firing touch. An event thus costs one to three cache lines per rule
// (hot_lines() says which).
struct alignas(64) WindowKey {
  // Sliding windows only. The flags below sit in the ring's tail padding.
  [[no_unique_address]] EntryRing ring;
  bool live = false;  // false: a recycled slot, as if the key did not exist
  bool firing = false;
  uint8_t first_id_len = 0;
  uint8_t distinct0 = kNoDistinct;  // the aggregate whose counter is `d0`
  static constexpr uint8_t kNoDistinct = 0xff;
  // Sliding min/max: bit a set when the last event holding aggregate a's
  // extreme may have left the window, so acc[a] must be recomputed from the ring.
  uint8_t stale = 0;
  uint64_t count = 0;
  int64_t newest = INT64_MIN;  // newest event time of the key
  // Tumbling: the bucket's start; session: the session's start; sliding: the
  // time of ring.front(), read without touching the ring.
  int64_t start = INT64_MIN;
  std::array<double, kMaxAggregates> acc{};  // sum, count_if count, min or max
  // Sliding min/max: how many of the window's events hold acc[a] (saturating:
  // at kManyTies, one leaving makes it stale). An extreme that several events
  // share (a run of zero-length calls) thus leaves without a rescan.
  std::array<uint16_t, kMaxAggregates> ties{};
  static constexpr uint16_t kManyTies = UINT16_MAX;
  // count_distinct: the first such aggregate's counter inline, any other's in `more`.
  alignas(64) DistinctCounter d0;
  std::unique_ptr<DistinctCounter[]> more;                     // per aggregate
  std::unique_ptr<std::unique_ptr<ApproxDistinct>[]> approx;   // per aggregate, created on first use
  int64_t first_time = 0;      // tumbling and session: the first event
  std::array<char, 40> first_id{};
  // Rules with baseline(): the aggregates of the key's previous tumbling
  // windows, newest last, and those of the open window (as of its last event).
  struct History {
    static constexpr int kWindows = 12;
    std::array<int64_t, kWindows> start{};
    std::array<std::array<double, kMaxAggregates>, kWindows> values{};
    int size = 0;
    std::array<double, kMaxAggregates> current{};
    void close(int64_t window_start) {
      if (size == kWindows) {
        std::move(start.begin() + 1, start.end(), start.begin());
        std::move(values.begin() + 1, values.end(), values.begin());
        --size;
      }
      start[static_cast<size_t>(size)] = window_start;
      values[static_cast<size_t>(size)] = current;
      ++size;
    }
    // Mean of aggregate `of` over the `n` windows of `size_ms` before `window_start`.
    double baseline(int of, int n, int64_t window_start, int64_t size_ms) const {
      double sum = 0;
      for (int i = 0; i < size; ++i)
        if (start[static_cast<size_t>(i)] < window_start && start[static_cast<size_t>(i)] >= window_start - n * size_ms)
          sum += values[static_cast<size_t>(i)][static_cast<size_t>(of)];
      return sum / n;
    }
  };
  std::unique_ptr<History> history;

  // Makes a recycled slot a fresh key of `rule`, reusing its storage.
  void renew(const Rule& rule, const WindowShape& shape);

  void clear_acc(const WindowShape& shape) {
    for (uint8_t m = shape.accumulated; m; m &= static_cast<uint8_t>(m - 1)) acc[static_cast<size_t>(__builtin_ctz(m))] = 0;
  }

  // The distinct counter of count_distinct aggregate `a`.
  DistinctCounter& distinct(size_t a) { return a == distinct0 ? d0 : more[a]; }

  // Empties the window (a new bucket or session); touches only the lines the rule uses.
  void reset(size_t naggs, const WindowShape& shape) {
    if (distinct0 != kNoDistinct) d0.clear();
    if (shape.cold) {
      for (size_t a = 0; a < naggs; ++a) {
        if (more) more[a].clear();
        if (approx && approx[a]) approx[a]->clear();
      }
    }
    clear_acc(shape);
    count = 0;
    stale = 0;
    firing = false;
  }
};

constexpr size_t kAccOffset = 48;  // of WindowKey::acc: acc[0] and acc[1] are in the first line
static_assert(offsetof(WindowKey, acc) == kAccOffset && offsetof(WindowKey, ties) / 64 == 1 && offsetof(WindowKey, d0) == 128 && offsetof(WindowKey, more) < 192 &&
                  offsetof(WindowKey, approx) == 192 && sizeof(WindowKey) == 256,
              "WindowKey's lines as documented");

// The cache lines of a rule's WindowKey that an event reads or writes: bit i for line i.
uint8_t hot_lines(const Rule& r) {
  uint8_t lines = 1;
  for (size_t a = 0; a < r.aggregates.size(); ++a) {
    switch (r.aggregates[a].kind) {
      case AggregateKind::kCount: case AggregateKind::kRate: break;
      case AggregateKind::kCountDistinct: lines |= 4; break;
      case AggregateKind::kApproxDistinct: case AggregateKind::kBaseline: lines |= 8; break;
      case AggregateKind::kMin: case AggregateKind::kMax:  // acc[a] and, sliding, ties[a]
        lines |= (kAccOffset + 8 * (a + 1) <= 64 ? 1 : 2) | (r.window_type == WindowType::kSliding ? 2 : 0);
        break;
      default: lines |= kAccOffset + 8 * (a + 1) <= 64 ? 1 : 2;  // acc[a]
    }
  }
  return lines;
}

// A stored event: only the slots a rule needs later, packed into one string
// ([slot][type][payload] ...), so millions of pending clocks stay small.
void pack_event(const Event& e, uint32_t slots, std::string& out) {
  out.clear();
  for (int i = 0; i < kMaxSlots; ++i) {
    if (!(slots >> i & 1)) continue;
    const Value& v = e.at(i);
    if (!v.present) continue;
    out += static_cast<char>(i);
    out += static_cast<char>(v.type);
    switch (v.type) {
      case FieldType::kString: {
        const uint16_t n = static_cast<uint16_t>(std::min<size_t>(v.s.size(), 65535));
        out.append(reinterpret_cast<const char*>(&n), 2);
        out.append(v.s.data(), n);
        break;
      }
      case FieldType::kDouble: out.append(reinterpret_cast<const char*>(&v.d), 8); break;
      case FieldType::kBool: out += static_cast<char>(v.b); break;
      default: out.append(reinterpret_cast<const char*>(&v.i), 8);
    }
  }
}

// Fills `e` from a packed event; string views point into `packed`.
bool unpack_event(std::string_view packed, Stream stream, int64_t time_ms, Event& e) {
  e.stream = stream;
  e.kind = -1;
  e.time_ms = time_ms;
  e.source = {};
  for (auto& v : e.slots) v.present = false;
  size_t i = 0;
  auto need = [&](size_t n) { return i + n <= packed.size(); };
  while (i < packed.size()) {
    if (!need(2)) return false;
    const int slot = static_cast<uint8_t>(packed[i]);
    const auto type = static_cast<FieldType>(packed[i + 1]);
    i += 2;
    if (slot >= kMaxSlots) return false;
    Value& v = e.slots[static_cast<size_t>(slot)];
    v = Value{};
    v.type = type;
    v.present = true;
    switch (type) {
      case FieldType::kString: {
        uint16_t n;
        if (!need(2)) return false;
        std::memcpy(&n, packed.data() + i, 2);
        i += 2;
        if (!need(n)) return false;
        v.s = packed.substr(i, n);
        i += n;
        break;
      }
      case FieldType::kDouble: if (!need(8)) return false; std::memcpy(&v.d, packed.data() + i, 8); i += 8; break;
      case FieldType::kBool: if (!need(1)) return false; v.b = packed[i++] != 0; break;
      default: if (!need(8)) return false; std::memcpy(&v.i, packed.data() + i, 8); i += 8;
    }
  }
  return true;
}

// Keys to dense entry numbers, by open addressing (linear probing,
// backward-shift deletion). Entry numbers are recycled, never freed, so that
// a caller's values per entry keep their storage for the next key: key churn
// does not allocate once the pool has grown. Keys up to kInline bytes are also
// kept in the slot, so that a lookup touches one cache line, not the entry too.
class KeyIndex {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;
  uint32_t find(std::string_view key, uint64_t h) const {
    if (table_.empty()) return kNone;
    const size_t mask = table_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = table_[i];
      if (s.entry == kNone) return kNone;
      if (s.hash == h && same(s, key)) return s.entry;
    }
  }
  // `key` must not be present. The entry may be a new one: entries() grows by one.
  uint32_t insert(std::string_view key, uint64_t h) {
    if ((used_ + 1) * 2 > table_.size()) rehash(std::max<size_t>(16, table_.size() * 2));
    uint32_t e;
    if (!free_.empty()) {
      e = free_.back();
      free_.pop_back();
    } else {
      e = static_cast<uint32_t>(entries_.size());
      entries_.emplace_back();
    }
    Entry& en = entries_[e];
    en.key.assign(key);
    en.hash = h;
    en.used = true;
    place(e);
    ++used_;
    return e;
  }
  // Drops entry `e` and recycles its number.
  void erase(uint32_t e) {
    const size_t mask = table_.size() - 1;
    size_t i = entries_[e].hash & mask;
    while (table_[i].entry != e) i = (i + 1) & mask;
    table_[i].entry = kNone;
    for (size_t j = (i + 1) & mask; table_[j].entry != kNone; j = (j + 1) & mask) {
      const size_t home = table_[j].hash & mask;
      if (((j - home) & mask) >= ((j - i) & mask)) {
        table_[i] = table_[j];
        table_[j].entry = kNone;
        i = j;
      }
    }
    entries_[e].used = false;
    free_.push_back(e);
    --used_;
  }
  size_t size() const { return used_; }
  size_t entries() const { return entries_.size(); }  // numbers in use or free
  bool used(uint32_t e) const { return entries_[e].used; }
  std::string_view key(uint32_t e) const { return entries_[e].key; }
  uint64_t hash(uint32_t e) const { return entries_[e].hash; }
  // Starts loading the slot a lookup of hash `h` reads first.
  void prefetch(uint64_t h) const {
    if (!table_.empty()) __builtin_prefetch(&table_[h & (table_.size() - 1)]);
  }
  // The entry in the home slot of hash `h` if its hash is `h`: usually the
  // key's entry, but only a guess (another key, or none), for prefetching.
  uint32_t guess(uint64_t h) const {
    if (table_.empty()) return kNone;
    const Slot& s = table_[h & (table_.size() - 1)];
    return s.hash == h ? s.entry : kNone;
  }

 private:
  static constexpr size_t kInline = 19;
  struct Entry {
    std::string key;
    uint64_t hash = 0;
    bool used = false;  // false: on the free list
  };
  struct Slot {
    uint64_t hash = 0;
    uint32_t entry = kNone;
    uint8_t len = 0;  // key length when <= kInline, else kInline + 1
    char key[kInline];
  };
  bool same(const Slot& s, std::string_view k) const {
    if (s.len > kInline) return entries_[s.entry].key == k;
    return s.len == k.size() && same_short(s.key, k.data(), k.size());
  }
  // a[0, n) == b[0, n) for n <= kInline, in at most three overlapping loads a side.
  static bool same_short(const char* a, const char* b, size_t n) {
    const auto diff = [a, b](size_t at, auto word) {
      decltype(word) x, y;
      std::memcpy(&x, a + at, sizeof x);
      std::memcpy(&y, b + at, sizeof y);
      return static_cast<uint64_t>(x ^ y);
    };
    if (n >= 8) return (diff(0, uint64_t{}) | diff(n - 8, uint64_t{}) | (n > 16 ? diff(8, uint64_t{}) : 0)) == 0;
    if (n >= 4) return (diff(0, uint32_t{}) | diff(n - 4, uint32_t{})) == 0;
    for (size_t i = 0; i < n; ++i)
      if (a[i] != b[i]) return false;
    return true;
  }
  void place(uint32_t e) {
    const size_t mask = table_.size() - 1;
    const std::string& k = entries_[e].key;
    size_t i = entries_[e].hash & mask;
    while (table_[i].entry != kNone) i = (i + 1) & mask;
    Slot& s = table_[i];
    s.hash = entries_[e].hash;
    s.entry = e;
    s.len = static_cast<uint8_t>(std::min(k.size(), kInline + 1));
    if (k.size() <= kInline) std::memcpy(s.key, k.data(), k.size());
  }
  void rehash(size_t n) {
    table_.assign(n, Slot{});
    for (uint32_t e = 0; e < entries_.size(); ++e)
      if (entries_[e].used) place(e);
  }
  std::vector<Entry> entries_;
  std::vector<Slot> table_;  // power of two, at most half full
  std::vector<uint32_t> free_;
  size_t used_ = 0;
};

struct SequenceFirst {
  int64_t time = 0;
  std::string packed;  // the slots `then` and the alert need
};

// The pending `first` steps of one key, oldest first: firsts[0, pending).
// The elements past `pending` are storage kept for later steps, so that
// steps come and go without allocating once grown.
struct SequenceKey {
  std::vector<SequenceFirst> firsts;
  size_t pending = 0;
  SequenceFirst& push() {
    if (pending == firsts.size()) firsts.emplace_back();
    return firsts[pending++];
  }
  void drop(size_t i) {  // keeps the order of the others
    std::rotate(firsts.begin() + static_cast<ptrdiff_t>(i), firsts.begin() + static_cast<ptrdiff_t>(i) + 1,
                firsts.begin() + static_cast<ptrdiff_t>(pending));
    --pending;
  }
};

// Values by key (KeyIndex), addressed by entry number. A new key gets a
// recycled value as its last key left it, storage included: the caller resets
// what matters. Values live in a deque, so that pointers to them stay valid.
template <typename V>
class KeyedValues {
 public:
  uint32_t find(std::string_view key) const { return index_.find(key, key_hash(key)); }  // or KeyIndex::kNone
  uint32_t find_or_insert(std::string_view key, bool& inserted) {
    const uint64_t h = key_hash(key);
    uint32_t e = index_.find(key, h);
    inserted = e == KeyIndex::kNone;
    if (!inserted) return e;
    e = index_.insert(key, h);
    if (e >= values_.size()) values_.resize(e + 1);
    return e;
  }
  V& operator[](uint32_t e) { return values_[e]; }
  const V& operator[](uint32_t e) const { return values_[e]; }
  std::string_view key(uint32_t e) const { return index_.key(e); }  // valid until the next insert
  void erase(uint32_t e) { index_.erase(e); }
  size_t size() const { return index_.size(); }
  bool empty() const { return index_.size() == 0; }
  template <typename F>  // f(key, value) for each key
  void for_each(F f) const {
    for (uint32_t e = 0; e < index_.entries(); ++e)
      if (index_.used(e)) f(index_.key(e), values_[e]);
  }
  template <typename F>
  void for_each(F f) {
    for (uint32_t e = 0; e < index_.entries(); ++e)
      if (index_.used(e)) f(index_.key(e), values_[e]);
  }
  template <typename Drop>  // drops the keys whose value `drop(value)` says
  void erase_if(Drop drop) {
    for (uint32_t e = 0; e < index_.entries(); ++e)
      if (index_.used(e) && drop(values_[e])) index_.erase(e);
  }

 private:
  KeyIndex index_;
  std::deque<V> values_;  // by entry
};

// A running set of clocks started by one `start` event.
struct Clocks {
  int64_t start = 0;
  uint32_t generation = 0;  // bumped by a restart or cancel; stale timers are skipped
  uint32_t pending = 0;     // bit d: deadline d not yet met
  uint32_t fired = 0;       // bit d: deadline d fired and may still be resolved (resolve_within)
  int64_t fired_at = 0;     // when the last deadline fired
  uint32_t refs = 0;        // timers in the queue that point here
  std::string packed;       // the start event's slots the alert needs
  uint32_t entry = 0;       // its entry in the rule's clocks (KeyedValues)
  // Deadlines moved by `extend` (deadline index, due time); null while none is.
  std::unique_ptr<std::vector<std::pair<uint8_t, int64_t>>> moved;
};

// When deadline `d` of a clock is due: moved by an extension, else `after` from
// the start (in working time when the deadline has a calendar).
int64_t due_of(const RuleSet& set, const Rule& rule, const Clocks& k, size_t d) {
  if (k.moved)
    for (const auto& [i, due] : *k.moved)
      if (i == d) return due;
  const Deadline& dl = rule.deadlines[d];
  return dl.calendar < 0 ? k.start + dl.after_ms : set.calendars[static_cast<size_t>(dl.calendar)].add(k.start, dl.after_ms);
}

struct Timer {
  int64_t due;
  Clocks* clocks;
  uint32_t generation;
  uint8_t deadline;
  bool operator>(const Timer& o) const { return due > o.due; }
};

// A timer heap whose items can be scanned (for the SLA board).
struct TimerQueue : std::priority_queue<Timer, std::vector<Timer>, std::greater<>> {
  const std::vector<Timer>& items() const { return c; }
};

// Queues a timer for each pending deadline of `k` at its current generation.
template <typename Timers>
void arm(const RuleSet& set, const Rule& rule, Clocks& k, Timers& timers) {
  for (size_t d = 0; d < rule.deadlines.size() && d < 32; ++d) {
    if (!(k.pending >> d & 1)) continue;
    timers.push(Timer{due_of(set, rule, k, d), &k, k.generation, static_cast<uint8_t>(d)});
    ++k.refs;
  }
}

// Touches only the lines the rule uses: a key of a rule without cold state
// never reads its fourth line (first_time and first_id are set by the first event).
void WindowKey::renew(const Rule& rule, const WindowShape& shape) {
  const size_t n = rule.aggregates.size();
  ring.set_columns(shape.columns.count);
  ring.clear();
  distinct0 = shape.distinct0;
  if (distinct0 != kNoDistinct) d0.clear();
  if (shape.cold) {
    if (history) history->size = 0;
    else if (rule.history_windows > 0) history = std::make_unique<History>();
    if (more) {
      for (size_t a = 0; a < n; ++a) more[a].clear();
    } else if (shape.more_distincts) {
      more = std::make_unique<DistinctCounter[]>(n);
    }
    if (approx) {
      for (size_t a = 0; a < n; ++a)
        if (approx[a]) approx[a]->clear();
    } else if (shape.approx) {
      approx = std::make_unique<std::unique_ptr<ApproxDistinct>[]>(n);
    }
  }
  clear_acc(shape);
  count = 0;
  stale = 0;
  start = newest = INT64_MIN;
  first_id_len = 0;
  firing = false;
  live = true;
}

// Slots of an event that must be kept to fire its alert later.
uint32_t kept_slots(const Rule& r, Stream s) {
  const StreamSchema& schema = schema_of(s);
  // The alert's context (where it happened) too, so a clock's alert can be routed and counted.
  uint32_t m = r.title_slots | context_slots(s) | (1u << schema.id_slot) | (1u << schema.time_slot);
  for (int k : r.match.key) m |= 1u << k;
  return m;
}

}  // namespace

struct Engine::RuleState {
  int key_table = -1;  // window rules: index into key_tables_ and the rule's position in it
  int key_pos = -1;
  size_t window_keys = 0;  // live window keys of the rule
  KeyedValues<SequenceKey> sequences;
  KeyedValues<Clocks> clocks;
  TimerQueue timers;
  int64_t newest = INT64_MIN;  // newest event time seen by the rule (its watermark)
  WindowShape shape;  // window rules
};

// The window keys of one (stream, group_by), shared by every window rule with
// that key: one lookup per event, whatever the number of rules. Entries are
// recycled with their per-rule state (KeyIndex): key churn does not allocate
// once the pool has grown. Rule position r's state for entry e is
// states[e * rules.size() + r].
struct Engine::KeyTable {
  static constexpr uint32_t kNone = KeyIndex::kNone;
  Stream stream = Stream::kCalls;
  std::vector<int> slots;  // group_by
  std::vector<int> rules;  // rule indices, by position
  // Byte offsets, in an entry's row of states, of the lines its rules use (hot_lines).
  std::vector<uint32_t> hot;
  std::vector<int> sliding;  // positions of the sliding-window rules
  KeyIndex index;
  std::vector<uint32_t> live;  // by entry: rules with a live state for the key
  std::vector<WindowKey> states;
  uint64_t cached_event = 0;  // Engine::event_seq_ of the last lookup, and its entry
  uint32_t cached_entry = kNone;
  uint32_t guessed_entry = kNone;  // of the current event: prefetched by on_event
  // The current event's key (built on arrival) and its hash. A key of one
  // string field views the event's value; others are built into early_text.
  std::string_view early_key;
  uint64_t early_hash = 0;
  std::string early_text;     // reuses its storage: no allocation once grown

  WindowKey& state(uint32_t e, int pos) { return states[e * rules.size() + static_cast<size_t>(pos)]; }

  // Starts loading the lines of entry `e`'s states that the table's rules use
  // (hot_lines), so that their cache misses overlap instead of queueing.
  void prefetch_states(uint32_t e) {
    const char* row = reinterpret_cast<const char*>(&states[e * rules.size()]);
    for (const uint32_t at : hot) __builtin_prefetch(row + at, 1);
    asm volatile("");  // GCC deletes calls to functions that only prefetch
  }

  uint32_t find(std::string_view key, uint64_t h) const { return index.find(key, h); }
  // `key` must not be present.
  uint32_t insert(std::string_view key, uint64_t h) {
    const uint32_t e = index.insert(key, h);
    if (e >= live.size()) {
      live.resize(e + 1);
      states.resize(live.size() * rules.size());
    }
    live[e] = 0;
    return e;
  }
  // Drops entry `e` (every rule's state must be dead) and recycles it.
  void erase(uint32_t e) {
    index.erase(e);
    cached_entry = kNone;
    cached_event = 0;
  }
};

struct Engine::Fire {
  const Rule* rule;
  const Event* event;
  size_t key_parts = 0;
  int64_t start = 0, end = 0, instance = 0;
  std::span<const double> values;
  std::string_view first_id;
  int64_t first_time = 0;
  uint64_t count = 1;
  std::string_view deadline;
  const Deadline* deadline_def = nullptr;
  std::string_view level;
  std::string_view severity;
  bool resolved = false;
};

Engine::Engine(std::shared_ptr<const RuleSet> rules, SignalSink& sink, const RuleFeed* feed,
               const TableSource* tables, EngineOptions options)
    : rules_(std::move(rules)), sink_(sink), feed_(feed), table_source_(tables),
      counters_(new RuleCounters[rules_->rules.size()]()), options_(options) {
  if (feed_) feed_version_ = feed_->version();
  if (table_source_) {
    tables_version_ = table_source_->version();
    tables_ = table_source_->snapshot();
  }
  for (size_t i = 0; i < rules_->rules.size(); ++i) state_.push_back(std::make_unique<RuleState>());
  key_tables_ = make_key_tables(*rules_, state_);
  guess_at_ = guess_points(*rules_);
  condition_memo_.assign(rules_->conditions.size(), 0);
  size_offered();
}

Engine::~Engine() = default;

void Engine::size_offered() {
  for (size_t s = 0; s < offered_.size(); ++s) offered_[s].assign(rules_->index[s].size(), 0);
}

void Engine::fold_offered() const {
  for (size_t s = 0; s < offered_.size(); ++s)
    for (size_t l = 0; l < offered_[s].size(); ++l) {
      if (!offered_[s][l]) continue;
      for (const Trigger& t : rules_->index[s][l])
        if (t.role == Trigger::kMain) bump(counters_[static_cast<size_t>(t.rule)].evaluations, offered_[s][l]);
      offered_[s][l] = 0;
    }
}

std::vector<std::unique_ptr<Engine::KeyTable>> Engine::make_key_tables(
    const RuleSet& set, std::vector<std::unique_ptr<RuleState>>& state) {
  std::vector<std::unique_ptr<KeyTable>> tables;
  for (size_t i = 0; i < set.rules.size(); ++i) {
    const Rule& r = set.rules[i];
    RuleState& rs = *state[i];
    rs.key_table = rs.key_pos = -1;
    if (r.kind != RuleKind::kWindow) continue;
    rs.shape = window_shape(r);
    size_t t = 0;
    while (t < tables.size() && !(tables[t]->stream == r.match.stream && tables[t]->slots == r.match.key)) ++t;
    if (t == tables.size()) {
      tables.push_back(std::make_unique<KeyTable>());
      tables.back()->stream = r.match.stream;
      tables.back()->slots = r.match.key;
    }
    rs.key_table = static_cast<int>(t);
    rs.key_pos = static_cast<int>(tables[t]->rules.size());
    tables[t]->rules.push_back(static_cast<int>(i));
    for (uint8_t m = hot_lines(r); m; m &= m - 1)
      tables[t]->hot.push_back(static_cast<uint32_t>(rs.key_pos * sizeof(WindowKey) + 64 * __builtin_ctz(m)));
    if (r.window_type == WindowType::kSliding) tables[t]->sliding.push_back(rs.key_pos);
  }
  return tables;
}

Engine::GuessPoints Engine::guess_points(const RuleSet& set) {
  GuessPoints at;
  for (size_t s = 0; s < at.size(); ++s)
    for (const std::vector<Trigger>& triggers : set.index[s]) {
      size_t first = triggers.size();
      for (size_t i = 0; i < triggers.size() && first == triggers.size(); ++i)
        if (triggers[i].role == Trigger::kMain && set.rules[static_cast<size_t>(triggers[i].rule)].kind == RuleKind::kWindow)
          first = i;
      // Reading a probe slot stalls until it arrives: worth it only with
      // enough filters before the window rule for the slot to have come and
      // for the states' misses to overlap (never with a window rule first).
      at[s].push_back(first == triggers.size() || first < kGuessAfter * 2 ? SIZE_MAX : first / 2);
    }
  return at;
}

void Engine::replace_rules(std::shared_ptr<const RuleSet> next) {
  fold_offered();
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
                              {&counters[i].signals, &oc.signals}, {&counters[i].late, &oc.late}, {&counters[i].dropped, &oc.dropped}})
        to->store(from->load(std::memory_order_relaxed), std::memory_order_relaxed);
      if (old.definition_hash == r.definition_hash && state_[j]) {
        state[i] = std::move(state_[j]);
        counters[i].keys.store(oc.keys.load(std::memory_order_relaxed), std::memory_order_relaxed);
        counters[i].timers.store(oc.timers.load(std::memory_order_relaxed), std::memory_order_relaxed);
      }
      break;
    }
    if (!state[i]) state[i] = std::make_unique<RuleState>();
  }
  // Window rules kept: move their live keys into the new key tables.
  std::vector<std::pair<int, int>> from(state.size());
  for (size_t i = 0; i < state.size(); ++i) from[i] = {state[i]->key_table, state[i]->key_pos};
  auto tables = make_key_tables(*next, state);
  for (size_t i = 0; i < state.size(); ++i) {
    const auto [ot, opos] = from[i];
    if (ot < 0 || state[i]->key_table < 0) continue;
    KeyTable& src = *key_tables_[static_cast<size_t>(ot)];
    KeyTable& dst = *tables[static_cast<size_t>(state[i]->key_table)];
    for (uint32_t e = 0; e < src.index.entries(); ++e) {
      if (!src.index.used(e)) continue;
      WindowKey& k = src.state(e, opos);
      if (!k.live) continue;
      const std::string_view key = src.index.key(e);
      const uint64_t h = src.index.hash(e);
      uint32_t d = dst.find(key, h);
      if (d == KeyTable::kNone) d = dst.insert(key, h);
      dst.state(d, state[i]->key_pos) = std::move(k);
      ++dst.live[d];
    }
  }
  std::lock_guard lock(snapshot_mu_);
  rules_ = std::move(next);
  counters_ = std::move(counters);
  state_ = std::move(state);
  key_tables_ = std::move(tables);
  guess_at_ = guess_points(*rules_);
  condition_memo_.assign(rules_->conditions.size(), 0);
  size_offered();
}

EngineSnapshot Engine::snapshot() const {
  std::lock_guard lock(snapshot_mu_);
  return {rules_, counters_};
}

std::span<const RuleCounters> Engine::counters() const {
  fold_offered();
  return {counters_.get(), rules_->rules.size()};
}

size_t Engine::build_key(const Event& e, const std::vector<int>& slots) {
  // The key is the field values joined by \x1f; key_parts_ view its parts.
  std::array<std::pair<size_t, size_t>, kMaxGroupBy> parts{};
  key_buffer_.clear();
  for (size_t g = 0; g < slots.size(); ++g) {
    const Value& v = e.at(slots[g]);
    if (g) key_buffer_ += '\x1f';
    const size_t start = key_buffer_.size();
    if (!v.present) {
    } else if (v.type == FieldType::kString) {
      key_buffer_ += v.s;
    } else {
      char buf[32];
      const int n = v.type == FieldType::kDouble ? std::snprintf(buf, sizeof buf, "%.17g", v.d)
                    : v.type == FieldType::kBool ? std::snprintf(buf, sizeof buf, "%s", v.b ? "true" : "false")
                                                 : std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v.i));
      key_buffer_.append(buf, static_cast<size_t>(n));
    }
    parts[g] = {start, key_buffer_.size() - start};
  }
  for (size_t g = 0; g < slots.size(); ++g)
    key_parts_[g] = std::string_view(key_buffer_).substr(parts[g].first, parts[g].second);
  return slots.size();
}

std::string_view Engine::key_of(const Event& e, const std::vector<int>& slots) {
  if (slots.size() == 1) {
    const Value& v = e.at(slots[0]);
    if (v.type == FieldType::kString) return v.present ? v.s : std::string_view();
  }
  build_key(e, slots);
  return key_buffer_;
}

std::string_view Engine::score(const Rule& rule, const EvalContext& ctx, double* values) {
  const Score& sc = *rule.score;
  const size_t first = rule.aggregates.size();
  double total = 0;
  for (size_t i = 0; i < sc.features.size(); ++i) {
    const Feature& f = sc.features[i];
    double v = f.value->type() == Type::kBool ? (f.value->test(ctx) ? 1.0 : 0.0) : f.value->number(ctx);
    if (std::isnan(v)) v = 0;
    v = std::clamp(v, 0.0, f.cap) / f.cap;
    values[first + i] = v;
    total += v * f.weight;
  }
  values[first + sc.features.size()] = total;
  std::string_view level;
  for (const auto& [name, min] : sc.levels)
    if (total >= min) level = name;
  return level;
}

size_t Engine::split_key(std::string_view key, size_t fields) {
  size_t n = 0, pos = 0;
  while (n < fields) {
    const size_t sep = key.find('\x1f', pos);
    key_parts_[n++] = key.substr(pos, sep == std::string_view::npos ? std::string_view::npos : sep - pos);
    if (sep == std::string_view::npos) break;
    pos = sep + 1;
  }
  return n;
}

void Engine::render(const std::vector<TemplatePart>& parts, const Fire& f, std::string& out) {
  const Event& e = *f.event;
  out.clear();
  for (const TemplatePart& p : parts) {
    switch (p.kind) {
      case TemplatePart::kLiteral: out += p.literal; break;
      case TemplatePart::kDeadline: out += f.deadline; break;
      case TemplatePart::kLevel: out += f.level; break;
      case TemplatePart::kAggregate: {
        const double v = f.values[static_cast<size_t>(p.index)];
        char buf[32];
        const int n = v == std::floor(v) && std::fabs(v) < 1e15
                          ? std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v))
                          : std::snprintf(buf, sizeof buf, "%.2f", v);
        out.append(buf, static_cast<size_t>(n));
        break;
      }
      case TemplatePart::kField: {
        const Value& v = e.at(p.index);
        if (!v.present) { out += "-"; break; }
        char buf[32];
        switch (v.type) {
          case FieldType::kString:
            if (p.masked) append_masked_text(out, v.s); else out += v.s;
            break;
          case FieldType::kInt: out.append(buf, static_cast<size_t>(std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v.i)))); break;
          case FieldType::kDouble: out.append(buf, static_cast<size_t>(std::snprintf(buf, sizeof buf, "%.1f", v.d))); break;
          case FieldType::kBool: out += v.b ? "true" : "false"; break;
          case FieldType::kTime: out += format_rfc3339_ms(v.i, buf); break;
        }
        break;
      }
    }
  }
}

void Engine::fire(const Fire& f) {
  const Rule& rule = *f.rule;
  const Event& e = *f.event;
  const Deadline* d = f.deadline_def;
  render(d && !d->title.empty() ? d->title : rule.title, f, title_buffer_);
  render(d && !d->summary.empty() ? d->summary : rule.summary, f, summary_buffer_);
  Signal s;
  s.rule_set = rules_.get();
  s.rule = &rule;
  s.event = &e;
  s.key = {key_parts_.data(), f.key_parts};
  s.title = title_buffer_;
  s.summary = summary_buffer_;
  s.severity = !f.severity.empty() ? f.severity : !rule.severity.empty() ? std::string_view(rule.severity) : f.level;
  s.window_start_ms = f.start;
  s.window_end_ms = f.end;
  s.instance_ms = f.instance;
  s.values = f.values;
  s.first_event_id = f.first_id;
  s.first_event_time_ms = f.first_time;
  s.count = f.count;
  s.deadline = f.deadline;
  if (d) s.deadline_labels = d->labels;
  s.level = f.level;
  s.resolved = f.resolved;
  sink_.on_signal(s);
}

void Engine::on_event(const Event& e) {
  newest_event_ms_ = std::max(newest_event_ms_, e.time_ms);
  ++events_since_sweep_;
  ++event_seq_;
  const RuleSet& set = *rules_;
  // Build and hash the event's key of each window key table up front and start
  // loading its probe slot: the cache miss then overlaps with the filters
  // evaluated before the first window rule looks the key up.
  for (const auto& ktp : key_tables_) {
    KeyTable& kt = *ktp;
    if (kt.stream != e.stream) continue;
    kt.early_key = key_of(e, kt.slots);
    if (kt.early_key.data() == key_buffer_.data()) {  // built: keep it past the next build
      kt.early_text.assign(kt.early_key);
      kt.early_key = kt.early_text;
    }
    kt.early_hash = key_hash(kt.early_key);
    kt.guessed_entry = KeyTable::kNone;
    kt.index.prefetch(kt.early_hash);
  }
  // Read once: the calls below cannot change the rule set (only on_tick swaps it).
  const std::span<const Trigger> triggers = set.rules_for(e.stream, e.kind);
  const EvalContext ctx{&e, nullptr, nullptr, tables_.get()};
  const size_t guess_at = guess_at_[static_cast<size_t>(e.stream)][static_cast<size_t>(e.kind + 1)];
  ++offered_[static_cast<size_t>(e.stream)][static_cast<size_t>(e.kind + 1)];  // each main trigger's evaluation
  for (size_t ti = 0; ti < triggers.size(); ++ti) {
    if (ti == guess_at) {
      // Halfway to the first window rule: the probe slots have arrived, so
      // guess each key's entry from its slot and start loading its states.
      for (const auto& ktp : key_tables_) {
        KeyTable& kt = *ktp;
        if (kt.stream != e.stream || (kt.guessed_entry = kt.index.guess(kt.early_hash)) == KeyTable::kNone) continue;
        kt.prefetch_states(kt.guessed_entry);
      }
    }
    const Trigger& t = triggers[ti];
    const Rule& rule = set.rules[static_cast<size_t>(t.rule)];
    RuleCounters& c = counters_[static_cast<size_t>(t.rule)];
    switch (t.role) {
      case Trigger::kMain:
        if (t.condition >= 0) {  // shared with other rules: tested once per event
          uint64_t& m = condition_memo_[static_cast<size_t>(t.condition)];
          if (m >> 1 != event_seq_) m = event_seq_ << 1 | set.conditions[static_cast<size_t>(t.condition)].test(ctx);
          if (!(m & 1)) {
            // The rules right after it with the same condition fail too: skip
            // them (up to the guess point).
            ti = std::min(ti + static_cast<size_t>(t.condition_run), guess_at > ti ? guess_at : SIZE_MAX) - 1;
            break;
          }
        }
        if (rule.match.where && !rule.match.where->test(ctx)) break;
        bump(c.matches);
        if (rule.kind == RuleKind::kWindow) on_window(t.rule, rule, e, c);
        else if (rule.kind == RuleKind::kSequence) on_main(t.rule, rule, e, c);
        else if (rule.kind == RuleKind::kAbsence) on_start(t.rule, rule, e, c);
        else on_main(t.rule, rule, e, c);
        break;
      case Trigger::kThen: on_then(t.rule, rule, e, c); break;
      case Trigger::kUntil: on_until(t.rule, rule, t.deadline, e); break;
      case Trigger::kCancel: on_cancel(t.rule, rule, e); break;
      case Trigger::kExtend: on_extend(t.rule, rule, t.deadline, e); break;
    }
  }
}

// Per-event rules fire here; sequence rules file their `first` step.
void Engine::on_main(int ri, const Rule& rule, const Event& e, RuleCounters& c) {
  if (rule.kind == RuleKind::kSequence) {
    RuleState& rs = *state_[static_cast<size_t>(ri)];
    bool inserted;
    SequenceKey& sk = rs.sequences[rs.sequences.find_or_insert(key_of(e, rule.match.key), inserted)];
    if (inserted) {
      sk.pending = 0;
      c.keys.store(static_cast<int64_t>(rs.sequences.size()), std::memory_order_relaxed);
    }
    // Drop what can no longer be followed within the time, then the oldest if full.
    while (sk.pending > 0 && sk.firsts[0].time < e.time_ms - rule.within_ms) sk.drop(0);
    if (sk.pending >= options_.max_pending_per_key) {
      sk.drop(0);
      bump(c.dropped);
    }
    SequenceFirst& f = sk.push();
    f.time = e.time_ms;
    pack_event(e, rule.prior_slots | kept_slots(rule, rule.match.stream), f.packed);
    return;
  }
  std::array<double, kMaxValues> values{};
  std::string_view level;
  if (rule.score) {
    const EvalContext ctx{&e, values.data(), nullptr, tables_.get()};
    level = score(rule, ctx, values.data());
    if (rule.having && !rule.having->test(ctx)) return;
  }
  bump(c.signals);
  Fire f{&rule, &e};
  if (!rule.match.key.empty()) f.key_parts = build_key(e, rule.match.key);
  f.start = f.end = f.instance = e.time_ms;
  f.values = {values.data(), rule.value_count()};
  f.first_id = e.id();
  f.first_time = e.time_ms;
  f.level = level;
  fire(f);
}

void Engine::on_window(int ri, const Rule& rule, const Event& e, RuleCounters& c) {
  RuleState& rs = *state_[static_cast<size_t>(ri)];
  const int64_t size = rule.window_ms;
  if (rs.newest != INT64_MIN && rule.window_type != WindowType::kSession && e.time_ms <= rs.newest - size) {
    bump(c.late);
    return;
  }
  rs.newest = std::max(rs.newest, e.time_ms);
  // One lookup per event and key table, shared by the table's rules.
  KeyTable& kt = *key_tables_[static_cast<size_t>(rs.key_table)];
  uint32_t entry = kt.cached_event == event_seq_ ? kt.cached_entry : KeyTable::kNone;
  if (entry == KeyTable::kNone) {
    // on_event built this table's key for the event on arrival (same stream).
    entry = kt.find(kt.early_key, kt.early_hash);
    if (entry == KeyTable::kNone) entry = kt.insert(kt.early_key, kt.early_hash);
    kt.cached_event = event_seq_;
    kt.cached_entry = entry;
    // The table's other rules read this key's state for the same event (if
    // on_event guessed this entry, the lines are on their way already).
    if (entry != kt.guessed_entry) kt.prefetch_states(entry);
    // Each sliding rule reads its ring's oldest entry to see whether it has
    // left the window: start loading them all while the first rules run.
    for (const int pos : kt.sliding) {
      const WindowKey& o = kt.state(entry, pos);
      if (o.live) __builtin_prefetch(o.ring.front_address());
    }
  }
  WindowKey& k = kt.state(entry, rs.key_pos);
  if (!k.live) {
    k.renew(rule, rs.shape);
    ++kt.live[entry];
    c.keys.store(static_cast<int64_t>(++rs.window_keys), std::memory_order_relaxed);
  }
  const size_t naggs = rule.aggregates.size();
  const EvalContext ectx{&e, nullptr, nullptr, tables_.get()};

  // Open the window this event belongs to.
  switch (rule.window_type) {
    case WindowType::kSliding: {
      const int64_t horizon = std::max(k.newest, e.time_ms) - size;
      while (!k.ring.empty() && k.start <= horizon) {  // start: the time of the ring's front
        const uint64_t* old = k.ring.front().payload();
        for (uint8_t m = rs.shape.per_event; m; m &= static_cast<uint8_t>(m - 1)) {
          const auto a = static_cast<size_t>(__builtin_ctz(m));
          const uint64_t was = old[rs.shape.columns.of[a]];
          switch (rule.aggregates[a].kind) {
            case AggregateKind::kCountDistinct: k.distinct(a).remove(was); break;
            case AggregateKind::kCountIf: k.acc[a] -= static_cast<double>(was); break;
            case AggregateKind::kSum: case AggregateKind::kAvg: k.acc[a] -= bits_double(was); break;
            case AggregateKind::kMin: case AggregateKind::kMax: {
              // Was it the extreme (or not comparable: NaN), and the last to hold it?
              const double x = bits_double(was);
              if (k.stale >> a & 1) break;
              if (x == k.acc[a] && k.ties[a] > 1 && k.ties[a] != WindowKey::kManyTies) --k.ties[a];
              else if (!(rule.aggregates[a].kind == AggregateKind::kMin ? x > k.acc[a] : x < k.acc[a]))
                k.stale |= static_cast<uint8_t>(1u << a);
              break;
            }
            default: break;
          }
        }
        k.ring.pop();
        --k.count;
        if (!k.ring.empty()) k.start = k.ring.front().time;
      }
      break;
    }
    case WindowType::kTumbling: {
      const int64_t bucket = (e.time_ms >= 0 ? e.time_ms / size : (e.time_ms - size + 1) / size) * size;
      if (bucket < k.start) {  // an earlier bucket of this key has closed
        bump(c.late);
        return;
      }
      if (bucket > k.start) {
        if (rule.history_windows > 0 && k.history && k.count > 0) k.history->close(k.start);
        k.reset(naggs, rs.shape);
        k.start = bucket;
      }
      break;
    }
    case WindowType::kSession: {
      if (k.newest != INT64_MIN && e.time_ms < k.start) {  // before the open session
        bump(c.late);
        return;
      }
      if (k.newest == INT64_MIN || e.time_ms - k.newest > size) {
        k.reset(naggs, rs.shape);
        k.start = e.time_ms;
      }
      break;
    }
  }

  // Add the event.
  uint64_t payload[kMaxAggregates] = {};
  for (uint8_t m = rs.shape.per_event; m; m &= static_cast<uint8_t>(m - 1)) {
    const auto a = static_cast<size_t>(__builtin_ctz(m));
    const Aggregate& agg = rule.aggregates[a];
    switch (agg.kind) {
      case AggregateKind::kCount: case AggregateKind::kRate: case AggregateKind::kBaseline: break;
      case AggregateKind::kCountIf: {
        const bool hit = agg.condition->test(ectx);
        payload[rs.shape.columns.of[a]] = hit;
        k.acc[a] += hit;
        break;
      }
      case AggregateKind::kCountDistinct: case AggregateKind::kApproxDistinct: {
        const uint64_t h = value_hash(e.at(agg.slot));
        if (agg.kind == AggregateKind::kCountDistinct) {
          payload[rs.shape.columns.of[a]] = h;
          k.distinct(a).add(h);
        } else {
          if (!k.approx[a]) k.approx[a] = std::make_unique<ApproxDistinct>(size, rule.window_type == WindowType::kSliding);
          k.approx[a]->add(e.time_ms, h);
        }
        break;
      }
      default: {
        const Value& v = e.at(agg.slot);
        const double x = !v.present ? 0.0 : v.type == FieldType::kDouble ? v.d : static_cast<double>(v.i);
        payload[rs.shape.columns.of[a]] = double_bits(x);
        if (agg.kind != AggregateKind::kMin && agg.kind != AggregateKind::kMax) {
          k.acc[a] += x;
        } else if (k.count == 0 || (agg.kind == AggregateKind::kMin ? x < k.acc[a] : x > k.acc[a])) {
          k.acc[a] = x;
          if (rule.window_type == WindowType::kSliding) k.ties[a] = 1;
        } else if (rule.window_type == WindowType::kSliding && x == k.acc[a] && k.ties[a] != WindowKey::kManyTies) {
          ++k.ties[a];
        }
      }
    }
  }
  const std::string_view id = e.id();
  if (rule.window_type == WindowType::kSliding) {
    Entry& entry = k.ring.push(id);
    entry.time = e.time_ms;
    if (k.ring.size() == 1) k.start = e.time_ms;
    std::copy_n(payload, rs.shape.columns.count, entry.payload());
  } else if (k.count == 0) {
    k.first_time = e.time_ms;
    k.first_id_len = static_cast<uint8_t>(std::min(id.size(), k.first_id.size()));
    std::memcpy(k.first_id.data(), id.data(), k.first_id_len);
  }
  ++k.count;
  k.newest = std::max(k.newest, e.time_ms);

  // Compute the aggregates.
  std::array<double, kMaxValues> values;  // each of the rule's values is written below
  const double n = static_cast<double>(k.count);
  const int64_t start = rule.window_type == WindowType::kSliding ? e.time_ms - size : k.start;
  const int64_t end = rule.window_type == WindowType::kTumbling ? k.start + size : e.time_ms;
  for (size_t a = 0; a < naggs; ++a) {
    switch (rule.aggregates[a].kind) {
      case AggregateKind::kCount: values[a] = n; break;
      case AggregateKind::kCountIf: case AggregateKind::kSum: values[a] = k.acc[a]; break;
      case AggregateKind::kCountDistinct: values[a] = static_cast<double>(k.distinct(a).size()); break;
      case AggregateKind::kApproxDistinct: values[a] = k.approx[a] ? std::round(k.approx[a]->estimate(e.time_ms)) : 0; break;
      case AggregateKind::kAvg: values[a] = k.acc[a] / n; break;
      case AggregateKind::kRate: {
        const int64_t span = rule.window_type == WindowType::kSession ? std::max<int64_t>(e.time_ms - k.start, 1000) : size;
        values[a] = n * 1000.0 / static_cast<double>(span);
        break;
      }
      case AggregateKind::kMin: case AggregateKind::kMax: {
        // acc[a] follows the events added; in a sliding window, rescan once the
        // last event holding the extreme has left it (rare: ties[a] counts them).
        if (k.stale >> a & 1) {
          const bool is_min = rule.aggregates[a].kind == AggregateKind::kMin;
          const size_t col = rs.shape.columns.of[a];
          double m = bits_double(k.ring.at(0).payload()[col]);
          uint32_t ties = 1;
          for (size_t i = 1; i < k.ring.size(); ++i) {
            const double x = bits_double(k.ring.at(i).payload()[col]);
            if (is_min ? x < m : x > m) {
              m = x;
              ties = 1;
            } else {
              ties += x == m;
            }
          }
          k.acc[a] = m;
          k.ties[a] = static_cast<uint16_t>(std::min<uint32_t>(ties, WindowKey::kManyTies));
          k.stale &= static_cast<uint8_t>(~(1u << a));
        }
        values[a] = k.acc[a];
        break;
      }
      case AggregateKind::kBaseline: values[a] = 0; break;  // below, from the other aggregates (0 without a history)
    }
  }
  if (rule.history_windows > 0 && k.history) {  // the rule first: k.history is in a cold cache line
    std::copy_n(values.begin(), naggs, k.history->current.begin());
    for (size_t a = 0; a < naggs; ++a) {
      const Aggregate& agg = rule.aggregates[a];
      if (agg.kind == AggregateKind::kBaseline) values[a] = k.history->baseline(agg.of, agg.windows, k.start, size);
    }
  }
  const EvalContext vctx{&e, values.data(), nullptr, tables_.get()};
  std::string_view level;
  if (rule.score) level = score(rule, vctx, values.data());
  const bool hit = rule.having->test(vctx);
  if (hit && !k.firing) {
    bump(c.signals);
    const size_t nkey = build_key(e, rule.match.key);  // the lookup may have been another rule's
    Fire f{&rule, &e, nkey};
    f.start = start;
    f.end = end;
    // Sliding: the event that fired; tumbling: the bucket; session: its start.
    f.instance = rule.window_type == WindowType::kSliding ? e.time_ms : k.start;
    f.values = {values.data(), rule.value_count()};
    if (rule.window_type == WindowType::kSliding) {
      f.first_id = k.ring.front_id();
      f.first_time = k.ring.front().time;
    } else {
      f.first_id = {k.first_id.data(), k.first_id_len};
      f.first_time = k.first_time;
    }
    f.count = k.count;
    f.level = level;
    fire(f);
  }
  // Sliding windows fire again once `having` has been false; tumbling and
  // session windows fire at most once per window.
  k.firing = rule.window_type == WindowType::kSliding ? hit : (k.firing || hit);
}

void Engine::on_then(int ri, const Rule& rule, const Event& e, RuleCounters& c) {
  RuleState& rs = *state_[static_cast<size_t>(ri)];
  if (rs.sequences.empty()) return;
  const uint32_t entry = rs.sequences.find(key_of(e, rule.then.key));
  if (entry == KeyIndex::kNone) return;
  SequenceKey& sk = rs.sequences[entry];
  for (size_t i = 0; i < sk.pending; ++i) {
    const SequenceFirst& first = sk.firsts[i];
    if (first.time > e.time_ms || e.time_ms - first.time > rule.within_ms) continue;
    unpack_event(first.packed, rule.match.stream, first.time, scratch_);
    std::array<double, kMaxValues> values{};
    const EvalContext ctx{&e, values.data(), &scratch_, tables_.get()};
    if (rule.then.where && !rule.then.where->test(ctx)) continue;
    std::string_view level;
    if (rule.score) level = score(rule, ctx, values.data());
    bump(c.signals);
    Fire f{&rule, &e, build_key(e, rule.then.key)};
    f.start = first.time;
    f.end = e.time_ms;
    f.instance = first.time;
    f.values = {values.data(), rule.value_count()};
    f.first_id = scratch_.id();
    f.first_time = first.time;
    f.count = 2;
    f.level = level;
    fire(f);
    sk.drop(i);  // one match per first event
    break;
  }
  if (sk.pending == 0) {
    rs.sequences.erase(entry);
    c.keys.store(static_cast<int64_t>(rs.sequences.size()), std::memory_order_relaxed);
  }
}

void Engine::on_start(int ri, const Rule& rule, const Event& e, RuleCounters& c) {
  RuleState& rs = *state_[static_cast<size_t>(ri)];
  bool inserted;
  const uint32_t entry = rs.clocks.find_or_insert(key_of(e, rule.match.key), inserted);
  Clocks& k = rs.clocks[entry];
  if (inserted) {  // a recycled Clocks: no timer points to it (refs == 0), its generation goes on
    k.entry = entry;
    c.keys.store(static_cast<int64_t>(rs.clocks.size()), std::memory_order_relaxed);
  }
  // A new start restarts every clock of the key (e.g. a returned ticket).
  ++k.generation;
  k.start = e.time_ms;
  k.pending = rule.deadlines.size() >= 32 ? ~0u : (1u << rule.deadlines.size()) - 1;
  k.moved.reset();
  k.fired = 0;  // a restarted ticket's earlier alerts are not resolved by its new clocks
  pack_event(e, kept_slots(rule, rule.match.stream), k.packed);
  arm(*rules_, rule, k, rs.timers);
  c.timers.store(static_cast<int64_t>(rs.timers.size()), std::memory_order_relaxed);
}

void Engine::on_extend(int ri, const Rule& rule, int deadline, const Event& e) {
  RuleState& rs = *state_[static_cast<size_t>(ri)];
  if (rs.clocks.empty()) return;
  const Deadline& d = rule.deadlines[static_cast<size_t>(deadline)];
  if (d.extend->where && !d.extend->where->test(EvalContext{&e, nullptr, nullptr, tables_.get()})) return;
  const uint32_t entry = rs.clocks.find(key_of(e, d.extend->key));
  if (entry == KeyIndex::kNone || e.time_ms < rs.clocks[entry].start) return;
  Clocks& k = rs.clocks[entry];
  if (!(k.pending >> deadline & 1)) return;  // met or already fired: nothing to move
  int64_t due;
  if (d.extend_to >= 0) {
    const Value& to = e.at(d.extend_to);
    if (!to.present) return;  // an extension without its new deadline keeps the old one
    due = to.i;
  } else {
    due = due_of(*rules_, rule, k, static_cast<size_t>(deadline)) + d.extend_by_ms;
  }
  if (!k.moved) k.moved = std::make_unique<std::vector<std::pair<uint8_t, int64_t>>>();
  auto m = std::find_if(k.moved->begin(), k.moved->end(), [&](const auto& x) { return x.first == deadline; });
  if (m == k.moved->end()) k.moved->emplace_back(static_cast<uint8_t>(deadline), due);
  else m->second = due;
  ++k.generation;  // the queued timers are stale: re-arm every pending deadline
  arm(*rules_, rule, k, rs.timers);
  counters_[static_cast<size_t>(ri)].timers.store(static_cast<int64_t>(rs.timers.size()), std::memory_order_relaxed);
}

void Engine::on_until(int ri, const Rule& rule, int deadline, const Event& e) {
  RuleState& rs = *state_[static_cast<size_t>(ri)];
  if (rs.clocks.empty()) return;
  const Deadline& d = rule.deadlines[static_cast<size_t>(deadline)];
  if (d.until.where && !d.until.where->test(EvalContext{&e, nullptr, nullptr, tables_.get()})) return;
  const uint32_t entry = rs.clocks.find(key_of(e, d.until.key));
  if (entry == KeyIndex::kNone || e.time_ms < rs.clocks[entry].start) return;
  Clocks& k = rs.clocks[entry];
  const uint32_t bit = 1u << deadline;
  if (k.fired & bit) {  // met after its alert: the alert is over (if still within resolve_within)
    if (e.time_ms <= k.fired_at + rule.resolve_within_ms) resolve_fired(rule, k, rs.clocks.key(entry), bit, e);
    else k.fired &= ~bit;
    if (!k.pending && !k.fired && !k.refs) {
      rs.clocks.erase(entry);
      counters_[static_cast<size_t>(ri)].keys.store(static_cast<int64_t>(rs.clocks.size()), std::memory_order_relaxed);
    }
    return;
  }
  k.pending &= ~bit;  // its timer is skipped when it comes due
}

template <typename K>
void Engine::resolve_fired(const Rule& rule, K& k, std::string_view key, uint32_t bits, const Event& e) {
  for (size_t d = 0; d < rule.deadlines.size() && d < 32; ++d) {
    if (!(k.fired & bits & (1u << d))) continue;
    k.fired &= ~(1u << d);
    const size_t nkey = split_key(key, rule.match.key.size());
    // The message repeats the alert as it fired (title, context from the start event).
    unpack_event(k.packed, rule.match.stream, k.start, scratch_);
    std::array<double, kMaxValues> values{};
    Fire f{&rule, &scratch_, nkey};
    f.start = k.start;
    f.end = e.time_ms;  // when it was met
    f.instance = k.start + static_cast<int64_t>(d);  // the id of the alert that fired
    f.values = {values.data(), rule.value_count()};
    f.first_id = e.id();
    f.first_time = k.start;
    f.deadline = rule.deadlines[d].name;
    f.deadline_def = &rule.deadlines[d];
    f.severity = rule.deadlines[d].severity;
    f.resolved = true;
    fire(f);
  }
}

void Engine::on_cancel(int ri, const Rule& rule, const Event& e) {
  RuleState& rs = *state_[static_cast<size_t>(ri)];
  if (rs.clocks.empty()) return;
  if (rule.cancel->where && !rule.cancel->where->test(EvalContext{&e, nullptr, nullptr, tables_.get()})) return;
  const uint32_t entry = rs.clocks.find(key_of(e, rule.cancel->key));
  if (entry == KeyIndex::kNone || e.time_ms < rs.clocks[entry].start) return;
  Clocks& k = rs.clocks[entry];
  k.pending = 0;
  ++k.generation;
  if (k.fired && e.time_ms <= k.fired_at + rule.resolve_within_ms)  // a cancelled ticket ends its escalations too
    resolve_fired(rule, k, rs.clocks.key(entry), k.fired, e);
  k.fired = 0;
  if (!k.refs) {
    rs.clocks.erase(entry);
    counters_[static_cast<size_t>(ri)].keys.store(static_cast<int64_t>(rs.clocks.size()), std::memory_order_relaxed);
  }
}

void Engine::fire_timers(int64_t now_ms) {
  const RuleSet& set = *rules_;
  for (size_t ri = 0; ri < state_.size(); ++ri) {
    RuleState& rs = *state_[ri];
    if (rs.timers.empty()) continue;
    const Rule& rule = set.rules[ri];
    RuleCounters& c = counters_[ri];
    while (!rs.timers.empty() && rs.timers.top().due <= now_ms) {
      const Timer t = rs.timers.top();
      rs.timers.pop();
      Clocks& k = *t.clocks;
      --k.refs;
      const bool live = t.generation == k.generation && (k.pending >> t.deadline & 1);
      if (live) {
        k.pending &= ~(1u << t.deadline);
        if (rule.resolve_within_ms > 0) {
          k.fired |= 1u << t.deadline;
          k.fired_at = t.due;
        }
        const Deadline& d = rule.deadlines[t.deadline];
        unpack_event(k.packed, rule.match.stream, k.start, scratch_);
        const size_t nkey = split_key(rs.clocks.key(k.entry), rule.match.key.size());
        std::array<double, kMaxValues> values{};
        std::string_view level;
        if (rule.score) level = score(rule, EvalContext{&scratch_, values.data(), nullptr, tables_.get()}, values.data());
        bump(c.signals);
        Fire f{&rule, &scratch_, nkey};
        f.start = k.start;
        f.end = t.due;
        f.instance = k.start + static_cast<int64_t>(t.deadline);  // one id per start and deadline
        f.values = {values.data(), rule.value_count()};
        f.first_id = scratch_.id();
        f.first_time = k.start;
        f.deadline = d.name;
        f.deadline_def = &d;
        f.level = level;
        f.severity = d.severity;
        fire(f);
      }
      if (k.refs == 0 && k.pending == 0 && k.fired == 0) rs.clocks.erase(k.entry);
    }
    c.timers.store(static_cast<int64_t>(rs.timers.size()), std::memory_order_relaxed);
    c.keys.store(static_cast<int64_t>(rs.clocks.size()), std::memory_order_relaxed);
  }
}

void Engine::on_tick(int64_t now_ms) {
  fold_offered();
  if (table_source_ && table_source_->version() != tables_version_) {
    tables_version_ = table_source_->version();
    tables_ = table_source_->snapshot();
  }
  if (feed_ && feed_->version() != feed_version_) {
    feed_version_ = feed_->version();
    if (auto next = feed_->current(); next && next != rules_) replace_rules(std::move(next));
  }
  fire_timers(options_.timers_follow_event_time ? newest_event_ms_ : now_ms);
  if (options_.clock_board && options_.clock_board->wanted(options_.worker_index, now_ms)) publish_clocks(now_ms);
  // Drop keys whose window or sequence time lies behind the rule's watermark,
  // so memory follows the live key set: at most every 10 s, and only once at
  // least as many events have arrived as the sweep visits states, so that the
  // sweep (a cache line per state) costs at most about one visit per event
  // even when time moves fast (replays). It visits every rule's state of
  // every key in a key table, live or not, and every sequence key.
  if (now_ms - last_sweep_ms_ < 10'000) return;
  size_t visits = 0;
  for (const auto& kt : key_tables_) visits += kt->index.size() * kt->rules.size();
  for (size_t ri = 0; ri < state_.size(); ++ri) {
    const Rule& rule = rules_->rules[ri];
    visits += state_[ri]->sequences.size();
    if (rule.kind == RuleKind::kAbsence && rule.resolve_within_ms > 0) visits += state_[ri]->clocks.size();
  }
  if (events_since_sweep_ < visits) return;
  last_sweep_ms_ = now_ms;
  events_since_sweep_ = 0;
  for (auto& kt : key_tables_) {
    // A rule's key is idle once its newest event lies a window behind.
    std::array<int64_t, 64> horizon_small{};
    std::vector<int64_t> horizon_large;
    int64_t* horizon = horizon_small.data();
    if (kt->rules.size() > horizon_small.size()) horizon = (horizon_large.resize(kt->rules.size()), horizon_large.data());
    for (size_t r = 0; r < kt->rules.size(); ++r)
      horizon[r] = newest_event_ms_ - rules_->rules[static_cast<size_t>(kt->rules[r])].retention_ms();
    for (uint32_t e = 0; e < kt->index.entries(); ++e) {
      if (!kt->index.used(e)) continue;
      for (size_t r = 0; r < kt->rules.size(); ++r) {
        WindowKey& k = kt->state(e, static_cast<int>(r));
        if (!k.live || k.newest > horizon[r]) continue;
        k.live = false;
        --kt->live[e];
        --state_[static_cast<size_t>(kt->rules[r])]->window_keys;
      }
      if (kt->live[e] == 0) kt->erase(e);
    }
    for (int ri : kt->rules)
      counters_[static_cast<size_t>(ri)].keys.store(static_cast<int64_t>(state_[static_cast<size_t>(ri)]->window_keys),
                                                    std::memory_order_relaxed);
  }
  for (size_t ri = 0; ri < state_.size(); ++ri) {
    const Rule& rule = rules_->rules[ri];
    RuleState& rs = *state_[ri];
    if (rule.kind == RuleKind::kAbsence && rule.resolve_within_ms > 0) {
      // Clocks kept only to resolve fired deadlines, past resolve_within.
      const int64_t now = options_.timers_follow_event_time ? newest_event_ms_ : now_ms;
      rs.clocks.erase_if([&](const Clocks& k) {
        return !k.pending && !k.refs && k.fired && k.fired_at + rule.resolve_within_ms < now;
      });
      counters_[ri].keys.store(static_cast<int64_t>(rs.clocks.size()), std::memory_order_relaxed);
    }
    if (rule.kind == RuleKind::kSequence) {
      const int64_t horizon = newest_event_ms_ - rule.within_ms;
      rs.sequences.erase_if([horizon](const SequenceKey& sk) { return sk.firsts[sk.pending - 1].time < horizon; });
      counters_[ri].keys.store(static_cast<int64_t>(rs.sequences.size()), std::memory_order_relaxed);
    }
  }
}

void Engine::publish_clocks(int64_t now_ms) {
  // The soonest live timers over all absence rules: a bounded max-heap by due time.
  struct Pick {
    int64_t due;
    size_t rule;
    const Timer* timer;
    bool operator<(const Pick& o) const { return due < o.due; }
  };
  std::vector<Pick> heap;
  const size_t limit = ClockBoard::kPerWorker;
  for (size_t ri = 0; ri < state_.size(); ++ri) {
    for (const Timer& t : state_[ri]->timers.items()) {
      const Clocks& k = *t.clocks;
      if (t.generation != k.generation || !(k.pending >> t.deadline & 1)) continue;
      if (heap.size() == limit && t.due >= heap.front().due) continue;
      heap.push_back({t.due, ri, &t});
      std::push_heap(heap.begin(), heap.end());
      if (heap.size() > limit) {
        std::pop_heap(heap.begin(), heap.end());
        heap.pop_back();
      }
    }
  }
  std::sort_heap(heap.begin(), heap.end());
  std::vector<ClockEntry> out;
  std::vector<const Clocks*> seen;  // one entry per clock: its soonest deadline
  for (const Pick& p : heap) {
    const Clocks& k = *p.timer->clocks;
    if (std::find(seen.begin(), seen.end(), &k) != seen.end()) continue;
    seen.push_back(&k);
    const Rule& rule = rules_->rules[p.rule];
    const Deadline& d = rule.deadlines[p.timer->deadline];
    unpack_event(k.packed, rule.match.stream, k.start, scratch_);
    ClockEntry& e = out.emplace_back();
    e.rule = rule.id;
    e.alert_type = rule.alert_type;
    const StreamSchema& schema = schema_of(rule.match.stream);
    const size_t nkey = split_key(state_[p.rule]->clocks.key(k.entry), rule.match.key.size());
    for (size_t g = 0; g < nkey; ++g)
      e.key.emplace_back(std::string(schema.fields[static_cast<size_t>(rule.match.key[g])].name), std::string(key_parts_[g]));
    e.deadline = d.name;
    e.severity = !d.severity.empty() ? d.severity : rule.severity;
    e.labels = rule.labels;
    for (const auto& label : d.labels) {
      auto it = std::find_if(e.labels.begin(), e.labels.end(), [&](const auto& l) { return l.first == label.first; });
      if (it != e.labels.end()) it->second = label.second; else e.labels.push_back(label);
    }
    std::array<double, kMaxValues> values{};
    Fire f{&rule, &scratch_, rule.match.key.size()};
    f.values = {values.data(), rule.value_count()};
    f.deadline = d.name;
    f.deadline_def = &d;
    render(!d.title.empty() ? d.title : rule.title, f, title_buffer_);
    e.title = title_buffer_;
    e.started_ms = k.start;
    e.due_ms = p.due;
  }
  options_.clock_board->publish(options_.worker_index, now_ms, std::move(out));
}

void Engine::snapshot_state(StateStore& store) const {
  std::string value;
  for (size_t ri = 0; ri < state_.size(); ++ri) {
    const Rule& rule = rules_->rules[ri];
    const RuleState& rs = *state_[ri];
    if (rule.kind == RuleKind::kAbsence) {
      const std::string ns = "absence/" + rule.id;
      rs.clocks.for_each([&](std::string_view key, const Clocks& k) {
        if (!k.pending && !k.fired) return;
        if (k.fired) {
          value.assign(reinterpret_cast<const char*>(&k.fired), 4);
          value.append(reinterpret_cast<const char*>(&k.fired_at), 8);
          store.put("absence-fired/" + rule.id, key, value);
        }
        value.assign(reinterpret_cast<const char*>(&k.start), 8);
        value.append(reinterpret_cast<const char*>(&k.pending), 4);
        value += k.packed;
        store.put(ns, key, value);
        if (k.moved) {
          value.clear();
          for (const auto& [d, due] : *k.moved) {
            value += static_cast<char>(d);
            value.append(reinterpret_cast<const char*>(&due), 8);
          }
          store.put("absence-moved/" + rule.id, key, value);
        }
      });
    } else if (rule.kind == RuleKind::kSequence) {
      const std::string ns = "sequence/" + rule.id;
      rs.sequences.for_each([&](std::string_view key, const SequenceKey& sk) {
        value.clear();
        for (size_t i = 0; i < sk.pending; ++i) {
          const SequenceFirst& f = sk.firsts[i];
          const uint32_t n = static_cast<uint32_t>(f.packed.size());
          value.append(reinterpret_cast<const char*>(&f.time), 8);
          value.append(reinterpret_cast<const char*>(&n), 4);
          value += f.packed;
        }
        store.put(ns, key, value);
      });
    }
  }
}

void Engine::restore_state(const StateStore& store) {
  for (size_t ri = 0; ri < state_.size(); ++ri) {
    const Rule& rule = rules_->rules[ri];
    RuleState& rs = *state_[ri];
    if (rule.kind == RuleKind::kAbsence) {
      store.scan("absence/" + rule.id, [&](std::string_view key, std::string_view v) {
        if (v.size() < 12) return;
        bool inserted;
        const uint32_t entry = rs.clocks.find_or_insert(key, inserted);
        Clocks& k = rs.clocks[entry];
        if (inserted) {
          k.entry = entry;
          k.fired = 0;
          k.moved.reset();
        }
        std::memcpy(&k.start, v.data(), 8);
        std::memcpy(&k.pending, v.data() + 8, 4);
        k.packed.assign(v.substr(12));
        ++k.generation;
      });
      store.scan("absence-moved/" + rule.id, [&](std::string_view key, std::string_view v) {
        const uint32_t entry = rs.clocks.find(key);
        if (entry == KeyIndex::kNone) return;
        auto moved = std::make_unique<std::vector<std::pair<uint8_t, int64_t>>>();
        for (size_t i = 0; i + 9 <= v.size(); i += 9) {
          int64_t due;
          std::memcpy(&due, v.data() + i + 1, 8);
          moved->emplace_back(static_cast<uint8_t>(v[i]), due);
        }
        rs.clocks[entry].moved = std::move(moved);
      });
      store.scan("absence-fired/" + rule.id, [&](std::string_view key, std::string_view v) {
        const uint32_t entry = rs.clocks.find(key);
        if (entry == KeyIndex::kNone || v.size() < 12) return;
        std::memcpy(&rs.clocks[entry].fired, v.data(), 4);
        std::memcpy(&rs.clocks[entry].fired_at, v.data() + 4, 8);
      });
      rs.clocks.for_each([&](std::string_view, Clocks& k) { arm(*rules_, rule, k, rs.timers); });
      counters_[ri].keys.store(static_cast<int64_t>(rs.clocks.size()), std::memory_order_relaxed);
      counters_[ri].timers.store(static_cast<int64_t>(rs.timers.size()), std::memory_order_relaxed);
    } else if (rule.kind == RuleKind::kSequence) {
      store.scan("sequence/" + rule.id, [&](std::string_view key, std::string_view v) {
        bool inserted;
        const uint32_t entry = rs.sequences.find_or_insert(key, inserted);
        SequenceKey& sk = rs.sequences[entry];
        if (inserted) sk.pending = 0;
        size_t i = 0;
        while (i + 12 <= v.size()) {
          int64_t time;
          uint32_t n;
          std::memcpy(&time, v.data() + i, 8);
          std::memcpy(&n, v.data() + i + 8, 4);
          i += 12;
          if (i + n > v.size()) break;
          SequenceFirst& f = sk.push();
          f.time = time;
          f.packed.assign(v.substr(i, n));
          i += n;
        }
        if (sk.pending == 0) rs.sequences.erase(entry);
      });
      counters_[ri].keys.store(static_cast<int64_t>(rs.sequences.size()), std::memory_order_relaxed);
    }
  }
}

}  // namespace tocsin::rules
