// The GEMV kernels (every variant, n = 1..8, with and without bias, row counts that are not a
// multiple of the rows per block), the GEMV path through Gemm, argmax with log-probability,
// and the vision pos-embed / rope-table kernels, each against a CPU reference.
#include <algorithm>
#include <numeric>

#include "backend/cuda/gemm.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/kernels.h"
#include "backend/ops.h"
#include "cuda_test_util.h"

namespace ost::testing {
namespace {

using namespace ost::cuda;

TEST(CudaGemv, AllVariantsMatchCpu) {
  OST_REQUIRE_GPU();
  struct S {
    int64_t out, in;
    bool bias;
  };
  for (S s : {S{1000, 4096, false}, S{37, 72, true}, S{257, 12288, true}}) {
    for (int n = 1; n <= kGemvMaxRows; ++n) {
      auto x = randn_bf16(size_t(n * s.in), 1 + n), w = randn_bf16(size_t(s.out * s.in), 2, 0.05f),
           b = randn_bf16(size_t(s.out), 3);
      auto dx = to_dev(x), dw = to_dev(w), db = to_dev(b);
      std::vector<float> ref(size_t(n * s.out));
      ops::matmul(x.data(), n, {ops::WType::F32, w.data(), s.out, s.in}, s.bias ? b.data() : nullptr,
                  ref.data());
      int rows[4];
      const int nv = gemv_variants(n, rows);
      for (int v = 0; v < nv; ++v) {
        auto dy = poisoned(size_t(n * s.out));
        GemvParams p{dx->p, dw->p, s.bias ? db->p : nullptr, dy->p, n, s.out, s.in};
        ASSERT_TRUE(launch_gemv(p, rows[v], 0).is_ok());
        EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), 1e-2)
            << "n " << n << " out " << s.out << " in " << s.in << " rows/block " << rows[v];
      }
    }
  }
  // Through Gemm (timed against cuBLASLt on the first call, then the kept choice).
  Gemm g;
  ASSERT_TRUE(g.init().is_ok());
  auto x = randn_bf16(3 * 4096, 9), w = randn_bf16(size_t(6144) * 4096, 10, 0.05f);
  auto dx = to_dev(x), dw = to_dev(w);
  std::vector<float> ref(3 * 6144);
  ops::matmul(x.data(), 3, {ops::WType::F32, w.data(), 6144, 4096}, nullptr, ref.data());
  for (int rep = 0; rep < 2; ++rep) {
    auto dy = poisoned(ref.size());
    ASSERT_TRUE(g.run(dx->p, 3, dw->p, 6144, 4096, nullptr, dy->p, 0).is_ok());
    EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), 1e-2) << rep;
  }
}

TEST(CudaSampling, ArgmaxLogprob) {
  OST_REQUIRE_GPU();
  const int64_t rows = 4, V = 151936;
  auto x = randn_bf16(size_t(rows * V), 11, 3.0f);
  x[size_t(V + 151935)] = 40.0f;                           // the last id
  x[size_t(2 * V + 7)] = x[size_t(2 * V + 9000)] = 30.0f;  // a tie: the lower id wins
  auto dx = to_dev(x);
  DevBuf<int32_t> am(static_cast<size_t>(rows));
  DevBuf<float> lp(static_cast<size_t>(rows));
  ASSERT_TRUE(launch_argmax_logprob(dx->p, rows, V, am.p, lp.p, 0).is_ok());
  std::vector<int32_t> got(static_cast<size_t>(rows));
  std::vector<float> got_lp(static_cast<size_t>(rows));
  ASSERT_EQ(cudaMemcpy(got.data(), am.p, rows * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got_lp.data(), lp.p, rows * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * V;
    EXPECT_EQ(got[size_t(r)], int32_t(ops::argmax(row, V))) << r;
    double mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i < V; ++i) mx = std::max(mx, double(row[i]));
    for (int64_t i = 0; i < V; ++i) sum += std::exp(double(row[i]) - mx);
    const double want = double(row[ops::argmax(row, V)]) - (mx + std::log(sum));
    EXPECT_NEAR(got_lp[size_t(r)], want, 1e-3 + 1e-4 * std::fabs(want)) << r;
  }
  EXPECT_EQ(got[1], 151935);
  EXPECT_EQ(got[2], 7);
}

TEST(CudaVision, PosEmbedAndRopeTables) {
  OST_REQUIRE_GPU();
  const int ng = 6, hidden = 24, quarter = 3;
  auto table = randn_bf16(size_t(ng * ng * hidden), 12);
  // Two frames: a 4×6 grid and a 2×2 grid, patches in raster order here (any order works).
  std::vector<int32_t> geo;
  for (auto [gh, gw] : {std::pair{4, 6}, std::pair{2, 2}})
    for (int r = 0; r < gh; ++r)
      for (int c = 0; c < gw; ++c)
        for (int v : {r, c, gh, gw}) geo.push_back(v);
  const int64_t n = int64_t(geo.size() / 4);
  auto x = randn_bf16(size_t(n * hidden), 13);
  auto dx = to_dev(x), dt = to_dev(table);
  auto dg = to_dev_raw(geo);
  ASSERT_TRUE(launch_vision_pos_embed({dx->p, dt->p, dg->p, n, hidden, ng}, 0).is_ok());
  std::vector<float> ref(x.size());
  for (int64_t i = 0; i < n; ++i) {
    const int* g = geo.data() + 4 * i;
    auto axis = [&](int p, int len, int& lo, int& hi, float& f) {
      const float src = float(p) * float(ng - 1) / float(std::max(len - 1, 1));
      lo = int(src), hi = std::min(lo + 1, ng - 1), f = src - float(lo);
    };
    int hl, hh, wl, wh;
    float dh, dw;
    axis(g[0], g[2], hl, hh, dh);
    axis(g[1], g[3], wl, wh, dw);
    for (int d = 0; d < hidden; ++d) {
      auto t = [&](int a, int b) { return table[size_t((a * ng + b) * hidden + d)]; };
      const float pe = (1 - dh) * (1 - dw) * t(hl, wl) + (1 - dh) * dw * t(hl, wh) +
                       dh * (1 - dw) * t(hh, wl) + dh * dw * t(hh, wh);
      ref[size_t(i * hidden + d)] = round_bf16(x[size_t(i * hidden + d)] + round_bf16(pe));
    }
  }
  EXPECT_LE(rel_l2(from_dev(dx->p, ref.size()), ref), 4e-3);

  std::vector<float> inv = {1.0f, 0.1f, 0.01f};
  auto di = to_dev_raw(inv);
  DevBuf<float> cs(size_t(n * 2 * quarter)), sn(size_t(n * 2 * quarter));
  ASSERT_TRUE(launch_vision_rope_tables(dg->p, di->p, n, quarter, cs.p, sn.p, 0).is_ok());
  std::vector<float> hc(cs.n), hs(sn.n);
  ASSERT_EQ(cudaMemcpy(hc.data(), cs.p, hc.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(hs.data(), sn.p, hs.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 2 * quarter; ++k) {
      const float a = float(geo[size_t(4 * i + (k < quarter ? 0 : 1))]) * inv[size_t(k % quarter)];
      EXPECT_NEAR(hc[size_t(i * 2 * quarter + k)], std::cos(double(a)), 1e-6);
      EXPECT_NEAR(hs[size_t(i * 2 * quarter + k)], std::sin(double(a)), 1e-6);
    }
}

TEST(CudaVision, AddLayerNormAndRope) {
  OST_REQUIRE_GPU();
  for (auto [n, d] : {std::pair{3, 64}, std::pair{9, 1152}}) {
    auto x = randn_bf16(size_t(n * d), 14, 2.0f), dl = randn_bf16(size_t(n * d), 15),
         w = randn_bf16(size_t(d), 16), b = randn_bf16(size_t(d), 17);
    auto dx = to_dev(x), ddl = to_dev(dl), dw = to_dev(w), db = to_dev(b);
    auto dy = poisoned(size_t(n * d));
    ASSERT_TRUE(launch_add_layer_norm({dx->p, ddl->p, dw->p, db->p, dy->p, n, d, 1e-6f}, 0).is_ok());
    std::vector<float> xs(x.size()), ref(x.size());
    ops::add(x.data(), dl.data(), int64_t(x.size()), xs.data());
    for (auto& v : xs) v = round_bf16(v);
    ops::layer_norm(xs.data(), n, d, w.data(), b.data(), 1e-6f, ref.data());
    EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), 1e-2) << n << "x" << d;
    EXPECT_EQ(rel_l2(from_dev(dx->p, xs.size()), xs), 0.0) << "residual " << n << "x" << d;
  }
  // Rope over q and k heads at once (2·heads heads of each row), head size 72.
  const int64_t n = 13, heads = 16, hd = 72, stride = 3 * heads * hd;
  auto x = randn_bf16(size_t(n * stride), 18), cs = randn_bf16(size_t(n * hd / 2), 19),
       sn = randn_bf16(size_t(n * hd / 2), 20);
  auto dx = to_dev(x);
  auto dc = to_dev_raw(cs), ds = to_dev_raw(sn);
  ASSERT_TRUE(launch_rope({dx->p, dc->p, ds->p, n, stride, int(2 * heads), int(hd)}, 0).is_ok());
  std::vector<float> r = x;
  ops::rope(r.data(), n, int(2 * heads), int(hd), stride, cs.data(), sn.data());
  EXPECT_LE(rel_l2(from_dev(dx->p, r.size()), r), 1e-2);
}

}  // namespace
}  // namespace ost::testing
