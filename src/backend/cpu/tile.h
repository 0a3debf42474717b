// The register-tile kernel of the CPU GEMMs (matmul, attention): up to 6 rows of A broadcast
// against 8 or 16 contiguous columns of B, accumulating in 12 ymm registers.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace ost::ops::cpu {

constexpr int kMT = 6;  // rows of a register tile

// c[r·crs + 0 .. 8·NV) = Σ_{k < kn} a[r·ars + k·aks] · b[k·bks + 0 .. 8·NV), for r < M.
// Named accumulators: GCC spills arrays of vectors on every iteration.
template <int M, int NV>
void tile(const float* a, int64_t ars, int64_t aks, const float* b, int64_t bks, int64_t kn, float* c,
          int64_t crs) {
  const __m256 z = _mm256_setzero_ps();
  __m256 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z;
  __m256 c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
  for (int64_t k = 0; k < kn; ++k) {
    const float* bk = b + k * bks;
    const __m256 b0 = _mm256_loadu_ps(bk);
    const __m256 b1 = NV > 1 ? _mm256_loadu_ps(bk + 8) : z;
    const float* ak = a + k * aks;
#define OST_ROW(r)                                                    \
  if constexpr (M > r) {                                              \
    const __m256 av = _mm256_broadcast_ss(ak + r * ars);              \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                       \
    if constexpr (NV > 1) c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1); \
  }
    OST_ROW(0) OST_ROW(1) OST_ROW(2) OST_ROW(3) OST_ROW(4) OST_ROW(5)
#undef OST_ROW
  }
#define OST_STORE(r)                                                  \
  if constexpr (M > r) {                                              \
    _mm256_storeu_ps(c + r * crs, c##r##0);                           \
    if constexpr (NV > 1) _mm256_storeu_ps(c + r * crs + 8, c##r##1); \
  }
  OST_STORE(0) OST_STORE(1) OST_STORE(2) OST_STORE(3) OST_STORE(4) OST_STORE(5)
#undef OST_STORE
}

using TileFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*, int64_t);
// kTiles[NV - 1][M - 1]
inline constexpr TileFn kTiles[2][kMT] = {
    {tile<1, 1>, tile<2, 1>, tile<3, 1>, tile<4, 1>, tile<5, 1>, tile<6, 1>},
    {tile<1, 2>, tile<2, 2>, tile<3, 2>, tile<4, 2>, tile<5, 2>, tile<6, 2>},
};

}  // namespace ost::ops::cpu
