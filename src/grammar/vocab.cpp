#include "grammar/vocab.h"

#include <algorithm>
#include <cmath>

namespace ost::grammar {

namespace {

constexpr int kUtf8States = 8;

void set_bit(uint64_t* mask, int32_t id) { mask[size_t(id) >> 6] |= uint64_t(1) << (id & 63); }

int popcount(const std::vector<uint64_t>& mask) {
  int n = 0;
  for (uint64_t w : mask) n += __builtin_popcountll(w);
  return n;
}

bool plain_byte(uint8_t c) { return c >= 0x20 && c != '"' && c != '\\'; }

// Characters a plain token adds to a string entered in UTF-8 state `state`, or -1 when its bytes
// are not valid UTF-8 from there (a character left open at the end is fine).
int plain_chars(const std::string& bytes, int state) {
  int chars = 0;
  for (char ch : bytes) {
    const uint8_t c = uint8_t(ch);
    if (state == 0 && c < 0x80) {
      ++chars;
      continue;
    }
    if (state == 0) ++chars;
    state = utf8_step(state, c);
    if (state < 0) return -1;
  }
  return chars;
}

}  // namespace

VocabIndex::VocabIndex(const std::vector<std::string>& bytes, std::vector<int32_t> end_ids,
                       std::vector<std::pair<int32_t, std::string>> tags)
    : vocab_(int(bytes.size())), bytes_(bytes), end_ids_(std::move(end_ids)), tags_(std::move(tags)) {
  std::vector<std::pair<std::string, int32_t>> all, special;
  plain_.assign(kUtf8States, std::vector<uint64_t>(mask_words(), 0));
  std::vector<std::vector<std::pair<int, int32_t>>> by_chars(kUtf8States);
  for (int32_t id = 0; id < vocab_; ++id) {
    const std::string& b = bytes_[size_t(id)];
    if (b.empty() || is_end(id)) continue;
    all.emplace_back(b, id);
    if (!std::all_of(b.begin(), b.end(), [](char c) { return plain_byte(uint8_t(c)); })) {
      special.emplace_back(b, id);
      continue;
    }
    for (int u = 0; u < kUtf8States; ++u) {
      const int chars = plain_chars(b, u);
      if (chars < 0) continue;
      set_bit(plain_[size_t(u)].data(), id);
      by_chars[size_t(u)].emplace_back(chars, id);
      max_plain_chars_ = std::max(max_plain_chars_, uint32_t(chars));
    }
  }
  plain_by_chars_.resize(kUtf8States);
  plain_upto_.resize(kUtf8States);
  for (int u = 0; u < kUtf8States; ++u) {
    auto& v = by_chars[size_t(u)];
    std::sort(v.begin(), v.end());
    auto& upto = plain_upto_[size_t(u)];
    upto.assign(max_plain_chars_ + 1, 0);
    for (const auto& [chars, id] : v) {
      plain_by_chars_[size_t(u)].push_back(id);
      for (uint32_t k = uint32_t(chars); k <= max_plain_chars_; ++k) upto[k]++;
    }
  }
  all_ = build(std::move(all));
  special_ = build(std::move(special));
}

bool VocabIndex::is_end(int32_t id) const { return std::find(end_ids_.begin(), end_ids_.end(), id) != end_ids_.end(); }

const std::string* VocabIndex::tag(int32_t id) const {
  for (const auto& [t, text] : tags_)
    if (t == id) return &text;
  return nullptr;
}

void VocabIndex::add_tags(Matcher& m, uint64_t* mask) const {
  if (m.state().top.node != kNoNode) return;  // inside the value
  for (const auto& [id, text] : tags_) {
    if (id < 0 || id >= vocab_ || text.empty()) continue;
    MatchState x = m.state();
    const size_t mark = m.arena_size();
    bool ok = true;
    for (char c : text)
      if (!(ok = m.step(x, uint8_t(c)))) break;
    m.truncate(mark);
    if (ok) set_bit(mask, id);
  }
}

VocabIndex::Trie VocabIndex::build(std::vector<std::pair<std::string, int32_t>> tokens) {
  std::sort(tokens.begin(), tokens.end());
  Trie t;
  t.nodes.emplace_back();
  build_node(t, tokens, 0, tokens.size(), 0, 0);
  return t;
}

// Node `node` holds tokens[a, b), which share their first `depth` bytes (sorted).
uint32_t VocabIndex::build_node(Trie& t, const std::vector<std::pair<std::string, int32_t>>& tokens, size_t a,
                                size_t b, size_t depth, uint32_t node) {
  t.nodes[node].tokens_begin = uint32_t(t.ids.size());
  while (a < b && tokens[a].first.size() == depth) t.ids.push_back(tokens[a++].second);
  t.nodes[node].tokens_end = uint32_t(t.ids.size());
  std::vector<std::pair<size_t, size_t>> groups;  // [begin, end) per next byte
  for (size_t i = a; i < b;) {
    size_t j = i;
    while (j < b && tokens[j].first[depth] == tokens[i].first[depth]) ++j;
    groups.emplace_back(i, j);
    i = j;
  }
  const uint32_t first = uint32_t(t.nodes.size());
  t.nodes[node].first_child = first;
  t.nodes[node].n_children = uint32_t(groups.size());
  t.nodes.resize(t.nodes.size() + groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    t.nodes[first + g].byte = uint8_t(tokens[groups[g].first].first[depth]);
    build_node(t, tokens, groups[g].first, groups[g].second, depth + 1, uint32_t(first + g));
  }
  return node;
}

void VocabIndex::walk(const Trie& t, uint32_t node, const MatchState& s, Matcher& m, uint64_t* mask) const {
  const TrieNode& nd = t.nodes[node];
  for (uint32_t c = nd.first_child; c < nd.first_child + nd.n_children; ++c) {
    const TrieNode& ch = t.nodes[c];
    MatchState x = s;
    const size_t mark = m.arena_size();
    if (m.step(x, ch.byte)) {
      for (uint32_t k = ch.tokens_begin; k < ch.tokens_end; ++k) set_bit(mask, t.ids[k]);
      if (ch.n_children) walk(t, c, x, m, mask);
    }
    m.truncate(mark);
  }
}

int VocabIndex::fill_mask(Matcher& m, std::vector<uint64_t>& mask) const {
  mask.assign(mask_words(), 0);
  if (m.can_end())
    for (int32_t id : end_ids_)
      if (id >= 0 && id < vocab_) set_bit(mask.data(), id);
  if (m.done()) return popcount(mask);
  int utf8 = 0;
  uint32_t room = 0;
  if (m.string_body(m.state(), utf8, room)) {
    if (room >= max_plain_chars_) {
      const std::vector<uint64_t>& p = plain_[size_t(utf8)];
      for (size_t w = 0; w < mask.size(); ++w) mask[w] |= p[w];
    } else {
      const std::vector<int32_t>& ids = plain_by_chars_[size_t(utf8)];
      for (uint32_t k = 0; k < plain_upto_[size_t(utf8)][room]; ++k) set_bit(mask.data(), ids[k]);
    }
    walk(special_, 0, m.state(), m, mask.data());
  } else {
    walk(all_, 0, m.state(), m, mask.data());
  }
  add_tags(m, mask.data());
  return popcount(mask);
}

int VocabIndex::fill_mask_brute(Matcher& m, std::vector<uint64_t>& mask) const {
  mask.assign(mask_words(), 0);
  for (int32_t id = 0; id < vocab_; ++id) {
    bool ok = false;
    if (is_end(id)) {
      ok = m.can_end();
    } else if (!bytes_[size_t(id)].empty()) {
      MatchState x = m.state();
      const size_t mark = m.arena_size();
      ok = true;
      for (char c : bytes_[size_t(id)])
        if (!(ok = m.step(x, uint8_t(c)))) break;
      m.truncate(mark);
    }
    if (ok) set_bit(mask.data(), id);
  }
  add_tags(m, mask.data());
  return popcount(mask);
}

bool VocabIndex::accept(Matcher& m, int32_t id) const {
  if (id < 0 || id >= vocab_) return false;
  if (is_end(id)) return m.can_end();
  if (const std::string* t = tag(id)) return m.state().top.node == kNoNode && m.accept(*t);
  const std::string& b = bytes_[size_t(id)];
  return !b.empty() && m.accept(b);
}

std::unique_ptr<VocabIndex> make_vocab_index(const Tokenizer& tok, int vocab, const std::vector<int>& eos) {
  std::vector<std::string> bytes(size_t(std::max(vocab, 0)));
  std::vector<std::pair<int32_t, std::string>> tags;  // <tool_call>, </tool_call>, ...: tag positions only
  for (int32_t id = 0; id < vocab && id < tok.vocab_size(); ++id) {
    if (!tok.is_added(id)) bytes[size_t(id)] = tok.token_bytes(id);
    else if (!tok.is_special(id) && !tok.token_bytes(id).empty()) tags.emplace_back(id, tok.token_bytes(id));
  }
  return std::make_unique<VocabIndex>(bytes, std::vector<int32_t>(eos.begin(), eos.end()), std::move(tags));
}

void apply_mask(const std::vector<uint64_t>& mask, float* logits, int vocab) {
  for (int i = 0; i < vocab; ++i)
    if (!((mask[size_t(i) >> 6] >> (i & 63)) & 1)) logits[i] = -INFINITY;
}

}  // namespace ost::grammar
