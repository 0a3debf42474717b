// Edge cases where a naive port differs from HF. Expected ids come from Hugging Face's Rust
// tokenizers 0.23.2 (the oracle of scripts/tokenizer_oracle).
#include "tokenizer/pretokenizer.h"
#include "tokenizer_test_util.h"

namespace ost::test {
namespace {

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

TEST_F(Qwen3TokenizerTest, WhitespaceAndCaseFoldingFollowOniguruma) {
  const std::vector<Case> cases = {
      // U+180E is no White_Space for Oniguruma (PCRE2's \s would take it).
      {"a \xE1\xA0\x8E\xE1\xA0\x8E b", {64, 86089, 254, 236, 123970, 236, 293}},
      {"x\xE1\xA0\x8E  y", {87, 123970, 236, 220, 379}},
      {" \xE1\xA0\x8E", {86089, 254, 236}},
      {"\xE1\xA0\x8E\n", {123970, 236, 198}},
      // U+0085 (NEL) and U+3000 are White_Space; U+FEFF, U+200B and U+001C are not.
      {"x\xC2\x85  y", {87, 126, 227, 220, 379}},
      {"a\xE3\x80\x80\xE3\x80\x80" "b", {64, 22441, 22441, 65}},
      {"a\xEF\xBB\xBF\xEF\xBB\xBF b", {64, 3225, 3225, 293}},
      {"x \xEF\xBB\xBF", {87, 75780}},
      {"a\xE2\x80\x8B\xE2\x80\x8B b", {64, 87896, 293}},
      {"a\x1C\x1C b", {64, 216, 216, 293}},
      {"a\xC2\xA0\xC2\xA0\xC2\xA0" "b", {64, 9238, 4102, 65}},
      {"a\xE2\x80\xA8\xE2\x80\xA8" "b", {64, 378, 101, 378, 101, 65}},
      // So NEL before a contraction is its own piece, and U+FEFF sticks to the apostrophe
      // (JavaScript's \s, the other way round, splits both differently).
      {"\xC2\x85'T", {126, 227, 17323}},
      {"x\xEF\xBB\xBF't", {87, 3225, 6, 83}},
      {"\xEF\xBB\xBF's", {3225, 6, 82}},
      // Contractions are case-insensitive. (Whether 'ſ, U+017F, counts as one cannot change
      // ids: no vocab token joins ſ to a neighbour.)
      {"it'\xC5\xBF", {275, 6, 144815}},
      {"IT'S", {952, 13272}},
      // U+0000 is an ordinary byte token.
      {std::string("x\0y", 3), {87, 188, 88}},
      {std::string("a\0\0 b", 5), {64, 188, 188, 293}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(tok().encode(c.text), c.ids) << nlohmann::json(c.text).dump();
    EXPECT_EQ(tok().decode(c.ids), c.text) << nlohmann::json(c.text).dump();
  }
}

TEST(TokenizerRegex, WhitespaceClassesAreSpelledOut) {
  auto r = tok::rewrite_whitespace_classes(R"(\s+(?!\S)|[^\s\p{L}]|\\s)");
  ASSERT_TRUE(r.is_ok()) << r.message();
  const std::string ws = R"(\x{9}-\x{D}\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
  EXPECT_EQ(*r, "[" + ws + "]+(?![^" + ws + "])|[^" + ws + R"(\p{L}]|\\s)");
  EXPECT_FALSE(tok::rewrite_whitespace_classes(R"([\S])").is_ok());
  EXPECT_FALSE(tok::rewrite_whitespace_classes(R"([abc)").is_ok());
  // "]" first in a class is a literal; the class ends at the second one.
  auto lit = tok::rewrite_whitespace_classes(R"([]\s]\s)");
  ASSERT_TRUE(lit.is_ok());
  EXPECT_EQ(*lit, "[]" + ws + "][" + ws + "]");
}

}  // namespace
}  // namespace ost::test
