// Regex pre-tokenizer: HF's Split(Regex, behavior Isolated). Every match is a piece and so is
// every stretch of text between matches, so the pieces always cover the whole input.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace ost::tok {

// HF compiles the pattern with Oniguruma, whose \s is exactly the Unicode White_Space set.
// PCRE2's \s under UCP is a slightly different set (it also takes U+180E), so \s and \S are
// spelled out as explicit classes before PCRE2 sees the pattern. Fails on forms it cannot
// rewrite (\S inside a character class).
Result<std::string> rewrite_whitespace_classes(std::string_view pattern);

class PreTokenizer {
 public:
  PreTokenizer() = default;
  // `pattern` is the Oniguruma pattern from tokenizer.json.
  static Result<PreTokenizer> create(std::string_view pattern);

  // Appends the pieces of `text` (which must be valid UTF-8) to `pieces`, in order.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

 private:
  struct Compiled;
  std::shared_ptr<const Compiled> re_;
};

}  // namespace ost::tok
