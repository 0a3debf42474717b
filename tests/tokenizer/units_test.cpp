// Unit tests of the pieces under the tokenizer: UTF-8 repair, the byte-level alphabet, and BPE
// corner cases on a tiny synthetic tokenizer.json.
#include <unistd.h>

#include <thread>

#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

namespace ost::test {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

TEST(TokenizerUtf8, LossyMatchesPythonReplace) {
  // Expected values are Python's bytes.decode("utf-8", "replace").
  struct Case {
    std::string in, out;
  };
  const std::vector<Case> cases = {
      {"\xF0\x9F\x98" "a", kFffd + "a"},
      {"\xE0\x80\x80", kFffd + kFffd + kFffd},        // overlong
      {"\xED\xA0\x80", kFffd + kFffd + kFffd},        // surrogate
      {"\xC0\xAF", kFffd + kFffd},
      {"\xF4\x90\x80\x80", kFffd + kFffd + kFffd + kFffd},  // above U+10FFFF
      {"\xF5", kFffd},
      {"\xE2\x82\xE2\x82\xAC", kFffd + "\xE2\x82\xAC"},
      {"a\x80" "b", "a" + kFffd + "b"},
      {"\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80"},
      {"\xEF\xBF\xBF", "\xEF\xBF\xBF"},
      {"\xF1\x80\x80", kFffd},
      {"\xC2", kFffd},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(tok::utf8_lossy(c.in), c.out) << nlohmann::json::binary({c.in.begin(), c.in.end()}).dump();
    EXPECT_EQ(tok::is_valid_utf8(c.in), c.in == c.out);
  }
  // Not final: a valid unfinished tail is left for later.
  std::string out;
  EXPECT_EQ(tok::append_utf8_lossy("ab\xF0\x9F", out, false), 2u);
  EXPECT_EQ(out, "ab");
}

TEST(TokenizerByteLevel, AlphabetIsGpt2s) {
  EXPECT_EQ(tok::byte_to_codepoint(' '), 0x120u);   // 'Ġ'
  EXPECT_EQ(tok::byte_to_codepoint('\n'), 0x10Au);  // 'Ċ'
  EXPECT_EQ(tok::byte_to_codepoint('A'), uint32_t('A'));
  EXPECT_EQ(tok::byte_to_codepoint(0xAD), 0x143u);  // soft hyphen, the last remapped byte
  EXPECT_EQ(tok::codepoint_to_byte(0x120), ' ');
  EXPECT_EQ(tok::codepoint_to_byte(0x4E2D), -1);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(char(b));
  EXPECT_EQ(tok::token_text_to_bytes(tok::bytes_to_token_text(all)), all);
  EXPECT_EQ(tok::bytes_to_token_text(" hi\n"), "\xC4\xA0hi\xC4\x8A");
  EXPECT_FALSE(tok::token_text_to_bytes("\xE4\xB8\xAD").has_value());  // '中' is not in it
}

// A tokenizer.json with the 256 byte tokens (id = byte), a few merges, and added tokens.
nlohmann::json tiny_tokenizer() {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[tok::bytes_to_token_text(std::string(1, char(b)))] = b;
  vocab["ab"] = 256;
  vocab["bc"] = 257;
  vocab["abc"] = 258;
  vocab["aa"] = 259;
  vocab["aaaa"] = 260;
  vocab["\xC4\xA0" "x"] = 261;  // " x"
  return json{
      {"version", "1.0"},
      {"added_tokens", json::array({
           json{{"id", 262}, {"content", "<s>"}, {"special", true}, {"normalized", false},
                {"lstrip", false}, {"rstrip", false}, {"single_word", false}},
           json{{"id", 263}, {"content", "\xC7\x98"}, {"special", false}, {"normalized", true},
                {"lstrip", false}, {"rstrip", false}, {"single_word", false}},
       })},
      {"normalizer", json{{"type", "NFC"}}},
      {"pre_tokenizer",
       json{{"type", "Sequence"},
            {"pretokenizers", json::array({json{{"type", "Split"},
                                                {"pattern", json{{"Regex", "\\s+|[^\\s]+"}}},
                                                {"behavior", "Isolated"},
                                                {"invert", false}},
                                           json{{"type", "ByteLevel"},
                                                {"add_prefix_space", false},
                                                {"trim_offsets", false},
                                                {"use_regex", false}}})}}},
      {"post_processor", nullptr},
      {"decoder", json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false},
                       {"use_regex", false}}},
      {"model", json{{"type", "BPE"},
                     {"vocab", vocab},
                     {"merges", json::array({"b c", "a b", "ab c", "a a", "aa aa", "\xC4\xA0 x"})}}},
  };
}

Result<Tokenizer> load_json(const nlohmann::json& j) {
  const std::string path =
      ::testing::TempDir() + "tiny_tok_" + std::to_string(::getpid()) + ".json";
  EXPECT_TRUE(write_file(path, j.dump()).is_ok());
  auto r = Tokenizer::load(path);
  std::remove(path.c_str());
  return r;
}

TEST(TokenizerTiny, MergesFollowRankOrder) {
  auto t = load_json(tiny_tokenizer());
  ASSERT_TRUE(t.is_ok()) << t.message();
  // "b c" (rank 0) wins over "a b" (rank 1); then no "a bc" merge exists.
  EXPECT_EQ(t->encode("abc"), (std::vector<int32_t>{'a', 257}));
  EXPECT_EQ(t->encode("ab"), (std::vector<int32_t>{256}));
  // Equal ranks merge left to right: aaaaa -> aa aa a -> aaaa a.
  EXPECT_EQ(t->encode("aaaaa"), (std::vector<int32_t>{260, 'a'}));
  EXPECT_EQ(t->encode("aaa"), (std::vector<int32_t>{259, 'a'}));
  // Whitespace pieces are separate words here, so " x" never merges.
  EXPECT_EQ(t->encode("a x"), (std::vector<int32_t>{'a', ' ', 'x'}));
  EXPECT_EQ(t->vocab_size(), 264);
  EXPECT_EQ(t->token_bytes(261), " x");
  EXPECT_EQ(t->token_id("\xC4\xA0x"), 261);
}

TEST(TokenizerTiny, AddedTokensRawAndNormalized) {
  auto t = load_json(tiny_tokenizer());
  ASSERT_TRUE(t.is_ok()) << t.message();
  // "<s>" is matched in the raw text; "\u01D8" (normalized: true) after NFC, so the
  // decomposed spelling u + U+0308 + U+0301 matches too.
  EXPECT_EQ(t->encode("a<s>b"), (std::vector<int32_t>{'a', 262, 'b'}));
  EXPECT_EQ(t->encode("\xC7\x98"), (std::vector<int32_t>{263}));
  EXPECT_EQ(t->encode("u\xCC\x88\xCC\x81" "b"), (std::vector<int32_t>{263, 'b'}));
  EXPECT_TRUE(t->is_special(262));
  EXPECT_FALSE(t->is_special(263));
  // Content outside the byte-level alphabet decodes to its own UTF-8.
  EXPECT_EQ(t->decode({'a', 262, 263}), "a<s>\xC7\x98");
  EXPECT_EQ(t->decode({'a', 262, 263}, true), "a\xC7\x98");
}

TEST(TokenizerTiny, AddedTokenIdsMustBeTheOnesHfAssigns) {
  auto j = tiny_tokenizer();
  j["added_tokens"][1]["id"] = 300;  // HF would number it 263
  auto r = load_json(j);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("263"), std::string::npos) << r.message();
}

TEST(TokenizerTiny, UnsupportedOptionsAreRefused) {
  auto j = tiny_tokenizer();
  j["added_tokens"][0]["lstrip"] = true;
  auto r = load_json(j);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("lstrip"), std::string::npos) << r.message();

  j = tiny_tokenizer();
  j["model"]["byte_fallback"] = true;
  r = load_json(j);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("byte_fallback"), std::string::npos) << r.message();

  j = tiny_tokenizer();
  j["model"]["merges"].push_back("zz q");  // "zz" is not in the vocab
  r = load_json(j);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("merge"), std::string::npos) << r.message();

  j = tiny_tokenizer();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  r = load_json(j);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("regex"), std::string::npos) << r.message();
}

TEST(TokenizerTiny, IgnoreMergesTakesWholeWords) {
  auto j = tiny_tokenizer();
  j["model"]["ignore_merges"] = true;
  auto t = load_json(j);
  ASSERT_TRUE(t.is_ok()) << t.message();
  EXPECT_EQ(t->encode("abc"), (std::vector<int32_t>{258}));  // in the vocab as a whole
  EXPECT_EQ(t->encode("abca"), (std::vector<int32_t>{'a', 257, 'a'}));
}

TEST_F(Qwen3TokenizerTest, AccessorsAndSpecialTokens) {
  EXPECT_EQ(tok().vocab_size(), 151669);
  EXPECT_EQ(tok().token_id("<|im_start|>"), 151644);
  EXPECT_EQ(tok().token_id("<think>"), 151667);
  EXPECT_EQ(tok().token_id("\xC4\xA0world"), 1879);  // "Ġworld"
  EXPECT_FALSE(tok().token_id("no such token").has_value());
  EXPECT_TRUE(tok().is_special(151645));
  EXPECT_FALSE(tok().is_special(151667));  // <think> is an added token but not special
  EXPECT_FALSE(tok().is_special(1879));
  EXPECT_EQ(tok().token_bytes(1879), " world");
  EXPECT_EQ(tok().token_bytes(151644), "<|im_start|>");
  EXPECT_EQ(tok().token_bytes(249), "\x9B");
  EXPECT_EQ(tok().token_bytes(-1), "");
  EXPECT_EQ(tok().token_bytes(151669), "");
  const std::vector<int32_t> ids = {151644, 872, 198, 151667, 6023, 151668, 151645};
  EXPECT_EQ(tok().decode(ids), "<|im_start|>user\n<think>hi</think><|im_end|>");
  EXPECT_EQ(tok().decode(ids, true), "user\n<think>hi</think>");
  EXPECT_EQ(tok().encode("<|im_start|>user\n<think>hi</think><|im_end|>"), ids);
}

TEST_F(Qwen3TokenizerTest, InvalidUtf8InputIsRepaired) {
  const std::string bad = "ok\xFF\xC3(\xF0\x9F";
  EXPECT_EQ(tok().encode(bad), tok().encode(tok::utf8_lossy(bad)));
  EXPECT_EQ(tok().decode(tok().encode(bad)), "ok" + kFffd + kFffd + "(" + kFffd);
}

TEST_F(Qwen3TokenizerTest, HugeRunsStayCorrect) {
  // One 1 MB whitespace run and one 200 KB word: the regex must not hit a stack limit and BPE
  // must not go quadratic. Decoding gives the text back.
  const std::string spaces(1 << 20, ' ');
  const auto ids = tok().encode("a" + spaces + "b");
  EXPECT_EQ(tok().decode(ids), "a" + spaces + "b");
  std::string word;
  for (int i = 0; i < 20000; ++i) word += "abcdefghij";
  const auto wids = tok().encode(word);
  EXPECT_EQ(tok().decode(wids), word);
  EXPECT_LT(wids.size(), word.size() / 2);
  std::string newlines;
  for (int i = 0; i < 50000; ++i) newlines += " \t\r\n";
  EXPECT_EQ(tok().decode(tok().encode(newlines)), newlines);
}

TEST_F(Qwen3TokenizerTest, ConcurrentEncodeIsConsistent) {
  const auto golden = read_json_file(std::string(OST_TEST_DATA) + "/tokenizer_corpus_golden.json");
  ASSERT_TRUE(golden.contains("items"));
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> expected;
  for (const auto& it : golden["items"]) {
    texts.push_back(it["text"].get<std::string>());
    expected.push_back(it["ids"].get<std::vector<int32_t>>());
  }
  // A fresh copy of the tables with a cold word cache, shared by all threads.
  auto fresh = Tokenizer::load(qwen3_tokenizer_path());
  ASSERT_TRUE(fresh.is_ok()) << fresh.message();
  const Tokenizer& t = *fresh;
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < 3; ++round) {
        for (size_t i = size_t(w); i < texts.size() + size_t(w); ++i) {
          const size_t k = (i * 7 + size_t(round)) % texts.size();
          if (t.encode(texts[k]) != expected[k]) ++mismatches[size_t(w)];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

}  // namespace
}  // namespace ost::test
