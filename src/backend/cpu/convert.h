// Weight dtype -> fp32 conversion for the CPU ops: 8 values at a time with AVX2/F16C, and a
// scalar tail. bf16 -> f32 is exact (a 16-bit shift); f16 -> f32 is exact (F16C).
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "backend/cpu/simd.h"
#include "backend/ops.h"
#include "core/bf16.h"
#include "quant/quant.h"

namespace ost::ops::cpu {

template <WType T>
struct Conv;

template <>
struct Conv<WType::BF16> {
  using elem = uint16_t;
  static __m256 load8(const elem* p) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static float load1(const elem* p) { return bf16_to_f32(*p); }
};

template <>
struct Conv<WType::F16> {
  using elem = uint16_t;
  static __m256 load8(const elem* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static float load1(const elem* p) { return f16_to_f32(*p); }
};

template <>
struct Conv<WType::F32> {
  using elem = float;
  static __m256 load8(const elem* p) { return _mm256_loadu_ps(p); }
  static float load1(const elem* p) { return *p; }
};

// out[0, count) = fp32 of src[0, count).
template <WType T>
inline void convert_f32(const typename Conv<T>::elem* src, int64_t count, float* out) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(out + i, Conv<T>::load8(src + i));
  for (; i < count; ++i) out[i] = Conv<T>::load1(src + i);
}

// Calls f.template operator()<T>() with the WType of w as a compile-time constant.
template <class F>
inline void dispatch(WType t, F&& f) {
  switch (t) {
    case WType::BF16:
      f.template operator()<WType::BF16>();
      break;
    case WType::F16:
      f.template operator()<WType::F16>();
      break;
    case WType::F32:
      f.template operator()<WType::F32>();
      break;
    default:  // quantized types take their own paths (quant_view)
      break;
  }
}

// The quant module's view of a quantized weight.
inline quant::QView quant_view(const WeightView& w) {
  const quant::Format f = w.dtype == WType::INT8  ? quant::Format::INT8
                          : w.dtype == WType::FP8 ? quant::Format::FP8
                          : w.dtype == WType::INT4 ? quant::Format::INT4
                                                   : quant::Format::None;
  return {f, w.data, w.scale, w.zero, w.rows, w.cols, int(w.group)};
}

}  // namespace ost::ops::cpu
