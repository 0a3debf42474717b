// Device helpers of the FP8 KV cache (--kv-cache-dtype fp8), shared by the KV write kernel
// (kernels.cu) and the attention kernels that read the cache (attention.cu). One (token, kv
// head) vector of head_dim values has codes e4m3(x · (1/s)) and s = amax(|x|) / 448 (1 when all
// are zero), bit for bit the rule of quant::quantize_kv_fp8 on the host: IEEE division,
// reciprocal and product (__fdiv_rn, __frcp_rn, __fmul_rn), then the round-to-nearest-even,
// saturating conversion.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace ost::cuda {

__device__ __forceinline__ float kv_fp8_scale(float amax) {
  return amax > 0.0f ? __fdiv_rn(amax, 448.0f) : 1.0f;
}

__device__ __forceinline__ uint8_t kv_fp8_code(float x, float inv_scale) {
  return uint8_t(__nv_cvt_float_to_fp8(__fmul_rn(x, inv_scale), __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ float warp_max_f32(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Two e4m3 codes (the low 16 bits of `two`, first code in the low byte) as exact floats.
__device__ __forceinline__ float2 e4m3x2_to_float2(uint32_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two & 0xffffu), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

// Eight codes (8 bytes, first in the lowest byte) -> f[0..7], exact.
__device__ __forceinline__ void e4m3x8_to_f32(const uint2& u, float* f) {
  const float2 a = e4m3x2_to_float2(u.x), b = e4m3x2_to_float2(u.x >> 16);
  const float2 c = e4m3x2_to_float2(u.y), d = e4m3x2_to_float2(u.y >> 16);
  f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y, f[4] = c.x, f[5] = c.y, f[6] = d.x, f[7] = d.y;
}

// Eight codes dequantized (code · scale in fp32) and rounded to bf16, packed as 16 bytes.
__device__ __forceinline__ uint4 e4m3x8_to_bf16x8(const uint2& u, float scale) {
  float f[8];
  e4m3x8_to_f32(u, f);
  uint4 r;
  uint32_t* w = reinterpret_cast<uint32_t*>(&r);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    __nv_bfloat162 v = __floats2bfloat162_rn(f[2 * k] * scale, f[2 * k + 1] * scale);
    w[k] = *reinterpret_cast<uint32_t*>(&v);
  }
  return r;
}

}  // namespace ost::cuda
