#include "connectors/rocksdb_store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <filesystem>
#include <stdexcept>

namespace tocsin::connectors {
namespace {

class RocksStore final : public StateStore {
 public:
  RocksStore(const std::string& path, bool sync) {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    rocksdb::Options o;
    o.create_if_missing = true;
    o.max_open_files = 64;
    o.keep_log_file_num = 2;
    rocksdb::DB* db = nullptr;
    const rocksdb::Status s = rocksdb::DB::Open(o, path, &db);
    if (!s.ok())
      throw std::runtime_error("cannot open the state store at " + path + ": " + s.ToString() +
                               " (is another Tocsin using it? set alerting.state_dir to a directory of its own)");
    db_.reset(db);
    write_.sync = sync;
  }

  void put(std::string_view ns, std::string_view key, std::string_view value) override {
    check(db_->Put(write_, full(ns, key), rocksdb::Slice(value.data(), value.size())));
  }
  bool get(std::string_view ns, std::string_view key, std::string& value) const override {
    const auto s = db_->Get(rocksdb::ReadOptions(), full(ns, key), &value);
    if (s.IsNotFound()) return false;
    check(s);
    return true;
  }
  void erase(std::string_view ns, std::string_view key) override { check(db_->Delete(write_, full(ns, key))); }
  void scan(std::string_view ns,
            const std::function<void(std::string_view key, std::string_view value)>& visit) const override {
    const std::string prefix = full(ns, "");
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      const rocksdb::Slice k = it->key(), v = it->value();
      visit(std::string_view(k.data() + prefix.size(), k.size() - prefix.size()), std::string_view(v.data(), v.size()));
    }
    check(it->status());
  }
  size_t size(std::string_view ns) const override {
    size_t n = 0;
    scan(ns, [&n](std::string_view, std::string_view) { ++n; });
    return n;
  }

 private:
  static std::string full(std::string_view ns, std::string_view key) {
    std::string k;
    k.reserve(ns.size() + 1 + key.size());
    k.append(ns).push_back('\0');
    k.append(key);
    return k;
  }
  static void check(const rocksdb::Status& s) {
    if (!s.ok()) throw std::runtime_error("state store: " + s.ToString());
  }
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::WriteOptions write_;
};

}  // namespace

std::unique_ptr<StateStore> open_rocksdb_state_store(const std::string& path, bool sync) {
  return std::make_unique<RocksStore>(path, sync);
}

}  // namespace tocsin::connectors
