// Attention kernels, one per launch shape:
//   - flash attention on the tensor cores (mma.sync m16n8k16, bf16 operands, fp32 accumulation,
//     online softmax) for many query rows: the vision tower (dense, non-causal, one segment per
//     image frame) and text prefill (one sequence, causal, over the paged KV cache);
//   - split-K decode attention (flash-decoding) for one query row per sequence: several blocks
//     per (sequence, kv head) over chunks of the keys, all query heads of a GQA group in one
//     block; the last block of each (sequence, kv head) merges the chunks.
// The generic launch_attention of kernels.h (SIMT, one block per row and kv head) stays as the
// fallback for head sizes these do not cover. CPU counterpart: ops::attention.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/status.h"

namespace ost::cuda {

using bf16 = __nv_bfloat16;

// Two ways to address the keys:
//   dense  (block_table == nullptr): segment s holds rows cu_seqlens[s] .. cu_seqlens[s+1]-1 of
//          q, k and v; each query row attends to every row of its segment (no mask). Row r of
//          k is at k + r·kv_stride (+ kv head · head_dim), likewise q, v and out.
//   paged  (block_table != nullptr): query rows 0 .. n-1 of one sequence sit at cache indices
//          past .. past+n-1; row i attends to cache indices 0 .. past+i (causal). Cache index j
//          is slot block_table[j / block_size]·block_size + j % block_size of
//          k, v = bf16 [slots, n_kv, head_dim].
// Query head h reads kv head h / (n_heads / n_kv). head_dim must be a multiple of 8 and at
// most 128; q, k, v rows 16-byte aligned.
struct FlashAttentionParams {
  const bf16* q = nullptr;
  const bf16* k = nullptr;
  const bf16* v = nullptr;
  bf16* out = nullptr;
  int n_heads = 0, n_kv = 0, head_dim = 0;
  int64_t q_stride = 0, kv_stride = 0, out_stride = 0;
  // dense
  const int32_t* cu_seqlens = nullptr;       // device, n_segments + 1 entries
  const int32_t* cu_seqlens_host = nullptr;  // the same on the host (sizes the grid)
  int n_segments = 0;
  // paged
  const int32_t* block_table = nullptr;
  int block_size = 16;
  int64_t n = 0, past = 0;
  float scale = 1.0f;
  // paged fp8 cache (k8 set; k and v unused): e4m3 codes u8 [slots, n_kv, head_dim] and f32
  // scales [slots, n_kv]; each key and value is read as bf16(code · scale) before the mma.
  const uint8_t* k8 = nullptr;
  const uint8_t* v8 = nullptr;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
};
bool flash_attention_supports(int head_dim);
Status launch_flash_attention(const FlashAttentionParams& p, cudaStream_t s);

// One query row per sequence: row i (q row i, out row i) belongs to sequence row_seq[i] with
// block table block_table[row_seq[i]·table_width ..] and attends to its keys 0 .. row_len[i]-1.
// Each (row, kv head) is split into at most `splits` chunks (chunk size derived on the device
// from row_len, so a captured graph stays valid as the sequences grow); partial results go to
// `partial` (f32, decode_attention_partial_floats of them) and the last block of each
// (row, kv head) merges them, counting finished chunks in `counters` (int32 [n·n_kv], zero
// before the first launch; the merging block resets its count).
struct DecodeAttentionParams {
  const bf16* q = nullptr;
  const bf16* k = nullptr;
  const bf16* v = nullptr;
  bf16* out = nullptr;
  int64_t n = 0;
  int n_heads = 0, n_kv = 0, head_dim = 0;
  int64_t q_stride = 0, out_stride = 0;
  const int32_t* row_len = nullptr;
  const int32_t* row_seq = nullptr;
  const int32_t* block_table = nullptr;
  int table_width = 0, block_size = 16;
  float scale = 1.0f;
  float* partial = nullptr;
  int* counters = nullptr;
  int splits = 1;
  // fp8 cache (k8 set; k and v unused), as FlashAttentionParams: q·k = (q·code)·k_scale and
  // each value adds p·v_scale·code, in fp32. Not with the fused input below.
  const uint8_t* k8 = nullptr;
  const uint8_t* v8 = nullptr;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  // Fused input (qkv != nullptr; q is then unused): q and the new token's k and v come raw from
  // the fused projection, as launch_qk_norm_rope takes them (qkv bf16 [n, (n_heads + 2·n_kv)·hd],
  // pos [3][pos_stride], inv_freq, axis, the q/k RMSNorm weights). Each block normalises and
  // ropes its q heads; the block whose chunk holds the last key (cache index row_len-1) makes
  // that key and value itself and stores them at cache slot slot[i], so no other kernel runs
  // between the projection and attention.
  const bf16* qkv = nullptr;
  const bf16* q_norm = nullptr;
  const bf16* k_norm = nullptr;
  const int32_t* pos = nullptr;
  int64_t pos_stride = 0;
  const float* inv_freq = nullptr;
  const int32_t* axis = nullptr;
  const int32_t* slot = nullptr;
  bf16* k_store = nullptr;  // the caches k and v, written at slot[i]
  bf16* v_store = nullptr;
  float eps = 1e-6f;
};
constexpr int kMaxDecodeSplits = 32;
bool decode_attention_supports(int head_dim, int group);
// Chunks per (row, kv head) for a step of `rows` sequences: enough blocks for about two waves.
int decode_attention_splits(int64_t rows, int n_kv, int sm_count);
size_t decode_attention_partial_floats(int64_t rows, int n_heads, int head_dim, int splits);
Status launch_decode_attention(const DecodeAttentionParams& p, cudaStream_t s);

}  // namespace ost::cuda
