// The greedy choice with excluded ids (backend/cuda/sampling.cu) against the host reference:
// random bf16 rows of several widths, ties, excluded maxima, every id excluded, poisoned
// outputs.
#include <algorithm>
#include <cmath>

#include "backend/cuda/sampling.h"
#include "cuda_test_util.h"

namespace ost::testing {
namespace {

using cuda::kMaxExcludedTokens;

struct Ref {
  int32_t id;
  double logprob;
};

Ref reference(const float* x, int64_t d, const std::vector<int32_t>& ex) {
  int64_t best = -1;
  double mx = -INFINITY, sum = 0;
  for (int64_t k = 0; k < d; ++k) mx = std::max(mx, double(x[k]));
  for (int64_t k = 0; k < d; ++k) sum += std::exp(double(x[k]) - mx);
  for (int64_t k = 0; k < d; ++k) {
    if (std::find(ex.begin(), ex.end(), int32_t(k)) != ex.end()) continue;
    if (best < 0 || x[k] > x[best]) best = k;
  }
  return {int32_t(best), best < 0 ? -INFINITY : double(x[best]) - mx - std::log(sum)};
}

void check(int64_t rows, int64_t d, const std::vector<int32_t>& ex, uint32_t seed, bool ties) {
  auto x = randn_bf16(size_t(rows * d), seed, 3.0f);
  if (ties)  // several equal maxima per row, some of them excluded
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k : {d / 3, d - 1, int64_t(7) % d, d / 2}) x[size_t(r * d + k)] = 40.0f;
  std::vector<int32_t> hex(size_t(1 + kMaxExcludedTokens), 0);
  hex[0] = int32_t(ex.size());
  std::copy(ex.begin(), ex.end(), hex.begin() + 1);
  auto dx = to_dev(x);
  auto dex = to_dev_raw(hex);
  std::vector<int32_t> poison_i(static_cast<size_t>(rows), -7);
  std::vector<float> poison_f(static_cast<size_t>(rows), NAN);
  auto dout = to_dev_raw(poison_i);
  auto dlp = to_dev_raw(poison_f);
  ASSERT_TRUE(cuda::launch_argmax_logprob_excluding(reinterpret_cast<const cuda::bf16*>(dx->p), rows, d, dex->p,
                                                    dout->p, dlp->p, 0)
                  .is_ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<int32_t> got(static_cast<size_t>(rows));
  std::vector<float> lp(static_cast<size_t>(rows));
  ASSERT_EQ(cudaMemcpy(got.data(), dout->p, size_t(rows) * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(lp.data(), dlp->p, size_t(rows) * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int64_t r = 0; r < rows; ++r) {
    const Ref want = reference(x.data() + r * d, d, ex);
    EXPECT_EQ(got[size_t(r)], want.id) << "d=" << d << " row " << r;
    if (want.id < 0) {
      EXPECT_TRUE(std::isinf(lp[size_t(r)]) && lp[size_t(r)] < 0);
    } else {
      EXPECT_NEAR(lp[size_t(r)], want.logprob, 1e-3 + 1e-5 * std::fabs(want.logprob)) << "d=" << d << " row " << r;
    }
  }
}

TEST(CudaSampling, ArgmaxLogprobExcluding) {
  OST_REQUIRE_GPU();
  check(3, 151936, {}, 1, false);
  check(5, 151936, {151655, 151656, 151652, 151653}, 2, false);
  check(4, 1000, {}, 3, true);
  check(4, 1000, {333, 999}, 4, true);  // the tied maxima at d/3 and d-1 excluded: 7 wins
  check(2, 4097, {7, 2048, 1365, 4096}, 5, true);
  check(1, 1, {}, 6, false);
  check(2, 3, {0, 1, 2}, 7, false);  // every id excluded
  check(64, 32000, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, 8, false);
}

TEST(CudaSampling, ExcludeTheRowMaxima) {
  OST_REQUIRE_GPU();
  // Exclude the true argmax of each of two rows: the runner-up is chosen.
  const int64_t d = 151936;
  auto x = randn_bf16(size_t(2 * d), 9);
  x[size_t(123)] = 50.0f;
  x[size_t(d + 151000)] = 50.0f;
  x[size_t(456)] = 45.0f;
  x[size_t(d + 17)] = 45.0f;
  std::vector<int32_t> hex(size_t(1 + kMaxExcludedTokens), 0);
  hex[0] = 2, hex[1] = 123, hex[2] = 151000;
  auto dx = to_dev(x);
  auto dex = to_dev_raw(hex);
  DevBuf<int32_t> out(2);
  DevBuf<float> lp(2);
  ASSERT_TRUE(cuda::launch_argmax_logprob_excluding(reinterpret_cast<const cuda::bf16*>(dx->p), 2, d, dex->p, out.p,
                                                    lp.p, 0)
                  .is_ok());
  std::vector<int32_t> got(2);
  ASSERT_EQ(cudaMemcpy(got.data(), out.p, 8, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got[0], 456);
  EXPECT_EQ(got[1], 17);
}

}  // namespace
}  // namespace ost::testing
