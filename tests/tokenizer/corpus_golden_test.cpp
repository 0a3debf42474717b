// The corpus of tests/data/tokenizer_corpus.txt plus seeded fuzz strings, against ids made by
// Hugging Face's Rust tokenizers (scripts/tokenizer_oracle/generate_golden.js).
#include <sstream>

#include "tokenizer_test_util.h"

namespace ost::test {
namespace {

std::string golden_path() { return std::string(OST_TEST_DATA) + "/tokenizer_corpus_golden.json"; }

std::string show(const std::string& s) {
  std::ostringstream os;
  os << nlohmann::json(s).dump();
  return os.str().substr(0, 160);
}

TEST_F(Qwen3TokenizerTest, CorpusMatchesReference) {
  const auto golden = read_json_file(golden_path());
  ASSERT_TRUE(golden.contains("items"));
  const auto& items = golden["items"];
  ASSERT_GT(items.size(), 500u);
  int failures = 0;
  for (const auto& it : items) {
    const std::string text = it["text"].get<std::string>();
    const auto ids = it["ids"].get<std::vector<int32_t>>();
    const std::string decoded = it.value("decoded", text);
    const std::string decoded_skip = it.value("decoded_skip_special", decoded);
    const auto got = tok().encode(text);
    if (got != ids && ++failures <= 10) {
      ADD_FAILURE() << "encode differs for " << show(text) << "\n  expected " << nlohmann::json(ids).dump()
                    << "\n  got      " << nlohmann::json(got).dump();
    }
    EXPECT_EQ(tok().decode(ids), decoded) << show(text);
    EXPECT_EQ(tok().decode(ids, /*skip_special=*/true), decoded_skip) << show(text);
  }
  EXPECT_EQ(failures, 0) << "of " << items.size() << " items";
}

// The golden file must have been regenerated after the corpus was edited.
TEST(TokenizerCorpus, GoldenIsUpToDateWithCorpus) {
  auto corpus = read_file(std::string(OST_TEST_DATA) + "/tokenizer_corpus.txt");
  ASSERT_TRUE(corpus.is_ok()) << corpus.message();
  const std::string sep = "\n%%\n";
  std::vector<std::string> parts;
  size_t pos = 0;
  for (size_t next; (next = corpus->find(sep, pos)) != std::string::npos; pos = next + sep.size()) {
    parts.push_back(corpus->substr(pos, next - pos));
  }
  ASSERT_EQ(pos, corpus->size()) << "the corpus must end with a separator line";
  ASSERT_GE(parts.size(), 2u);
  parts.erase(parts.begin());  // header

  const auto golden = read_json_file(golden_path());
  std::vector<std::string> golden_corpus;
  for (const auto& it : golden["items"]) {
    if (it["src"] == "corpus") golden_corpus.push_back(it["text"].get<std::string>());
  }
  ASSERT_EQ(parts.size(), golden_corpus.size())
      << "regenerate tests/data/tokenizer_corpus_golden.json (scripts/tokenizer_oracle/README.md)";
  for (size_t i = 0; i < parts.size(); ++i) EXPECT_EQ(parts[i], golden_corpus[i]) << "item " << i;
}

}  // namespace
}  // namespace ost::test
