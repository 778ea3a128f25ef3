#pragma once
// The rules library's string hash: the engine's key tables, count_distinct and
// the reference tables' index. Eight bytes at a time, well mixed in every bit
// (tables use the low bits, approximate counters the high ones). In-memory
// only: never persisted, so it may change between versions.
#include <cstdint>
#include <cstring>
#include <string_view>

namespace tocsin::rules {

inline uint64_t key_hash(std::string_view s) {
  uint64_t h = 0x9e3779b97f4a7c15ull;
  const char* p = s.data();
  size_t n = s.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
  }
  if (n) {  // 1..7 bytes in at most two loads, every byte of them in `w` (as wyhash reads tails)
    uint64_t w;
    if (n >= 4) {
      uint32_t lo, hi;
      std::memcpy(&lo, p, 4);
      std::memcpy(&hi, p + n - 4, 4);
      w = static_cast<uint64_t>(lo) << 32 | hi;
    } else {
      const auto byte = [p](size_t i) { return static_cast<uint64_t>(static_cast<unsigned char>(p[i])); };
      w = byte(0) << 16 | byte(n / 2) << 8 | byte(n - 1);
    }
    h = (h ^ w) * 0x94d049bb133111ebull;
  }
  // The length goes in after the bytes: xored into the seed it could cancel a
  // byte's difference ("p1" and "p10" hashed alike, and count_distinct,
  // which keeps only hashes, counted them once).
  h ^= s.size();
  h ^= h >> 32;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 29);
}

}  // namespace tocsin::rules
