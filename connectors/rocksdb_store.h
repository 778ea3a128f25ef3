#pragma once
// A durable StateStore on RocksDB: each namespace is a key prefix
// ("<ns>\0<key>"). Writes go to RocksDB's write-ahead log without fsync, so
// they survive the process being killed (kill -9) but not a power loss; set
// `sync` for that. Not thread-safe beyond RocksDB's own guarantees: like every
// StateStore, one owner thread.
#include <memory>
#include <string>

#include "pipeline/state_store.h"

namespace tocsin::connectors {

// Opens (creating if needed) the store in directory `path`. Throws
// std::runtime_error naming the path and RocksDB's reason when it cannot
// (another process holds the lock, no permission).
std::unique_ptr<StateStore> open_rocksdb_state_store(const std::string& path, bool sync = false);

}  // namespace tocsin::connectors
