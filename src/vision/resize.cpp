// Antialiased bicubic resize of RGB8 images, bit-exact with the reference kernels.
//
// Both kernels share Pillow's filter windows (ImagingResampleInner / PyTorch's port of it in
// ATen UpSampleKernel): for output index i, scale = in/out, filterscale = max(scale, 1),
// support = 2 * filterscale, center = scale * (i + 0.5),
// xmin = max(int(center - support + 0.5), 0), xmax = min(int(center + support + 0.5), in),
// weight_j = cubic((j + xmin - center + 0.5) / filterscale) normalised to sum 1 (in double).
// They differ only in how the weights become integers:
//   torch:  int16, precision p = the largest p < 22 with int(0.5 + wmax * 2^(p+1)) < 2^15,
//           wmax the largest normalised weight of the whole axis;
//   Pillow: int32 with 22 fractional bits.
// Output = clamp((2^(p-1) + sum src * w) >> p, 0, 255); horizontal pass first, into a uint8
// intermediate, then vertical. An axis whose size does not change is not resampled.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "vision/preprocess.h"

namespace ost {
namespace {

// The weights must not depend on the build's -mfma / -ffp-contract: compute them with plain
// IEEE double operations, as the reference does.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

// ATen aa_filter for bicubic: cubic_convolution1/2 with A = -0.5.
double cubic_torch(double x) {
  const double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
  return 0.0;
}

// Pillow Resample.c bicubic_filter.
double cubic_pillow(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Integer filter of one axis.
struct AxisFilter {
  int taps = 0;                  // stride of `weights` per output index
  int precision = 0;             // fractional bits of the weights
  std::vector<int32_t> start;    // [out] first input index of the window
  std::vector<int32_t> count;    // [out] window length (<= taps)
  std::vector<int32_t> weights;  // [out * taps], zero-padded
};

AxisFilter make_filter(int in_size, int out_size, BicubicKernel kernel) {
  AxisFilter f;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale >= 1.0 ? scale : 1.0;
  const double support = 2.0 * filterscale;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  f.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  f.start.resize(out_size);
  f.count.resize(out_size);
  std::vector<double> w(static_cast<size_t>(out_size) * f.taps, 0.0);
  double wmax = 0.0;
  for (int i = 0; i < out_size; ++i) {
    const double center = scale * (i + 0.5);
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t xmax =
        std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    const int64_t xsize = std::clamp<int64_t>(xmax - xmin, 0, f.taps);
    double* wi = &w[static_cast<size_t>(i) * f.taps];
    double total = 0.0;
    for (int64_t j = 0; j < xsize; ++j) {
      const double x = (static_cast<double>(j + xmin) - center + 0.5) * invscale;
      wi[j] = kernel == BicubicKernel::kTorchInt16 ? cubic_torch(x) : cubic_pillow(x);
      total += wi[j];
    }
    if (total != 0.0) {
      for (int64_t j = 0; j < xsize; ++j) {
        wi[j] /= total;
        wmax = std::max(wmax, wi[j]);
      }
    }
    f.start[i] = static_cast<int32_t>(xmin);
    f.count[i] = static_cast<int32_t>(xsize);
  }
  if (kernel == BicubicKernel::kTorchInt16) {
    int p = 0;
    for (; p < 22; ++p) {
      if (static_cast<int>(0.5 + wmax * (1 << (p + 1))) >= (1 << 15)) break;
    }
    f.precision = p;
  } else {
    f.precision = 22;  // Pillow PRECISION_BITS = 32 - 8 - 2
  }
  const double one = static_cast<double>(1 << f.precision);
  f.weights.resize(w.size());
  for (size_t k = 0; k < w.size(); ++k) {
    const double v = w[k] * one;
    f.weights[k] = v < 0 ? static_cast<int32_t>(-0.5 + v) : static_cast<int32_t>(0.5 + v);
  }
  return f;
}

#pragma GCC pop_options

inline uint8_t clip8(int32_t acc, int precision) {
  const int32_t v = acc >> precision;  // arithmetic shift: floor, as the reference
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// 8 int32 lanes: one AVX2 register (the build enables AVX2), else plain arrays.
#ifdef __AVX2__
using v8i = __m256i;
inline v8i splat8(int32_t x) { return _mm256_set1_epi32(x); }
inline v8i load8(const uint8_t* p) {  // 8 bytes, zero-extended
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline v8i madd8(v8i acc, v8i px, int32_t w) {
  return _mm256_add_epi32(acc, _mm256_mullo_epi32(px, _mm256_set1_epi32(w)));
}
inline void store8(uint8_t* p, v8i acc, int precision) {
  const __m256i v = _mm256_sra_epi32(acc, _mm_cvtsi32_si128(precision));
  const __m256i w16 = _mm256_packs_epi32(v, v);        // saturating, lanes 0-3 | 4-7 per half
  const __m256i b8 = _mm256_packus_epi16(w16, w16);    // clamp to 0..255
  const uint32_t lo = static_cast<uint32_t>(_mm256_extract_epi32(b8, 0));
  const uint32_t hi = static_cast<uint32_t>(_mm256_extract_epi32(b8, 4));
  std::memcpy(p, &lo, 4);
  std::memcpy(p + 4, &hi, 4);
}
#else
struct v8i {
  int32_t v[8];
};
inline v8i splat8(int32_t x) {
  v8i r;
  for (int l = 0; l < 8; ++l) r.v[l] = x;
  return r;
}
inline v8i load8(const uint8_t* p) {
  v8i r;
  for (int l = 0; l < 8; ++l) r.v[l] = p[l];
  return r;
}
inline v8i madd8(v8i acc, v8i px, int32_t w) {
  for (int l = 0; l < 8; ++l) acc.v[l] += px.v[l] * w;
  return acc;
}
inline void store8(uint8_t* p, v8i acc, int precision) {
  for (int l = 0; l < 8; ++l) p[l] = clip8(acc.v[l], precision);
}
#endif

// Rows of `src` [rows, in_w, 3] -> `dst` [rows, out_w, 3].
// Blocks of kRows rows are first transposed into a tile [in_w][kRows*3], so that one output
// pixel of all kRows rows is kRows*3 independent lanes filtered along contiguous memory.
void horizontal_pass(const uint8_t* src, int in_w, int rows, uint8_t* dst, int out_w,
                     const AxisFilter& f) {
  constexpr int kRows = 8, L = kRows * 3;  // 24 lanes = 3 vectors
  const int32_t init = 1 << (f.precision - 1);
  const int blocks = rows / kRows;
  const size_t in_row = static_cast<size_t>(in_w) * 3, out_row = static_cast<size_t>(out_w) * 3;
  const int64_t work = static_cast<int64_t>(rows) * out_w * f.taps;
#pragma omp parallel if (work > (1 << 18))
  {
    std::vector<uint8_t> tile(static_cast<size_t>(in_w) * L);
#pragma omp for schedule(static)
    for (int b = 0; b < blocks; ++b) {
      const int y0 = b * kRows;
      for (int r = 0; r < kRows; ++r) {
        const uint8_t* s = src + static_cast<size_t>(y0 + r) * in_row;
        uint8_t* t = tile.data() + r * 3;
        for (int x = 0; x < in_w; ++x) std::memcpy(t + static_cast<size_t>(x) * L, s + 3 * x, 3);
      }
      for (int x = 0; x < out_w; ++x) {
        const int32_t* w = &f.weights[static_cast<size_t>(x) * f.taps];
        const uint8_t* t = tile.data() + static_cast<size_t>(f.start[x]) * L;
        const int n = f.count[x];
        v8i a0 = splat8(init), a1 = a0, a2 = a0;
        for (int k = 0; k < n; ++k, t += L) {
          a0 = madd8(a0, load8(t), w[k]);
          a1 = madd8(a1, load8(t + 8), w[k]);
          a2 = madd8(a2, load8(t + 16), w[k]);
        }
        uint8_t px[L + 8];
        store8(px, a0, f.precision);
        store8(px + 8, a1, f.precision);
        store8(px + 16, a2, f.precision);
        for (int r = 0; r < kRows; ++r) {
          std::memcpy(dst + static_cast<size_t>(y0 + r) * out_row + 3 * static_cast<size_t>(x),
                      px + 3 * r, 3);
        }
      }
    }
  }
  for (int y = blocks * kRows; y < rows; ++y) {  // the last rows % kRows rows
    const uint8_t* s = src + static_cast<size_t>(y) * in_row;
    uint8_t* d = dst + static_cast<size_t>(y) * out_row;
    for (int x = 0; x < out_w; ++x) {
      const int32_t* w = &f.weights[static_cast<size_t>(x) * f.taps];
      const uint8_t* p = s + static_cast<size_t>(f.start[x]) * 3;
      const int n = f.count[x];
      int32_t r = init, g = init, bl = init;
      for (int k = 0; k < n; ++k) {
        r += p[3 * k + 0] * w[k];
        g += p[3 * k + 1] * w[k];
        bl += p[3 * k + 2] * w[k];
      }
      d[3 * x + 0] = clip8(r, f.precision);
      d[3 * x + 1] = clip8(g, f.precision);
      d[3 * x + 2] = clip8(bl, f.precision);
    }
  }
}

// `src` [in_h, width, 3] -> `dst` [out_h, width, 3]; a row is width*3 independent lanes,
// filtered 32 at a time with the accumulators in registers across the taps.
void vertical_pass(const uint8_t* src, int width, uint8_t* dst, int out_h,
                   const AxisFilter& f) {
  constexpr size_t kLanes = 32;
  const int32_t init = 1 << (f.precision - 1);
  const size_t row = static_cast<size_t>(width) * 3;
  const size_t full = row / kLanes * kLanes;
  const int64_t work = static_cast<int64_t>(out_h) * static_cast<int64_t>(row) * f.taps;
#pragma omp parallel for schedule(static) if (work > (1 << 18))
  for (int y = 0; y < out_h; ++y) {
    const int n = f.count[y];
    const int32_t* w = &f.weights[static_cast<size_t>(y) * f.taps];
    const uint8_t* s0 = src + static_cast<size_t>(f.start[y]) * row;
    uint8_t* d = dst + static_cast<size_t>(y) * row;
    for (size_t i0 = 0; i0 < full; i0 += kLanes) {
      v8i a0 = splat8(init), a1 = a0, a2 = a0, a3 = a0;
      const uint8_t* s = s0 + i0;
      for (int k = 0; k < n; ++k, s += row) {
        a0 = madd8(a0, load8(s), w[k]);
        a1 = madd8(a1, load8(s + 8), w[k]);
        a2 = madd8(a2, load8(s + 16), w[k]);
        a3 = madd8(a3, load8(s + 24), w[k]);
      }
      store8(d + i0, a0, f.precision);
      store8(d + i0 + 8, a1, f.precision);
      store8(d + i0 + 16, a2, f.precision);
      store8(d + i0 + 24, a3, f.precision);
    }
    for (size_t i = full; i < row; ++i) {
      int32_t acc = init;
      for (int k = 0; k < n; ++k) acc += s0[static_cast<size_t>(k) * row + i] * w[k];
      d[i] = clip8(acc, f.precision);
    }
  }
}

}  // namespace

Image resize_bicubic(const Image& src, int new_width, int new_height, BicubicKernel kernel) {
  if (new_width <= 0 || new_height <= 0 || src.width <= 0 || src.height <= 0 ||
      src.rgb.size() != static_cast<size_t>(src.width) * src.height * 3) {
    return Image{};
  }
  const bool horizontal = new_width != src.width;
  const bool vertical = new_height != src.height;
  if (!horizontal && !vertical) return src;

  Image tmp;  // after the horizontal pass: [src.height, new_width]
  const Image* cur = &src;
  if (horizontal) {
    const AxisFilter fx = make_filter(src.width, new_width, kernel);
    tmp.width = new_width;
    tmp.height = src.height;
    tmp.rgb.resize(static_cast<size_t>(new_width) * src.height * 3);
    horizontal_pass(src.rgb.data(), src.width, src.height, tmp.rgb.data(), new_width, fx);
    if (!vertical) return tmp;
    cur = &tmp;
  }
  const AxisFilter fy = make_filter(cur->height, new_height, kernel);
  Image out;
  out.width = cur->width;
  out.height = new_height;
  out.rgb.resize(static_cast<size_t>(out.width) * new_height * 3);
  vertical_pass(cur->rgb.data(), cur->width, out.rgb.data(), new_height, fy);
  return out;
}

Image resize_bicubic(const Image& src, int new_width, int new_height) {
  return resize_bicubic(src, new_width, new_height, BicubicKernel::kTorchInt16);
}

}  // namespace ost
