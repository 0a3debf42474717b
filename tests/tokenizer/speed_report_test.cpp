// Prints encode throughput on ~1 MB of mixed text. Reports only: timing limits belong in
// benchmarks, not in tests that run on loaded CI machines.
#include <chrono>
#include <cstdio>

#include "tokenizer/normalizer.h"
#include "tokenizer_test_util.h"

namespace ost::test {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Rotates ASCII letters by k so that each repetition of the corpus has different Latin words
// (a pessimistic case for the word cache); other scripts stay as they are.
std::string rotate_letters(const std::string& s, int k) {
  std::string out = s;
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = char('a' + (c - 'a' + k) % 26);
    if (c >= 'A' && c <= 'Z') c = char('A' + (c - 'A' + k) % 26);
  }
  return out;
}

TEST(TokenizerSpeed, ReportEncodeThroughputOnOneMegabyte) {
  const auto t_load = std::chrono::steady_clock::now();
  auto loaded = Tokenizer::load(qwen3_tokenizer_path());
  const double load_s = seconds_since(t_load);
  ASSERT_TRUE(loaded.is_ok()) << loaded.message() << "\nRun scripts/setup.sh to fetch the tokenizer.";
  const Tokenizer& tok = *loaded;  // a fresh instance: its word cache starts empty

  const auto golden = read_json_file(std::string(OST_TEST_DATA) + "/tokenizer_corpus_golden.json");
  ASSERT_TRUE(golden.contains("items"));
  std::string corpus;
  for (const auto& it : golden["items"]) corpus += it["text"].get<std::string>() + "\n";
  std::string text;
  for (int k = 0; text.size() < (1u << 20); ++k) text += rotate_letters(corpus, k);

  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text);
  const double cold_s = seconds_since(t0);
  const auto t1 = std::chrono::steady_clock::now();
  const auto again = tok.encode(text);
  const double warm_s = seconds_since(t1);
  EXPECT_EQ(ids, again);
  EXPECT_TRUE(tok.decode(ids) == tok::to_nfc(text));  // decoding gives the normalized text

  const double mb = double(text.size()) / (1 << 20);
  std::printf("[ tokenizer ] load %.3f s; encode %.2f MB (%zu tokens): cold cache %.3f s = %.1f MB/s, "
              "warm cache %.3f s = %.1f MB/s\n",
              load_s, mb, ids.size(), cold_s, mb / cold_s, warm_s, mb / warm_s);
}

}  // namespace
}  // namespace ost::test
