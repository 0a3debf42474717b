// Weight quantization formats: what a quantized linear layer looks like in a checkpoint and in
// memory. Only 2-D matrices are ever quantized: linear weights [rows = out, cols = in] and the
// token embedding table [vocab, hidden] (a row is an "output channel": INT8 scales per token,
// INT4 groups along hidden, FP8 128×128 blocks); the tensor `<name>.weight` changes dtype and
// companion tensors carry the scales.
//
//   INT8 (W8A16, symmetric, per output channel)
//     <name>.weight        I8  [rows, cols]            q = round(w / s), |q| <= 127
//     <name>.weight_scale  F32 [rows]                  w ≈ q · s,  s = max|w[r, :]| / 127
//
//   FP8 (e4m3fn, 128×128 block scales: the layout of Qwen's published FP8 checkpoints,
//        config.json quantization_config {quant_method: "fp8", weight_block_size: [128, 128]})
//     <name>.weight            F8_E4M3 [rows, cols]
//     <name>.weight_scale_inv  F32 (or BF16) [ceil(rows/B), ceil(cols/B)]
//                              w ≈ fp8 · scale_inv[r / B][c / B]; scale_inv = amax(block) / 448
//
//   INT4 (asymmetric, groups of G consecutive inputs of one output row, AWQ-style scale + zero
//        point; stored row-major [out, in] rather than AWQ's [in, out/8] int32 interleave, so a
//        GEMV reads each output row contiguously)
//     <name>.weight        U8  [rows, cols/2]   byte j of row r holds inputs 2j (low nibble)
//                                                and 2j+1 (high nibble), values 0..15
//     <name>.weight_scale  F16 [rows, cols/G]   w ≈ (q - z) · s  (IEEE half, AWQ's dtype)
//     <name>.weight_zero   U8  [rows, cols/G]   z in 0..15
//     The group range always includes 0 (min <= 0 <= max), so a zero weight is exact. The
//     quantizer rounds s = (max - min) / 15 to f16 first (quant::int4_scale: nearest, within
//     [2^-24, 65504]) and derives z and q from the rounded value, so (q - z) · s in f32 is exact
//     and every backend computes the same weights. Checkpoints written before the f16 scales
//     (F32 or BF16 weight_scale) still load: their scales go through the same rounding. In
//     memory the CPU keeps f32 copies of the f16 values (QView::scale); the GPU keeps f16.
//     Per group: G/2 bytes of nibbles + 2 (scale) + 1 (zero), 67 bytes for G = 128.
//
// config.json carries the format: {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size":
// [128, 128]} for FP8, {"quant_method": "ostrakon", "weight_format": "int8" | "int4",
// "group_size": G} for the integer formats. Which linears are quantized is read off the
// tensors' dtypes; "modules_to_not_convert" lists the others for people, not for the loader.
#pragma once
#include <cstdint>
#include <string>

#include "core/status.h"

namespace ost::quant {

enum class Format : uint8_t { None, INT8, FP8, INT4 };

const char* format_name(Format f);           // "none", "int8", "fp8", "int4"
Result<Format> parse_format(const std::string& s);

// Which matrices `ostrakon quantize` and --quant convert (quant::selected). By default the text
// decoder's q/k/v/o and gate/up/down and the token embedding table.
struct SelectOptions {
  bool lm_head = false;    // lm_head.weight (with tied embeddings: the shared table)
  bool vision = false;     // vision blocks' and mergers' linears
  bool embeddings = true;  // model.language_model.embed_tokens.weight, when not tied to the lm_head
  std::string skip;      // ECMAScript regex: matching names stay as they are
};

// How a runner stores its KV cache (--kv-cache-dtype): bf16 (f32 in the CPU oracle), or fp8:
// e4m3fn codes with one f32 scale per (token, kv head) vector of head_dim values
// (quant::quantize_kv_fp8), about half the bytes of bf16.
enum class KvDType : uint8_t { BF16, FP8 };
const char* kv_dtype_name(KvDType d);  // "bf16", "fp8"
Result<KvDType> parse_kv_dtype(const std::string& s);

struct QuantConfig {
  Format format = Format::None;
  int group_size = 128;  // INT4: inputs per group; FP8: block side
  SelectOptions select;  // only when quantizing (at load or in `ostrakon quantize`)
  KvDType kv_cache = KvDType::BF16;  // the runner's KV cache (not part of a checkpoint)
};

// A quantized matrix in memory (views; the owner keeps the buffers alive).
struct QView {
  Format format = Format::None;
  const void* data = nullptr;      // INT8 int8 [rows, cols]; FP8 e4m3 [rows, cols]; INT4 u8 [rows, cols/2]
  const float* scale = nullptr;    // see the table above (INT4: f32 copies of the f16 scales)
  const uint8_t* zero = nullptr;   // INT4 only
  int64_t rows = 0, cols = 0;
  int group = 0;                   // INT4 group size / FP8 block side
};

// Number of scale columns per row block (FP8) or per row (INT4); 1 for INT8.
int64_t scale_cols(Format f, int64_t cols, int group);
// Rows of scales: ceil(rows / group) for FP8, rows otherwise.
int64_t scale_rows(Format f, int64_t rows, int group);

// Bytes of the quantized weight tensor itself (without scales).
int64_t weight_bytes(Format f, int64_t rows, int64_t cols);

// Checks that a [rows, cols] matrix can be stored in format f with this group. Errors name the
// tensor.
Status check_shape(Format f, const std::string& name, int64_t rows, int64_t cols, int group);

}  // namespace ost::quant
