// key_hash: count_distinct keeps only hashes, so two values that hash alike
// count once. Strings of one length cannot collide by construction; these
// check that strings of different lengths do not either.
#include "rules/hash.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <unordered_map>

namespace tocsin::rules {
namespace {

TEST(KeyHash, LengthsDoNotCancelBytes) {
  // Each pair collided when the length was xored into the seed: it cancelled
  // a difference in the first or the last bytes.
  const std::pair<std::string, std::string> pairs[] = {
      {"p1", "p10"}, {"a```", "a````"}, {"a1234567x", "b1234567xx"}, {"", std::string(1, '\0')}};
  for (const auto& [a, b] : pairs) EXPECT_NE(key_hash(a), key_hash(b)) << a << " / " << b;
}

TEST(KeyHash, NoCollisionsAmongShortStringsOfEveryLength) {
  std::unordered_map<uint64_t, std::string> seen;
  const auto add = [&seen](const std::string& s) {
    const auto [it, fresh] = seen.emplace(key_hash(s), s);
    EXPECT_TRUE(fresh || it->second == s) << "'" << s << "' and '" << it->second << "'";
  };
  // Every string of up to 5 characters over an alphabet whose letters differ in their low bits.
  const std::string alphabet = {'\0', '0', '1', '2', '`', 'a', 'b', 'p'};
  std::string s;
  const auto all = [&](auto&& self, size_t n) -> void {
    add(s);
    if (n == 0) return;
    for (char c : alphabet) {
      s.push_back(c);
      self(self, n - 1);
      s.pop_back();
    }
  };
  all(all, 5);
  // Random longer ones (both loads of the 4-7 byte tail, the 8-byte blocks).
  std::mt19937 rng(9);
  for (int i = 0; i < 50000; ++i) {
    std::string r(4 + rng() % 21, ' ');
    for (char& c : r) c = alphabet[rng() % alphabet.size()];
    add(r);
  }
  EXPECT_GT(seen.size(), 80000u);
}

}  // namespace
}  // namespace tocsin::rules
