// Internal state of a loaded Tokenizer, shared by tokenizer.cpp, tokenizer_load.cpp and
// stream_decoder.cpp. Not part of the public API.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"

namespace ost::tok {

struct TokenizerImpl {
  BpeModel bpe;
  PreTokenizer pretokenizer;
  bool nfc = false;
  AddedTokenMatcher raw_added;         // added tokens with normalized == false
  AddedTokenMatcher normalized_added;  // added tokens with normalized == true

  // Per id: the bytes it decodes to, whether it is a (special) added token, whether it exists.
  std::string all_bytes;
  std::vector<uint32_t> bytes_offset;  // size vocab_size + 1, into all_bytes
  std::vector<uint8_t> special;
  std::vector<uint8_t> added;  // an added token (special or not): never part of BPE output
  std::vector<uint8_t> present;
  int32_t vocab_size = 0;

  // Vocab text (byte-level alphabet) and added-token content -> id; added tokens win.
  std::unordered_map<std::string, int32_t> token_ids;

  std::string_view bytes_of(int32_t id) const {
    return std::string_view(all_bytes).substr(bytes_offset[size_t(id)],
                                              bytes_offset[size_t(id) + 1] - bytes_offset[size_t(id)]);
  }
  bool decodable(int32_t id, bool skip_special) const {
    return id >= 0 && id < vocab_size && present[size_t(id)] && !(skip_special && special[size_t(id)]);
  }
};

Result<TokenizerImpl> parse_tokenizer_json(std::string_view json_text);

}  // namespace ost::tok
