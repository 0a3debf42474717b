// The JSON machine byte by byte: what each schema keyword lets through and what it refuses,
// UTF-8 split anywhere, nesting bounds, whitespace runs, and the errors of unsupported schemas.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "grammar/grammar.h"

namespace ost::grammar {
namespace {

using ojson = nlohmann::ordered_json;

std::shared_ptr<const Grammar> schema(const std::string& text, CompileOptions opt = {}) {
  auto g = compile_json_schema(ojson::parse(text), opt);
  EXPECT_TRUE(g.is_ok()) << g.message();
  return g ? *g : nullptr;
}

// The whole text is accepted and may end there.
bool complete(const std::shared_ptr<const Grammar>& g, const std::string& text) {
  Matcher m(g);
  return m.accept(text) && m.can_end();
}

// The text is accepted as a prefix (byte by byte, as tokens split it anywhere).
bool prefix(const std::shared_ptr<const Grammar>& g, const std::string& text) {
  Matcher m(g);
  for (char c : text)
    if (!m.accept(std::string(1, c))) return false;
  return true;
}

std::string compile_error(const std::string& text) {
  auto g = compile_json_schema(ojson::parse(text));
  EXPECT_FALSE(g.is_ok()) << text;
  return g ? "" : g.message();
}

const char* kPriceTag = R"({"type": "object", "properties": {
    "product": {"type": "string"}, "price": {"type": "number"},
    "currency": {"type": "string", "enum": ["EUR", "USD", "CNY"]}, "on_promotion": {"type": "boolean"}},
  "required": ["product", "price", "currency", "on_promotion"], "additionalProperties": false})";

TEST(GrammarMatcher, PriceTagSchema) {
  auto g = schema(kPriceTag);
  EXPECT_TRUE(complete(g, R"({"product": "Milk 1L", "price": 1.29, "currency": "EUR", "on_promotion": false})"));
  EXPECT_TRUE(complete(g, "{\n  \"product\":\"牛奶\",\n  \"price\":12,\"currency\":\"CNY\",\"on_promotion\":true\n}"));
  // Order, presence, types and enum values are all enforced.
  EXPECT_FALSE(prefix(g, R"({"price": 1)"));
  EXPECT_FALSE(complete(g, R"({"product": "x", "price": 1, "currency": "EUR"})"));
  EXPECT_FALSE(prefix(g, R"({"product": "x", "price": "1")"));
  EXPECT_FALSE(prefix(g, R"({"product": "x", "price": 1, "currency": "GBP")"));
  EXPECT_FALSE(prefix(g, R"({"product": "x", "price": 1, "currency": "EUR", "on_promotion": 0)"));
  EXPECT_FALSE(prefix(g, R"({"product": "x", "extra")"));
  EXPECT_FALSE(complete(g, R"({"product": "x", "price": 1, "currency": "EUR", "on_promotion": false} )"));
  EXPECT_FALSE(prefix(g, R"( {)"));  // no leading whitespace
  Matcher m(g);
  ASSERT_TRUE(m.accept(R"({"product": "x", "price": 1, "currency": "EUR", "on_promotion": true})"));
  EXPECT_TRUE(m.done());
  EXPECT_FALSE(m.accept(" "));
}

TEST(GrammarMatcher, OptionalPropertiesMayBeSkippedInOrder) {
  auto g = schema(R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                     "c": {"type": "integer"}}, "required": ["c"]})");
  EXPECT_TRUE(complete(g, R"({"c": 1})"));
  EXPECT_TRUE(complete(g, R"({"a": 1, "c": 2})"));
  EXPECT_TRUE(complete(g, R"({"b": 1, "c": 2})"));
  EXPECT_TRUE(complete(g, R"({"a": 1, "b": 2, "c": 3})"));
  EXPECT_FALSE(prefix(g, R"({"c": 1, "a")"));  // schema order
  EXPECT_FALSE(complete(g, R"({"a": 1})"));    // c is required
  EXPECT_FALSE(complete(g, R"({})"));
  auto none = schema(R"({"type": "object", "properties": {"a": {"type": "integer"}}})");
  EXPECT_TRUE(complete(none, "{}"));
  EXPECT_FALSE(prefix(none, R"({"a": 1,)"));  // nothing left to write
}

TEST(GrammarMatcher, Strings) {
  auto g = schema(R"({"type": "string", "minLength": 2, "maxLength": 4})");
  EXPECT_TRUE(complete(g, R"("ab")"));
  EXPECT_TRUE(complete(g, R"("a\nb")"));  // an escape is one character
  EXPECT_TRUE(complete(g, R"("\u00e9\"é€")"));
  EXPECT_FALSE(complete(g, R"("a")"));
  EXPECT_FALSE(prefix(g, R"("abcde)"));
  EXPECT_FALSE(prefix(g, "\"a\x01"));    // control bytes must be escaped
  EXPECT_FALSE(prefix(g, R"("\x)"));     // unknown escape
  EXPECT_FALSE(prefix(g, R"("\ud800)"));  // no lone surrogates
  EXPECT_TRUE(prefix(g, R"("\u12)"));
  EXPECT_FALSE(prefix(g, R"("\u12g)"));
}

TEST(GrammarMatcher, Utf8AcrossAnySplit) {
  auto g = schema(R"({"type": "string"})");
  const std::string good = "\"a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xE4\xB8\xAD\"";  // a é € 😀 中
  for (size_t cut = 0; cut <= good.size(); ++cut) {
    Matcher m(g);
    ASSERT_TRUE(m.accept(good.substr(0, cut))) << cut;
    ASSERT_TRUE(m.accept(good.substr(cut))) << cut;
    EXPECT_TRUE(m.can_end());
  }
  for (const char* bad : {"\"\x80", "\"\xC0\x80", "\"\xC3\x28", "\"\xE0\x80\x80", "\"\xED\xA0\x80",
                          "\"\xF0\x80\x80\x80", "\"\xF4\x90\x80\x80", "\"\xF5", "\"\xE2\x82\""})
    EXPECT_FALSE(prefix(g, bad)) << bad;
  Matcher m(g);
  ASSERT_TRUE(m.accept("\"\xE2\x82"));
  EXPECT_FALSE(m.accept("\""));  // a character left open cannot close the string
}

TEST(GrammarMatcher, Numbers) {
  auto num = schema(R"({"type": "number"})");
  for (const char* ok : {"0", "-0", "12", "-3.25", "1e5", "2.5E-3", "7e+01"}) EXPECT_TRUE(complete(num, ok)) << ok;
  for (const char* bad : {"01", "-", "1.", ".5", "1e", "+1", "1.5.2", "--1", "1e123"})
    EXPECT_FALSE(complete(num, bad)) << bad;
  auto integer = schema(R"({"type": "integer"})");
  EXPECT_TRUE(complete(integer, "-42"));
  EXPECT_FALSE(prefix(integer, "4.2"));
  EXPECT_FALSE(prefix(integer, "4e2"));
  EXPECT_FALSE(prefix(integer, "1234567890123456"));  // 16 digits: beyond an exact double
  EXPECT_TRUE(complete(integer, "123456789012345"));
}

TEST(GrammarMatcher, ArraysAndNesting) {
  auto g = schema(R"({"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}},
                     "required": ["n"]}, "minItems": 1, "maxItems": 2})");
  EXPECT_TRUE(complete(g, R"([{"n": 1}])"));
  EXPECT_TRUE(complete(g, R"([{"n": 1}, {"n": 2}])"));
  EXPECT_FALSE(complete(g, "[]"));
  EXPECT_FALSE(prefix(g, R"([{"n": 1}, {"n": 2},)"));
  auto any = json_object_grammar({.max_depth = 3, .max_whitespace = 8});
  EXPECT_TRUE(complete(any, R"({"a": [1, {"b": null}], "c": "d", "e": true, "a": -1.5e3})"));
  EXPECT_TRUE(complete(any, "{}"));
  EXPECT_FALSE(prefix(any, "[1]"));  // an object at the top
  EXPECT_FALSE(prefix(any, R"({"a": {"b": {"c": {)"));  // a fourth level
  EXPECT_TRUE(prefix(any, R"({"a": {"b": {"c": 1)"));
  EXPECT_FALSE(prefix(any, R"({"a": tru1)"));
}

TEST(GrammarMatcher, WhitespaceRunsAreBounded) {
  auto g = json_object_grammar({.max_depth = 4, .max_whitespace = 3});
  EXPECT_TRUE(complete(g, "{\n  \"a\" :\n 1 ,\n\"b\":2\n}"));
  EXPECT_FALSE(prefix(g, "{    "));
  EXPECT_FALSE(prefix(g, "{\t"));
  EXPECT_TRUE(complete(g, "{\"a\": \"    many    spaces    \"}"));  // inside strings: text
}

TEST(GrammarMatcher, EnumConstAnyOfAndTypeLists) {
  auto e = schema(R"({"enum": ["a", 1, 12, null, {"k": [true]}]})");
  for (const char* ok : {"\"a\"", "1", "12", "null", R"({"k":[true]})"}) EXPECT_TRUE(complete(e, ok)) << ok;
  EXPECT_FALSE(complete(e, "2"));
  EXPECT_FALSE(complete(e, "\"b\""));
  EXPECT_TRUE(complete(schema(R"({"const": "fixed"})"), "\"fixed\""));
  auto opt = schema(R"({"type": ["string", "null"], "maxLength": 3})");
  EXPECT_TRUE(complete(opt, "null"));
  EXPECT_TRUE(complete(opt, "\"abc\""));
  EXPECT_FALSE(prefix(opt, "\"abcd"));
  EXPECT_TRUE(complete(schema(R"({"type": ["integer", "number"]})"), "2.5"));
  auto any_of = schema(R"({"anyOf": [{"type": "integer"}, {"type": "number"}, {"type": "boolean"},
                                      {"enum": ["x", "y"]}]})");
  for (const char* ok : {"1.5", "true", "\"y\""}) EXPECT_TRUE(complete(any_of, ok)) << ok;
  EXPECT_FALSE(complete(any_of, "\"z\""));
  auto with_ref = schema(R"({"$defs": {"item": {"type": "object", "properties": {"name": {"type": "string"},
      "children": {"type": "array", "items": {"$ref": "#/$defs/item"}}}, "required": ["name", "children"]}},
      "type": "object", "properties": {"root": {"$ref": "#/$defs/item"}}, "required": ["root"]})");
  EXPECT_TRUE(complete(with_ref, R"({"root": {"name": "a", "children": [{"name": "b", "children": []}]}})"));
  EXPECT_TRUE(complete(schema(R"({"allOf": [{"type": "boolean"}], "description": "d"})"), "false"));
  auto map = schema(R"({"type": "object", "additionalProperties": {"type": "integer"}})");
  EXPECT_TRUE(complete(map, R"({"x": 1, "y": 2})"));
  EXPECT_FALSE(prefix(map, R"({"x": "1")"));
  EXPECT_TRUE(complete(schema(R"({"type": "object", "additionalProperties": false})"), "{}"));
  EXPECT_FALSE(prefix(schema(R"({"type": "object", "additionalProperties": false})"), "{\""));
}

TEST(GrammarMatcher, PrefixAndSuffix) {
  CompileOptions opt;
  opt.prefix = "<tool_call>\n";
  opt.suffix = "\n</tool_call>";
  auto g = schema(R"({"type": "object", "properties": {"name": {"const": "f"}, "arguments": {"type": "integer"}},
                     "required": ["name", "arguments"]})", opt);
  EXPECT_TRUE(complete(g, "<tool_call>\n{\"name\": \"f\", \"arguments\": 12}\n</tool_call>"));
  EXPECT_FALSE(prefix(g, "{"));
  EXPECT_FALSE(complete(g, "<tool_call>\n{\"name\": \"f\", \"arguments\": 12}"));
  EXPECT_FALSE(complete(g, "<tool_call>\n{\"name\": \"f\", \"arguments\": 12}\n</tool_call> "));
  auto number = schema(R"({"type": "number"})", opt);
  EXPECT_TRUE(complete(number, "<tool_call>\n-1.5\n</tool_call>"));  // the suffix ends the number
  Matcher m(number);
  ASSERT_TRUE(m.accept("<tool_call>\n7\n</tool_call"));
  EXPECT_FALSE(m.can_end());
  EXPECT_FALSE(m.done());
  ASSERT_TRUE(m.accept(">"));
  EXPECT_TRUE(m.done());
}

TEST(GrammarMatcher, UnsupportedSchemasAreErrorsNamingTheKeyword) {
  EXPECT_NE(compile_error(R"({"type": "object", "properties": {"sku": {"type": "string", "pattern": "^[0-9]+$"}}})")
                .find("'pattern'"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "number", "minimum": 0})").find("'minimum'"), std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "string", "format": "date"})").find("'format'"), std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "object", "properties": {"a": {"type": "string", "format": "date"}}})")
                .find("#/properties/a"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"anyOf": [{"type": "object"}, {"type": "object", "properties": {}}]})").find("start"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"oneOf": [{"type": "integer"}, {"type": "number"}]})").find("overlap"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "object", "required": ["x"]})").find("'x'"), std::string::npos);
  EXPECT_NE(compile_error(R"({"$ref": "#/$defs/missing"})").find("not found"), std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "date"})").find("unknown type"), std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "string", "minLength": 3, "maxLength": 2})").find("minLength"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"allOf": [{"type": "string"}, {"maxLength": 2}]})").find("allOf"), std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "array", "uniqueItems": true})").find("uniqueItems"), std::string::npos);
  EXPECT_NE(compile_error(R"({"enum": [1], "type": "string"})").find("type"), std::string::npos);
  EXPECT_NE(compile_error("false").find("no value"), std::string::npos);
}

}  // namespace
}  // namespace ost::grammar
