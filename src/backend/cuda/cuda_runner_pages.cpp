// The CUDA runner's sequences and KV pages: its own pool (new_sequence takes every page a
// sequence may need, the destructor gives them back) or, with engine pages, the serving loop's
// BlockManager ids (new_paged_sequence, set_block_table); and the staging of each step's rows
// and block tables for the device.
#include <algorithm>

#include "backend/cuda/cuda_runner_impl.h"

namespace ost::cuda {

CudaSequence::~CudaSequence() {
  if (runner && !paged) runner->release_blocks(blocks);
}

Result<std::unique_ptr<SequenceState>> CudaRunner::new_sequence(int64_t capacity) {
  if (capacity <= 0) return make_error("new_sequence: capacity must be positive");
  const int64_t nb = (capacity + kBlock - 1) / kBlock;
  if (nb > table_width_)
    return make_error("new_sequence: %lld tokens exceed the per-sequence limit of %lld",
                      (long long)capacity, (long long)(int64_t(table_width_) * kBlock));
  if (nb > int64_t(free_blocks_.size()))
    return make_error("new_sequence: the KV cache has %zu free blocks of %d tokens, %lld needed",
                      free_blocks_.size(), kBlock, (long long)nb);
  auto s = std::make_unique<CudaSequence>();
  s->runner = this;
  s->id = next_seq_id_++;
  s->capacity = nb * kBlock;
  for (int64_t i = 0; i < nb; ++i) {
    s->blocks.push_back(free_blocks_.back());
    own_block_[size_t(free_blocks_.back())] = 1;
    free_blocks_.pop_back();
  }
  return std::unique_ptr<SequenceState>(std::move(s));
}

// Engine pages: the sequence takes no block of the pool's free list; the engine's BlockManager
// hands out the ids (at most kv_pool_tokens() / kBlock of them, so every id is a block here).
Result<std::unique_ptr<SequenceState>> CudaRunner::new_paged_sequence(int64_t cached) {
  if (cached < 0 || cached % kBlock != 0)
    return make_error("new_paged_sequence: %lld cached tokens is not a multiple of the block size %d",
                      (long long)cached, kBlock);
  auto s = std::make_unique<CudaSequence>();
  s->runner = this;
  s->id = next_seq_id_++;
  s->paged = true;
  s->len = cached;  // capacity 0 until the table comes: nothing runs before it
  return std::unique_ptr<SequenceState>(std::move(s));
}

Status CudaRunner::set_block_table(SequenceState& st, const std::vector<int>& blocks) {
  auto& s = static_cast<CudaSequence&>(st);
  if (s.runner != this || !s.paged) return make_error("set_block_table: not a paged sequence of this runner");
  if (int64_t(blocks.size()) > table_width_)
    return make_error("set_block_table: %zu blocks exceed the per-sequence limit of %d", blocks.size(), table_width_);
  if (blocks.size() < s.blocks.size() || !std::equal(s.blocks.begin(), s.blocks.end(), blocks.begin()))
    return make_error("set_block_table: a sequence's block table may only grow");
  for (int b : blocks) {
    if (b < 0 || b >= num_blocks_)
      return make_error("set_block_table: block %d is outside the pool of %lld blocks", b, (long long)num_blocks_);
    if (own_block_[size_t(b)]) return make_error("set_block_table: block %d is held by a sequence of the runner's own", b);
  }
  if (int64_t(blocks.size()) * kBlock < s.len)
    return make_error("set_block_table: %zu blocks for %lld cached tokens", blocks.size(), (long long)s.len);
  if (blocks.size() == s.blocks.size()) return Status::ok();
  s.blocks.assign(blocks.begin(), blocks.end());
  s.capacity = int64_t(blocks.size()) * kBlock;
  s.id = next_seq_id_++;  // its staged table rows are stale
  return Status::ok();
}

void CudaRunner::release_blocks(const std::vector<int32_t>& blocks) {
  for (int32_t b : blocks) own_block_[size_t(b)] = 0;
  free_blocks_.insert(free_blocks_.end(), blocks.begin(), blocks.end());
}

int32_t* CudaRunner::field(int32_t* base, StepField f) const { return base + size_t(f) * kMaxRows; }

int32_t CudaRunner::slot_of(const CudaSequence& s, int64_t i) const {
  return s.blocks[size_t(i / kBlock)] * kBlock + int32_t(i % kBlock);
}

// A staging row is copied to the device only when a different sequence, or the same one with
// a grown table (set_block_table renews the id), takes it. Decode graphs read the rows from the
// same device buffer at run time, so they stay valid when a table changes.
void CudaRunner::stage_table(int seq, const CudaSequence& s) {
  if (staged_owner_[size_t(seq)] == s.id) return;
  staged_owner_[size_t(seq)] = s.id;
  int32_t* t = staging_host_ + size_t(kMaxRows) * kStepFields + size_t(seq) * table_width_;
  std::copy(s.blocks.begin(), s.blocks.end(), t);
  dirty_tables_.push_back({seq, int(s.blocks.size())});
}

Status CudaRunner::upload_staging(int n_seqs) {
  const size_t fields = size_t(kMaxRows) * kStepFields;
  OST_CUDA_RET(cudaMemcpyAsync(staging_dev_, staging_host_, fields * 4, cudaMemcpyHostToDevice, stream_));
  for (auto [row, len] : dirty_tables_) {
    const size_t off = fields + size_t(row) * table_width_;
    OST_CUDA_RET(cudaMemcpyAsync(staging_dev_ + off, staging_host_ + off, size_t(len) * 4,
                                 cudaMemcpyHostToDevice, stream_));
  }
  dirty_tables_.clear();
  return Status::ok();
}

}  // namespace ost::cuda
