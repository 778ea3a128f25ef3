#include "gen/generator.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string_view>
#include <vector>

namespace tocsin::gen {
namespace {

constexpr int64_t kSecond = 1000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// xoshiro256** seeded through splitmix64; all helpers are pure integer or
// IEEE arithmetic, so a seed gives the same stream on every standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    uint64_t x = seed;
    for (auto& w : s_) {
      w = mix64(x);
      x += 0x9e3779b97f4a7c15ULL;
    }
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [lo, hi]; requires lo <= hi.
  int64_t range(int64_t lo, int64_t hi) {
    const auto span = static_cast<uint64_t>(hi - lo) + 1;
    const auto r = static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * span) >> 64);
    return lo + static_cast<int64_t>(r);
  }
  bool chance(double p) { return uniform() < p; }
  double exponential(double mean) { return -mean * std::log1p(-uniform()); }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::array<uint64_t, 4> s_{};
};

// ---- synthetic city ---------------------------------------------------------

constexpr int kDistricts = 4;
constexpr int kStreetsPerDistrict = 5;
constexpr int kCommunitiesPerStreet = 4;
constexpr int kBuildingsPerCommunity = 10;
constexpr int kStreets = kDistricts * kStreetsPerDistrict;
constexpr int kCommunities = kStreets * kCommunitiesPerStreet;
constexpr int kBuildings = kCommunities * kBuildingsPerCommunity;
constexpr int kNetworks = 50;

constexpr int community_of(int building) { return building / kBuildingsPerCommunity; }
constexpr int street_of(int building) { return community_of(building) / kCommunitiesPerStreet; }
constexpr int district_of(int building) { return street_of(building) / kStreetsPerDistrict; }
constexpr int grid_of(int building) {
  return community_of(building) * 2 + (building % kBuildingsPerCommunity >= kBuildingsPerCommunity / 2);
}
constexpr int network_of_community(int community) { return community * kNetworks / kCommunities; }

// ---- phone numbers ------------------------------------------------------------
// A number is its 11 decimal digits as an integer; fixed lines keep their
// leading zero when printed zero-padded ("028" + 8 digits).

constexpr uint64_t kSuffixSpace = 100'000'000;
constexpr uint32_t kPoolPrefixes[] = {130, 131, 132, 133, 134, 135, 136, 137, 138, 139,
                                      150, 151, 152, 153, 155, 156, 157, 158, 159, 181,
                                      182, 183, 185, 186, 187, 188, 189, 28};
constexpr uint64_t kPrefixCount = std::size(kPoolPrefixes);
constexpr uint64_t kFixedPrefix = 28;
constexpr uint64_t kMaxPool = kPrefixCount * kSuffixSpace;

// Bijection on [0, 1e8): affine, swap 4-digit halves, affine.
uint64_t permute_suffix(uint64_t x) {
  x = (x * 48'271 + 12'345'679) % kSuffixSpace;
  x = (x % 10'000) * 10'000 + x / 10'000;
  return (x * 69'621 + 3'141'593) % kSuffixSpace;
}

// Injective for index < kMaxPool.
uint64_t number_of_index(uint64_t index) {
  return kPoolPrefixes[index % kPrefixCount] * kSuffixSpace +
         permute_suffix((index / kPrefixCount) % kSuffixSpace);
}

bool is_fixed_index(uint64_t index) { return kPoolPrefixes[index % kPrefixCount] == kFixedPrefix; }

std::string_view class_of_number(uint64_t number) {
  const uint64_t prefix = number / kSuffixSpace;
  if (prefix < 100) return "fixed";
  if (prefix == 170 || prefix == 171) return "virtual_170";
  return "mobile";
}

// ---- complaints -----------------------------------------------------------------

enum Urgency : uint8_t { kEmergency, kUtility, kGeneral, kComplex };
constexpr std::string_view kUrgencyNames[] = {"emergency", "utility", "general", "complex"};

enum Level : uint8_t { kLevelCommunity, kLevelStreet, kLevelDistrict, kLevelCity, kLevelUtility };
constexpr std::string_view kLevelNames[] = {"community", "street", "district", "city", "utility"};

struct Category {
  std::string_view name;
  double weight;  // share among background tickets before heating is thinned
  bool heating;
  Urgency urgency;
  Level level;
  std::string_view text;
};

constexpr Category kCategories[] = {
    {"heating.no_heat", 0.12, true, kUtility, kLevelUtility, "家里暖气不热，室温只有十几度"},
    {"heating.low_temp", 0.05, true, kUtility, kLevelUtility, "室内温度不达标"},
    {"heating.leak", 0.03, true, kEmergency, kLevelUtility, "暖气管道漏水"},
    {"water.outage", 0.08, false, kUtility, kLevelUtility, "小区突然停水"},
    {"water.quality", 0.05, false, kUtility, kLevelUtility, "自来水发黄浑浊"},
    {"noise.construction", 0.15, false, kGeneral, kLevelStreet, "夜间施工噪音扰民"},
    {"noise.neighbour", 0.10, false, kGeneral, kLevelCommunity, "楼上邻居噪音大"},
    {"road.pothole", 0.10, false, kGeneral, kLevelDistrict, "路面有大坑"},
    {"road.streetlight", 0.07, false, kGeneral, kLevelDistrict, "路灯不亮"},
    {"sanitation.garbage", 0.10, false, kGeneral, kLevelStreet, "垃圾清运不及时"},
    {"property.management", 0.10, false, kComplex, kLevelCommunity, "物业服务不到位"},
    {"traffic.parking", 0.05, false, kGeneral, kLevelStreet, "占道违章停车"},
};
constexpr int kCategoryCount = static_cast<int>(std::size(kCategories));
constexpr uint8_t kNoHeat = 0;

// Indices into the complaint schema's kinds.
enum Status : uint8_t {
  kReceived = 0, kDispatched = 1, kSigned = 2, kContacted = 3, kResolved = 4, kRated = 6, kClosed = 7
};
constexpr std::string_view kStatusNames[] = {"received", "dispatched", "signed", "contacted",
                                             "resolved", "followed_up", "rated", "closed"};
constexpr double kRatedShare = 0.25;
constexpr double kMessagesPerTicket = 6 + kRatedShare;
// Longest background lifecycle, received to closed.
constexpr int64_t kMaxTicketLife = (15 + 30 + 50 + 90 + 30 + 10) * kMinute;
// Background heating complaints per building per two hours stay below this, so
// only planted outages form bursts.
constexpr double kHeatingPerBuildingPer2h = 0.02;

// ---- faults ---------------------------------------------------------------------

enum FaultKind : uint8_t { kOpened = 0, kUpdated = 1, kRestored = 2, kPlanned = 3, kTelemetry = 4 };
constexpr std::string_view kFaultKindNames[] = {"opened", "updated", "restored", "planned", "telemetry"};
enum Asset : uint8_t { kMainPipe, kBranch, kSubstation, kBuildingAsset };
constexpr std::string_view kAssetNames[] = {"main_pipe", "branch", "substation", "building"};
constexpr std::string_view kSeverityNames[] = {"minor", "major", "critical"};
constexpr std::string_view kCauses[] = {"pipe_burst", "pump_failure", "valve_failure", "power_cut",
                                        "leak", "maintenance"};
constexpr double kIncidentShare = 0.03;
constexpr double kPlannedShare = 0.01;
constexpr double kUpdatedShare = 0.5;
constexpr double kMessagesPerFaultDraw = 1 + kIncidentShare * (1 + kUpdatedShare);

// ---- pending messages -------------------------------------------------------------

enum class What : uint8_t { kFraudCall, kTicket, kFault, kProfile };
enum TicketFlags : uint8_t { kLateContact = 1, kNeverContacted = 2 };
enum CallFlags : uint8_t { kAnswered = 1, kSpoofedDisplay = 2 };

// A future message, plain data so the queue never allocates once warmed up.
struct Pending {
  int64_t time_ms = 0;
  uint64_t id = 0;    // ticket / fault / profile number; fraud call: SIM activation ms
  uint64_t num = 0;   // complainant / caller / profiled number
  uint64_t num2 = 0;  // callee; fault: estimated restore ms
  uint32_t value = 0; // call duration / households
  uint16_t building = 0;
  What what = What::kTicket;
  uint8_t step = 0;   // Status / FaultKind
  uint8_t category = 0;  // fault: cause
  uint8_t urgency = 0;   // fault: severity
  uint8_t flags = 0;
  uint8_t asset = 0;
};

// Queue entry: the heap moves these small keys; payloads stay in a slab.
struct QueueKey {
  int64_t time_ms;
  uint32_t seq;  // push order, breaks ties deterministically
  uint32_t slot;
};

// Orders a max-heap so that the earliest (time, seq) is on top.
struct Later {
  bool operator()(const QueueKey& a, const QueueKey& b) const {
    return a.time_ms != b.time_ms ? a.time_ms > b.time_ms : a.seq > b.seq;
  }
};

// ---- formatting -----------------------------------------------------------------

// Days since 1970-01-01 to civil date (H. Hinnant's algorithm).
void civil_from_days(int64_t z, int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = static_cast<int64_t>(yoe) + era * 400 + (m <= 2);
}

void put_digits(char* p, uint64_t v, int width) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

// Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars) for years 0..9999.
void format_time(char* p, int64_t ms) {
  const int64_t days = (ms >= 0 ? ms : ms - (kDay - 1)) / kDay;
  const int64_t rem = ms - days * kDay;
  int64_t y;
  unsigned mo, d;
  civil_from_days(days, y, mo, d);
  put_digits(p, static_cast<uint64_t>(y), 4);
  p[4] = '-';
  put_digits(p + 5, mo, 2);
  p[7] = '-';
  put_digits(p + 8, d, 2);
  p[10] = 'T';
  put_digits(p + 11, static_cast<uint64_t>(rem / kHour), 2);
  p[13] = ':';
  put_digits(p + 14, static_cast<uint64_t>(rem / kMinute % 60), 2);
  p[16] = ':';
  put_digits(p + 17, static_cast<uint64_t>(rem / kSecond % 60), 2);
  p[19] = '.';
  put_digits(p + 20, static_cast<uint64_t>(rem % kSecond), 3);
  p[23] = 'Z';
}

// Builds one flat JSON object in a stack buffer, then copies it into a reused
// string. Values are generated here and never need escaping; every message
// fits the buffer with a wide margin (the longest is about 600 bytes).
class JsonOut {
 public:
  explicit JsonOut(std::string& s) : s_(s) { *p_++ = '{'; }
  void str(std::string_view k, std::string_view v) {
    key(k);
    *p_++ = '"';
    raw(v);
    *p_++ = '"';
  }
  void str2(std::string_view k, std::string_view a, std::string_view b) {
    key(k);
    *p_++ = '"';
    raw(a);
    raw(b);
    *p_++ = '"';
  }
  void id(std::string_view k, std::string_view prefix, uint64_t n, int width) {
    key(k);
    *p_++ = '"';
    raw(prefix);
    put_digits(p_, n, width);
    p_ += width;
    *p_++ = '"';
  }
  void phone(std::string_view k, uint64_t number) { id(k, {}, number, 11); }
  void hex(std::string_view k, uint64_t v) {
    static constexpr char kHex[] = "0123456789abcdef";
    key(k);
    *p_++ = '"';
    for (int i = 15; i >= 0; --i, v >>= 4) p_[i] = kHex[v & 15];
    p_ += 16;
    *p_++ = '"';
  }
  void integer(std::string_view k, int64_t v) {
    key(k);
    p_ = std::to_chars(p_, p_ + 24, v).ptr;
  }
  // Always written with a decimal point, so decoders see a floating number.
  void number(std::string_view k, double v, int decimals) {
    key(k);
    p_ = std::to_chars(p_, p_ + 48, v, std::chars_format::fixed, decimals).ptr;
  }
  void boolean(std::string_view k, bool v) {
    key(k);
    raw(v ? std::string_view("true") : std::string_view("false"));
  }
  void time(std::string_view k, int64_t ms) {
    key(k);
    *p_++ = '"';
    format_time(p_, ms);
    p_ += 24;
    *p_++ = '"';
  }
  void finish() {
    *p_++ = '}';
    s_.assign(buf_, p_);
  }

 private:
  void raw(std::string_view v) {
    std::memcpy(p_, v.data(), v.size());
    p_ += v.size();
  }
  void key(std::string_view k) {
    if (p_ != buf_ + 1) *p_++ = ',';
    *p_++ = '"';
    raw(k);
    *p_++ = '"';
    *p_++ = ':';
  }
  std::string& s_;
  char buf_[2048];
  char* p_ = buf_;
};

// Sets `key` to `prefix` followed by `n` zero-padded to `width` (<= 20) digits.
void set_key(std::string& key, std::string_view prefix, uint64_t n, int width) {
  char buf[20];
  put_digits(buf, n, width);
  key.assign(prefix);
  key.append(buf, static_cast<size_t>(width));
}

void set_phone_key(std::string& key, uint64_t number) { set_key(key, {}, number, 11); }

int64_t wall_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct Generator::Impl {
  explicit Impl(const Options& o);

  void next(Message& out);

  void background_call(int64_t t, Message& out);
  void background_fault(int64_t t, Message& out);
  void background_ticket(int64_t t, Message& out);
  void background_profile(int64_t t, Message& out);
  void plant(int64_t t);
  void plant_fraud(int64_t t);
  void plant_outage(int64_t t);
  void plant_late_ticket(int64_t t);

  Pending new_ticket(int64_t t);
  // Moves `p` to its next lifecycle step; false when the ticket is finished.
  bool advance_ticket(Pending& p);
  void push(Pending p);

  void emit(const Pending& p, Message& out);
  void emit_fraud_call(const Pending& p, Message& out);
  void emit_ticket(const Pending& p, Message& out);
  void emit_fault(const Pending& p, Message& out);
  void emit_profile(uint64_t number, uint64_t id, int64_t t, bool fraud, Message& out);
  void location(JsonOut& j, int building, bool with_building);

  uint64_t fresh_number();

  Options opt;
  Rng rng;
  Planted planted;

  double bg_time_ms;
  double mean_gap_ms;
  double p_call;   // cumulative draw probabilities
  double p_fault;
  double p_ticket;
  double ticket_rate_per_ms;
  std::array<double, kCategoryCount> category_cdf{};
  uint64_t pool_size;

  int64_t draws = 0;
  uint32_t seq = 0;
  uint64_t fresh_counter = 0;
  uint64_t virtual_counter = 0;
  uint64_t call_counter = 0;
  uint64_t ticket_counter = 0;
  uint64_t fault_counter = 0;
  uint64_t telemetry_counter = 0;
  uint64_t profile_counter = 0;

  std::vector<QueueKey> queue;  // min-heap by (time_ms, seq) via Later
  std::vector<Pending> slab;
  std::vector<uint32_t> free_slots;
  std::array<int64_t, kCommunities> outage_from{};
  std::array<int64_t, kCommunities> outage_until{};

  std::vector<std::string> district_ids, street_ids, community_ids, grid_ids, building_ids;
  std::vector<std::string> network_ids, substation_ids;
};

Generator::Impl::Impl(const Options& o) : opt(o), rng(o.seed) {
  if (opt.start_time_ms == 0) opt.start_time_ms = wall_clock_ms();
  if (!(opt.events_per_second > 0)) opt.events_per_second = 1000;
  double cs = std::max(0.0, opt.calls_share);
  double fs = std::max(0.0, opt.faults_share);
  double ps = std::max(0.0, opt.complaints_share);
  double rs = std::max(0.0, opt.profiles_share);
  if (!(cs + fs + ps + rs > 0)) cs = 1;
  const double total = cs + fs + ps + rs;
  cs /= total;
  fs /= total;
  ps /= total;
  rs /= total;
  opt.profiles_share = rs;

  // A draw yields one call, one fault draw (~kMessagesPerFaultDraw messages),
  // a new ticket (~kMessagesPerTicket messages) or one profile; weights make
  // message shares match the options and the message rate match events_per_second.
  const double w_call = cs, w_fault = fs / kMessagesPerFaultDraw, w_ticket = ps / kMessagesPerTicket, w_profile = rs;
  const double w_sum = w_call + w_fault + w_ticket + w_profile;
  p_call = w_call / w_sum;
  p_fault = (w_call + w_fault) / w_sum;
  p_ticket = (w_call + w_fault + w_ticket) / w_sum;
  const double draws_per_second = opt.events_per_second * w_sum;
  mean_gap_ms = 1000.0 / draws_per_second;
  ticket_rate_per_ms = opt.events_per_second * w_ticket / 1000.0;

  // At most ~8 calls (~2 of them short) per subscriber per hour keeps
  // background callers far below any fan-out threshold.
  const double calls_per_hour = opt.events_per_second * cs * 3600;
  pool_size = static_cast<uint64_t>(std::clamp(std::ceil(calls_per_hour / 8), 200'000.0, 1e9));

  const double tickets_per_2h = ticket_rate_per_ms * 2 * kHour;
  double heating_weight = 0, other_weight = 0;
  for (const auto& c : kCategories) (c.heating ? heating_weight : other_weight) += c.weight;
  double heating_scale = 1;
  if (tickets_per_2h > 0)
    heating_scale = std::min(1.0, kHeatingPerBuildingPer2h * kBuildings / (tickets_per_2h * heating_weight));
  double acc = 0;
  const double norm = heating_weight * heating_scale + other_weight;
  for (int i = 0; i < kCategoryCount; ++i) {
    acc += kCategories[i].weight * (kCategories[i].heating ? heating_scale : 1) / norm;
    category_cdf[static_cast<size_t>(i)] = acc;
  }
  category_cdf.back() = 1.0;

  for (int d = 0; d < kDistricts; ++d) district_ids.push_back("D" + std::to_string(d + 1));
  for (int s = 0; s < kStreets; ++s)
    street_ids.push_back(district_ids[static_cast<size_t>(s / kStreetsPerDistrict)] + "-S" +
                         std::to_string(s % kStreetsPerDistrict + 1));
  for (int c = 0; c < kCommunities; ++c) {
    community_ids.push_back(street_ids[static_cast<size_t>(c / kCommunitiesPerStreet)] + "-C" +
                            std::to_string(c % kCommunitiesPerStreet + 1));
    substation_ids.push_back("SS-" + community_ids.back());
  }
  for (int g = 0; g < 2 * kCommunities; ++g) grid_ids.push_back("G" + std::to_string(101 + g));
  for (int b = 0; b < kBuildings; ++b) {
    const int n = b % kBuildingsPerCommunity + 1;
    building_ids.push_back("B-" + community_ids[static_cast<size_t>(community_of(b))] + "-" +
                           (n < 10 ? "0" : "") + std::to_string(n));
  }
  for (int n = 0; n < kNetworks; ++n)
    network_ids.push_back(std::string("HN") + (n + 1 < 10 ? "0" : "") + std::to_string(n + 1));

  bg_time_ms = static_cast<double>(opt.start_time_ms);

  // Tickets opened before the start are in flight at the start: queue their
  // next step so the complaint share is steady from the first message.
  if (ticket_rate_per_ms > 0) {
    const double gap = 1.0 / ticket_rate_per_ms;
    for (double t = static_cast<double>(opt.start_time_ms - kMaxTicketLife) + rng.exponential(gap);
         t < static_cast<double>(opt.start_time_ms); t += rng.exponential(gap)) {
      Pending p = new_ticket(static_cast<int64_t>(t));
      while (advance_ticket(p)) {
        if (p.time_ms >= opt.start_time_ms) {
          push(p);
          break;
        }
      }
    }
  }
}

void Generator::Impl::push(Pending p) {
  uint32_t slot;
  if (free_slots.empty()) {
    slot = static_cast<uint32_t>(slab.size());
    slab.push_back(p);
  } else {
    slot = free_slots.back();
    free_slots.pop_back();
    slab[slot] = p;
  }
  queue.push_back({p.time_ms, seq++, slot});
  std::push_heap(queue.begin(), queue.end(), Later{});
}

void Generator::Impl::next(Message& out) {
  const auto now = static_cast<int64_t>(std::floor(bg_time_ms));
  if (!queue.empty() && queue.front().time_ms <= now) {
    std::pop_heap(queue.begin(), queue.end(), Later{});
    const uint32_t slot = queue.back().slot;
    queue.pop_back();
    free_slots.push_back(slot);
    const Pending p = slab[slot];
    emit(p, out);
    return;
  }
  const double u = rng.uniform();
  if (u < p_call) {
    background_call(now, out);
  } else if (u < p_fault) {
    background_fault(now, out);
  } else if (u < p_ticket) {
    background_ticket(now, out);
  } else {
    background_profile(now, out);
  }
  bg_time_ms += rng.exponential(mean_gap_ms);
  if (opt.plant_every > 0 && ++draws % opt.plant_every == 0) plant(now);
}

uint64_t Generator::Impl::fresh_number() {
  return number_of_index(std::min(pool_size + fresh_counter++, kMaxPool - 1));
}

// ---- calls ----------------------------------------------------------------------

void Generator::Impl::background_call(int64_t t, Message& out) {
  const auto caller_index = static_cast<uint64_t>(rng.range(0, static_cast<int64_t>(pool_size) - 1));
  auto callee_index = static_cast<uint64_t>(rng.range(0, static_cast<int64_t>(pool_size) - 2));
  if (callee_index >= caller_index) ++callee_index;
  const uint64_t caller = number_of_index(caller_index);
  const uint64_t callee = number_of_index(callee_index);
  const bool answered = rng.chance(0.85);
  int64_t duration = 0;
  if (answered) {
    const double u = rng.uniform();
    if (u < 0.08) {
      duration = rng.range(3, 29);
    } else if (u < 0.93) {
      const double v = rng.uniform();
      duration = 30 + static_cast<int64_t>(570 * v * v);
    } else {
      duration = rng.range(600, 3600);
    }
  }
  const uint64_t h = mix64(caller_index ^ opt.seed);
  const int64_t cell = rng.chance(0.8) ? static_cast<int64_t>(h % 3000) : rng.range(0, 2999);

  out.stream = Stream::kCalls;
  out.time_ms = t;
  set_phone_key(out.key, caller);
  JsonOut j(out.json);
  j.id("call_id", "CDR", ++call_counter, 12);
  j.time("start_time", t);
  j.phone("caller", caller);
  j.phone("callee", callee);
  j.integer("duration_s", duration);
  j.boolean("answered", answered);
  j.str("direction", "outgoing");
  j.str("caller_class", class_of_number(caller));
  j.str("callee_class", class_of_number(callee));
  j.str("origin", "domestic");
  j.id("cell_id", "CD-", static_cast<uint64_t>(cell), 5);
  j.str("city", "Chengdu");
  if (!is_fixed_index(caller_index)) {
    j.hex("imei_hash", mix64(h));
    const auto age = 30 * kDay + static_cast<int64_t>((h >> 20) % static_cast<uint64_t>(5 * 365 * kDay));
    j.time("sim_activated_at", opt.start_time_ms - age);
  }
  j.finish();
}

void Generator::Impl::emit_fraud_call(const Pending& p, Message& out) {
  out.stream = Stream::kCalls;
  out.time_ms = p.time_ms;
  set_phone_key(out.key, p.num);
  JsonOut j(out.json);
  j.id("call_id", "CDR", ++call_counter, 12);
  j.time("start_time", p.time_ms);
  j.phone("caller", p.num);
  j.phone("callee", p.num2);
  j.integer("duration_s", p.value);
  j.boolean("answered", (p.flags & kAnswered) != 0);
  j.str("direction", "outgoing");
  j.str("caller_class", class_of_number(p.num));
  j.str("callee_class", class_of_number(p.num2));
  if (p.flags & kSpoofedDisplay) j.str("display_number", "95588");
  j.str("origin", "domestic");
  j.hex("imei_hash", mix64(p.num ^ opt.seed));
  j.id("cell_id", "CD-", mix64(p.num) % 3000, 5);
  j.str("city", "Chengdu");
  j.time("sim_activated_at", static_cast<int64_t>(p.id));
  j.finish();
}

void Generator::Impl::plant_fraud(int64_t t) {
  uint64_t caller;
  if (rng.chance(0.5)) {
    caller = static_cast<uint64_t>(rng.range(170, 171)) * kSuffixSpace +
             permute_suffix(virtual_counter++ % kSuffixSpace);
  } else {
    do caller = fresh_number();
    while (caller / kSuffixSpace == kFixedPrefix);
  }
  const int64_t t0 = t + rng.range(0, 2 * kSecond);
  const int64_t span = rng.range(60 * kSecond, 300 * kSecond);
  const int64_t activated = t0 - rng.range(1 * kHour, 72 * kHour);
  const bool spoof = rng.chance(0.3);
  const auto calls = rng.range(25, 40);
  for (int64_t i = 0; i < calls; ++i) {
    Pending p;
    p.what = What::kFraudCall;
    p.time_ms = t0 + rng.range(0, span);
    p.num = caller;
    p.num2 = fresh_number();
    p.id = static_cast<uint64_t>(activated);
    const bool answered = rng.chance(0.55);
    p.value = answered ? static_cast<uint32_t>(rng.range(2, 25)) : 0;
    p.flags = static_cast<uint8_t>((answered ? kAnswered : 0) | (spoof ? kSpoofedDisplay : 0));
    push(p);
  }
  ++planted.fraud_fan_out;
  // The number's profile, computed a few minutes after its fan-out: the
  // features of a fraud number (docs/packs/fraud.md, the number-profile score).
  if (opt.profiles_share > 0) {
    Pending p;
    p.what = What::kProfile;
    p.time_ms = t0 + span + rng.range(1 * kMinute, 10 * kMinute);
    p.num = caller;
    p.id = ++profile_counter;
    push(p);
    ++planted.fraud_profiles;
  }
}

// ---- profiles ---------------------------------------------------------------------
// Per-number summaries with the columns of the Sichuan fraud data. Ordinary
// subscribers: tens of counterparts called repeatedly, one or two devices, most
// days and a daytime spread of hours active, an old SIM, SMS and app use. Fraud
// numbers: hundreds of one-off counterparts, several devices, a few days of
// activity, almost only outgoing short calls, a new SIM. Ordinary profiles stay
// well below the fitted score's threshold; fraud profiles are well above it.

void Generator::Impl::background_profile(int64_t t, Message& out) {
  const auto index = static_cast<uint64_t>(rng.range(0, static_cast<int64_t>(pool_size) - 1));
  emit_profile(number_of_index(index), ++profile_counter, t, false, out);
}

void Generator::Impl::emit_profile(uint64_t number, uint64_t id, int64_t t, bool fraud, Message& out) {
  // Drawn from a generator of its own, so a profile's content does not shift the main sequence.
  Rng r(mix64(number ^ (id << 20) ^ opt.seed));
  out.stream = Stream::kProfiles;
  out.time_ms = t;
  set_phone_key(out.key, number);
  JsonOut j(out.json);
  j.id("profile_id", "PRF", id, 12);
  j.time("time", t);
  j.phone("number", number);
  const int64_t unique = fraud ? r.range(300, 2000) : r.range(15, 150);
  const double per_counterpart = fraud ? r.uniform(1.0, 1.5) : r.uniform(2.5, 8.0);
  const double dur_mean = fraud ? r.uniform(15, 40) : r.uniform(45, 200);
  j.integer("opposite_count", static_cast<int64_t>(std::llround(static_cast<double>(unique) * per_counterpart)));
  j.integer("opposite_unique", unique);
  j.number("phone2opposite_mean", per_counterpart, 3);
  j.number("voc_calltype1", fraud ? r.uniform(0.95, 1.0) : r.uniform(0.3, 0.7), 3);
  j.integer("imeis", fraud ? r.range(3, 10) : r.range(1, 5) == 1 ? 2 : 1);
  j.number("call_dur_mean", dur_mean, 1);
  j.number("call_dur_median", fraud ? r.uniform(8, 20) : dur_mean * r.uniform(0.4, 0.7), 1);
  j.integer("call_dur_max", static_cast<int64_t>(dur_mean * (fraud ? r.uniform(3, 15) : r.uniform(5, 20))));
  j.integer("city_name_nunique", fraud ? r.range(1, 2) : r.range(1, 3));
  j.integer("county_name_nunique", fraud ? r.range(1, 3) : r.range(1, 6));
  j.integer("voc_day_nunique", fraud ? r.range(1, 5) : r.range(20, 31));
  j.integer("voc_hour_nunique", fraud ? r.range(12, 20) : r.range(8, 16));
  const int64_t sms = fraud ? r.range(0, 20) : r.range(20, 500);
  j.integer("sms_count", sms);
  j.integer("sms_nunique", sms == 0 ? 0 : std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(sms) * r.uniform(0.1, 0.4))));
  j.integer("busi_count", fraud ? r.range(0, 30) : r.range(50, 300));
  j.number("flow_sum", fraud ? r.uniform(0, 200) : r.uniform(500, 30000), 1);
  j.integer("month_ids", fraud ? r.range(1, 2) : r.chance(0.9) ? 8 : 7);
  j.number("arpu_mean", fraud ? r.uniform(5, 50) : r.uniform(20, 150), 2);
  j.finish();
}

// ---- complaints -------------------------------------------------------------------

Pending Generator::Impl::new_ticket(int64_t t) {
  Pending p;
  p.what = What::kTicket;
  p.time_ms = t;
  p.step = kReceived;
  p.id = ++ticket_counter;
  p.num = number_of_index(static_cast<uint64_t>(rng.range(0, static_cast<int64_t>(pool_size) - 1)));
  p.building = static_cast<uint16_t>(rng.range(0, kBuildings - 1));
  const double u = rng.uniform();
  uint8_t c = 0;
  while (c + 1 < kCategoryCount && u >= category_cdf[c]) ++c;
  p.category = c;
  p.urgency = rng.chance(0.85) ? static_cast<uint8_t>(kCategories[c].urgency)
                               : static_cast<uint8_t>(rng.range(0, 3));
  return p;
}

bool Generator::Impl::advance_ticket(Pending& p) {
  switch (p.step) {
    case kReceived:
      p.step = kDispatched;
      p.time_ms += rng.range(1 * kMinute, 15 * kMinute);
      return true;
    case kDispatched:
      p.step = kSigned;
      p.time_ms += rng.range(2 * kMinute, 30 * kMinute);
      return true;
    case kSigned:
      if (p.flags & kNeverContacted) return false;
      p.step = kContacted;
      p.time_ms += (p.flags & kLateContact) ? rng.range(70 * kMinute, 120 * kMinute)
                                            : rng.range(10 * kMinute, 50 * kMinute);
      return true;
    case kContacted:
      p.step = kResolved;
      p.time_ms += rng.range(20 * kMinute, 90 * kMinute);
      return true;
    case kResolved:
      p.step = rng.chance(kRatedShare) ? kRated : kClosed;
      p.time_ms += rng.range(5 * kMinute, 30 * kMinute);
      return true;
    case kRated:
      p.step = kClosed;
      p.time_ms += rng.range(1 * kMinute, 10 * kMinute);
      return true;
    default:
      return false;
  }
}

void Generator::Impl::background_ticket(int64_t t, Message& out) {
  Pending p = new_ticket(t);
  emit_ticket(p, out);
  if (advance_ticket(p)) push(p);
}

void Generator::Impl::location(JsonOut& j, int b, bool with_building) {
  j.str("district", district_ids[static_cast<size_t>(district_of(b))]);
  j.str("street", street_ids[static_cast<size_t>(street_of(b))]);
  j.str("community", community_ids[static_cast<size_t>(community_of(b))]);
  j.str("grid", grid_ids[static_cast<size_t>(grid_of(b))]);
  if (with_building) j.str("building", building_ids[static_cast<size_t>(b)]);
}

void Generator::Impl::emit_ticket(const Pending& p, Message& out) {
  const Category& cat = kCategories[p.category];
  const int b = p.building;
  out.stream = Stream::kComplaints;
  out.time_ms = p.time_ms;
  set_key(out.key, "TK", p.id, 10);
  JsonOut j(out.json);
  j.str("ticket_id", out.key);
  j.time("time", p.time_ms);
  j.str("status", kStatusNames[p.step]);
  j.str("category", cat.name);
  j.str("urgency", kUrgencyNames[p.urgency]);
  if (p.step == kReceived) j.phone("complainant", p.num);
  location(j, b, true);
  if (p.step == kDispatched || p.step == kSigned) {
    j.str("assignee_level", kLevelNames[cat.level]);
    switch (cat.level) {
      case kLevelCommunity:
        j.str2("assignee", community_ids[static_cast<size_t>(community_of(b))], "-committee");
        break;
      case kLevelStreet: j.str2("assignee", street_ids[static_cast<size_t>(street_of(b))], "-office"); break;
      case kLevelDistrict:
        j.str2("assignee", district_ids[static_cast<size_t>(district_of(b))], "-bureau");
        break;
      case kLevelCity: j.str("assignee", "city-hall"); break;
      case kLevelUtility:
        if (cat.heating)
          j.str2("assignee", "heat-",
                 network_ids[static_cast<size_t>(network_of_community(community_of(b)))]);
        else
          j.str("assignee", "water-utility");
        break;
    }
  }
  if (p.step == kRated) j.str("rating", mix64(p.id) % 5 == 0 ? "unsatisfied" : "satisfied");
  if (p.step == kReceived) j.str("text", cat.text);
  j.finish();
}

void Generator::Impl::plant_late_ticket(int64_t t) {
  Pending p = new_ticket(t + rng.range(0, 60 * kSecond));
  p.flags = rng.chance(0.5) ? kNeverContacted : kLateContact;
  push(p);
  ++planted.late_tickets;
}

// ---- faults -----------------------------------------------------------------------

void Generator::Impl::background_fault(int64_t t, Message& out) {
  const double u = rng.uniform();
  if (u >= kIncidentShare + kPlannedShare) {
    const auto community = static_cast<int>(rng.range(0, kCommunities - 1));
    const bool outage = outage_from[static_cast<size_t>(community)] <= t &&
                        t < outage_until[static_cast<size_t>(community)];
    out.stream = Stream::kFaults;
    out.time_ms = t;
    const std::string& network = network_ids[static_cast<size_t>(network_of_community(community))];
    out.key.assign(network);
    JsonOut j(out.json);
    j.id("fault_id", "TM", ++telemetry_counter, 10);
    j.time("time", t);
    j.str("kind", "telemetry");
    j.str("network_id", network);
    j.str("asset_type", "substation");
    j.str("asset_id", substation_ids[static_cast<size_t>(community)]);
    location(j, community * kBuildingsPerCommunity, false);
    j.number("supply_temp_c", outage ? rng.uniform(40, 55) : rng.uniform(85, 95), 1);
    j.number("return_temp_c", outage ? rng.uniform(32, 42) : rng.uniform(45, 55), 1);
    j.number("pressure_bar", outage ? rng.uniform(1.0, 2.5) : rng.uniform(5.0, 7.0), 2);
    j.number("indoor_temp_c", outage ? rng.uniform(12, 16) : rng.uniform(19, 23), 1);
    j.finish();
    return;
  }
  Pending p;
  p.what = What::kFault;
  p.time_ms = t;
  p.id = ++fault_counter;
  p.building = static_cast<uint16_t>(rng.range(0, kBuildings - 1));
  constexpr auto kMaintenance = static_cast<uint8_t>(std::size(kCauses) - 1);
  p.category = static_cast<uint8_t>(rng.range(0, kMaintenance - 1));
  if (u < kPlannedShare) {
    p.step = kPlanned;
    p.asset = kMainPipe;
    p.category = kMaintenance;
    p.urgency = 0;
    p.value = static_cast<uint32_t>(rng.range(200, 3000));
    p.num2 = static_cast<uint64_t>(t + rng.range(24 * kHour, 72 * kHour));
    emit_fault(p, out);
    return;
  }
  p.step = kOpened;
  p.asset = rng.chance(0.5) ? kBranch : kBuildingAsset;
  p.urgency = rng.chance(0.8) ? 0 : 1;
  p.value = static_cast<uint32_t>(rng.range(5, 80));
  const int64_t restore = t + rng.range(30 * kMinute, 180 * kMinute);
  p.num2 = static_cast<uint64_t>(t + rng.range(30 * kMinute, 120 * kMinute));
  emit_fault(p, out);
  if (rng.chance(kUpdatedShare)) {
    Pending u2 = p;
    u2.step = kUpdated;
    u2.time_ms = t + (restore - t) * rng.range(20, 80) / 100;
    push(u2);
  }
  p.step = kRestored;
  p.time_ms = restore;
  push(p);
}

void Generator::Impl::emit_fault(const Pending& p, Message& out) {
  const int b = p.building;
  const int community = community_of(b);
  const std::string& network = network_ids[static_cast<size_t>(network_of_community(community))];
  out.stream = Stream::kFaults;
  out.time_ms = p.time_ms;
  out.key.assign(network);
  JsonOut j(out.json);
  j.id("fault_id", "F", p.id, 8);
  j.time("time", p.time_ms);
  j.str("kind", kFaultKindNames[p.step]);
  j.str("network_id", network);
  j.str("asset_type", kAssetNames[p.asset]);
  switch (p.asset) {
    case kMainPipe: j.str2("asset_id", "MP-", network); break;
    case kBranch: j.str2("asset_id", "BR-", community_ids[static_cast<size_t>(community)]); break;
    case kSubstation: j.str("asset_id", substation_ids[static_cast<size_t>(community)]); break;
    case kBuildingAsset: j.str("asset_id", building_ids[static_cast<size_t>(b)]); break;
  }
  if (p.asset == kMainPipe) {
    j.str("district", district_ids[static_cast<size_t>(district_of(b))]);
  } else {
    location(j, b, p.asset == kBuildingAsset);
  }
  j.integer("households", p.value);
  j.str("cause", kCauses[p.category]);
  j.str("severity", kSeverityNames[p.urgency]);
  if (p.step != kRestored) j.time("estimated_restore_at", static_cast<int64_t>(p.num2));
  j.finish();
}

void Generator::Impl::plant_outage(int64_t t) {
  const auto community = static_cast<int>(rng.range(0, kCommunities - 1));
  const int first = community * kBuildingsPerCommunity;
  const auto target = static_cast<int>(rng.range(0, kBuildingsPerCommunity - 1));
  const int64_t t0 = t + rng.range(0, 60 * kSecond);
  const int64_t restore = t0 + rng.range(1 * kHour, 4 * kHour);

  Pending f;
  f.what = What::kFault;
  f.time_ms = t0;
  f.id = ++fault_counter;
  f.step = kOpened;
  f.asset = kSubstation;
  f.building = static_cast<uint16_t>(first);
  f.category = static_cast<uint8_t>(rng.range(0, 2));
  f.urgency = static_cast<uint8_t>(rng.range(1, 2));
  f.value = static_cast<uint32_t>(rng.range(100, 800));
  f.num2 = static_cast<uint64_t>(t0 + 3 * kHour);
  push(f);
  f.step = kUpdated;
  f.time_ms = t0 + rng.range(20 * kMinute, 50 * kMinute);
  push(f);
  f.step = kRestored;
  f.time_ms = restore;
  push(f);
  outage_from[static_cast<size_t>(community)] = t0;
  outage_until[static_cast<size_t>(community)] = restore;

  // 4-7 complainants in the target building, 1-2 in each of its two neighbours.
  std::array<uint64_t, 12> used{};
  size_t n_used = 0;
  auto complain = [&](int building) {
    uint64_t index;
    do index = static_cast<uint64_t>(rng.range(0, static_cast<int64_t>(pool_size) - 1));
    while (std::find(used.begin(), used.begin() + static_cast<ptrdiff_t>(n_used), index) !=
           used.begin() + static_cast<ptrdiff_t>(n_used));
    used[n_used++] = index;
    Pending p = new_ticket(t0 + rng.range(10 * kMinute, 60 * kMinute));
    p.num = number_of_index(index);
    p.building = static_cast<uint16_t>(building);
    p.category = kNoHeat;
    p.urgency = rng.chance(0.25) ? kEmergency : kUtility;
    push(p);
  };
  for (auto n = rng.range(4, 7); n > 0; --n) complain(first + target);
  for (int side : {1, kBuildingsPerCommunity - 1}) {
    const int neighbour = first + (target + side) % kBuildingsPerCommunity;
    for (auto n = rng.range(1, 2); n > 0; --n) complain(neighbour);
  }
  ++planted.heating_outages;
}

void Generator::Impl::plant(int64_t t) {
  plant_fraud(t);
  plant_outage(t);
  plant_late_ticket(t);
}

void Generator::Impl::emit(const Pending& p, Message& out) {
  switch (p.what) {
    case What::kFraudCall: emit_fraud_call(p, out); return;
    case What::kFault: emit_fault(p, out); return;
    case What::kProfile: emit_profile(p.num, p.id, p.time_ms, true, out); return;
    case What::kTicket: {
      emit_ticket(p, out);
      Pending n = p;
      if (advance_ticket(n)) push(n);
      return;
    }
  }
}

Generator::Generator(const Options& options) : impl_(std::make_unique<Impl>(options)) {}
Generator::~Generator() = default;

void Generator::next(Message& out) { impl_->next(out); }

const Generator::Planted& Generator::planted() const { return impl_->planted; }

}  // namespace tocsin::gen
