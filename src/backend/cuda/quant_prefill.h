// Quantized linears for many rows of x (prefill, mixed steps; the decode kernels of quant_gemm.h
// and int4_gemm.h take up to 32 rows): y[n, out] = x[n, in] · Wᵀ (+ bias), the weights read as
// stored and made bf16 in registers, never widened in memory. bf16 x, fp32 sums, bf16 output
// rounded once.
//   INT8 (W8A16): int8 [out, in] + one f32 scale per output channel; the bytes become exact bf16
//     values q, the channel scale multiplies the fp32 sum (Σ q·x · s: the CPU op's value up to the
//     order of the fp32 sums).
//   INT4 (W4A16, quant/format.h): u8 [out, in/2] nibbles (low nibble the even input), f16 scales
//     and u8 zero points [out, in/G]; each weight becomes bf16((q − z) · s), the value
//     launch_dequant_int4 writes.
// Tensor-core GEMM: a block of 4 warps owns 128 or 64 rows of x × 128 or 64 output channels and
// walks the inputs 64 at a time; x and the weight tile go through a 3-stage cp.async pipeline in
// shared memory; each warp computes 16 to 64 rows × 64 channels with mma.sync m16n8k16.
// Needs in % 64 == 0 (INT4: group % 64 == 0) and 16-byte aligned x and w; other shapes get an
// error (the caller then widens the matrix and runs the bf16 GEMM).
//
// run_*_prefill take the widening path the caller passes in unless OST_QUANT_GEMM says otherwise:
// `auto` picks the fastest of this kernel (each tile size) and widening, timed once per (n
// rounded up to a power of two, out, in) on the call's own operands; `mma` forces the kernel
// (still timing the tile sizes). The kernel has not yet run on a GPU, hence the opt-in.
// OST_QUANT_GEMM_LOG=1 prints each timing.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>

#include "core/status.h"

namespace ost::cuda {

struct W8A16GemmParams {
  const __nv_bfloat16* x = nullptr;     // bf16 [n, in], 16-byte aligned
  const int8_t* w = nullptr;            // int8 [out, in], 16-byte aligned
  const float* scale = nullptr;         // f32 [out]
  const __nv_bfloat16* bias = nullptr;  // bf16 [out] or null
  __nv_bfloat16* y = nullptr;           // bf16 [n, out]
  int64_t n = 0, out = 0, in = 0;
  // The block's tile: rows of x (64 or 128; 0: 64 up to 64 rows, else 128) × output channels
  // (64 or 128; 0: 128).
  int tile_rows = 0, tile_cols = 0;
};
Status launch_w8a16_gemm(const W8A16GemmParams& p, cudaStream_t s);

struct W4A16GemmParams {
  const __nv_bfloat16* x = nullptr;     // bf16 [n, in], 16-byte aligned
  const uint8_t* w = nullptr;           // u8 [out, in/2], 16-byte aligned
  const __half* scale = nullptr;        // f16 [out, in/G]
  const uint8_t* zero = nullptr;        // u8 [out, in/G]
  const __nv_bfloat16* bias = nullptr;  // bf16 [out] or null
  __nv_bfloat16* y = nullptr;           // bf16 [n, out]
  int64_t n = 0, out = 0, in = 0;
  int group = 128;
  int tile_rows = 0, tile_cols = 0;     // as W8A16GemmParams
};
Status launch_w4a16_gemm(const W4A16GemmParams& p, cudaStream_t s);

// Which path run_*_prefill take: kQuantGemmAuto (OST_QUANT_GEMM: widen unless `auto` or `mma`), kQuantGemmWiden,
// kQuantGemmMma (the kernel above wherever it applies, the tile sizes timed).
enum QuantGemmMode : int { kQuantGemmAuto = 0, kQuantGemmWiden = 1, kQuantGemmMma = 2 };
// Makes later calls take `m` (kQuantGemmAuto: the timed choice); quant_gemm_unforce gives the
// choice back to the env switch. For tests.
void quant_gemm_force(QuantGemmMode m);
void quant_gemm_unforce();

// y = x · Wᵀ by the kernel above or by `widen` (dequantize + bf16 GEMM into p.y).
Status run_w8a16_prefill(const W8A16GemmParams& p, const std::function<Status()>& widen, cudaStream_t s);
Status run_w4a16_prefill(const W4A16GemmParams& p, const std::function<Status()>& widen, cudaStream_t s);

}  // namespace ost::cuda
