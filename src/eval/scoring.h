// Scoring of free-text answers: multiple-choice extraction, refusals, SQuAD-style
// normalization, exact match and token F1 (CJK characters are one token each).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace ost::eval {

// NFKC + case folding, punctuation and symbols (currency included) removed, the English
// articles a/an/the dropped, whitespace collapsed: "The ¥12.50 Price!" -> "1250 price".
std::string normalize_answer(std::string_view s);
// Tokens of normalize_answer(s): words split on whitespace; each CJK ideograph, kana or CJK
// symbol is a token of its own ("红烧牛肉面" -> 5 tokens).
std::vector<std::string> answer_tokens(std::string_view s);
bool exact_match(std::string_view prediction, std::string_view reference);
double token_f1(std::string_view prediction, std::string_view reference);

// The text a reasoning model shows as its answer: <think>...</think> blocks removed, trimmed.
std::string strip_reasoning(std::string_view text);

struct ChoiceResult {
  int index = -1;        // chosen option, -1 when none could be read
  bool refusal = false;  // no option and the text declines to answer
  bool ambiguous = false;  // several options named without one marked as the answer
};

// Reads the chosen option from an answer: a bare letter ("B", "(b)", "b)", "B."), an explicit
// statement ("Answer: B.", "the answer is option C", "答案是C", "选C"), a letter leading the
// text ("C. 3 bottles"), or the text of exactly one option. A capital A or I followed by a
// word is read as the article / pronoun, not an option.
ChoiceResult extract_choice(std::string_view answer, const std::vector<std::string>& choices);

// "cannot determine", "unable to see", "无法判断", ... (checked on the whole text).
bool looks_like_refusal(std::string_view text);

}  // namespace ost::eval
