#include "tokenizer/bpe.h"

#include <algorithm>
#include <mutex>

namespace ost::tok {

namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}

uint64_t hash_key(uint64_t k) {
  k ^= k >> 31;
  k *= 0x9E3779B97F4A7C15ull;
  return k ^ (k >> 29);
}

// Words longer than this are rare and unlikely to repeat, so they are not worth caching.
constexpr size_t kMaxCachedWordBytes = 256;
// Bounded so that a long-running server's memory stays flat; cleared when full.
constexpr size_t kMaxCacheEntries = 1 << 16;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace

struct BpeModel::Cache {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
};

Result<BpeModel> BpeModel::create(const std::unordered_map<std::string, int32_t>& vocab,
                                  const std::vector<std::pair<std::string, std::string>>& merges,
                                  bool ignore_merges) {
  BpeModel m;
  for (int b = 0; b < 256; ++b) {
    auto it = vocab.find(std::string(1, char(b)));
    if (it == vocab.end()) return make_error("tokenizer vocab lacks the token for byte 0x%02X", b);
    m.byte_ids_[size_t(b)] = it->second;
  }
  size_t cap = 16;
  while (cap < merges.size() * 2) cap <<= 1;
  m.merges_.assign(cap, MergeSlot{kEmptyKey, 0, 0});
  m.mask_ = cap - 1;
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = vocab.find(a), ib = vocab.find(b);
    joined.assign(a).append(b);
    auto ij = vocab.find(joined);
    if (ia == vocab.end() || ib == vocab.end() || ij == vocab.end()) {
      return make_error("tokenizer merge #%zu refers to a token missing from the vocab", rank);
    }
    // Later duplicates overwrite earlier ones, as HF's HashMap collect does.
    m.insert_merge(ia->second, ib->second, int32_t(rank), ij->second);
  }
  m.ignore_merges_ = ignore_merges;
  if (ignore_merges) m.whole_words_ = vocab;
  m.cache_ = std::make_shared<Cache>();
  return m;
}

void BpeModel::insert_merge(int32_t left, int32_t right, int32_t rank, int32_t new_id) {
  const uint64_t key = pair_key(left, right);
  for (uint64_t h = hash_key(key) & mask_;; h = (h + 1) & mask_) {
    MergeSlot& s = merges_[h];
    if (s.key == kEmptyKey || s.key == key) {
      s = MergeSlot{key, rank, new_id};
      return;
    }
  }
}

const BpeModel::MergeSlot* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  for (uint64_t h = hash_key(key) & mask_;; h = (h + 1) & mask_) {
    const MergeSlot& s = merges_[h];
    if (s.key == key) return &s;
    if (s.key == kEmptyKey) return nullptr;
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;  // -1 at the start
    int32_t next;  // -1 at the end
    bool alive;    // false once merged into its left neighbour
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;  // index of the left symbol
    int32_t new_id;
  };
  // Min-heap on (rank, pos): lowest rank first, leftmost on ties (HF's Merge ordering).
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  // Scratch buffers reused across calls on the same thread to avoid allocations per word.
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  const int32_t n = int32_t(word.size());
  symbols.resize(size_t(n));
  heap.clear();
  for (int32_t i = 0; i < n; ++i) {
    symbols[size_t(i)] = Symbol{byte_ids_[static_cast<unsigned char>(word[size_t(i)])], i - 1,
                                i + 1 < n ? i + 1 : -1, true};
  }
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const MergeSlot* m = find_merge(symbols[size_t(i)].id, symbols[size_t(i) + 1].id)) {
      heap.push_back(Candidate{m->rank, i, m->new_id});
    }
  }
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[size_t(top.pos)];
    if (!left.alive || left.next < 0) continue;
    const Symbol right = symbols[size_t(left.next)];
    // A stale entry: one of the two symbols changed since it was queued. HF compares the
    // resulting id, so this does too.
    const MergeSlot* m = find_merge(left.id, right.id);
    if (!m || m->new_id != top.new_id) continue;
    symbols[size_t(left.next)].alive = false;
    left.id = top.new_id;
    left.next = right.next;
    if (right.next >= 0) symbols[size_t(right.next)].prev = top.pos;
    if (left.prev >= 0) {
      if (const MergeSlot* pm = find_merge(symbols[size_t(left.prev)].id, left.id)) {
        heap.push_back(Candidate{pm->rank, left.prev, pm->new_id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
    if (left.next >= 0) {
      if (const MergeSlot* nm = find_merge(left.id, symbols[size_t(left.next)].id)) {
        heap.push_back(Candidate{nm->rank, top.pos, nm->new_id});
        std::push_heap(heap.begin(), heap.end(), later);
      }
    }
  }
  for (int32_t i = 0; i >= 0 && i < n; i = symbols[size_t(i)].next) out.push_back(symbols[size_t(i)].id);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (word.size() == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (ignore_merges_) {
    auto it = whole_words_.find(std::string(word));
    if (it != whole_words_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = cache_ && word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    auto it = cache_->words.find(word);
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->words.size() >= kMaxCacheEntries) cache_->words.clear();
    cache_->words.emplace(std::string(word), std::vector<int32_t>(out.begin() + long(start), out.end()));
  }
}

}  // namespace ost::tok
