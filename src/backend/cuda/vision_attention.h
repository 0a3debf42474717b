// Flash attention for the vision tower: dense, non-causal, one segment per frame (the dense
// addressing of FlashAttentionParams: cu_seqlens, no block table), head sizes 64 and 72 (wider heads
// need more registers than a thread has with two m tiles and stay on attention.cu).
//
// Each warp owns 32 query rows (two m16 tiles), so every K and V fragment read from shared
// memory feeds two mma.sync instead of one: half the shared-memory traffic per multiply of the
// 16-row warps of attention.cu. A head size that is 8 more than a multiple of 16 (72) takes its
// last Q·Kᵀ step as m16n8k8 and its last P·V column tile through ldmatrix.x2, so no multiply
// works on padding; the row stride of 9 16-byte units keeps ldmatrix free of bank conflicts.
// The softmax scale is folded into the exp2 argument (one FFMA per score).
//
// launch_flash_attention routes dense launches here by default; OST_VISION_ATTN=fa2 keeps the
// 16-row kernel of attention.cu (A/B runs).
#pragma once
#include "backend/cuda/attention.h"

namespace ost::cuda {

bool vision_attention_supports(int head_dim);
// warps: 2 (64 query rows per block) or 4 (128); 0: OST_VISION_ATTN_WARPS if set, else 4.
Status launch_vision_attention(const FlashAttentionParams& p, cudaStream_t s, int warps = 0);

}  // namespace ost::cuda
