#include "rules/clock_board.h"

#include <algorithm>

namespace tocsin::rules {

std::vector<ClockEntry> ClockBoard::read(int64_t now_ms, size_t limit, int64_t* published_ms) {
  wanted_at_.store(now_ms, std::memory_order_relaxed);
  std::vector<ClockEntry> out;
  int64_t oldest = 0;
  {
    std::lock_guard lock(mu_);
    for (size_t w = 0; w < published_.size(); ++w) {
      out.insert(out.end(), published_[w].begin(), published_[w].end());
      if (published_at_[w] != 0) oldest = oldest == 0 ? published_at_[w] : std::min(oldest, published_at_[w]);
    }
  }
  std::sort(out.begin(), out.end(), [](const ClockEntry& a, const ClockEntry& b) { return a.due_ms < b.due_ms; });
  if (out.size() > limit) out.resize(limit);
  if (published_ms) *published_ms = oldest;
  return out;
}

bool ClockBoard::wanted(size_t w, int64_t now_ms) const {
  if (now_ms - wanted_at_.load(std::memory_order_relaxed) > kWantedForMs) return false;
  std::lock_guard lock(mu_);
  return w < published_at_.size() && now_ms - published_at_[w] >= kPublishEveryMs;
}

void ClockBoard::publish(size_t w, int64_t now_ms, std::vector<ClockEntry> entries) {
  std::lock_guard lock(mu_);
  if (w >= published_.size()) return;
  published_[w] = std::move(entries);
  published_at_[w] = now_ms;
}

}  // namespace tocsin::rules
