#include "engine/block_manager.h"

#include <algorithm>
#include <set>

#include "core/status.h"

namespace ost {

namespace {

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 31);
}

}  // namespace

std::vector<uint64_t> block_hashes(const std::vector<uint64_t>& keys, int block_size, size_t first_block,
                                   uint64_t prev) {
  std::vector<uint64_t> out;
  const size_t full = keys.size() / size_t(block_size);
  for (size_t b = first_block; b < full; ++b) {
    uint64_t h = mix(prev, 0x51ED270B27A3C0DEull);
    for (size_t i = b * size_t(block_size); i < (b + 1) * size_t(block_size); ++i) h = mix(h, keys[i]);
    if (h == 0) h = 1;
    out.push_back(h);
    prev = h;
  }
  return out;
}

BlockManager::BlockManager(int num_blocks, int block_size) : block_size_(block_size), blocks_(size_t(num_blocks)) {
  OST_CHECK(num_blocks > 0 && block_size > 0);
  for (int i = 0; i < num_blocks; ++i) blocks_[size_t(i)].free_pos = free_.insert(free_.end(), i);
}

int BlockManager::take_free() {
  int b = free_.front();
  free_.pop_front();
  Block& blk = blocks_[size_t(b)];
  if (blk.hash) {  // evict its cached contents
    auto it = by_hash_.find(blk.hash);
    if (it != by_hash_.end() && it->second == b) by_hash_.erase(it);
    blk.hash = 0;
    blk.keys.clear();
  }
  blk.is_free = false;
  blk.refs = 1;
  return b;
}

void BlockManager::take_specific(int b) {
  Block& blk = blocks_[size_t(b)];
  if (blk.is_free) {
    free_.erase(blk.free_pos);
    blk.is_free = false;
  }
  blk.refs += 1;
}

int BlockManager::acquire_prefix(BlockTable& table, const std::vector<uint64_t>& keys, int max_blocks) {
  OST_CHECK(table.blocks.empty());
  auto hashes = block_hashes(keys, block_size_);
  int taken = 0;
  for (size_t i = 0; i < hashes.size() && taken < max_blocks; ++i) {
    auto it = by_hash_.find(hashes[i]);
    if (it == by_hash_.end()) break;
    const Block& blk = blocks_[size_t(it->second)];
    if (!std::equal(blk.keys.begin(), blk.keys.end(), keys.begin() + int64_t(i) * block_size_)) break;
    take_specific(it->second);
    table.blocks.push_back(it->second);
    table.hashes.push_back(hashes[i]);
    ++taken;
  }
  return taken;
}

bool BlockManager::grow(BlockTable& table, int64_t tokens) {
  const int64_t need = blocks_for(tokens) - int64_t(table.blocks.size());
  if (need <= 0) return true;
  if (need > int64_t(free_.size())) return false;
  for (int64_t i = 0; i < need; ++i) table.blocks.push_back(take_free());
  return true;
}

void BlockManager::commit(BlockTable& table, const std::vector<uint64_t>& keys, int64_t computed) {
  const size_t full = size_t(std::min<int64_t>(computed, int64_t(keys.size())) / block_size_);
  if (full <= table.hashes.size()) return;
  const uint64_t prev = table.hashes.empty() ? 0 : table.hashes.back();
  auto fresh = block_hashes(std::vector<uint64_t>(keys.begin(), keys.begin() + int64_t(full) * block_size_),
                            block_size_, table.hashes.size(), prev);
  for (uint64_t h : fresh) {
    const size_t i = table.hashes.size();
    OST_CHECK(i < table.blocks.size());
    Block& blk = blocks_[size_t(table.blocks[i])];
    table.hashes.push_back(h);
    // A block with the same contents already cached (written by another sequence at the same
    // time) keeps its place; this one stays private and unhashed.
    if (by_hash_.count(h) || blk.hash) continue;
    blk.hash = h;
    blk.keys.assign(keys.begin() + int64_t(i) * block_size_, keys.begin() + int64_t(i + 1) * block_size_);
    by_hash_[h] = table.blocks[i];
  }
}

void BlockManager::release(BlockTable& table) {
  // Last block first: its tail is freed first so it is evicted before the shared prefix.
  for (auto it = table.blocks.rbegin(); it != table.blocks.rend(); ++it) {
    Block& blk = blocks_[size_t(*it)];
    OST_CHECK(blk.refs > 0);
    if (--blk.refs == 0) {
      blk.is_free = true;
      blk.free_pos = free_.insert(free_.end(), *it);
    }
  }
  table.blocks.clear();
  table.hashes.clear();
}

bool BlockManager::writable(const BlockTable& table, int64_t from, int64_t to) const {
  if (from >= to) return true;
  if (from < 0 || blocks_for(to) > int64_t(table.blocks.size())) return false;
  for (int64_t i = from / block_size_; i < blocks_for(to); ++i) {
    const Block& blk = blocks_[size_t(table.blocks[size_t(i)])];
    if (blk.refs != 1 || blk.hash != 0) return false;
  }
  return true;
}

bool BlockManager::check_invariants(const std::vector<const BlockTable*>& live) const {
  std::vector<int> refs(blocks_.size(), 0);
  for (const BlockTable* t : live) {
    std::set<int> seen;
    for (int b : t->blocks) {
      if (b < 0 || b >= num_blocks() || !seen.insert(b).second) return false;
      refs[size_t(b)]++;
    }
  }
  size_t n_free = 0;
  for (size_t b = 0; b < blocks_.size(); ++b) {
    if (blocks_[b].refs != refs[b]) return false;
    if (blocks_[b].is_free != (refs[b] == 0)) return false;
    n_free += blocks_[b].is_free;
  }
  if (n_free != free_.size()) return false;
  for (auto& [h, b] : by_hash_)
    if (blocks_[size_t(b)].hash != h) return false;
  return true;
}

}  // namespace ost
