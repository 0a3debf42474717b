// The tokenizer cases of the tiny model's golden file (made with HF transformers).
#include <utf8proc.h>

#include <cstdlib>

#include "tokenizer_test_util.h"

namespace ost::test {
namespace {

std::string nfc(const std::string& s) {
  auto* p = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str()));
  std::string out(reinterpret_cast<const char*>(p));
  std::free(p);
  return out;
}

TEST_F(Qwen3TokenizerTest, FixtureCasesEncodeAndDecode) {
  const auto golden = read_json_file(std::string(OST_TEST_DATA) + "/qwen3vl-tiny/golden.json");
  ASSERT_TRUE(golden.contains("tokenizer"));
  const auto& cases = golden["tokenizer"];
  ASSERT_EQ(cases.size(), 16u);
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok().encode(text), ids) << "text: " << text;
    // The normalizer is NFC, so decoding gives the NFC form (one case spells "é" decomposed).
    EXPECT_EQ(tok().decode(ids), nfc(text)) << "text: " << text;
  }
}

TEST_F(Qwen3TokenizerTest, DecomposedAccentDecodesComposed) {
  // "e" + U+0301 is normalized to U+00E9 before BPE, so it round-trips to the composed form.
  const std::string decomposed = "r\x65\xCC\x81sum\x65\xCC\x81";
  const std::string composed = "r\xC3\xA9sum\xC3\xA9";
  EXPECT_EQ(tok().encode(decomposed), tok().encode(composed));
  EXPECT_EQ(tok().decode(tok().encode(decomposed)), composed);
}

}  // namespace
}  // namespace ost::test
