#pragma once
// StateStore: keyed state (windows, timers, alert and delivery state) kept
// behind a small interface so that it can later be backed by a changelog topic
// and move between instances. Keys live in namespaces (one per rule or
// component). Implementations are not required to be thread-safe: each worker
// owns its store.
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace tocsin {

class StateStore {
 public:
  virtual ~StateStore() = default;
  virtual void put(std::string_view ns, std::string_view key, std::string_view value) = 0;
  // Returns false when absent.
  virtual bool get(std::string_view ns, std::string_view key, std::string& value) const = 0;
  virtual void erase(std::string_view ns, std::string_view key) = 0;
  // Visits every entry of `ns` in key order.
  virtual void scan(std::string_view ns,
                    const std::function<void(std::string_view key, std::string_view value)>&
                        visit) const = 0;
  virtual size_t size(std::string_view ns) const = 0;
};

// An in-memory store (ordered, so scans and snapshots are deterministic).
std::unique_ptr<StateStore> make_memory_state_store();

}  // namespace tocsin
