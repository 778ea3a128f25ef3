#pragma once
// Reference tables joined into rules: watch-lists, official numbers,
// vulnerable residents with family contacts, building -> grid -> street ->
// district. A table maps a key (column 0) to a row of typed columns.
//
// Tables are declared (TableSchema) before rules are compiled, so expressions
// resolve table and column names at load time. Contents change live: the
// TableRegistry builds a new immutable TableSet on every change and bumps its
// version; each worker picks up the new snapshot between batches (one relaxed
// load per batch, no lock or refcount per event). Lookups do not allocate.
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/event.h"
#include "rules/expr.h"

namespace tocsin::rules {

enum class KeyNormalization : uint8_t {
  kNone,
  kPhone,  // E.164-style digits: "+86 138-1234-8000", "008613812348000", "013812348000" -> "8613812348000"
};

struct TableSchema {
  std::string name;
  std::vector<std::pair<std::string, Type>> columns;  // column 0 is the key (a string)
  KeyNormalization key = KeyNormalization::kNone;
};

// The declared tables, as the rule compiler sees them.
struct TableCatalog {
  std::vector<TableSchema> tables;
  std::optional<TableRef> find(std::string_view name) const;
};

// An immutable snapshot of every table's rows. Thread-safe to read.
class TableSet {
 public:
  virtual ~TableSet() = default;
  // The row for `key` in table `table_id`, or nullptr. The row has one Value
  // per column of the table's schema; string views point into the snapshot.
  virtual const Value* find(int table_id, std::string_view key) const = 0;
};

// Where an engine gets table snapshots from. version() is read once per batch
// (a relaxed atomic load); snapshot() only when it changed. Thread-safe.
class TableSource {
 public:
  virtual ~TableSource() = default;
  virtual uint64_t version() const = 0;
  virtual std::shared_ptr<const TableSet> snapshot() const = 0;
};

// Normalises a phone number into `out` (digits only, with country code 86 for
// Chinese numbers written nationally); returns the view of `out` used.
std::string_view normalize_phone(std::string_view number, char (&out)[32]);

}  // namespace tocsin::rules
