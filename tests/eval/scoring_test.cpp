// Scoring functions on hand-made answers: option letters, refusals, normalization, F1.
#include <gtest/gtest.h>

#include "eval/scoring.h"

namespace ost::eval {
namespace {

const std::vector<std::string> kCounts = {"2", "3", "4", "5"};
const std::vector<std::string> kRows = {"Top row", "Middle row", "Bottom row", "No row is completely empty"};

int pick(const std::string& answer, const std::vector<std::string>& choices = kCounts) {
  return extract_choice(answer, choices).index;
}

TEST(ExtractChoice, BareLetters) {
  EXPECT_EQ(pick("B"), 1);
  EXPECT_EQ(pick("b"), 1);
  EXPECT_EQ(pick("(b)"), 1);
  EXPECT_EQ(pick("C."), 2);
  EXPECT_EQ(pick("**D**"), 3);
  EXPECT_EQ(pick("  'A'\n"), 0);
  EXPECT_EQ(pick("[C]"), 2);
  EXPECT_EQ(pick("Option C"), 2);
}

TEST(ExtractChoice, ExplicitStatements) {
  EXPECT_EQ(pick("Answer: B."), 1);
  EXPECT_EQ(pick("the answer is option C"), 2);
  EXPECT_EQ(pick("The correct answer is (d) because the shelf has five gaps."), 3);
  EXPECT_EQ(pick("I think the answer is b"), 1);
  EXPECT_EQ(pick("答案是C"), 2);
  EXPECT_EQ(pick("答案：B"), 1);
  EXPECT_EQ(pick("选A。"), 0);
  // The last explicit statement wins (reasoning first, conclusion last).
  EXPECT_EQ(pick("At first the answer seemed to be A, but counting again the answer is C."), 2);
  EXPECT_EQ(pick("<think>maybe A? or B</think>Answer: D"), 3);
}

TEST(ExtractChoice, LeadingLetterAndBrackets) {
  EXPECT_EQ(pick("C. 4 empty slots"), 2);
  EXPECT_EQ(pick("b) three"), 1);
  EXPECT_EQ(pick("There are four empty slots (C)."), 2);
}

TEST(ExtractChoice, ArticlesAndPronounsAreNotOptions) {
  // "A" / "I" as words, not option letters: the option text decides.
  EXPECT_EQ(pick("A total of 4 slots are empty"), 2);
  EXPECT_EQ(pick("I count 5 empty slots"), 3);
  EXPECT_EQ(pick("the answer is a bottle"), -1);
}

TEST(ExtractChoice, OptionText) {
  EXPECT_EQ(pick("Middle row", kRows), 1);
  EXPECT_EQ(pick("The bottom row is completely out of stock.", kRows), 2);
  EXPECT_EQ(pick("no row is completely empty", kRows), 3);
  EXPECT_EQ(pick("3"), 1);
  EXPECT_EQ(pick("There are 3 empty slots"), 1);
  // "Yes"/"No" with one named.
  EXPECT_EQ(pick("No, the middle row breaks it.", {"Yes", "No"}), 1);
}

TEST(ExtractChoice, AmbiguousAndOutOfRange) {
  auto r = extract_choice("A or B", kCounts);
  EXPECT_EQ(r.index, -1);
  EXPECT_TRUE(r.ambiguous);
  EXPECT_EQ(pick("2 or 3"), -1);
  EXPECT_EQ(pick("E"), -1);  // only four options
  EXPECT_EQ(pick(""), -1);
}

TEST(ExtractChoice, Refusals) {
  auto r = extract_choice("I cannot determine this from the image.", kCounts);
  EXPECT_EQ(r.index, -1);
  EXPECT_TRUE(r.refusal);
  EXPECT_TRUE(extract_choice("Sorry, the image is too blurry to tell.", kCounts).refusal);
  EXPECT_TRUE(extract_choice("图片看不清，无法判断。", kCounts).refusal);
  // An answer that names an option is not a refusal even if it hedges.
  r = extract_choice("I can't be sure, but the answer is B.", kCounts);
  EXPECT_EQ(r.index, 1);
  EXPECT_FALSE(r.refusal);
  EXPECT_FALSE(extract_choice("qwerty", kCounts).refusal);
}

TEST(Normalize, SquadStyle) {
  EXPECT_EQ(normalize_answer("The Fresh-Mart!"), "freshmart");
  EXPECT_EQ(normalize_answer("  a   BIG   apple "), "big apple");
  EXPECT_EQ(normalize_answer("¥12.50"), "1250");
  EXPECT_EQ(normalize_answer("ＡＢＣ　１２"), "abc 12");  // full width folded by NFKC
  EXPECT_EQ(normalize_answer("红烧牛肉面，"), "红 烧 牛 肉 面");
  EXPECT_TRUE(exact_match("Fresh Mart.", "fresh mart"));
  EXPECT_FALSE(exact_match("Fresh Market", "fresh mart"));
}

TEST(TokenF1, EnglishAndChinese) {
  EXPECT_DOUBLE_EQ(token_f1("fresh mart", "Fresh Mart"), 1.0);
  EXPECT_DOUBLE_EQ(token_f1("golden noodle house", "golden noodle"), 0.8);  // p 2/3, r 1
  EXPECT_DOUBLE_EQ(token_f1("bread", "milk"), 0.0);
  // Chinese: one token per character. "牛肉面" vs "红烧牛肉面": p 3/3, r 3/5 -> 0.75.
  EXPECT_DOUBLE_EQ(token_f1("牛肉面", "红烧牛肉面"), 0.75);
  // Mixed: "可乐 330ml" -> [可, 乐, 330ml].
  EXPECT_EQ(answer_tokens("可乐 330ML").size(), 3u);
  EXPECT_DOUBLE_EQ(token_f1("可乐330ml", "可乐 330ML"), 1.0);
  // Repeated tokens count once each.
  EXPECT_DOUBLE_EQ(token_f1("red red", "red"), 2.0 * 0.5 * 1.0 / 1.5);
  EXPECT_DOUBLE_EQ(token_f1("", ""), 1.0);
  EXPECT_DOUBLE_EQ(token_f1("the", "a"), 1.0);  // both empty after dropping articles
}

TEST(StripReasoning, ThinkBlocks) {
  EXPECT_EQ(strip_reasoning("<think>count... 3</think>\n\nB"), "B");
  EXPECT_EQ(strip_reasoning("count... 3</think> C"), "C");
  EXPECT_EQ(strip_reasoning("plain"), "plain");
}

}  // namespace
}  // namespace ost::eval
