#include "pipeline/state_store.h"

#include <map>

namespace tocsin {
namespace {

class MemoryStateStore final : public StateStore {
 public:
  void put(std::string_view ns, std::string_view key, std::string_view value) override {
    auto& m = spaces_[std::string(ns)];
    m.insert_or_assign(std::string(key), std::string(value));
  }
  bool get(std::string_view ns, std::string_view key, std::string& value) const override {
    const auto s = spaces_.find(ns);
    if (s == spaces_.end()) return false;
    const auto it = s->second.find(key);
    if (it == s->second.end()) return false;
    value = it->second;
    return true;
  }
  void erase(std::string_view ns, std::string_view key) override {
    const auto s = spaces_.find(ns);
    if (s == spaces_.end()) return;
    const auto it = s->second.find(key);
    if (it != s->second.end()) s->second.erase(it);
  }
  void scan(std::string_view ns,
            const std::function<void(std::string_view, std::string_view)>& visit) const override {
    const auto s = spaces_.find(ns);
    if (s == spaces_.end()) return;
    for (const auto& [k, v] : s->second) visit(k, v);
  }
  size_t size(std::string_view ns) const override {
    const auto s = spaces_.find(ns);
    return s == spaces_.end() ? 0 : s->second.size();
  }

 private:
  using Space = std::map<std::string, std::string, std::less<>>;
  std::map<std::string, Space, std::less<>> spaces_;
};

}  // namespace

std::unique_ptr<StateStore> make_memory_state_store() { return std::make_unique<MemoryStateStore>(); }

}  // namespace tocsin
