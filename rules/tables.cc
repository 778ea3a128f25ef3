#include "rules/tables.h"

#include "rules/hash.h"

#include <simdjson.h>

#include <cstdio>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace tocsin::rules {

std::optional<TableRef> TableCatalog::find(std::string_view name) const {
  const int i = index_of(name);
  if (i >= 0) return TableRef{i, tables[static_cast<size_t>(i)].columns};
  TableRef unknown;
  for (const auto& t : tables) unknown.columns.emplace_back(t.name, Type::kNull);
  return unknown;
}

int TableCatalog::index_of(std::string_view name) const {
  for (size_t i = 0; i < tables.size(); ++i)
    if (tables[i].name == name) return static_cast<int>(i);
  return -1;
}

// ---------------------------------------------------------------------------
// Phone numbers

std::string_view normalize_phone(std::string_view number, char (&out)[32]) {
  // The spelling most lookups see, a bare 11-digit mobile number: what the
  // general path below gives it (+86 and the digits), without its loops.
  if (number.size() == 11 && number[0] == '1' &&
      std::all_of(number.begin(), number.end(), [](char c) { return static_cast<unsigned char>(c - '0') <= 9; })) {
    std::memcpy(out, "+86", 3);
    std::memcpy(out + 3, number.data(), 11);
    return {out, 14};
  }
  constexpr size_t kMaxInput = 20;   // digits accepted in the input
  constexpr size_t kMaxE164 = 15;    // digits in an E.164 number
  char digits[kMaxInput];
  size_t n = 0;
  bool international = false;
  for (const char c : number) {
    if (c >= '0' && c <= '9') {
      if (n == kMaxInput) return {};
      digits[n++] = c;
    } else if (c == '+' && n == 0 && !international) {  // "+86", "(+86)"
      international = true;
    } else if (c != ' ' && c != '\t' && c != '-' && c != '.' && c != '/' && c != '(' && c != ')') {
      return {};
    }
  }
  std::string_view d(digits, n);
  if (d.empty()) return {};

  // Writes prefix + rest into `out`; empty when longer than E.164 allows.
  auto emit = [&out](bool plus, std::string_view country, std::string_view rest) -> std::string_view {
    if (country.size() + rest.size() > kMaxE164 || country.size() + rest.size() == 0) return {};
    size_t k = 0;
    if (plus) out[k++] = '+';
    for (char c : country) out[k++] = c;
    for (char c : rest) out[k++] = c;
    return std::string_view(out, k);
  };
  // A Chinese number given with its country code: drop a trunk 0 written
  // after it ("+86 (0)28 ..."); short service numbers (110, 12345, 95588,
  // 96110) have no E.164 form in practice and stay bare.
  auto china = [&](std::string_view national) -> std::string_view {
    if (national.starts_with('0')) national.remove_prefix(1);
    if (national.empty()) return {};
    if (national.size() <= 6) return emit(false, {}, national);
    return emit(true, "86", national);
  };

  if (!international && d.starts_with("00")) {
    d.remove_prefix(2);
    international = true;
    if (d.empty()) return {};
  }
  if (international) {
    if (d.starts_with("86")) return china(d.substr(2));
    return emit(true, {}, d);
  }
  if (d.size() >= 10 && d.size() <= 12 && d[0] == '0') return china(d);                   // trunk 0: fixed line, or 0 + mobile
  if (d.size() == 11 && d[0] == '1') return emit(true, "86", d);                            // mobile
  if (d.size() == 10 && (d.starts_with("400") || d.starts_with("800"))) return emit(true, "86", d);  // national service lines
  if (d.size() >= 11 && d.size() <= 13 && d.starts_with("86")) return china(d.substr(2));  // country code without '+'
  return emit(false, {}, d);  // short or local number: as written
}

// ---------------------------------------------------------------------------
// Rows and cells

std::shared_ptr<const TableRow> TableRow::make(std::span<const Value> cells) {
  std::shared_ptr<TableRow> row(new TableRow);
  size_t bytes = 0;
  for (const Value& v : cells)
    if (v.present && v.type == FieldType::kString) bytes += v.s.size();
  row->text_.reserve(bytes);  // never reallocated below: the views stay valid
  row->cells_.assign(cells.begin(), cells.end());
  for (Value& v : row->cells_) {
    if (!v.present || v.type != FieldType::kString) continue;
    const size_t at = row->text_.size();
    row->text_.append(v.s);
    v.s = std::string_view(row->text_.data() + at, v.s.size());
  }
  return row;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

std::string quoted(std::string_view s) {
  constexpr size_t kMax = 40;
  return "'" + std::string(s.substr(0, kMax)) + (s.size() > kMax ? "...'" : "'");
}

// Normalises the key cell of `cells` (into `buf`) and builds the row.
RowPtr build_row(const TableSchema& schema, std::vector<Value>& cells, std::string& error) {
  Value& key = cells[0];
  if (!key.present || key.s.empty()) {
    error = "the key column '" + schema.columns[0].first + "' is empty";
    return nullptr;
  }
  char buf[32];
  if (schema.key == KeyNormalization::kPhone) {
    const std::string_view k = normalize_phone(key.s, buf);
    if (k.empty()) {
      error = "the key is not a phone number (column '" + schema.columns[0].first + "')";
      return nullptr;
    }
    key.s = k;
  }
  return TableRow::make(cells);
}

}  // namespace

std::string parse_cell(Type t, std::string_view text, Value& out) {
  out = Value{};
  if (text.empty()) return "";
  switch (t) {
    case Type::kString:
      out = Value::of_string(text);
      return "";
    case Type::kInt:
    case Type::kTime: {
      std::string_view s = text;
      if (s.size() > 1 && s[0] == '+') s.remove_prefix(1);
      int64_t v = 0;
      const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
      if (r.ec != std::errc() || r.ptr != s.data() + s.size())
        return quoted(text) + (t == Type::kInt ? " is not an int" : " is not a time (epoch milliseconds)");
      out = t == Type::kInt ? Value::of_int(v) : Value::of_time(v);
      return "";
    }
    case Type::kDouble: {
      std::string_view s = text;
      if (s.size() > 1 && s[0] == '+') s.remove_prefix(1);
      double v = 0;
      const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
      if (r.ec != std::errc() || r.ptr != s.data() + s.size() || !std::isfinite(v)) return quoted(text) + " is not a number";
      out = Value::of_double(v);
      return "";
    }
    case Type::kBool:
      for (std::string_view y : {"true", "yes", "1"})
        if (iequals(text, y)) { out = Value::of_bool(true); return ""; }
      for (std::string_view n : {"false", "no", "0"})
        if (iequals(text, n)) { out = Value::of_bool(false); return ""; }
      return quoted(text) + " is not a bool (true or false)";
    case Type::kNull:
    case Type::kList:
      break;
  }
  return "columns of type " + std::string(to_string(t)) + " are not supported";
}

// ---------------------------------------------------------------------------
RowPtr parse_json_row(const TableSchema& schema, std::string_view key, std::string_view json, std::string& error) {
  // Table rows change slowly: a DOM parser per call keeps this simple.
  simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (const auto ec = parser.parse(json.data(), json.size()).get(obj)) {
    error = ec == simdjson::INCORRECT_TYPE ? "a row must be a JSON object" : std::string("invalid JSON: ") + simdjson::error_message(ec);
    return nullptr;
  }
  std::vector<Value> cells(schema.columns.size());
  std::vector<std::string> texts(schema.columns.size());  // owns number and bool texts until the row copies them
  for (const auto field : obj) {
    size_t col = 0;
    while (col < schema.columns.size() && schema.columns[col].first != field.key) ++col;
    if (col == schema.columns.size()) continue;  // not a declared column
    const simdjson::dom::element v = field.value;
    std::string_view text;
    switch (v.type()) {
      case simdjson::dom::element_type::NULL_VALUE: cells[col] = Value{}; continue;
      case simdjson::dom::element_type::STRING: text = std::string_view(v); break;
      case simdjson::dom::element_type::BOOL: text = bool(v) ? "true" : "false"; break;
      case simdjson::dom::element_type::INT64: texts[col] = std::to_string(int64_t(v)); text = texts[col]; break;
      case simdjson::dom::element_type::UINT64: texts[col] = std::to_string(uint64_t(v)); text = texts[col]; break;
      case simdjson::dom::element_type::DOUBLE: {
        char buf[32];
        texts[col].assign(buf, static_cast<size_t>(std::snprintf(buf, sizeof buf, "%.17g", double(v))));
        text = texts[col];
        break;
      }
      default:
        error = "column '" + std::string(field.key) + "': must be a string, number, boolean or null";
        return nullptr;
    }
    if (std::string e = parse_cell(schema.columns[col].second, text, cells[col]); !e.empty()) {
      error = "column '" + std::string(field.key) + "': " + (col == 0 ? "bad key" : e);
      return nullptr;
    }
  }
  if (!key.empty()) cells[0] = Value::of_string(key);
  return build_row(schema, cells, error);
}

// ---------------------------------------------------------------------------
// Files

namespace {

constexpr size_t kMaxFileErrors = 20;

void add_error(TableFile& f, std::string_view name, int line, const std::string& msg) {
  if (f.errors.size() == kMaxFileErrors) f.errors.push_back(std::string(name) + ": too many errors; the rest were not reported");
  if (f.errors.size() > kMaxFileErrors) return;
  f.errors.push_back(std::string(name) + ":" + std::to_string(line) + ": " + msg);
}

// Reads RFC 4180 records; tracks the line each record starts on.
class CsvReader {
 public:
  explicit CsvReader(std::string_view text) : s_(text) {
    if (s_.starts_with("\xEF\xBB\xBF")) i_ = 3;  // UTF-8 byte-order mark
  }

  // Reads the next record; false at the end or on a syntax error (`error` set).
  bool next(std::vector<std::string>& fields, int& line, std::string& error) {
    fields.clear();
    if (i_ >= s_.size()) return false;
    line = line_;
    for (;;) {
      std::string field;
      if (s_[i_] == '"') {
        ++i_;
        for (;;) {
          if (i_ >= s_.size()) {
            error = "unterminated quoted field";
            i_ = s_.size();
            return false;
          }
          const char c = s_[i_++];
          if (c == '"') {
            if (i_ < s_.size() && s_[i_] == '"') { field += '"'; ++i_; continue; }
            break;
          }
          if (c == '\n') ++line_;
          field += c;
        }
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
        if (i_ < s_.size() && s_[i_] != ',' && s_[i_] != '\n') {
          error = "text after a closing quote (a quote inside a quoted field is written \"\")";
          skip_line();
          return false;
        }
      } else {
        const size_t start = i_;
        while (i_ < s_.size() && s_[i_] != ',' && s_[i_] != '\n') ++i_;
        field = std::string(trim(s_.substr(start, i_ - start)));
      }
      fields.push_back(std::move(field));
      if (i_ < s_.size() && s_[i_] == ',') {
        ++i_;
        if (i_ >= s_.size()) { fields.emplace_back(); return true; }
        continue;
      }
      if (i_ < s_.size()) { ++i_; ++line_; }  // '\n'
      return true;
    }
  }

 private:
  void skip_line() {
    while (i_ < s_.size() && s_[i_] != '\n') ++i_;
    if (i_ < s_.size()) { ++i_; ++line_; }
  }
  std::string_view s_;
  size_t i_ = 0;
  int line_ = 1;
};

bool blank(const std::vector<std::string>& fields) { return fields.size() == 1 && fields[0].empty(); }

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

}  // namespace

TableFile parse_csv(const TableSchema& schema, std::string_view text, std::string_view name) {
  TableFile f;
  CsvReader csv(text);
  std::vector<std::string> fields;
  int line = 0;
  std::string error;
  std::vector<int> index(schema.columns.size(), -1);  // declared column -> field
  size_t header_size = 0;
  for (;;) {
    const bool got = csv.next(fields, line, error);
    if (!error.empty()) {
      add_error(f, name, line, error);
      return f;  // no usable header
    }
    if (!got) {
      add_error(f, name, 1, "no header row; the first row names the columns: " + [&] {
        std::string s;
        for (const auto& c : schema.columns) s += (s.empty() ? "" : ",") + c.first;
        return s;
      }());
      return f;
    }
    if (!blank(fields)) break;
  }
  header_size = fields.size();
  for (size_t h = 0; h < fields.size(); ++h)
    for (size_t c = 0; c < schema.columns.size(); ++c)
      if (fields[h] == schema.columns[c].first) {
        if (index[c] >= 0) add_error(f, name, line, "column '" + fields[h] + "' appears twice in the header");
        index[c] = static_cast<int>(h);
      }
  std::string missing;
  for (size_t c = 0; c < schema.columns.size(); ++c)
    if (index[c] < 0) missing += (missing.empty() ? "" : ", ") + schema.columns[c].first;
  if (!missing.empty()) add_error(f, name, line, "the header lacks the declared column(s) " + missing);
  if (!f.ok()) return f;

  std::vector<Value> cells(schema.columns.size());
  for (;;) {
    error.clear();
    const bool got = csv.next(fields, line, error);
    if (!error.empty()) {
      add_error(f, name, line, error);
      continue;
    }
    if (!got) break;
    if (blank(fields)) continue;
    if (fields.size() != header_size) {
      add_error(f, name, line, "has " + std::to_string(fields.size()) + " fields, the header has " + std::to_string(header_size));
      continue;
    }
    bool ok = true;
    for (size_t c = 0; c < schema.columns.size() && ok; ++c) {
      const std::string e = parse_cell(schema.columns[c].second, fields[static_cast<size_t>(index[c])], cells[c]);
      if (!e.empty()) {
        add_error(f, name, line, "column '" + schema.columns[c].first + "': " + (c == 0 ? "bad key" : e));
        ok = false;
      }
    }
    if (!ok) continue;
    if (RowPtr row = build_row(schema, cells, error)) f.rows.push_back(std::move(row));
    else add_error(f, name, line, error);
  }
  if (!f.ok()) f.rows.clear();
  return f;
}

TableFile parse_jsonl(const TableSchema& schema, std::string_view text, std::string_view name) {
  TableFile f;
  int line = 0;
  size_t start = 0;
  if (text.starts_with("\xEF\xBB\xBF")) start = 3;
  while (start < text.size()) {
    ++line;
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view l = trim(text.substr(start, end - start));
    start = end + 1;
    if (l.empty()) continue;
    std::string error;
    if (RowPtr row = parse_json_row(schema, {}, l, error)) f.rows.push_back(std::move(row));
    else add_error(f, name, line, error);
  }
  if (!f.ok()) f.rows.clear();
  return f;
}

TableFile load_csv(const TableSchema& schema, const std::string& path) {
  std::string text;
  if (!read_file(path, text)) return TableFile{{}, {path + ": cannot read the file"}};
  return parse_csv(schema, text, path);
}

TableFile load_jsonl(const TableSchema& schema, const std::string& path) {
  std::string text;
  if (!read_file(path, text)) return TableFile{{}, {path + ": cannot read the file"}};
  return parse_jsonl(schema, text, path);
}

TableFile load_table_file(const TableSchema& schema, const std::string& path) {
  const auto dot = path.rfind('.');
  const std::string ext = dot == std::string::npos ? "" : path.substr(dot);
  if (iequals(ext, ".csv")) return load_csv(schema, path);
  if (iequals(ext, ".jsonl") || iequals(ext, ".json") || iequals(ext, ".ndjson")) return load_jsonl(schema, path);
  return TableFile{{}, {path + ": unknown table file type; use .csv or .jsonl"}};
}

// ---------------------------------------------------------------------------
// Registry

struct TableRegistry::Data {
  std::unordered_map<std::string_view, RowPtr> rows;  // keys view into the rows; owns them

  // The read side: open addressing over `rows`, at most half full, built once
  // per published change. A miss (most lookups of a watch-list) costs one
  // cache line; the map above would cost a bucket and often a node.
  struct Slot {
    uint64_t hash = 0;
    const Value* cells = nullptr;  // nullptr: empty slot
  };
  std::vector<Slot> index;
  // Most lookups of a watch-list miss, and an index of many rows is not in
  // the cache. A split-block Bloom filter of 16 to 32 bits per row (one bit
  // in each word of a 512-bit block) answers almost every miss from one cache
  // line of a structure 4 to 8 times smaller; at most about 0.2 % of misses go
  // on to the index. It never turns a present key away.
  using Block = std::array<uint64_t, 8>;
  std::vector<Block> filter;

  static uint64_t hash(std::string_view key) { return key_hash(key) | 1; }
  // The block of hash `h` (its high bits: the index uses the low ones) and a bit per word.
  size_t block_of(uint64_t h) const { return (h >> 40) & (filter.size() - 1); }
  static Block bits_of(uint64_t h) {
    const uint64_t x = h * 0x9e3779b97f4a7c15ull;  // six fresh bits per word
    Block b;
    for (size_t w = 0; w < b.size(); ++w) b[w] = uint64_t{1} << ((x >> (6 * w + 16)) & 63);
    return b;
  }
  void build_index() {
    size_t n = 16;
    while (n < rows.size() * 2) n *= 2;
    index.assign(n, Slot{});
    filter.assign(std::max<size_t>(1, n / 64), Block{});  // >= 16 bits per row
    for (const auto& [key, row] : rows) {
      const uint64_t h = hash(key);
      size_t i = h & (n - 1);
      while (index[i].cells) i = (i + 1) & (n - 1);
      index[i] = {h, row->cells().data()};
      Block& f = filter[block_of(h)];
      const Block b = bits_of(h);
      for (size_t w = 0; w < f.size(); ++w) f[w] |= b[w];
    }
  }
  const Value* find(std::string_view key) const {
    const uint64_t h = hash(key);
    const Block& f = filter[block_of(h)];
    const Block b = bits_of(h);
    uint64_t absent = 0;
    for (size_t w = 0; w < f.size(); ++w) absent |= b[w] & ~f[w];
    if (absent) return nullptr;
    const size_t mask = index.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = index[i];
      if (!s.cells) return nullptr;
      if (s.hash == h && s.cells[0].s == key) return s.cells;
    }
  }
};

struct TableRegistry::Snapshot final : TableSet {
  std::vector<KeyNormalization> keys;
  std::vector<std::shared_ptr<const Data>> tables;

  const Value* find(int id, std::string_view key) const override {
    if (id < 0 || static_cast<size_t>(id) >= tables.size()) return nullptr;
    char buf[32];
    if (keys[static_cast<size_t>(id)] == KeyNormalization::kPhone) {
      key = normalize_phone(key, buf);
      if (key.empty()) return nullptr;
    }
    return tables[static_cast<size_t>(id)]->find(key);
  }
  size_t size(int id) const override {
    if (id < 0 || static_cast<size_t>(id) >= tables.size()) return 0;
    return tables[static_cast<size_t>(id)]->rows.size();
  }
};

namespace {

// The key as stored: normalised for phone tables; empty when invalid.
std::string_view stored_key(KeyNormalization k, std::string_view key, char (&buf)[32]) {
  if (k == KeyNormalization::kPhone) return normalize_phone(key, buf);
  return key;
}

// `row` with its key cell set to `key` (the same row when it already is).
RowPtr with_key(const RowPtr& row, std::string_view key) {
  if (row->key() == key && !row->cells().empty() && row->cells()[0].present) return row;
  std::vector<Value> cells(row->cells().begin(), row->cells().end());
  cells[0] = Value::of_string(key);
  return TableRow::make(cells);
}

}  // namespace

TableRegistry::TableRegistry(TableCatalog catalog) : catalog_(std::move(catalog)) {
  auto s = std::make_shared<Snapshot>();
  for (const auto& t : catalog_.tables) {
    if (t.columns.empty() || t.columns[0].second != Type::kString)
      throw std::invalid_argument("table '" + t.name + "': column 0 (the key) must be a string");
    s->keys.push_back(t.key);
    auto empty = std::make_shared<Data>();
    empty->build_index();
    s->tables.push_back(std::move(empty));
  }
  current_ = std::move(s);
}

TableRegistry::~TableRegistry() = default;

const TableSchema* TableRegistry::schema(std::string_view table) const {
  const int i = catalog_.index_of(table);
  return i < 0 ? nullptr : &catalog_.tables[static_cast<size_t>(i)];
}

int TableRegistry::id_of(std::string_view table, std::string& error) const {
  const int i = catalog_.index_of(table);
  if (i < 0) error = "unknown table '" + std::string(table) + "'";
  return i;
}

uint64_t TableRegistry::version() const { return version_.load(std::memory_order_acquire); }

std::shared_ptr<const TableSet> TableRegistry::snapshot() const {
  std::lock_guard lock(snapshot_mu_);
  return current_;
}

void TableRegistry::publish(int id, std::shared_ptr<Data> data) {
  data->build_index();
  auto s = std::make_shared<Snapshot>(*current_);  // shares the unchanged tables
  s->tables[static_cast<size_t>(id)] = std::move(data);
  {
    std::lock_guard lock(snapshot_mu_);
    current_ = std::move(s);
  }
  version_.fetch_add(1, std::memory_order_release);
}

std::string TableRegistry::apply(std::string_view table, std::span<const TableChange> changes) {
  std::string error;
  const int id = id_of(table, error);
  if (id < 0) return error;
  const KeyNormalization norm = catalog_.tables[static_cast<size_t>(id)].key;
  const size_t ncols = catalog_.tables[static_cast<size_t>(id)].columns.size();
  char buf[32];
  for (const auto& c : changes) {
    if (c.row && c.row->cells().size() != ncols)
      return "table '" + std::string(table) + "': a row has " + std::to_string(c.row->cells().size()) + " cells, the table has " + std::to_string(ncols) + " columns";
    if (c.row && stored_key(norm, c.key, buf).empty())
      return "table '" + std::string(table) + "': " + (c.key.empty() ? "empty key" : "the key is not a phone number");
  }
  std::lock_guard lock(write_mu_);
  auto data = std::make_shared<Data>();
  data->rows = current_->tables[static_cast<size_t>(id)]->rows;  // the index is rebuilt on publish, not copied
  for (const auto& c : changes) {
    const std::string_view key = stored_key(norm, c.key, buf);
    if (key.empty()) continue;  // erasing a key that cannot exist
    data->rows.erase(key);  // before the emplace: the map's key views the old row
    if (c.row) {
      RowPtr row = with_key(c.row, key);
      const std::string_view k = row->key();
      data->rows.emplace(k, std::move(row));
    }
  }
  publish(id, std::move(data));
  return "";
}

std::string TableRegistry::replace(std::string_view table, std::vector<RowPtr> rows) {
  std::string error;
  const int id = id_of(table, error);
  if (id < 0) return error;
  const KeyNormalization norm = catalog_.tables[static_cast<size_t>(id)].key;
  const size_t ncols = catalog_.tables[static_cast<size_t>(id)].columns.size();
  auto data = std::make_shared<Data>();
  data->rows.reserve(rows.size());
  char buf[32];
  for (const RowPtr& r : rows) {
    if (!r || r->cells().size() != ncols) return "table '" + std::string(table) + "': a row does not match the table's columns";
    const std::string_view key = stored_key(norm, r->key(), buf);
    if (key.empty()) return "table '" + std::string(table) + "': " + (r->key().empty() ? "empty key" : "a key is not a phone number");
    RowPtr row = with_key(r, key);
    data->rows.erase(key);
    const std::string_view k = row->key();
    data->rows.emplace(k, std::move(row));
  }
  std::lock_guard lock(write_mu_);
  publish(id, std::move(data));
  return "";
}

std::string TableRegistry::upsert(std::string_view table, std::string_view key, RowPtr row) {
  if (!row) return "table '" + std::string(table) + "': upsert without a row";
  const TableChange c{std::string(key), std::move(row)};
  return apply(table, {&c, 1});
}

std::string TableRegistry::upsert(std::string_view table, RowPtr row) {
  if (!row) return "table '" + std::string(table) + "': upsert without a row";
  const std::string key(row->key());
  return upsert(table, key, std::move(row));
}

std::string TableRegistry::erase(std::string_view table, std::string_view key) {
  const TableChange c{std::string(key), nullptr};
  return apply(table, {&c, 1});
}

std::vector<std::string> TableRegistry::load_file(std::string_view table, const std::string& path) {
  const TableSchema* s = schema(table);
  if (!s) return {"unknown table '" + std::string(table) + "'"};
  TableFile f = load_table_file(*s, path);
  if (!f.ok()) return std::move(f.errors);
  if (std::string e = replace(table, std::move(f.rows)); !e.empty()) return {path + ": " + e};
  return {};
}

}  // namespace tocsin::rules
