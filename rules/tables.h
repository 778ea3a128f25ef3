#pragma once
// Reference tables joined into rules: watch-lists, official numbers,
// vulnerable residents with family contacts, building -> grid -> street ->
// district. A table maps a key (column 0) to a row of typed columns.
//
// Tables are declared (TableSchema) before rules are compiled, so expressions
// resolve table and column names at load time. Contents change live: the
// TableRegistry builds a new immutable TableSet on every change and bumps its
// version; each worker picks up the new snapshot between batches (one atomic
// load per batch, no lock or refcount per event). Lookups do not allocate.
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/event.h"
#include "rules/expr.h"

namespace tocsin::rules {

enum class KeyNormalization : uint8_t {
  kNone,
  // E.164: "+86 138-1234-8000", "008613812348000", "013812348000" -> "+8613812348000";
  // see normalize_phone().
  kPhone,
};

struct TableSchema {
  std::string name;
  std::vector<std::pair<std::string, Type>> columns;  // column 0 is the key (a string)
  KeyNormalization key = KeyNormalization::kNone;
};

// The declared tables, as the rule compiler sees them. A table's id is its
// index in `tables`.
struct TableCatalog {
  std::vector<TableSchema> tables;
  // The table named `name`. For an unknown name: a TableRef with id -1 whose
  // `columns` name the declared tables, so the compiler can list them (never
  // nullopt; a Scope without tables returns nullopt).
  std::optional<TableRef> find(std::string_view name) const;
  int index_of(std::string_view name) const;  // -1 when unknown
};

// An immutable snapshot of every table's rows. Thread-safe to read.
class TableSet {
 public:
  virtual ~TableSet() = default;
  // The row for `key` in table `table_id`, or nullptr. The row has one Value
  // per column of the table's schema; string views point into the snapshot.
  virtual const Value* find(int table_id, std::string_view key) const = 0;
  // Number of rows of a table (0 for an unknown id).
  virtual size_t size(int table_id) const { (void)table_id; return 0; }
};

// Where an engine gets table snapshots from. version() is read once per batch
// (an atomic load); snapshot() only when it changed. Thread-safe.
class TableSource {
 public:
  virtual ~TableSource() = default;
  virtual uint64_t version() const = 0;
  virtual std::shared_ptr<const TableSet> snapshot() const = 0;
};

// Normalises a phone number into `out` and returns the view of `out` used, or
// an empty view when `number` is not a phone number (letters, more than 20
// digits, nothing left). Separators (space, - . / ( )) are ignored; a '+' may
// come only before the first digit. The result is E.164 with '+' for numbers
// whose country is known, bare digits otherwise:
//   +86 138 1234 8000, 0086-138-1234-8000, 8613812348000, 13812348000,
//   013812348000                                   -> +8613812348000
//   028-1234567, +86 (0)28 1234567                 -> +86281234567  (fixed line, trunk 0 dropped)
//   400-810-8888                                   -> +864008108888
//   95588, +86 95588, 96110, 110, 12345            -> 95588 ... (short service numbers stay bare)
//   +1 415 555 0100, 0014155550100                 -> +14155550100
//   12345678 (local, no area code)                 -> 12345678
// Idempotent: normalising a result gives the same result. Does not allocate.
std::string_view normalize_phone(std::string_view number, char (&out)[32]);

// One row: a typed cell per column of its table, cell 0 the key. Immutable;
// owns its strings; shared between snapshots.
class TableRow {
 public:
  // Copies `cells` (strings are copied into the row).
  static std::shared_ptr<const TableRow> make(std::span<const Value> cells);
  std::span<const Value> cells() const { return cells_; }
  std::string_view key() const { return cells_.empty() ? std::string_view() : cells_[0].s; }

 private:
  TableRow() = default;
  std::string text_;
  std::vector<Value> cells_;
};
using RowPtr = std::shared_ptr<const TableRow>;

// Parses `text` as a value of type `t` into `out` (strings view `text`; empty
// text is null). Accepts ints in decimal, doubles, and bools as
// true/false/yes/no/1/0 (any case). Returns "" or why it does not parse.
std::string parse_cell(Type t, std::string_view text, Value& out);

// Builds a row of `schema` from JSON object text such as
// {"number":"+86 138 1234 8000","risk_level":3}. Values may be JSON strings,
// numbers, booleans or null (a string is parsed per the column's type; a
// number is accepted for a string column). Unknown members are ignored,
// missing ones are null. The key is `key` when not empty (a Kafka record key
// wins over the object's key member), else the object's key column, which is
// then required. Returns null and sets `error` when it fails.
RowPtr parse_json_row(const TableSchema& schema, std::string_view key, std::string_view json,
                      std::string& error);

// The rows read from a table file, or the errors, each "file:line: message".
struct TableFile {
  std::vector<RowPtr> rows;
  std::vector<std::string> errors;
  bool ok() const { return errors.empty(); }
};

// CSV (RFC 4180): the header row names the columns and must contain every
// declared column (extra columns are ignored); quoted fields may hold commas,
// doubled quotes and line breaks; unquoted fields are trimmed; empty fields
// are null. `name` is used in error messages.
TableFile parse_csv(const TableSchema& schema, std::string_view text, std::string_view name);
// JSONL: one JSON object per line (blank lines skipped); see parse_json_row.
TableFile parse_jsonl(const TableSchema& schema, std::string_view text, std::string_view name);
TableFile load_csv(const TableSchema& schema, const std::string& path);
TableFile load_jsonl(const TableSchema& schema, const std::string& path);
// By extension: .csv, else .jsonl / .json / .ndjson; anything else is an error.
TableFile load_table_file(const TableSchema& schema, const std::string& path);

// A change to one key: a new row, or a deletion when `row` is null.
struct TableChange {
  std::string key;
  RowPtr row;
};

// The live contents of every declared table. Writers are thread-safe and
// serialised; each write copies the tables it changes (copy-on-write per
// table: tables are small and change slowly), publishes a new immutable
// snapshot and then bumps version() with a release store, so a reader that
// sees the new version gets a snapshot at least that new. An old snapshot
// stays valid and unchanged for as long as someone holds it.
//
// Keys of a kPhone table are normalised on insert and on lookup. Later rows
// for the same key replace earlier ones (in a file and in a topic alike).
// Writers return "" or an error (unknown table, a key that is not a phone
// number); a write with an error changes nothing.
class TableRegistry final : public TableSource {
 public:
  explicit TableRegistry(TableCatalog catalog);
  ~TableRegistry() override;

  const TableCatalog& catalog() const { return catalog_; }
  const TableSchema* schema(std::string_view table) const;

  // Whole contents (e.g. a file reload).
  std::string replace(std::string_view table, std::vector<RowPtr> rows);
  // One key. The key wins over the row's key cell, which is set to it.
  std::string upsert(std::string_view table, std::string_view key, RowPtr row);
  std::string upsert(std::string_view table, RowPtr row);
  std::string erase(std::string_view table, std::string_view key);
  // Many changes at once, in order, published as one snapshot (a batch of
  // Kafka records).
  std::string apply(std::string_view table, std::span<const TableChange> changes);
  // Loads a file (see load_table_file) and replaces the table's contents;
  // on errors keeps the previous contents and returns them.
  std::vector<std::string> load_file(std::string_view table, const std::string& path);

  uint64_t version() const override;
  std::shared_ptr<const TableSet> snapshot() const override;

 private:
  struct Data;
  struct Snapshot;
  int id_of(std::string_view table, std::string& error) const;
  void publish(int id, std::shared_ptr<Data> data);  // indexes `data`, then swaps it in

  const TableCatalog catalog_;
  std::mutex write_mu_;             // serialises writers
  mutable std::mutex snapshot_mu_;  // guards current_
  std::shared_ptr<const Snapshot> current_;
  std::atomic<uint64_t> version_{1};
};

}  // namespace tocsin::rules
