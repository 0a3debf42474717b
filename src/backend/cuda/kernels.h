// CUDA kernels of the Qwen3-VL forward, bf16 activations with fp32 arithmetic inside each
// kernel. Every launcher is `Status launch_<op>(const <Op>Params&, cudaStream_t)`; pointers are
// device pointers. Each op has a CPU counterpart in backend/ops.h it is tested against
// (tests/cuda/ops_test.cpp). Numerics follow the reference (spec §8): RMSNorm rounds to bf16
// before the weight multiply, text RoPE uses bf16 cos/sin with bf16 products, residual adds are
// bf16 adds.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/status.h"

namespace ost::cuda {

using bf16 = __nv_bfloat16;

// out[i, :] = table[ids[i], :]; table bf16 [vocab, d], out bf16 [n, d].
struct EmbeddingParams {
  const bf16* table = nullptr;
  const int32_t* ids = nullptr;
  bf16* out = nullptr;
  int64_t n = 0, d = 0;
};
Status launch_embedding(const EmbeddingParams& p, cudaStream_t s);

// dst[idx[r], :] = src[r, :] (add = false) or bf16(dst[idx[r], :] + src[r, :]) (add = true),
// for r < n. dst, src bf16 with row length d.
struct ScatterRowsParams {
  bf16* dst = nullptr;
  const bf16* src = nullptr;
  const int32_t* idx = nullptr;
  int64_t n = 0, d = 0;
  bool add = false;
};
Status launch_scatter_rows(const ScatterRowsParams& p, cudaStream_t s);

// Residual add + RMSNorm, one row per block:
//   if delta: x = bf16(x + delta)          (x is updated in place)
//   y = bf16(bf16(x · rsqrt(mean(x²) + eps)) · w)
// x, delta, y bf16 [n, d]; w bf16 [d]. d must be a multiple of 8.
// With q8 (d a multiple of 128), y is also quantized for an FP8 linear as launch_fp8_act_quant
// would quantize it (fp8_gemm.h): e4m3 codes q8 [n, d], the scale of (row m, block b of 128) at
// q8_scale[b · n + m]. Bit-identical to launch_add_rms_norm + launch_fp8_act_quant.
struct AddRmsNormParams {
  bf16* x = nullptr;
  const bf16* delta = nullptr;
  const bf16* w = nullptr;
  bf16* y = nullptr;
  int64_t n = 0;
  int d = 0;
  float eps = 1e-6f;
  uint8_t* q8 = nullptr;
  float* q8_scale = nullptr;
};
Status launch_add_rms_norm(const AddRmsNormParams& p, cudaStream_t s);

// LayerNorm (biased variance) in fp32, y = bf16((x - mean) · rstd · w + b). x, y bf16 [n, d];
// w, b bf16 [d]; y may be x. d must be a multiple of 8.
struct LayerNormParams {
  const bf16* x = nullptr;
  const bf16* w = nullptr;
  const bf16* b = nullptr;
  bf16* y = nullptr;
  int64_t n = 0;
  int d = 0;
  float eps = 1e-6f;
};
Status launch_layer_norm(const LayerNormParams& p, cudaStream_t s);

// Residual add + LayerNorm: x = bf16(x + delta) in place, then y = LayerNorm(x) as above
// (y must not alias x or delta).
struct AddLayerNormParams {
  bf16* x = nullptr;
  const bf16* delta = nullptr;
  const bf16* w = nullptr;
  const bf16* b = nullptr;
  bf16* y = nullptr;
  int64_t n = 0;
  int d = 0;
  float eps = 1e-6f;
};
Status launch_add_layer_norm(const AddLayerNormParams& p, cudaStream_t s);

// Text attention input: per head RMSNorm of q and k (weights [head_dim]), then interleaved
// M-RoPE on both, q to q_out, k and v into the paged cache at slot[i] (row slot·n_kv + head).
//   qkv: bf16 [n, (n_heads + 2·n_kv) · hd], the fused projection (q | k | v, head-major)
//   pos: int32 [3][n] (t, h, w) M-RoPE ids; inv_freq f32 [hd/2]; axis int32 [hd/2] (0, 1, 2)
//   q_out: bf16 [n, n_heads, hd]; k_cache, v_cache: bf16 [slots, n_kv, hd]
// With an fp8 cache (k_cache8 set; k_cache, v_cache unused) each k and v head is stored as
// e4m3 codes u8 [slots, n_kv, hd] and an f32 scale [slots, n_kv], quantized from the bf16 values
// the bf16 cache would hold exactly as quant::quantize_kv_fp8 does (kv_fp8.cuh).
struct QkNormRopeParams {
  const bf16* qkv = nullptr;
  const bf16* q_norm = nullptr;
  const bf16* k_norm = nullptr;
  const int32_t* pos = nullptr;
  const float* inv_freq = nullptr;
  const int32_t* axis = nullptr;
  const int32_t* slot = nullptr;
  bf16* q_out = nullptr;
  bf16* k_cache = nullptr;
  bf16* v_cache = nullptr;
  uint8_t* k_cache8 = nullptr;  // fp8 cache: codes and scales of k and v
  uint8_t* v_cache8 = nullptr;
  float* k_scale = nullptr;
  float* v_scale = nullptr;
  int64_t n = 0;
  int64_t pos_stride = 0;  // between the t, h, w rows of pos; 0 means n
  int n_heads = 0, n_kv = 0, head_dim = 0;
  float eps = 1e-6f;
};
Status launch_qk_norm_rope(const QkNormRopeParams& p, cudaStream_t s);

// y = bf16(bf16(silu(gate)) · up) with gate = gu[i, 0:inter], up = gu[i, inter:2·inter].
// gu bf16 [n, 2·inter], y bf16 [n, inter]. With q8 (inter a multiple of 128), y is quantized
// for an FP8 linear as in AddRmsNormParams (q8 [n, inter], q8_scale[b · n + m]); y may then be
// null.
struct SiluMulParams {
  const bf16* gu = nullptr;
  bf16* y = nullptr;
  int64_t n = 0, inter = 0;
  uint8_t* q8 = nullptr;
  float* q8_scale = nullptr;
};
Status launch_silu_mul(const SiluMulParams& p, cudaStream_t s);

// x = bf16(x + d) over n values.
Status launch_add(bf16* x, const bf16* d, int64_t n, cudaStream_t s);

// In place over n values, fp32 math: gelu with tanh (erf = false) or exact erf (erf = true).
Status launch_gelu(bf16* x, int64_t n, bool erf, cudaStream_t s);

// Vision 2-D rope in fp32 (rotate-half pairing), in place on n_heads heads of each row:
// x row r at x + r·row_stride; cos, sin f32 [n, hd/2].
struct RopeParams {
  bf16* x = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  int64_t n = 0, row_stride = 0;
  int n_heads = 0, head_dim = 0;
};
Status launch_rope(const RopeParams& p, cudaStream_t s);

// Attention with fp32 softmax, one query row per block, grouped-query (query head h reads kv
// head h / (n_heads / n_kv)). Two ways to address the keys of row i:
//   paged (block_table != nullptr): the sequence row_seq[i] with its block table
//     block_table[row_seq[i] · table_width + j / block_size]; keys 0 .. row_len[i]-1, rows of
//     k, v = [slots, n_kv, hd] (causal masking is expressed by row_len = cache index + 1);
//   dense: keys row_start[i] .. row_start[i] + row_len[i] - 1 at k + j·kv_stride (vision).
// q row i at q + i·q_stride, out row i at out + i·out_stride (n_heads × hd each).
struct AttentionParams {
  const bf16* q = nullptr;
  const bf16* k = nullptr;
  const bf16* v = nullptr;
  bf16* out = nullptr;
  int64_t n = 0;
  int n_heads = 0, n_kv = 0, head_dim = 0;
  int64_t q_stride = 0, kv_stride = 0, out_stride = 0;
  const int32_t* row_len = nullptr;
  const int32_t* row_start = nullptr;  // dense only
  const int32_t* row_seq = nullptr;    // paged only
  const int32_t* block_table = nullptr;
  int table_width = 0, block_size = 16;
  float scale = 1.0f;
};
Status launch_attention(const AttentionParams& p, cudaStream_t s);

// y f32 [n] = x bf16 [n].
Status launch_bf16_to_f32(const bf16* x, float* y, int64_t n, cudaStream_t s);

// out[r] = index of the largest of x[r, 0:d] (the first on ties), bf16 rows.
Status launch_argmax(const bf16* x, int64_t rows, int64_t d, int32_t* out, cudaStream_t s);

// As launch_argmax, plus logprob[r] = log_softmax(x[r])[out[r]] = -log Σ exp(x - max), fp32.
Status launch_argmax_logprob(const bf16* x, int64_t rows, int64_t d, int32_t* out, float* logprob,
                             cudaStream_t s);

// y bf16 [n] = x f32 [n] (round to nearest even).
Status launch_f32_to_bf16(const float* x, bf16* y, int64_t n, cudaStream_t s);

// Vision patch geometry, one int32 x4 per patch row: (row, col, grid_h, grid_w) in patches.
//
// Learned position embedding added to the patch embeddings: table bf16 [grid·grid, hidden] is
// resampled bilinearly (align_corners, fp32: src = i·(grid-1)/(n-1)) at each patch, rounded to
// bf16 and added: x = bf16(x + bf16(pe)). x bf16 [n, hidden], hidden a multiple of 8.
struct VisionPosEmbedParams {
  bf16* x = nullptr;
  const bf16* table = nullptr;
  const int32_t* patch = nullptr;
  int64_t n = 0;
  int hidden = 0, grid = 0;
};
Status launch_vision_pos_embed(const VisionPosEmbedParams& p, cudaStream_t s);

// Patch rows cut from one RGB8 image (as preprocess_image, cast to bf16): row r is the patch at
// (patch[4r], patch[4r+1]) (row, col in patches) of rgb [height, width, 3]; its column
// c·T·P·P + t·P·P + py·P + px (every t the same frame) = bf16(lut[c·256 + byte]).
// out bf16 [n, 3·T·P·P].
struct VisionPatchifyParams {
  const uint8_t* rgb = nullptr;
  int width = 0;
  const int32_t* patch = nullptr;
  int64_t n = 0;
  const float* lut = nullptr;  // f32 [3][256]
  int patch_size = 16, temporal = 2;
  bf16* out = nullptr;
};
Status launch_vision_patchify(const VisionPatchifyParams& p, cudaStream_t s);

// 2-D rope tables of the vision tower: cos, sin f32 [n, 2·quarter]; slot k < quarter is driven
// by the patch row, slot quarter + k by its column: angle = float(pos) · inv_freq[k] in fp32,
// cos/sin in fp64 then rounded to fp32 (as the host code).
Status launch_vision_rope_tables(const int32_t* patch, const float* inv_freq, int64_t n, int quarter,
                                 float* cos, float* sin, cudaStream_t s);

}  // namespace ost::cuda
