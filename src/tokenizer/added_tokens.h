// Added tokens ("<|im_start|>", "<think>", ...) are cut out of the text before the normalizer
// and the regex run, with HF's leftmost-longest rule: at the leftmost position where any
// token starts, the longest one wins.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ost::tok {

struct AddedMatch {
  size_t pos;
  size_t len;
  int32_t id;
};

class AddedTokenMatcher {
 public:
  void add(std::string content, int32_t id);
  bool empty() const { return count_ == 0; }
  // Appends the non-overlapping matches in `text`, left to right.
  void find_all(std::string_view text, std::vector<AddedMatch>& out) const;

 private:
  struct Entry {
    std::string content;
    int32_t id;
  };
  // Tokens grouped by first byte, longest first, so most bytes of a text cost one lookup.
  std::array<std::vector<Entry>, 256> by_first_byte_;
  size_t count_ = 0;
};

}  // namespace ost::tok
