#include "pipeline/json_writer.h"

#include <gtest/gtest.h>

namespace tocsin {
namespace {

TEST(JsonWriter, WritesNestedStructures) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().key("a").num(int64_t{1}).key("b").begin_array().str("x\"y").boolean(true).null().end_array()
      .key("c").begin_object().key("t").time(0).end_object().key("d").num(0.5).end_object();
  EXPECT_EQ(out, R"({"a":1,"b":["x\"y",true,null],"c":{"t":"1970-01-01T00:00:00.000Z"},"d":0.5})");
}

TEST(JsonWriter, EscapesControlCharacters) {
  std::string out;
  append_json_escaped(out, std::string("a\nb\x01", 4));
  EXPECT_EQ(out, "a\\nb\\u0001");
}

TEST(Masking, KeepsThreeAndFourDigits) {
  EXPECT_EQ(mask_phone("13812348000"), "138****8000");
  EXPECT_EQ(mask_phone("+8613812348000"), "+861******8000");
  EXPECT_EQ(mask_phone("110"), "****");
  std::string out;
  append_masked_text(out, "caller 13812348000 called 25 numbers, 96110 too");
  EXPECT_EQ(out, "caller 138****8000 called 25 numbers, 96110 too");
}

}  // namespace
}  // namespace tocsin
