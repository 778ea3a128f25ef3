// Value-based phone masking for the console and the alerts API: numbers are
// masked wherever they are, and nothing else is (building ids, ticket ids,
// dates, service numbers, alert ids).
#include "pipeline/phone_mask.h"

#include <gtest/gtest.h>

#include <regex>

namespace tocsin {
namespace {

TEST(PhoneMask, MobilesKeepThreeAndFourDigits) {
  EXPECT_EQ(mask_phones("13812348000"), "138****8000");
  EXPECT_EQ(mask_phones("17000000001"), "170****0001");  // virtual operators too
  EXPECT_EQ(mask_phones("138 1234 8000"), "138 **** 8000");
  EXPECT_EQ(mask_phones("138-1234-8000"), "138-****-8000");
}

TEST(PhoneMask, CountryPrefixesAreKept) {
  EXPECT_EQ(mask_phones("+8613812348000"), "+86138****8000");
  EXPECT_EQ(mask_phones("+86 138 1234 8000"), "+86 138 **** 8000");
  EXPECT_EQ(mask_phones("008613812348000"), "0086138****8000");
  EXPECT_EQ(mask_phones("8613812348000"), "86138****8000");
}

TEST(PhoneMask, LandlinesKeepTheAreaCode) {
  EXPECT_EQ(mask_phones("010-12345678"), "010-****5678");
  EXPECT_EQ(mask_phones("01012345678"), "010****5678");
  EXPECT_EQ(mask_phones("028-87654321"), "028-****4321");
  EXPECT_EQ(mask_phones("0755-1234567"), "0755-***4567");
  EXPECT_EQ(mask_phones("075512345678"), "0755****5678");
  EXPECT_EQ(mask_phones("+86 10 12345678"), "+86 10 ****5678");
  EXPECT_EQ(mask_phones("+86-755-12345678"), "+86-755-****5678");
  EXPECT_EQ(mask_phones("+86 (0)755"), "+86 (0)755") << "too short to be a number";
}

TEST(PhoneMask, InternationalNumbers) {
  EXPECT_EQ(mask_phones("+442012345678"), "+442*****5678");
  EXPECT_EQ(mask_phones("0044201234567"), "00442****4567");
}

TEST(PhoneMask, NumbersInsideText) {
  EXPECT_EQ(mask_phones("必达预警：13100000001 与 +8617000000002 通话"), "必达预警：131****0001 与 +86170****0002 通话");
  EXPECT_EQ(mask_phones("号码13812348000的"), "号码138****8000的") << "CJK around a number is a boundary";
  EXPECT_EQ(mask_phones("callee=13812348000, family 13200000001;13200000002"),
            "callee=138****8000, family 132****0001;132****0002");
  EXPECT_EQ(mask_phones("13812348000 13912348000"), "138****8000 139****8000") << "two numbers, not one";
  EXPECT_EQ(mask_phones("13812348000-13912348000"), "138****8000-139****8000");
  EXPECT_EQ(mask_phones("sms:+8613100000001"), "sms:+86131****0001");
}

// The values a console shows next to numbers: none of them may be touched.
TEST(PhoneMask, LeavesEverythingElseAlone) {
  for (const char* v : {"B-D2-S3-C1-05", "B-D1-S2-C3-04", "12345-20261126-000101", "E-20261126-7", "MON-T1-9",
                        "hn-north-02", "HS-0417", "2026-11-26T08:00:00.000Z", "2026-11-26", "110", "12345", "95588",
                        "96110", "95588123456", "10690000000", "4008123456", "20261126", "0123456789abcdef",
                        "1381234800012345", "a13812348000", "13812348000b", "id_13812348000", "131****0001",
                        "3.13812348000", "13812348000.5", "460-00-1-7", "1840", "households 1840, 3 buildings",
                        "cell-123*5678", "12345678", "1234567"}) {
    EXPECT_EQ(mask_phones(v), v) << v;
    EXPECT_FALSE(is_phone_number(v)) << v;
  }
}

TEST(PhoneMask, WholeValueDetection) {
  for (const char* v : {"13812348000", " 13812348000 ", "+8613812348000", "010-12345678", "+442012345678"})
    EXPECT_TRUE(is_phone_number(v)) << v;
  for (const char* v : {"", "call 13812348000", "13812348000 x", "B-D2-S3-C1-05"}) EXPECT_FALSE(is_phone_number(v)) << v;
}

TEST(PhoneMask, KnownNumberFieldsAreAlwaysMasked) {
  EXPECT_EQ(mask_phone_number("+8613900000001"), "+86139****0001");
  EXPECT_EQ(mask_phone_number("12345678901234"), "123*******1234") << "unrecognised: 3 and 4 digits kept";
  EXPECT_EQ(mask_phone_number("1234567"), "****");
  EXPECT_EQ(mask_phone_number(""), "****");
}

TEST(PhoneMask, JsonStringsAndNumbersAreMaskedKeysAreNot) {
  std::string out = "x";
  ASSERT_TRUE(append_json_phones_masked(out, R"({"key":{"callee":"13100000001","building":"B-D2-S3-C1-05"},
      "n":13812348000,"count":3,"ratio":0.5,"ok":true,"none":null,"13800000000":["+8613100000002","12345"]})"));
  EXPECT_EQ(out, R"(x{"key":{"callee":"131****0001","building":"B-D2-S3-C1-05"},"n":"138****8000","count":3,)"
                 R"("ratio":0.5,"ok":true,"none":null,"13800000000":["+86131****0002","12345"]})");
  std::string bad = "keep";
  EXPECT_FALSE(append_json_phones_masked(bad, "{not json"));
  EXPECT_EQ(bad, "keep");
}

TEST(PhoneMask, NoFullMobileSurvives) {
  // Every way a generator or an operator writes a mobile, inside text.
  const std::regex full(R"(1[3-9]\d{9})");
  for (const char* v : {"13100000001", "+8613100000001", "008613100000001", "call 13100000001 now", "（13100000001）",
                        "tel:13100000001;13200000001", "\"13100000001\"", "13100000001,13100000002"})
    EXPECT_FALSE(std::regex_search(mask_phones(v), full)) << v << " -> " << mask_phones(v);
}

}  // namespace
}  // namespace tocsin
