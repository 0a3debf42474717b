// Byte-level BPE tokenizer, token-for-token equal to the Hugging Face "fast" tokenizer for
// Qwen2/Qwen3 tokenizer.json files (NFC normalizer, regex Split + ByteLevel pre-tokenizer,
// BPE model, ByteLevel decoder). No BOS/EOS is ever added.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace ost {

namespace tok {
struct TokenizerImpl;
}

// Immutable after load and safe to share between threads. Copies are cheap: they share the
// loaded tables. A default-constructed Tokenizer is empty: encode gives {}, decode gives "".
class Tokenizer {
 public:
  Tokenizer() = default;

  // Reads a tokenizer.json. Fails with a message naming the file when it is missing, is not
  // JSON, or asks for a feature this implementation does not have (never tokenizes wrongly).
  static Result<Tokenizer> load(const std::string& tokenizer_json_path);

  // Added tokens (e.g. "<|im_start|>") written in the text become their ids, as in HF.
  // Input that is not valid UTF-8 is first repaired (each bad sequence -> U+FFFD).
  std::vector<int32_t> encode(std::string_view text) const;

  // Concatenates the tokens' bytes; invalid UTF-8 becomes U+FFFD (Python errors="replace").
  // Ids outside the vocabulary are dropped, as HF does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  std::string token_bytes(int32_t id) const;                      // "" if out of range
  std::optional<int32_t> token_id(std::string_view token) const;  // vocab text or added token
  int32_t vocab_size() const;                                     // max id + 1
  bool is_special(int32_t id) const;
  bool is_added(int32_t id) const;  // an added token, special or not (<|im_end|>, <tool_call>)

 private:
  friend class StreamDecoder;
  explicit Tokenizer(std::shared_ptr<const tok::TokenizerImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const tok::TokenizerImpl> impl_;
};

// UTF-8-safe streaming detokenizer: push ids one by one and get back only complete UTF-8.
// A partial multibyte character is held until its last byte arrives; flush() emits what is
// left (an unfinished character becomes U+FFFD). The concatenation of all push() results and
// flush() equals Tokenizer::decode of all the ids.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = false);
  std::string push(int32_t id);
  std::string flush();

 private:
  Tokenizer tok_;  // a copy shares the tables, so the decoder cannot outlive them
  bool skip_special_;
  std::string pending_;  // bytes of an unfinished UTF-8 sequence (at most 3)
};

}  // namespace ost
