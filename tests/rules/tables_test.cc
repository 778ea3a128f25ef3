#include "rules/tables.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/decoder.h"
#include "rules/engine.h"
#include "rules/rule_set.h"

namespace tocsin::rules {
namespace {

namespace fs = std::filesystem;

std::string norm(std::string_view s) {
  char buf[32];
  return std::string(normalize_phone(s, buf));
}

TEST(NormalizePhone, ChineseMobileInEveryCommonSpelling) {
  for (const char* s : {"13812348000", "+86 138 1234 8000", "+86-138-1234-8000", "+8613812348000", "008613812348000",
                        "0086 138 1234 8000", "8613812348000", "86 138 1234 8000", "013812348000", " 138.1234.8000 ",
                        "(+86) 138 1234 8000", "+86 (0)138 1234 8000"})
    EXPECT_EQ(norm(s), "+8613812348000") << s;
}

TEST(NormalizePhone, FixedLinesDropTheTrunkZero) {
  EXPECT_EQ(norm("028-1234567"), "+86281234567");
  EXPECT_EQ(norm("028 8765 4321"), "+862887654321");
  EXPECT_EQ(norm("+86 28 8765 4321"), "+862887654321");
  EXPECT_EQ(norm("+86 (0)28 8765 4321"), "+862887654321");
  EXPECT_EQ(norm("0086 28 8765 4321"), "+862887654321");
  EXPECT_EQ(norm("010-12345678"), "+861012345678");
  EXPECT_EQ(norm("0755-1234-5678"), "+8675512345678");
  EXPECT_EQ(norm("400-810-8888"), "+864008108888");
}

TEST(NormalizePhone, ShortServiceNumbersStayBare) {
  for (const char* s : {"95588", "96110", "110", "12345", "10086"}) EXPECT_EQ(norm(s), s);
  EXPECT_EQ(norm("+86 95588"), "95588");
  EXPECT_EQ(norm("0086-96110"), "96110");
  EXPECT_EQ(norm("12345678"), "12345678");  // a local number without its area code
}

TEST(NormalizePhone, OtherCountriesKeepTheirCode) {
  EXPECT_EQ(norm("+1 415 555 0100"), "+14155550100");
  EXPECT_EQ(norm("0014155550100"), "+14155550100");
  EXPECT_EQ(norm("+44 20 7946 0958"), "+442079460958");
}

TEST(NormalizePhone, RejectsWhatIsNotANumber) {
  for (const char* s : {"", "   ", "+", "00", "unknown", "138-1234-800O", "1381234800O", "13812348O00", "++8613812348000", "138#1234",
                        "123456789012345678901",       // 21 digits: too long to be a number
                        "+86 138 1234 8000 1234 5"})  // 18 digits with the country code: beyond E.164
    EXPECT_EQ(norm(s), "") << s;
}

TEST(NormalizePhone, IsIdempotent) {
  for (const char* s : {"13812348000", "028-1234567", "+1 415 555 0100", "95588", "400-810-8888", "12345678",
                        "+86 95588", "0086 28 8765 4321"}) {
    const std::string once = norm(s);
    EXPECT_EQ(norm(once), once) << s;
  }
}

TEST(ParseCell, TypedValues) {
  Value v;
  EXPECT_EQ(parse_cell(Type::kInt, "42", v), "");
  EXPECT_EQ(v.type, FieldType::kInt);
  EXPECT_EQ(v.i, 42);
  EXPECT_EQ(parse_cell(Type::kInt, "-7", v), "");
  EXPECT_EQ(v.i, -7);
  EXPECT_EQ(parse_cell(Type::kDouble, "2.5", v), "");
  EXPECT_EQ(v.d, 2.5);
  EXPECT_EQ(parse_cell(Type::kDouble, "3", v), "");
  EXPECT_EQ(v.d, 3.0);
  EXPECT_EQ(parse_cell(Type::kBool, "TRUE", v), "");
  EXPECT_TRUE(v.present && v.b);
  EXPECT_EQ(parse_cell(Type::kBool, "no", v), "");
  EXPECT_TRUE(v.present && !v.b);
  EXPECT_EQ(parse_cell(Type::kString, "x y", v), "");
  EXPECT_EQ(v.s, "x y");
  EXPECT_EQ(parse_cell(Type::kInt, "", v), "");
  EXPECT_FALSE(v.present);  // empty: null
  EXPECT_EQ(parse_cell(Type::kInt, "4.5", v), "'4.5' is not an int");
  EXPECT_EQ(parse_cell(Type::kInt, "12abc", v), "'12abc' is not an int");
  EXPECT_EQ(parse_cell(Type::kDouble, "nan", v), "'nan' is not a number");
  EXPECT_EQ(parse_cell(Type::kBool, "maybe", v), "'maybe' is not a bool (true or false)");
}

TableSchema risky_schema() {
  return {"risky_numbers", {{"number", Type::kString}, {"risk_level", Type::kInt}, {"source", Type::kString}},
          KeyNormalization::kPhone};
}

TableSchema residents_schema() {
  return {"vulnerable_residents",
          {{"phone", Type::kString}, {"name", Type::kString}, {"building", Type::kString},
           {"lives_alone", Type::kBool}, {"age", Type::kInt}, {"family_contacts", Type::kString}},
          KeyNormalization::kPhone};
}

TableSchema buildings_schema() {
  return {"buildings",
          {{"building", Type::kString}, {"grid", Type::kString}, {"community", Type::kString},
           {"street", Type::kString}, {"district", Type::kString}}};
}

TEST(Csv, HeaderQuotesAndExtraColumns) {
  const auto f = parse_csv(risky_schema(),
                           "\xEF\xBB\xBF" "source,extra,number,risk_level\r\n"
                           "\"police report, fan-out\",x,+86 170 6564 3907,3\r\n"
                           "\r\n"
                           "\"said \"\"I am 96110\"\"\",y,171-6564-3907, 2 \n"
                           "\"two\nlines\",z,17018902012,\n"
                           "carrier,,0086 171 1890 2012,1",
                           "risky.csv");
  ASSERT_TRUE(f.ok()) << f.errors[0];
  ASSERT_EQ(f.rows.size(), 4u);
  const auto c0 = f.rows[0]->cells();
  EXPECT_EQ(c0[0].s, "+8617065643907");
  EXPECT_EQ(c0[1].i, 3);
  EXPECT_EQ(c0[2].s, "police report, fan-out");
  EXPECT_EQ(f.rows[1]->cells()[2].s, "said \"I am 96110\"");
  EXPECT_EQ(f.rows[1]->cells()[1].i, 2);  // unquoted fields are trimmed
  EXPECT_EQ(f.rows[2]->cells()[2].s, "two\nlines");
  EXPECT_FALSE(f.rows[2]->cells()[1].present);  // empty: null
  EXPECT_EQ(f.rows[3]->key(), "+8617118902012");
}

TEST(Csv, ErrorsNameFileAndLine) {
  const auto f = parse_csv(risky_schema(),
                           "number,risk_level,source\n"
                           "17065643907,3,ok\n"
                           "17165643907,high,bad level\n"  // line 3
                           "17018902012,1\n"               // line 4: a field short
                           "\"multi\nline\",1,x\n"         // line 5: the key is not a number
                           ",2,no key\n"                   // line 7
                           "17118902012,1,\"unterminated\n",
                           "risky.csv");
  ASSERT_EQ(f.errors.size(), 5u);
  EXPECT_EQ(f.errors[0], "risky.csv:3: column 'risk_level': 'high' is not an int");
  EXPECT_EQ(f.errors[1], "risky.csv:4: has 2 fields, the header has 3");
  EXPECT_EQ(f.errors[2], "risky.csv:5: the key is not a phone number (column 'number')");
  EXPECT_EQ(f.errors[3], "risky.csv:7: the key column 'number' is empty");
  EXPECT_EQ(f.errors[4], "risky.csv:8: unterminated quoted field");
  EXPECT_TRUE(f.rows.empty());  // a file with errors yields nothing
}

TEST(Csv, HeaderMustHaveEveryDeclaredColumn) {
  auto f = parse_csv(risky_schema(), "number,level\n1,2\n", "r.csv");
  ASSERT_EQ(f.errors.size(), 1u);
  EXPECT_EQ(f.errors[0], "r.csv:1: the header lacks the declared column(s) risk_level, source");
  f = parse_csv(risky_schema(), "\n\n", "r.csv");
  ASSERT_EQ(f.errors.size(), 1u);
  EXPECT_EQ(f.errors[0], "r.csv:1: no header row; the first row names the columns: number,risk_level,source");
  f = parse_csv(risky_schema(), "number,source,risk_level,number\n", "r.csv");
  ASSERT_EQ(f.errors.size(), 1u);
  EXPECT_EQ(f.errors[0], "r.csv:1: column 'number' appears twice in the header");
  f = parse_csv(risky_schema(), "number,risk_level,source\n\"a\"b,1,x\n", "r.csv");
  ASSERT_EQ(f.errors.size(), 1u);
  EXPECT_EQ(f.errors[0].substr(0, 30), "r.csv:2: text after a closing ");
}

TEST(Jsonl, TypedRowsAndErrors) {
  auto f = parse_jsonl(residents_schema(),
                       "{\"phone\": \"+86 131 6564 3907\", \"name\": \"\\u5f20*\", \"building\": \"B-D1-S1-C1-03\", "
                       "\"lives_alone\": true, \"age\": 82, \"family_contacts\": \"13265643907;15065643907\", \"note\": [1]}\n"
                       "\n"
                       "{\"phone\": \"028-8765-4321\", \"name\": \"王*英\", \"age\": \"91\", \"lives_alone\": null}\n",
                       "res.jsonl");
  // Unknown members are ignored, whatever their shape (as the event decoder does).
  EXPECT_TRUE(f.errors.empty()) << f.errors[0];

  f = parse_jsonl(residents_schema(),
                  "{\"phone\": \"+86 131 6564 3907\", \"name\": \"\\u5f20*\", \"building\": \"B-D1-S1-C1-03\", "
                  "\"lives_alone\": true, \"age\": 82, \"family_contacts\": \"13265643907;15065643907\", \"note\": 1}\n"
                  "\n"
                  "{\"phone\": \"028-8765-4321\", \"name\": \"王*英\", \"age\": \"91\", \"lives_alone\": null}\n",
                  "res.jsonl");
  ASSERT_TRUE(f.ok()) << f.errors[0];
  ASSERT_EQ(f.rows.size(), 2u);
  const auto a = f.rows[0]->cells();
  EXPECT_EQ(a[0].s, "+8613165643907");
  EXPECT_EQ(a[1].s, "张*");
  EXPECT_TRUE(a[3].present && a[3].b);
  EXPECT_EQ(a[4].i, 82);
  EXPECT_EQ(a[5].s, "13265643907;15065643907");
  const auto b = f.rows[1]->cells();
  EXPECT_EQ(b[0].s, "+862887654321");
  EXPECT_EQ(b[4].i, 91);  // a string that parses as the column's type
  EXPECT_FALSE(b[3].present);
  EXPECT_FALSE(b[2].present);  // missing: null

  f = parse_jsonl(residents_schema(),
                  "{\"name\": \"x\"}\n"
                  "{\"phone\": \"13165643907\", \"age\": \"old\"}\n"
                  "{\"phone\": \"13165643907\", \"lives_alone\": 3}\n"
                  "{\"phone\": \"13165643907\",}\n"
                  "[1,2]\n"
                  "{\"phone\": \"13165643907\"} trailing\n",
                  "res.jsonl");
  ASSERT_EQ(f.errors.size(), 6u);
  EXPECT_EQ(f.errors[0], "res.jsonl:1: the key column 'phone' is empty");
  EXPECT_EQ(f.errors[1], "res.jsonl:2: column 'age': 'old' is not an int");
  EXPECT_EQ(f.errors[2], "res.jsonl:3: column 'lives_alone': '3' is not a bool (true or false)");
  EXPECT_EQ(f.errors[3].substr(0, 26), "res.jsonl:4: invalid JSON:");
  EXPECT_EQ(f.errors[4], "res.jsonl:5: a row must be a JSON object");
  EXPECT_EQ(f.errors[5].substr(0, 26), "res.jsonl:6: invalid JSON:");
}

TEST(JsonRow, RecordKeyWinsOverTheObjectsKey) {
  std::string error;
  const RowPtr r = parse_json_row(risky_schema(), "+86 171 6564 3907", R"({"number":"1","risk_level":2})", error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(r->key(), "+8617165643907");
  EXPECT_EQ(r->cells()[1].i, 2);
  EXPECT_FALSE(parse_json_row(risky_schema(), "not a number", R"({"risk_level":2})", error));
  EXPECT_EQ(error, "the key is not a phone number (column 'number')");
  EXPECT_FALSE(parse_json_row(risky_schema(), "17065643907", R"({"risk_level":"x\q"})", error));
  EXPECT_NE(error.find("invalid JSON"), std::string::npos) << error;
}

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("tocsin_tables_" + std::to_string(::getpid()) + "_" + std::to_string(++n_))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string write(const std::string& name, const std::string& text) const {
    const auto p = path_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

 private:
  fs::path path_;
  static inline int n_ = 0;
};

TEST(TableFiles, LoadByExtensionWithPathInErrors) {
  TempDir dir;
  const auto csv = dir.write("b.csv", "building,grid,community,street,district\nB-1,G101,C1,S1,D1\n");
  auto f = load_table_file(buildings_schema(), csv);
  ASSERT_TRUE(f.ok()) << f.errors[0];
  ASSERT_EQ(f.rows.size(), 1u);
  EXPECT_EQ(f.rows[0]->cells()[4].s, "D1");
  const auto jsonl = dir.write("b.jsonl", "{\"building\":\"B-1\",\"district\":\"D1\"}\n{\"building\":2}\n{\"grid\":\"G\"}\n");
  f = load_table_file(buildings_schema(), jsonl);
  ASSERT_EQ(f.errors.size(), 1u);
  EXPECT_EQ(f.errors[0], jsonl + ":3: the key column 'building' is empty");
  f = load_table_file(buildings_schema(), dir.write("b.txt", ""));
  ASSERT_EQ(f.errors.size(), 1u);
  EXPECT_NE(f.errors[0].find("use .csv or .jsonl"), std::string::npos);
  f = load_csv(buildings_schema(), "/no/such/file.csv");
  ASSERT_EQ(f.errors.size(), 1u);
  EXPECT_EQ(f.errors[0], "/no/such/file.csv: cannot read the file");
}

TEST(TableFiles, ExampleTablesLoad) {
  const std::string dir = TOCSIN_SOURCE_DIR "/examples/tables/";
  const TableSchema official{"official_numbers", {{"number", Type::kString}, {"owner", Type::kString}, {"kind", Type::kString}},
                             KeyNormalization::kPhone};
  for (const auto& [schema, file] : {std::pair{risky_schema(), "risky_numbers.csv"}, {official, "official_numbers.csv"},
                                     {residents_schema(), "vulnerable_residents.jsonl"}, {buildings_schema(), "buildings.csv"}}) {
    const auto f = load_table_file(schema, dir + file);
    ASSERT_TRUE(f.ok()) << f.errors[0];
    EXPECT_GE(f.rows.size(), 5u) << file;
  }
}

TEST(Registry, WritesPublishNewSnapshotsAndOldOnesStayUnchanged) {
  TableRegistry reg(TableCatalog{{risky_schema(), buildings_schema()}});
  const int risky = 0, buildings = 1;
  const uint64_t v0 = reg.version();
  const auto s0 = reg.snapshot();
  EXPECT_EQ(s0->size(risky), 0u);

  std::string error;
  ASSERT_EQ(reg.upsert("risky_numbers", parse_json_row(risky_schema(), "17065643907", R"({"risk_level":3,"source":"case 1"})", error)), "");
  const uint64_t v1 = reg.version();
  EXPECT_GT(v1, v0);
  const auto s1 = reg.snapshot();
  EXPECT_EQ(s0->find(risky, "17065643907"), nullptr);  // the old snapshot does not change
  const Value* row = s1->find(risky, "+86 170-6564-3907");  // lookups normalise the key too
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row[0].s, "+8617065643907");
  EXPECT_EQ(row[1].i, 3);
  EXPECT_EQ(row[2].s, "case 1");

  // The latest value per key wins; the key given wins over the row's key cell.
  ASSERT_EQ(reg.upsert("risky_numbers", "0086 170 6564 3907", parse_json_row(risky_schema(), "17165643907", R"({"risk_level":1})", error)), "");
  const auto s2 = reg.snapshot();
  EXPECT_EQ(s2->size(risky), 1u);
  EXPECT_EQ(s2->find(risky, "17065643907")[1].i, 1);
  EXPECT_EQ(s2->find(risky, "17165643907"), nullptr);
  EXPECT_EQ(s1->find(risky, "17065643907")[1].i, 3);
  EXPECT_EQ(row[2].s, "case 1");  // views into an old snapshot stay valid while it is held

  ASSERT_EQ(reg.erase("risky_numbers", "+8617065643907"), "");
  EXPECT_EQ(reg.snapshot()->find(risky, "17065643907"), nullptr);
  EXPECT_NE(s2->find(risky, "17065643907"), nullptr);
  ASSERT_EQ(reg.erase("risky_numbers", "not a phone"), "");  // nothing to erase

  // replace() swaps the whole contents; other tables are untouched.
  ASSERT_EQ(reg.replace("buildings", parse_csv(buildings_schema(), "building,grid,community,street,district\nB-1,G1,C1,S1,D1\nB-2,G1,C1,S1,D2\n", "b.csv").rows), "");
  ASSERT_EQ(reg.upsert("risky_numbers", parse_json_row(risky_schema(), "17018902012", R"({"risk_level":2})", error)), "");
  auto s3 = reg.snapshot();
  EXPECT_EQ(s3->size(buildings), 2u);
  EXPECT_EQ(s3->find(buildings, "B-2")[4].s, "D2");
  EXPECT_EQ(s3->find(buildings, "b-2"), nullptr);  // no normalisation for this table
  ASSERT_EQ(reg.replace("buildings", {}), "");
  EXPECT_EQ(reg.snapshot()->size(buildings), 0u);
  EXPECT_EQ(reg.snapshot()->size(risky), 1u);
  EXPECT_EQ(s3->size(buildings), 2u);
  EXPECT_EQ(s3->find(7, "x"), nullptr);
  EXPECT_EQ(s3->find(-1, "x"), nullptr);
}

TEST(Registry, BadWritesChangeNothing) {
  TableRegistry reg(TableCatalog{{risky_schema()}});
  const uint64_t v = reg.version();
  std::string error;
  const auto good = parse_json_row(risky_schema(), "17065643907", R"({"risk_level":3})", error);
  EXPECT_EQ(reg.upsert("nope", good), "unknown table 'nope'");
  const Value cells[] = {Value::of_string("not a number"), Value::of_int(1), Value{}};
  const std::vector<TableChange> batch = {{"17065643907", good}, {"not a number", TableRow::make(cells)}};
  EXPECT_EQ(reg.apply("risky_numbers", batch), "table 'risky_numbers': the key is not a phone number");
  EXPECT_EQ(reg.replace("risky_numbers", {good, TableRow::make(cells)}), "table 'risky_numbers': a key is not a phone number");
  const Value short_row[] = {Value::of_string("17065643907")};
  EXPECT_NE(reg.upsert("risky_numbers", TableRow::make(short_row)), "");
  EXPECT_EQ(reg.version(), v);
  EXPECT_EQ(reg.snapshot()->size(0), 0u);
}

TEST(Registry, BatchesApplyInOrder) {
  TableRegistry reg(TableCatalog{{risky_schema()}});
  std::string error;
  auto row = [&](const char* key, int level) {
    return parse_json_row(risky_schema(), key, "{\"risk_level\":" + std::to_string(level) + "}", error);
  };
  const std::vector<TableChange> batch = {{"17065643907", row("17065643907", 1)}, {"17165643907", row("17165643907", 2)},
                                          {"+86 170 6564 3907", row("17065643907", 3)}, {"171-6564-3907", nullptr}};
  const uint64_t v = reg.version();
  ASSERT_EQ(reg.apply("risky_numbers", batch), "");
  EXPECT_EQ(reg.version(), v + 1);  // one snapshot for the batch
  const auto s = reg.snapshot();
  EXPECT_EQ(s->size(0), 1u);
  EXPECT_EQ(s->find(0, "17065643907")[1].i, 3);
}

// Lookups pass a Bloom filter before the index: it must never turn a key away.
TEST(Registry, LargeTablesFindEveryKeyAndNoOther) {
  TableRegistry reg(TableCatalog{{buildings_schema()}});
  const auto name = [](const char* prefix, int i) { return std::string(prefix).append(std::to_string(i)); };
  const std::string header = "building,grid,community,street,district\n";
  std::string csv = header;
  const int n = 20000;
  for (int i = 0; i < n; ++i) csv.append(name("B-", i)).append(",").append(name("G", i % 97)).append(",C,S,D\n");
  ASSERT_EQ(reg.replace("buildings", parse_csv(buildings_schema(), csv, "b.csv").rows), "");
  ASSERT_EQ(reg.upsert("buildings", parse_csv(buildings_schema(), header + "late,G1,C,S,D\n", "l.csv").rows[0]), "");
  const auto s = reg.snapshot();
  ASSERT_EQ(s->size(0), static_cast<size_t>(n + 1));
  int found = 0, strangers = 0;
  for (int i = 0; i < n; ++i) {
    const Value* row = s->find(0, name("B-", i));
    found += row && row[1].s == name("G", i % 97);
    strangers += s->find(0, name("X-", i)) != nullptr;
  }
  EXPECT_EQ(found, n);
  EXPECT_EQ(strangers, 0);
  EXPECT_NE(s->find(0, "late"), nullptr);
}

TEST(Registry, LoadFileKeepsThePreviousContentsOnErrors) {
  TempDir dir;
  TableRegistry reg(TableCatalog{{buildings_schema()}});
  const auto path = dir.write("b.csv", "building,grid,community,street,district\nB-1,G1,C1,S1,D1\n");
  ASSERT_TRUE(reg.load_file("buildings", path).empty());
  EXPECT_EQ(reg.snapshot()->size(0), 1u);
  dir.write("b.csv", "building,grid,community,street,district\nB-1,G1,C1,S1,D1\nB-2,G1,C1\n");
  const auto errors = reg.load_file("buildings", path);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0], path + ":3: has 3 fields, the header has 5");
  EXPECT_EQ(reg.snapshot()->size(0), 1u);
  EXPECT_EQ(reg.load_file("nope", path), std::vector<std::string>{"unknown table 'nope'"});
}

TEST(Registry, ConcurrentWritersAndReaders) {
  TableRegistry reg(TableCatalog{{risky_schema()}});
  std::atomic<bool> done{false};
  std::thread reader([&] {
    uint64_t seen = 0;
    while (!done.load()) {
      const uint64_t v = reg.version();
      if (v == seen) continue;
      seen = v;
      const auto s = reg.snapshot();
      // Every published snapshot is complete: a row's cells are all there.
      if (const Value* r = s->find(0, "17065643907")) {
        EXPECT_TRUE(r[1].present);
      }
    }
  });
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w)
    writers.emplace_back([&, w] {
      std::string error;
      for (int i = 0; i < 300; ++i) {
        const std::string key = "1706564" + std::to_string(3000 + (i % 50)) ;
        if ((i + w) % 3 == 0) ASSERT_EQ(reg.erase("risky_numbers", key), "");
        else ASSERT_EQ(reg.upsert("risky_numbers", parse_json_row(risky_schema(), key, "{\"risk_level\":" + std::to_string(i) + "}", error)), "");
      }
    });
  for (auto& t : writers) t.join();
  done = true;
  reader.join();
  EXPECT_EQ(reg.version(), 1u + 600u);
}

// ---- rules: in_table() and lookup() ----------------------------------------------

TableCatalog catalog() { return TableCatalog{{risky_schema(), residents_schema(), buildings_schema()}}; }

const char* kRules = R"(rules:
  - id: watchlisted_caller
    stream: calls
    where: in_table("risky_numbers", caller)
    alert: {type: fraud.watchlist, severity: high, title: "{caller} is on the watch-list"}
  - id: high_risk_reaches_elderly
    stream: calls
    where: >
      lookup("risky_numbers", caller, "risk_level") >= 3 and
      lookup("vulnerable_residents", callee, "lives_alone") == true and
      lookup("vulnerable_residents", callee, "age") > 75
    alert: {type: fraud.vulnerable_contacted, severity: critical, title: "{caller} reached {callee}"}
  - id: complaint_in_d1
    stream: complaints
    where: lookup("buildings", building, "district") == "D1" and not in_table("risky_numbers", complainant)
    alert: {type: t, severity: info, title: "complaint in D1"}
)";

struct Recorder final : SignalSink {
  std::vector<std::string> fired;
  void on_signal(const Signal& s) override { fired.push_back(s.rule->id); }
};

class TablesInRules : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = load_rules({{"t.yaml", kRules}}, &catalog_);
    ASSERT_TRUE(r.ok()) << format_text(r.diagnostics[0]);
    std::string error;
    ASSERT_EQ(registry.upsert("risky_numbers", parse_json_row(risky_schema(), "+86 170 6564 3907", R"({"risk_level":3})", error)), "");
    ASSERT_EQ(registry.replace("vulnerable_residents",
                               parse_jsonl(residents_schema(), R"({"phone":"0086 131 6564 3907","lives_alone":true,"age":82})" "\n"
                                                               R"({"phone":"13265643907","lives_alone":false,"age":90})", "r").rows), "");
    ASSERT_EQ(registry.replace("buildings", parse_csv(buildings_schema(), "building,grid,community,street,district\nB-1,G1,C1,S1,D1\n", "b").rows), "");
    engine = std::make_unique<Engine>(r.rules, rec, nullptr, &registry);
  }
  void call(const std::string& caller, const std::string& callee) {
    const std::string j = R"({"call_id":"c)" + std::to_string(seq++) + R"(","start_time":1790000000000,"caller":")" + caller +
                          R"(","callee":")" + callee + R"(","duration_s":12,"answered":true})";
    ASSERT_TRUE(dec.decode(Stream::kCalls, j, 1790000000000, ev).ok()) << j;
    engine->on_event(ev);
  }
  void complaint(const std::string& building, const std::string& complainant) {
    const std::string j = R"({"ticket_id":"t)" + std::to_string(seq++) + R"(","time":1790000000000,"status":"received","building":")" +
                          building + R"(","complainant":")" + complainant + R"("})";
    ASSERT_TRUE(dec.decode(Stream::kComplaints, j, 1790000000000, ev).ok()) << j;
    engine->on_event(ev);
  }
  std::vector<std::string> take() { return std::exchange(rec.fired, {}); }

  TableCatalog catalog_ = catalog();
  TableRegistry registry{catalog()};
  Decoder dec;
  Event ev;
  Recorder rec;
  std::unique_ptr<Engine> engine;
  int seq = 0;
};

using Fired = std::vector<std::string>;

TEST_F(TablesInRules, WatchListedCallerFires) {
  call("17065643907", "13900000001");
  EXPECT_EQ(take(), Fired{"watchlisted_caller"});
  call("17165643907", "13900000001");
  EXPECT_EQ(take(), Fired{});
  call("+86 170 6564 3907", "131-6564-3907");  // the event's spelling does not matter either
  EXPECT_EQ(take(), (Fired{"watchlisted_caller", "high_risk_reaches_elderly"}));
  call("17065643907", "13265643907");  // not alone
  EXPECT_EQ(take(), Fired{"watchlisted_caller"});
}

TEST_F(TablesInRules, LiveChangesAreSeenAfterTheNextTick) {
  std::string error;
  ASSERT_EQ(registry.upsert("risky_numbers", parse_json_row(risky_schema(), "17165643907", R"({"risk_level":1})", error)), "");
  call("17165643907", "13900000001");
  EXPECT_EQ(take(), Fired{});  // the engine still holds the batch's snapshot
  engine->on_tick(1790000001000);
  call("17165643907", "13900000001");
  EXPECT_EQ(take(), Fired{"watchlisted_caller"});

  ASSERT_EQ(registry.erase("risky_numbers", "+86 171 6564 3907"), "");
  engine->on_tick(1790000002000);
  call("17165643907", "13900000001");
  EXPECT_EQ(take(), Fired{});

  complaint("B-1", "13900000001");
  EXPECT_EQ(take(), Fired{"complaint_in_d1"});
  complaint("B-9", "13900000001");
  complaint("B-1", "17065643907");
  EXPECT_EQ(take(), Fired{});
}

TEST_F(TablesInRules, WithoutTablesEveryLookupMisses) {
  auto r = load_rules({{"t.yaml", kRules}}, &catalog_);
  ASSERT_TRUE(r.ok());
  engine = std::make_unique<Engine>(r.rules, rec);  // no TableSource
  call("17065643907", "13165643907");
  complaint("B-1", "13900000001");
  EXPECT_EQ(take(), Fired{});
}

Diagnostic load_error(const std::string& where, const TableCatalog* tables) {
  const std::string text = "rules:\n  - id: r\n    stream: calls\n    where: '" + where + "'\n    alert: {type: t, severity: low}\n";
  const auto r = load_rules({{"t.yaml", text}}, tables);
  EXPECT_FALSE(r.ok()) << where;
  return r.diagnostics.empty() ? Diagnostic{} : r.diagnostics[0];
}

TEST(TableLoadErrors, UnknownTablesAndColumnsAreE206) {
  const TableCatalog c = catalog();
  auto d = load_error(R"(in_table("risky", caller))", &c);
  EXPECT_EQ(d.code, "E206");
  EXPECT_EQ(d.message, "where: unknown table 'risky' (tables: risky_numbers, vulnerable_residents, buildings)") << d.message;
  d = load_error(R"(lookup("risky_numbers", caller, "level") > 1)", &c);
  EXPECT_EQ(d.code, "E206");
  EXPECT_EQ(d.message, "where: table 'risky_numbers' has no column 'level' (columns: number, risk_level, source)") << d.message;
  d = load_error(R"(in_table("risky_numbers", caller))", nullptr);
  EXPECT_EQ(d.code, "E206");
  EXPECT_NE(d.message.find("no tables are declared"), std::string::npos) << d.message;
}

TEST(TableLoadErrors, TypesAndConstantsAreChecked) {
  const TableCatalog c = catalog();
  auto d = load_error(R"(in_table("risky_numbers", duration_s))", &c);
  EXPECT_EQ(d.code, "E201");
  EXPECT_EQ(d.message, "where: in_table() key must be a string, got int") << d.message;
  d = load_error(R"(lookup("risky_numbers", caller, "risk_level") == "high")", &c);
  EXPECT_EQ(d.code, "E201");  // risk_level is an int
  d = load_error(R"(lookup("risky_numbers", caller, "source"))", &c);
  EXPECT_EQ(d.code, "E201");  // where must be bool; lookup() has the column's type
  d = load_error(R"(in_table(caller, caller))", &c);
  EXPECT_EQ(d.code, "E202");
  d = load_error(R"(lookup("risky_numbers", caller, callee) == "x")", &c);
  EXPECT_EQ(d.code, "E202");
  d = load_error(R"(in_table("risky_numbers"))", &c);
  EXPECT_EQ(d.code, "E204");
}

TEST(TableExpressions, EvaluateAgainstASnapshotOrNone) {
  const TableCatalog c = catalog();
  class Scope final : public rules::Scope {
   public:
    explicit Scope(const TableCatalog& c) : c_(c) {}
    std::optional<NameRef> resolve(std::string_view name) const override {
      if (name == "caller") return NameRef{NameRef::kEventField, schema_of(Stream::kCalls).slot_of("caller"), Type::kString};
      return std::nullopt;
    }
    std::optional<TableRef> table(std::string_view name) const override { return c_.find(name); }
    const TableCatalog& c_;
  } scope(c);
  ExprError err;
  const auto level = Expr::compile(R"(lookup("risky_numbers", caller, "risk_level"))", scope, err);
  ASSERT_TRUE(level) << err.message;
  EXPECT_EQ(level->type(), Type::kInt);
  const auto constant_key = Expr::compile(R"(in_table("risky_numbers", "17065643907"))", scope, err);
  ASSERT_TRUE(constant_key) << err.message;  // not folded to false at load time

  TableRegistry reg(c);
  std::string error;
  ASSERT_EQ(reg.upsert("risky_numbers", parse_json_row(risky_schema(), "17065643907", R"({"risk_level":2})", error)), "");
  const auto snap = reg.snapshot();
  Event e;
  e.slots[static_cast<size_t>(schema_of(Stream::kCalls).slot_of("caller"))] = Value::of_string("170-6564-3907");
  EXPECT_EQ(level->number(EvalContext{&e, nullptr, nullptr, snap.get()}), 2.0);
  EXPECT_TRUE(std::isnan(level->number(EvalContext{&e, nullptr, nullptr, nullptr})));
  EXPECT_TRUE(constant_key->test(EvalContext{&e, nullptr, nullptr, snap.get()}));
  EXPECT_FALSE(constant_key->test(EvalContext{&e, nullptr, nullptr, nullptr}));
  e.slots[static_cast<size_t>(schema_of(Stream::kCalls).slot_of("caller"))] = Value{};  // a missing field misses
  EXPECT_TRUE(std::isnan(level->number(EvalContext{&e, nullptr, nullptr, snap.get()})));
}

TEST(TableExpressions, ExampleRulesCompileAgainstTheExampleTables) {
  TableCatalog c = catalog();
  c.tables.push_back({"official_numbers", {{"number", Type::kString}, {"owner", Type::kString}, {"kind", Type::kString}},
                      KeyNormalization::kPhone});
  const auto r = load_rule_files({TOCSIN_SOURCE_DIR "/examples/tables/rules.yaml"}, &c);
  for (const auto& d : r.diagnostics) ADD_FAILURE() << format_text(d);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.rules->rules.size(), 5u);
}

}  // namespace
}  // namespace tocsin::rules
