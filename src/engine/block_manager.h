// Paged KV accounting: a fixed pool of fixed-size blocks with reference counts and a prefix
// cache keyed by chained hashes of full blocks of token keys (a token key is its id, or for an
// image token a hash of the image's content and the token's place in it).
//
// Threading: owned by the engine thread; no locking. Block ids index the KV pool that a paged
// runner would address through a sequence's block table.
#pragma once
#include <cstddef>
#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace ost {

// Chained hash of the full blocks of `keys`: h[i] = H(h[i-1], keys of block i). Never 0.
std::vector<uint64_t> block_hashes(const std::vector<uint64_t>& keys, int block_size, size_t first_block = 0,
                                   uint64_t prev = 0);

// What a sequence holds in the pool.
struct BlockTable {
  std::vector<int> blocks;        // block ids, in token order
  std::vector<uint64_t> hashes;   // hashes of the full blocks registered so far (<= blocks.size())
};

class BlockManager {
 public:
  BlockManager(int num_blocks, int block_size);

  int block_size() const { return block_size_; }
  int num_blocks() const { return int(blocks_.size()); }
  int num_free() const { return int(free_.size()); }  // includes cached blocks nobody holds
  int num_used() const { return num_blocks() - num_free(); }
  int num_cached() const { return int(by_hash_.size()); }
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // Takes the longest run of cached blocks matching the leading full blocks of `keys`, at most
  // `max_blocks` of them, into an empty `table`. Returns the number of blocks taken.
  int acquire_prefix(BlockTable& table, const std::vector<uint64_t>& keys, int max_blocks);

  // Grows `table` to hold `tokens` tokens. All or nothing: false (and no change) when the
  // free pool is too small.
  bool grow(BlockTable& table, int64_t tokens);

  // Registers the full blocks among the first `computed` tokens (whose KV is now written) in
  // the prefix cache, so later sequences can share them.
  void commit(BlockTable& table, const std::vector<uint64_t>& keys, int64_t computed);

  // Drops the table's references; blocks nobody holds return to the free pool but keep their
  // hash (reusable until evicted, least recently freed first).
  void release(BlockTable& table);

  int ref_count(int block) const { return blocks_[size_t(block)].refs; }
  // Whether tokens [from, to) of `table` may be written: each block holding one of them is held
  // by this table alone and is not in the prefix cache (shared and cached blocks are read-only).
  bool writable(const BlockTable& table, int64_t from, int64_t to) const;
  // Internal consistency (tests): free list, ref counts and hash map agree.
  bool check_invariants(const std::vector<const BlockTable*>& live) const;

 private:
  struct Block {
    int refs = 0;
    uint64_t hash = 0;  // 0: not in the prefix cache
    std::vector<uint64_t> keys;  // the block's token keys when hashed (guards hash collisions)
    std::list<int>::iterator free_pos;
    bool is_free = true;
  };
  int take_free();
  void take_specific(int b);

  int block_size_;
  std::vector<Block> blocks_;
  std::list<int> free_;  // front: next to be reused (and evicted from the cache)
  std::unordered_map<uint64_t, int> by_hash_;
};

}  // namespace ost
