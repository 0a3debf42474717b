// The token mask on the real Qwen3 vocabulary (151,643 BPE tokens + added tokens): the trie walk
// gives exactly the mask of trying every token on its own, in every state that answers reach,
// and what one mask costs is printed.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "grammar/vocab.h"
#include "tokenizer/tokenizer.h"

namespace ost::grammar {
namespace {

using ojson = nlohmann::ordered_json;

struct Vocab {
  Tokenizer tok;
  std::unique_ptr<VocabIndex> index;
  std::vector<int32_t> ends;
};

// As the engine builds it (make_vocab_index): the model's vocabulary is larger than the
// tokenizer's (151,936).
const Vocab& vocab() {
  static Vocab* v = [] {
    auto t = Tokenizer::load(std::string(OST_ASSETS) + "/qwen3/tokenizer.json");
    EXPECT_TRUE(t.is_ok()) << t.message();
    auto* out = new Vocab{*t, nullptr, {}};
    out->ends = {*out->tok.token_id("<|im_end|>"), *out->tok.token_id("<|endoftext|>")};
    out->index = make_vocab_index(out->tok, 151936, std::vector<int>(out->ends.begin(), out->ends.end()));
    return out;
  }();
  return *v;
}

bool has(const std::vector<uint64_t>& mask, int32_t id) { return (mask[size_t(id) >> 6] >> (id & 63)) & 1; }

std::shared_ptr<const Grammar> price_tag() {
  auto g = compile_json_schema(ojson::parse(R"({"type": "object", "properties": {
      "product": {"type": "string"}, "price": {"type": "number"},
      "currency": {"type": "string", "enum": ["EUR", "USD", "CNY"]}, "on_promotion": {"type": "boolean"},
      "notes": {"type": ["string", "null"], "maxLength": 12},
      "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
    "required": ["product", "price", "currency", "on_promotion"]})"));
  EXPECT_TRUE(g.is_ok()) << g.message();
  return *g;
}

void expect_same_mask(Matcher& m, const std::string& where) {
  std::vector<uint64_t> fast, brute;
  const int n = vocab().index->fill_mask(m, fast);
  const int nb = vocab().index->fill_mask_brute(m, brute);
  ASSERT_EQ(n, nb) << where;
  ASSERT_EQ(fast, brute) << where;
}

TEST(GrammarMask, TrieWalkEqualsBruteForceAlongAnswers) {
  const std::vector<std::pair<std::shared_ptr<const Grammar>, std::string>> answers = {
      {price_tag(),
       "{\"product\": \"Lait demi-\xC3\xA9" "cr\xC3\xA9" "m\xC3\xA9 1L \\\"bio\\\"\", \"price\": -12.5e+1, "
       "\"currency\": \"CNY\", \"on_promotion\": true, \"notes\": null, \"tags\": [\"\xE4\xB8\xAD\", \"\\u00e9\"]}"},
      {price_tag(),  // a string under maxLength: the room shrinks to nothing
       "{\"product\":\"\",\"price\":0,\"currency\":\"EUR\",\"on_promotion\":false,\"notes\":\"ab\xC3\xA9\\td\u00e9" "fghij\"}"},
      {json_object_grammar(), "{\"a\": [1, {\"b\": null}], \"\xF0\x9F\x98\x80\": \"x\\ny\", \"c\": false}"},
  };
  for (const auto& [g, text] : answers) {
    Matcher m(g);
    for (size_t i = 0; i <= text.size(); ++i) {
      expect_same_mask(m, "after " + text.substr(0, i));
      if (i < text.size()) ASSERT_TRUE(m.accept(text.substr(i, 1))) << text.substr(0, i + 1);
    }
    std::vector<uint64_t> mask;
    vocab().index->fill_mask(m, mask);
    for (int32_t e : vocab().ends) EXPECT_TRUE(has(mask, e));  // complete: only the end tokens
    EXPECT_EQ(vocab().index->fill_mask(m, mask), 2);
  }
}

// Random answers: tokens drawn from the mask (so tokens split UTF-8 and structure anywhere).
TEST(GrammarMask, TrieWalkEqualsBruteForceOnRandomTokens) {
  std::mt19937 rng(7);
  for (auto g : {price_tag(), json_object_grammar()}) {
    for (int run = 0; run < 3; ++run) {
      Matcher m(g);
      for (int step = 0; step < 40; ++step) {
        expect_same_mask(m, "run " + std::to_string(run) + " step " + std::to_string(step));
        std::vector<uint64_t> mask;
        vocab().index->fill_mask(m, mask);
        std::vector<int32_t> ids;
        for (int32_t id = 0; id < vocab().index->vocab(); ++id)
          if (has(mask, id)) ids.push_back(id);
        ASSERT_FALSE(ids.empty());
        const int32_t id = ids[rng() % ids.size()];
        if (vocab().index->is_end(id)) break;
        ASSERT_TRUE(vocab().index->accept(m, id));
      }
    }
  }
}

TEST(GrammarMask, SpecialTokensAndEndTokens) {
  const Vocab& v = vocab();
  Matcher m(price_tag());
  std::vector<uint64_t> mask;
  v.index->fill_mask(m, mask);
  for (const char* t : {"<|im_end|>", "<|endoftext|>", "<tool_call>", "<|image_pad|>", "<think>"})
    EXPECT_FALSE(has(mask, *v.tok.token_id(t))) << t;
  EXPECT_TRUE(has(mask, v.tok.encode("{\"")[0]));
  EXPECT_FALSE(v.index->accept(m, *v.tok.token_id("<|im_end|>")));
  EXPECT_FALSE(has(mask, 151935));  // past the tokenizer
}

// A forced tool call: the model may write its tags as the added tokens <tool_call> and
// </tool_call> (as Qwen3-VL does), there and nowhere else; the trie walk still equals the brute
// force.
TEST(GrammarMask, ToolCallTagsAsAddedTokens) {
  const Vocab& v = vocab();
  CompileOptions opt;
  opt.prefix = "<tool_call>\n";
  opt.suffix = "\n</tool_call>";
  Matcher m(json_object_grammar(opt));
  const int32_t open = *v.tok.token_id("<tool_call>"), close = *v.tok.token_id("</tool_call>");
  std::vector<uint64_t> mask;
  v.index->fill_mask(m, mask);
  EXPECT_TRUE(has(mask, open));
  EXPECT_FALSE(has(mask, close));
  EXPECT_FALSE(has(mask, *v.tok.token_id("<think>")));
  expect_same_mask(m, "start");
  ASSERT_TRUE(v.index->accept(m, open));
  ASSERT_TRUE(m.accept("\n{\"note\": \""));
  v.index->fill_mask(m, mask);
  EXPECT_FALSE(has(mask, open)) << "a tag inside a string";
  EXPECT_FALSE(v.index->accept(m, open));
  expect_same_mask(m, "in a string");
  ASSERT_TRUE(m.accept("x\"}\n"));
  v.index->fill_mask(m, mask);
  EXPECT_TRUE(has(mask, close));
  expect_same_mask(m, "suffix");
  ASSERT_TRUE(v.index->accept(m, close));
  EXPECT_TRUE(m.can_end());
}

TEST(GrammarMask, TimePerStep) {
  const Vocab& v = vocab();
  struct Case {
    const char* name;
    std::shared_ptr<const Grammar> g;
    std::string prefix;
  };
  const std::vector<Case> cases = {
      {"start of an object", price_tag(), ""},
      {"inside a string", price_tag(), "{\"product\": \"Milk "},
      {"inside a string, after a split UTF-8 character", price_tag(), "{\"product\": \"\xE4\xB8"},
      {"inside a number", price_tag(), "{\"product\": \"Milk\", \"price\": 1"},
      {"at a key", price_tag(), "{\"product\": \"Milk\", "},
      {"inside a string of maxLength 12", price_tag(),
       "{\"product\": \"M\", \"price\": 1, \"currency\": \"EUR\", \"on_promotion\": true, \"notes\": \"ab"},
      {"json_object: a value", json_object_grammar(), "{\"a\": "},
  };
  std::vector<uint64_t> mask;
  for (const Case& c : cases) {
    Matcher m(c.g);
    ASSERT_TRUE(m.accept(c.prefix));
    const int reps = 20;
    int allowed = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) allowed = v.index->fill_mask(m, mask);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    auto t1 = std::chrono::steady_clock::now();
    v.index->fill_mask_brute(m, mask);
    const double brute = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
    std::printf("  mask %-50s %7.3f ms  (%6d tokens allowed; every token tried: %6.1f ms)\n", c.name, ms, allowed,
                brute);
  }
}

}  // namespace
}  // namespace ost::grammar
