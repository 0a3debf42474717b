// The op set the model graph is written in: plain functions over fp32 activations and weight
// views. The CPU implementation (backend/cpu/) is the reference every other backend is tested
// against: all arithmetic is fp32, weights stay in their checkpoint dtype and are converted on
// the fly. Activations are dense row-major unless a stride says otherwise. Outputs may alias
// inputs only where stated.
#pragma once
#include <cstdint>

namespace ost::ops {

enum class WType : uint8_t { BF16, F16, F32, INT8, FP8, INT4 };

inline bool is_quantized(WType t) { return t == WType::INT8 || t == WType::FP8 || t == WType::INT4; }

// A row-major weight matrix [rows, cols] in its checkpoint dtype (memory-mapped, never copied).
// Quantized types (layouts in quant/format.h) carry their scales:
//   INT8: data int8 [rows, cols], scale f32 [rows]
//   FP8:  data e4m3 [rows, cols], scale f32 [ceil(rows/group), ceil(cols/group)]
//   INT4: data u8 [rows, cols/2] (low nibble first), scale f32 + zero u8 [rows, cols/group]
struct WeightView {
  WType dtype = WType::F32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  const float* scale = nullptr;
  const uint8_t* zero = nullptr;
  int32_t group = 0;
};

// out[cols] = row r of w as fp32.
void weight_row_f32(const WeightView& w, int64_t r, float* out);

// Embedding gather: out[i, :] = table[ids[i], :] (fp32 [n, table.cols]). A quantized table
// (INT8 / FP8 / INT4) gives each dequantized value rounded to bf16 (round to nearest even): it
// stands for the bf16 table of those values, which is what the CUDA gather writes. Ids must be
// in range (the caller checks; this op does not).
void embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out);

// y[n, w.rows] = x[n, w.cols] · Wᵀ (+ bias[w.rows] if not null). fp32 accumulation.
// Dense x and y; y must not alias x.
void matmul(const float* x, int64_t n, const WeightView& w, const float* bias, float* y);

// RMSNorm over the last dim: y = x / sqrt(mean(x²) + eps) * w. x, y [n, d]; w [d]. y may be x.
void rms_norm(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y);

// LayerNorm over the last dim (biased variance): y = (x - mean) / sqrt(var + eps) * w + b.
// y may be x.
void layer_norm(const float* x, int64_t n, int64_t d, const float* w, const float* b, float eps, float* y);

// In place, elementwise over n values.
void gelu_tanh(float* x, int64_t n);  // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
void gelu_erf(float* x, int64_t n);   // 0.5·x·(1 + erf(x/√2))

// y = silu(gate) · up = gate / (1 + exp(-gate)) · up, over n values. y may alias gate or up.
void silu_mul(const float* gate, const float* up, int64_t n, float* y);

// y = a + b over n values. y may alias a or b.
void add(const float* a, const float* b, int64_t n, float* y);

// Rotary embedding, rotate-half pairing (dim d with d + head_dim/2), in place:
//   x'[d]      = x[d]·cos[d] - x[d+h]·sin[d]
//   x'[d + h]  = x[d+h]·cos[d] + x[d]·sin[d]          (h = head_dim/2, d < h)
// x: n_rows tokens, row r starts at x + r·row_stride and holds n_heads heads of head_dim.
// cos, sin: f32 [n_rows, head_dim/2], the angle of frequency slot d for that token. Text M-RoPE
// and the vision 2-D rope differ only in how the model builds these tables.
void rope(float* x, int64_t n_rows, int n_heads, int head_dim, int64_t row_stride, const float* cos,
          const float* sin);

// Scaled dot-product attention, softmax in fp32, grouped-query (query head h reads kv head
// h / (n_heads / n_kv_heads)).
//   q:   n_q rows, row i at q + i·q_stride, n_heads × head_dim
//   k,v: n_kv rows, row j at k + j·kv_stride, n_kv_heads × head_dim
//   out: n_q rows, row i at out + i·out_stride, n_heads × head_dim (must not alias q, k, v)
// causal: query i sees keys j <= q_pos0 + i (q_pos0 = number of cached keys before the queries).
struct AttentionParams {
  int64_t n_q = 0;
  int64_t n_kv = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int64_t q_stride = 0;
  int64_t kv_stride = 0;
  int64_t out_stride = 0;
  bool causal = false;
  int64_t q_pos0 = 0;
  float scale = 1.0f;
};
void attention(const AttentionParams& p, const float* q, const float* k, const float* v, float* out);

// Row-wise softmax / log-softmax over [n, d]. y may be x.
void softmax(const float* x, int64_t n, int64_t d, float* y);
void log_softmax(const float* x, int64_t n, int64_t d, float* y);

// Index of the largest of n values (the first one on ties).
int64_t argmax(const float* x, int64_t n);

}  // namespace ost::ops
