// Quantized embedding gather (embed_gather.h). The products are spelled __fmul_rn (this file is
// built with --use_fast_math): one correctly rounded f32 product per value, as on the CPU.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/embed_gather.h"
#include "backend/cuda/pdl.h"

namespace ost::cuda {
namespace {

using bf16 = __nv_bfloat16;
using quant::Format;
using quant::QView;

constexpr int kThreads = 128;

// The INT4 group scale of (row r, group g): its one read, so the stored scale type can change here.
__device__ __forceinline__ float int4_scale(const QView& t, int64_t r, int64_t g) {
  return t.scale[r * (t.cols / t.group) + g];
}

__device__ __forceinline__ float fp8_to_f32(uint32_t code) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(code & 0xffu), __NV_E4M3);
  return __half2float(__half(h));
}

// The scale of value (r, c): INT8 per row, FP8 per group×group block, INT4 per group of a row.
template <Format F>
__device__ __forceinline__ float scale_of(const QView& t, int64_t r, int64_t c) {
  if constexpr (F == Format::INT8) return t.scale[r];
  if constexpr (F == Format::FP8)
    return t.scale[(r / t.group) * ((t.cols + t.group - 1) / t.group) + c / t.group];
  return int4_scale(t, r, c / t.group);
}

// Value (r, c), dequantized as quant::dequant_segment does.
template <Format F>
__device__ __forceinline__ float dequant1(const QView& t, int64_t r, int64_t c) {
  const float s = scale_of<F>(t, r, c);
  if constexpr (F == Format::INT8)
    return __fmul_rn(float(static_cast<const int8_t*>(t.data)[r * t.cols + c]), s);
  if constexpr (F == Format::FP8)
    return __fmul_rn(fp8_to_f32(static_cast<const uint8_t*>(t.data)[r * t.cols + c]), s);
  const uint8_t b = static_cast<const uint8_t*>(t.data)[r * (t.cols / 2) + c / 2];
  const int v = (c & 1) ? (b >> 4) : (b & 15);
  return __fmul_rn(float(v - int(t.zero[r * (t.cols / t.group) + c / t.group])), s);
}

// Values (r, c .. c+7), c % 8 == 0, all in one scale group (cols % 8 == 0, groups multiples of 8).
template <Format F>
__device__ __forceinline__ void dequant8(const QView& t, int64_t r, int64_t c, float* f) {
  const float s = scale_of<F>(t, r, c);
  if constexpr (F == Format::INT4) {
    const uint32_t w =
        *reinterpret_cast<const uint32_t*>(static_cast<const uint8_t*>(t.data) + r * (t.cols / 2) + c / 2);
    const int z = t.zero[r * (t.cols / t.group) + c / t.group];
#pragma unroll
    for (int j = 0; j < 8; ++j)
      f[j] = __fmul_rn(float(int((w >> (4 * j)) & 15u) - z), s);  // low nibble first
  } else {
    const uint2 q = *reinterpret_cast<const uint2*>(static_cast<const uint8_t*>(t.data) + r * t.cols + c);
    const uint32_t ws[2] = {q.x, q.y};
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint32_t b = (ws[j / 4] >> (8 * (j % 4))) & 0xffu;
      f[j] = __fmul_rn(F == Format::INT8 ? float(int8_t(b)) : fp8_to_f32(b), s);
    }
  }
}

template <Format F, bool kVec>
__global__ void embed_gather_kernel(EmbedGatherParams p) {
  pdl_trigger();
  pdl_wait();  // the ids come from the step's staging copy
  const QView t = p.table;
  const int64_t r = p.ids[blockIdx.x];
  bf16* dst = p.out + int64_t(blockIdx.x) * t.cols;
  if constexpr (kVec) {
    for (int64_t c = int64_t(threadIdx.x) * 8; c < t.cols; c += int64_t(blockDim.x) * 8) {
      float f[8];
      dequant8<F>(t, r, c, f);
      uint4 o;
      uint32_t* ow = &o.x;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
        ow[k] = *reinterpret_cast<const uint32_t*>(&h);
      }
      *reinterpret_cast<uint4*>(dst + c) = o;
    }
  } else {
    for (int64_t c = threadIdx.x; c < t.cols; c += blockDim.x)
      dst[c] = __float2bfloat16_rn(dequant1<F>(t, r, c));
  }
}

template <Format F>
Status launch_format(const EmbedGatherParams& p, bool vec, cudaStream_t s) {
  const dim3 grid(unsigned(p.n)), block(kThreads);
  if (vec)
    OST_CUDA_RET(launch_pdl(embed_gather_kernel<F, true>, grid, block, 0, s, p));
  else
    OST_CUDA_RET(launch_pdl(embed_gather_kernel<F, false>, grid, block, 0, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

}  // namespace

Status launch_embed_gather(const EmbedGatherParams& p, cudaStream_t s) {
  const QView& t = p.table;
  if (!t.data || !t.scale || t.cols <= 0 || t.rows <= 0) return make_error("embed_gather: empty table");
  if (t.format != Format::INT8 && t.group <= 0)
    return make_error("embed_gather: %s table without a group size", quant::format_name(t.format));
  if (t.format == Format::INT4 && (t.cols % t.group != 0 || t.group % 2 != 0 || !t.zero))
    return make_error("embed_gather: int4 table of %lld columns in groups of %d", (long long)t.cols, t.group);
  if (p.n == 0) return Status::ok();
  if (p.n > 0x7fffffff) return make_error("embed_gather: %lld rows", (long long)p.n);
  // 8 values per step: aligned loads and stores, one scale group per step.
  const bool vec = t.cols % 8 == 0 && (t.format == Format::INT8 || t.group % 8 == 0);
  switch (t.format) {
    case Format::INT8:
      return launch_format<Format::INT8>(p, vec, s);
    case Format::FP8:
      return launch_format<Format::FP8>(p, vec, s);
    case Format::INT4:
      return launch_format<Format::INT4>(p, vec, s);
    case Format::None:
      break;
  }
  return make_error("embed_gather: the table is not quantized (bf16 tables take launch_embedding)");
}

}  // namespace ost::cuda
