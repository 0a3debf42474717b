// Building blocks of the tensor-core kernels (sm_80 instructions): 16-byte cp.async into shared
// memory, mma.sync m16n8k16 (bf16 in, fp32 sums), and int8 weights made exact floats and bf16
// pairs. Include from .cu files only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ost::cuda {

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  const unsigned s = unsigned(__cvta_generic_to_shared(smem));
  const int n = pred ? 16 : 0;  // 0: nothing is read, the 16 bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// d += a·b: a 16×16 (row), b 16×8 (col), bf16 in, f32 accumulators.
__device__ __forceinline__ void mma_k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The 4 int8 of a word as exact floats without I2F: bytes biased to unsigned (^0x80) are placed
// in the mantissa of 2^23, and 2^23 + 128 is subtracted.
__device__ __forceinline__ void i8x4_to_f32(uint32_t w, float* f) {
  const uint32_t u = w ^ 0x80808080u;
  f[0] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7440)) - 8388736.0f;
  f[1] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7441)) - 8388736.0f;
  f[2] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7442)) - 8388736.0f;
  f[3] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7443)) - 8388736.0f;
}

// The 4 int8 of a word as exact bf16 pairs (bytes 0, 1 and 2, 3), 4 instructions a pair: the low
// 7 bits of each byte in the mantissa of 128.0 give 128 + (b & 127), from which one packed
// subtraction takes 128, or 256 where the sign bit is set.
__device__ __forceinline__ void i8x4_to_bf16x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t p[2] = {__byte_perm(w, 0u, 0x4140), __byte_perm(w, 0u, 0x4342)};  // bytes to the 16-bit lanes
  uint32_t r[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const uint32_t m = (p[i] & 0x007F007Fu) | 0x43004300u, sub = (p[i] & 0x00800080u) | 0x43004300u;
    const __nv_bfloat162 d =
        __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&m), *reinterpret_cast<const __nv_bfloat162*>(&sub));
    r[i] = *reinterpret_cast<const uint32_t*>(&d);
  }
  lo = r[0];
  hi = r[1];
}

__device__ __forceinline__ uint32_t bf16x2_of(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

}  // namespace ost::cuda
