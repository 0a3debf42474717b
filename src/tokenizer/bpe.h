// BPE model over byte-level symbols. Merges are applied lowest rank first (leftmost on ties),
// exactly as HF's Word::merge_all, using a heap over a linked list of symbols so long words
// cost O(n log n) rather than O(n^2) rescans.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/status.h"

namespace ost::tok {

class BpeModel {
 public:
  BpeModel() = default;

  // vocab: raw token bytes (already mapped back from the byte-level alphabet) -> id.
  // merges: pairs of raw token bytes, in rank order (index = rank).
  static Result<BpeModel> create(const std::unordered_map<std::string, int32_t>& vocab,
                                 const std::vector<std::pair<std::string, std::string>>& merges,
                                 bool ignore_merges);

  // Appends the ids of one pre-tokenized piece (raw bytes). Repeated pieces hit a cache.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  // The merge loop alone, without the cache (exposed for tests).
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

 private:
  struct MergeSlot {
    uint64_t key;  // (left id << 32) | right id; kEmptyKey for a free slot
    int32_t rank;
    int32_t new_id;
  };
  static constexpr uint64_t kEmptyKey = ~0ull;

  const MergeSlot* find_merge(int32_t left, int32_t right) const;
  void insert_merge(int32_t left, int32_t right, int32_t rank, int32_t new_id);

  std::array<int32_t, 256> byte_ids_{};  // id of each single-byte token
  std::vector<MergeSlot> merges_;        // open addressing, power-of-two size
  uint64_t mask_ = 0;
  bool ignore_merges_ = false;
  std::unordered_map<std::string, int32_t> whole_words_;  // only used with ignore_merges

  struct Cache;
  std::shared_ptr<Cache> cache_;
};

}  // namespace ost::tok
