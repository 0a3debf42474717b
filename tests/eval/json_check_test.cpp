// JSON extraction from answers, the schema subset and field agreement.
#include <gtest/gtest.h>

#include "eval/json_check.h"

namespace ost::eval {
namespace {

using nlohmann::json;

TEST(ExtractJson, PlainFencedAndEmbedded) {
  auto j = extract_json_object(R"({"a": 1})");
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["a"], 1);
  j = extract_json_object("Here you go:\n```json\n{\"total\": 50.2}\n```\nAnything else?");
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["total"], 50.2);
  // Braces inside strings do not end the object; a broken first candidate is skipped.
  j = extract_json_object(R"(The note {not json} then {"name": "a}b", "n": {"k": 2}} trailing })");
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["name"], "a}b");
  EXPECT_EQ((*j)["n"]["k"], 2);
  // An unterminated fence (answer cut by max tokens) still parses when the object is whole.
  j = extract_json_object("```json\n{\"x\": true}\n");
  ASSERT_TRUE(j);
  EXPECT_FALSE(extract_json_object("no json here"));
  EXPECT_FALSE(extract_json_object("[1, 2, 3]"));  // an object is expected
  EXPECT_FALSE(extract_json_object("{\"a\": 1"));  // cut off
}

const json kSchema = json::parse(R"({
  "type": "object", "required": ["rows", "facings", "items"],
  "properties": {
    "rows": {"type": "integer", "minimum": 1, "maximum": 10},
    "status": {"type": "string", "enum": ["ok", "bad"]},
    "facings": {"type": "object", "required": ["red"], "properties": {"red": {"type": "integer"}}},
    "items": {"type": "array", "items": {"type": "object", "required": ["price"],
              "properties": {"price": {"type": "number", "minimum": 0}}}},
    "promo": {"type": ["string", "null"]}
  }})");

TEST(Schema, ChecksTheSubset) {
  EXPECT_EQ(check_schema(kSchema), "");
  EXPECT_NE(check_schema(json::parse(R"({"type": "object", "additionalProperties": false})")).find("unsupported"),
            std::string::npos);
  EXPECT_NE(check_schema(json::parse(R"({"type": "float"})")), "");
  EXPECT_NE(check_schema(json::parse(R"({"properties": {"a": 3}})")), "");
  EXPECT_NE(check_schema(json::parse(R"({"minimum": "0"})")), "");
}

TEST(Schema, Validates) {
  EXPECT_TRUE(validate_json(kSchema, json::parse(R"({"rows": 3, "facings": {"red": 2}, "items": [{"price": 1.5}]})")).empty());
  // 3.0 is an integer; null allowed by a type list.
  EXPECT_TRUE(validate_json(kSchema, json::parse(R"({"rows": 3.0, "facings": {"red": 0}, "items": [], "promo": null})")).empty());
  auto errs = validate_json(kSchema, json::parse(R"({"rows": 0, "status": "meh", "facings": {}, "items": [{"price": -1}, {}]})"));
  ASSERT_EQ(errs.size(), 5u);  // properties are visited in name order
  EXPECT_EQ(errs[0], "$.facings: missing required \"red\"");
  EXPECT_EQ(errs[1], "$.items[0].price: -1 is below the minimum 0");
  EXPECT_EQ(errs[2], "$.items[1]: missing required \"price\"");
  EXPECT_EQ(errs[3], "$.rows: 0 is below the minimum 1");
  EXPECT_EQ(errs[4], "$.status: \"meh\" is not one of [\"ok\",\"bad\"]");
  errs = validate_json(kSchema, json::parse(R"({"rows": "3", "facings": {"red": 1.5}, "items": {}})"));
  ASSERT_EQ(errs.size(), 3u);
  EXPECT_EQ(errs[0], "$.facings.red: expected integer, got number");
  EXPECT_EQ(errs[1], "$.items: expected array, got object");
  EXPECT_EQ(errs[2], "$.rows: expected integer, got string");
  EXPECT_EQ(validate_json(kSchema, json::parse("[]"))[0], "$: expected object, got array");
}

TEST(FieldAgreement, LeavesSetsAndLists) {
  json expected = json::parse(R"({"rows": 3, "facings": {"red": 4, "blue": 2}, "oos": ["top", "bottom"],
                                  "store": "Fresh Mart", "items": [{"name": "MILK 1L", "price": 12.8}]})");
  json answer = json::parse(R"({"rows": 3, "facings": {"red": 5, "blue": 2}, "oos": ["Bottom"],
                                "store": "fresh mart.", "items": [{"name": "milk 1l", "price": "12.80"}]})");
  auto f = field_agreement(expected, answer);
  ASSERT_EQ(f.size(), 7u);
  std::map<std::string, double> by;
  for (auto& x : f) by[x.path] = x.score;
  EXPECT_EQ(by["$.rows"], 1);
  EXPECT_EQ(by["$.facings.red"], 0);
  EXPECT_EQ(by["$.facings.blue"], 1);
  EXPECT_NEAR(by["$.oos"], 2.0 / 3.0, 1e-12);  // p 1, r 1/2
  EXPECT_EQ(by["$.store"], 1);
  EXPECT_EQ(by["$.items[0].name"], 1);
  EXPECT_EQ(by["$.items[0].price"], 1);  // a number written as a string
  EXPECT_NEAR(mean_field_score(f), (5 + 2.0 / 3.0) / 7, 1e-12);
  // Missing fields score 0 and report no value.
  f = field_agreement(expected, json::object());
  EXPECT_EQ(mean_field_score(f), 0);
  EXPECT_EQ(f[0].got, "");
}

}  // namespace
}  // namespace ost::eval
