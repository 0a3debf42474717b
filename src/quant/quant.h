// Packers (f32 -> quantized) and the reference dequantization every backend is checked against.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "quant/format.h"

namespace ost::quant {

// e4m3fn (OCP FP8: bias 7, no infinities, max 448, NaN = 0x7f/0xff).
float fp8_e4m3_to_f32(uint8_t b);
uint8_t f32_to_fp8_e4m3(float x);  // round to nearest even, saturating at ±448

// An INT4 group scale as stored: s rounded to the nearest f16, kept within f16's positive finite
// range [2^-24, 65504] (format.h). Scales of older checkpoints (f32) go through it at load.
float int4_scale(float s);

// A quantized matrix that owns its buffers.
struct QuantizedMatrix {
  Format format = Format::None;
  int64_t rows = 0, cols = 0;
  int group = 0;
  std::vector<uint8_t> data;   // weight_bytes(format, rows, cols)
  std::vector<float> scale;    // scale_rows × scale_cols (INT4: the f16 values, see format.h)
  std::vector<uint8_t> zero;   // INT4: rows × cols/group
  QView view() const { return {format, data.data(), scale.data(), zero.empty() ? nullptr : zero.data(), rows, cols, group}; }
};

// Quantizes rows [r0, r0 + n) of a matrix (src: f32 [n, cols], those rows) into m, which must
// already be sized (resize_for). For FP8, r0 must be a multiple of the block and n a whole
// block (or the last, shorter one). Rows are independent otherwise.
void quantize_rows(QuantizedMatrix& m, int64_t r0, int64_t n, const float* src);
void resize_for(QuantizedMatrix& m, Format f, int64_t rows, int64_t cols, int group);

// Whole matrix from f32 [rows, cols] (for tests and small tensors).
Result<QuantizedMatrix> quantize(Format f, const float* w, int64_t rows, int64_t cols, int group);

// out[0, n) = dequantized W[r, k0 .. k0 + n).
void dequant_segment(const QView& w, int64_t r, int64_t k0, int64_t n, float* out);

// FP8 activations (the A of W8A8, how Qwen's FP8 checkpoints are run): each row of x [n, cols]
// is cut into blocks of `group` consecutive inputs (the last may be shorter); each block gets
// s = amax(|block|) / 448 (1 when the block is all zero) and q = e4m3(x · (1/s)), the same rule as
// the weight blocks. scale: f32 [n, ceil(cols / group)], row-major.
void quantize_act_fp8(const float* x, int64_t n, int64_t cols, int group, uint8_t* q, float* scale);
// x <- dequant(quantize_act_fp8(x)) in place: what an FP8 linear's input becomes.
void fake_quant_act_fp8(float* x, int64_t n, int64_t cols, int group);

// FP8 KV cache (--kv-cache-dtype fp8): each of the n vectors of hd values (one token's key or
// value of one kv head, after q/k-norm and rope for keys) gets s = amax(|x|) / 448 (1 when all
// are zero) and codes e4m3(x · (1/s)), saturating: quantize_act_fp8 with one group per vector,
// the rule the CUDA KV write kernel follows bit for bit. q u8 [n, hd], scale f32 [n].
void quantize_kv_fp8(const float* x, int64_t n, int hd, uint8_t* q, float* scale);
// out f32 [n, hd] = e4m3(q[i, c]) · scale[i] (fp32 product): what attention reads.
void dequantize_kv_fp8(const uint8_t* q, const float* scale, int64_t n, int hd, float* out);

// Whether the selection converts the matrix `name`, a tensor name ending in ".weight" that the
// checkpoint table marks quantizable. With tied_embeddings the embedding table is also the
// lm_head and follows opt.lm_head (a bf16 lm_head keeps a bf16 table).
Result<bool> selected(const std::string& name, const SelectOptions& opt, bool tied_embeddings = false);

}  // namespace ost::quant
