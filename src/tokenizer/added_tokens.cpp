#include "tokenizer/added_tokens.h"

#include <algorithm>

namespace ost::tok {

void AddedTokenMatcher::add(std::string content, int32_t id) {
  if (content.empty()) return;  // an empty token can never be matched in HF either
  auto& bucket = by_first_byte_[static_cast<unsigned char>(content[0])];
  for (auto& e : bucket) {
    if (e.content == content) {  // the same text twice: the later entry wins
      e.id = id;
      return;
    }
  }
  bucket.push_back(Entry{std::move(content), id});
  std::stable_sort(bucket.begin(), bucket.end(),
                   [](const Entry& a, const Entry& b) { return a.content.size() > b.content.size(); });
  ++count_;
}

void AddedTokenMatcher::find_all(std::string_view text, std::vector<AddedMatch>& out) const {
  if (count_ == 0) return;
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const auto& bucket = by_first_byte_[static_cast<unsigned char>(text[i])];
    bool hit = false;
    for (const auto& e : bucket) {
      if (text.compare(i, e.content.size(), e.content) == 0) {
        out.push_back(AddedMatch{i, e.content.size(), e.id});
        i += e.content.size();
        hit = true;
        break;
      }
    }
    if (!hit) ++i;
  }
}

}  // namespace ost::tok
