// Shared helpers for the tokenizer tests: the Qwen3 tokenizer loaded once per process, and
// reading JSON test data.
#pragma once
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/file_util.h"
#include "tokenizer/tokenizer.h"

namespace ost::test {

inline std::string qwen3_tokenizer_path() { return std::string(OST_ASSETS) + "/qwen3/tokenizer.json"; }

// Loaded on first use; null with `error` set when the asset is missing or broken.
inline const Tokenizer* qwen3_tokenizer(std::string* error = nullptr) {
  static std::string load_error;
  static const Tokenizer* tok = [] {
    auto r = Tokenizer::load(qwen3_tokenizer_path());
    if (!r) {
      load_error = r.message();
      return static_cast<const Tokenizer*>(nullptr);
    }
    return static_cast<const Tokenizer*>(new Tokenizer(std::move(*r)));
  }();
  if (error) *error = load_error;
  return tok;
}

// Fixture for tests that need the real tokenizer: a missing asset is a failure, not a skip.
class Qwen3TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    tok_ = qwen3_tokenizer(&err);
    ASSERT_NE(tok_, nullptr) << "cannot load " << qwen3_tokenizer_path() << ": " << err
                             << "\nRun scripts/setup.sh to fetch the tokenizer.";
  }
  const Tokenizer& tok() const { return *tok_; }
  const Tokenizer* tok_ = nullptr;
};

inline nlohmann::json read_json_file(const std::string& path) {
  auto text = read_file(path);
  EXPECT_TRUE(text.is_ok()) << text.message();
  if (!text) return nlohmann::json();
  return nlohmann::json::parse(*text);
}

}  // namespace ost::test
