// The token mask of constrained decoding: which tokens of the vocabulary may come next.
//
// A token is allowed when the matcher accepts every one of its bytes. The vocabulary is kept as
// a byte trie walked with the matcher, a copy of its state per edge, so a dead prefix prunes
// every token under it. Inside a string most tokens are plain text (no '"', '\\' or control
// byte), accepted whatever follows the string: those come from a table per UTF-8 state (and
// per length, under maxLength), and only the other tokens are walked (their own, much smaller
// trie).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"

namespace ost::grammar {

class VocabIndex {
 public:
  // bytes[id]: what token id writes, for every id of the model's vocabulary ("" for a token that
  // is never allowed: special and added tokens, ids the tokenizer lacks). end_ids: the tokens
  // that end the answer (EOS, <|im_end|>), allowed once the value is complete.
  // tags: added tokens (id, text) that may write the grammar's prefix and suffix (a tool call's
  // <tool_call> and </tool_call>, which a model writes as those tokens), allowed only there:
  // never inside the value.
  VocabIndex(const std::vector<std::string>& bytes, std::vector<int32_t> end_ids,
             std::vector<std::pair<int32_t, std::string>> tags = {});

  int vocab() const { return vocab_; }
  size_t mask_words() const { return (size_t(vocab_) + 63) / 64; }
  bool is_end(int32_t id) const;

  // Bit id of mask (mask_words() words) set when token id may come next; the number allowed.
  int fill_mask(Matcher& m, std::vector<uint64_t>& mask) const;
  // The same by trying every token on its own (the reference the tests hold fill_mask to).
  int fill_mask_brute(Matcher& m, std::vector<uint64_t>& mask) const;
  // Advances m by token id (an end token leaves it as it is): false when it may not come.
  bool accept(Matcher& m, int32_t id) const;

 private:
  struct TrieNode {
    uint32_t first_child = 0, n_children = 0;  // children are contiguous, sorted by byte
    uint32_t tokens_begin = 0, tokens_end = 0;  // tokens that end here, in Trie::ids
    uint8_t byte = 0;
  };
  struct Trie {
    std::vector<TrieNode> nodes;  // nodes[0]: the root
    std::vector<int32_t> ids;
  };
  static Trie build(std::vector<std::pair<std::string, int32_t>> tokens);
  static uint32_t build_node(Trie& t, const std::vector<std::pair<std::string, int32_t>>& tokens, size_t a,
                             size_t b, size_t depth, uint32_t node);
  void walk(const Trie& t, uint32_t node, const MatchState& s, Matcher& m, uint64_t* mask) const;
  const std::string* tag(int32_t id) const;
  void add_tags(Matcher& m, uint64_t* mask) const;  // the tags that may come next

  int vocab_ = 0;
  std::vector<std::string> bytes_;
  std::vector<int32_t> end_ids_;
  std::vector<std::pair<int32_t, std::string>> tags_;
  Trie all_;      // every token that can be allowed
  Trie special_;  // tokens that are not plain string text
  std::vector<std::vector<uint64_t>> plain_;  // per UTF-8 state (utf8_step): plain tokens valid from it
  uint32_t max_plain_chars_ = 0;              // characters of the longest plain token
  // For strings with little room left (maxLength): per UTF-8 state, those tokens by the
  // characters they add, and per count k how many add at most k.
  std::vector<std::vector<int32_t>> plain_by_chars_;
  std::vector<std::vector<uint32_t>> plain_upto_;
};

// The index of a model's vocabulary (vocab ids, which may exceed the tokenizer's): every
// token's bytes; added tokens never allowed except the non-special ones (<tool_call>, ...) as
// tags; ids past the tokenizer never; the eos ids end the answer.
std::unique_ptr<VocabIndex> make_vocab_index(const Tokenizer& tok, int vocab, const std::vector<int>& eos);

// Sets every logit whose token the mask leaves out to -inf.
void apply_mask(const std::vector<uint64_t>& mask, float* logits, int vocab);

}  // namespace ost::grammar
