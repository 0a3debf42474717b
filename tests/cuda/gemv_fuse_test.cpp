// The decode fusions of the GEMV kernels (gemv.h GemvFusion) for bf16 (launch_gemv) and INT8
// (launch_w8a16_gemv) weights against a CPU reference that applies the unfused ops' roundings
// (RMSNorm: bf16(bf16(x · r) · w); SiLU·up: bf16(bf16(silu(g)) · u); residual: bf16(res + bf16(y));
// GLU epilogue: SiLU·up of the bf16-rounded gate and up products)
// around an f32 product with the dequantized weights. n = 1..8, every rows-per-block variant,
// row counts that are not a multiple of the rows per block, in = 4096 and 12288, outputs poisoned
// (out of place) or the residual stream updated in place.
#include <cmath>

#include "backend/cuda/gemv.h"
#include "backend/cuda/quant_gemm.h"
#include "backend/ops.h"
#include "cuda_test_util.h"
#include "quant/quant.h"

namespace ost::testing {
namespace {

using namespace ost::cuda;

enum class Mode { kNorm, kNormResidual, kResidual, kSiluResidual, kSilu };

struct Case {
  int64_t out, in;
};

// The product's input as the unfused kernels would have written it (bf16 values).
std::vector<float> effective_x(Mode m, const std::vector<float>& x, const std::vector<float>& norm_w, int n, int64_t in,
                               float eps) {
  std::vector<float> e(size_t(n * in));
  for (int r = 0; r < n; ++r) {
    if (m == Mode::kNorm || m == Mode::kNormResidual) {
      double ss = 0;
      for (int64_t k = 0; k < in; ++k) ss += double(x[size_t(r * in + k)]) * x[size_t(r * in + k)];
      const float rn = 1.0f / std::sqrt(float(ss / double(in)) + eps);
      for (int64_t k = 0; k < in; ++k)
        e[size_t(r * in + k)] = round_bf16(round_bf16(x[size_t(r * in + k)] * rn) * norm_w[size_t(k)]);
    } else if (m == Mode::kSilu || m == Mode::kSiluResidual) {
      for (int64_t k = 0; k < in; ++k) {
        const float g = x[size_t(r * 2 * in + k)], u = x[size_t(r * 2 * in + in + k)];
        e[size_t(r * in + k)] = round_bf16(round_bf16(g / (1.0f + std::exp(-g))) * u);
      }
    } else {
      for (int64_t k = 0; k < in; ++k) e[size_t(r * in + k)] = x[size_t(r * in + k)];
    }
  }
  return e;
}

bool has_residual(Mode m) { return m == Mode::kNormResidual || m == Mode::kResidual || m == Mode::kSiluResidual; }
bool is_silu(Mode m) { return m == Mode::kSilu || m == Mode::kSiluResidual; }
bool is_norm(Mode m) { return m == Mode::kNorm || m == Mode::kNormResidual; }

// Runs every mode / n / variant for one weight format; launch(x, y, n, fusion, rows) runs the kernel.
template <class Launch>
void check_fusions(const char* what, const Case& cs, const ops::WeightView& wref, const std::vector<int>& rows,
                   Launch launch) {
  const float eps = 1e-6f;
  auto norm_w = randn_bf16(size_t(cs.in), 77, 0.5f);
  for (float& v : norm_w) v = round_bf16(1.0f + v);
  auto dnw = to_dev(norm_w);
  for (Mode m : {Mode::kNorm, Mode::kNormResidual, Mode::kResidual, Mode::kSiluResidual, Mode::kSilu}) {
    for (int n = 1; n <= kGemvMaxRows; ++n) {
      const int64_t xw = is_silu(m) ? 2 * cs.in : cs.in;
      auto x = randn_bf16(size_t(n * xw), uint32_t(100 + n + 10 * int(m)), 1.5f);
      auto res = randn_bf16(size_t(n * cs.out), uint32_t(200 + n), 0.5f);
      auto dx = to_dev(x), dres = to_dev(res);
      auto xe = effective_x(m, x, norm_w, n, cs.in, eps);
      std::vector<float> ref(size_t(n * cs.out));
      ops::matmul(xe.data(), n, wref, nullptr, ref.data());
      if (has_residual(m))
        for (size_t i = 0; i < ref.size(); ++i) ref[i] = round_bf16(res[i] + round_bf16(ref[i]));
      GemvFusion f;
      if (is_norm(m)) f.norm_w = dnw->p, f.eps = eps;
      f.silu = is_silu(m);
      for (int r : rows) {
        auto dy = poisoned(ref.size());
        if (has_residual(m)) f.residual = dres->p;
        Status st = launch(dx->p, dy->p, n, f, r);
        ASSERT_TRUE(st.is_ok()) << st.message();
        EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), 1e-2)
            << what << " mode " << int(m) << " n " << n << " out " << cs.out << " in " << cs.in << " rows " << r;
        if (has_residual(m)) {  // in place, as the runner calls it
          auto dio = to_dev(res);
          f.residual = dio->p;
          st = launch(dx->p, dio->p, n, f, r);
          ASSERT_TRUE(st.is_ok()) << st.message();
          EXPECT_LE(rel_l2(from_dev(dio->p, ref.size()), ref), 1e-2)
              << what << " in place, mode " << int(m) << " n " << n << " out " << cs.out << " rows " << r;
        }
      }
    }
  }
}

// The GLU epilogue: W [2·out, in] = gate rows then up rows; y [n, out] = bf16(bf16(silu(g)) · u).
template <class Launch>
void check_glu(const char* what, const Case& cs, const ops::WeightView& wref2, const std::vector<int>& rows,
               Launch launch) {
  for (int n = 1; n <= kGemvMaxRows; ++n) {
    auto x = randn_bf16(size_t(n * cs.in), uint32_t(300 + n), 1.5f);
    auto dx = to_dev(x);
    std::vector<float> full(size_t(n * 2 * cs.out)), ref(size_t(n * cs.out));
    ops::matmul(x.data(), n, wref2, nullptr, full.data());
    for (int r = 0; r < n; ++r)
      for (int64_t o = 0; o < cs.out; ++o) {
        const float g = round_bf16(full[size_t(r * 2 * cs.out + o)]);
        const float u = round_bf16(full[size_t(r * 2 * cs.out + cs.out + o)]);
        ref[size_t(r * cs.out + o)] = round_bf16(round_bf16(g / (1.0f + std::exp(-g))) * u);
      }
    GemvFusion f;
    f.glu = true;
    for (int rb : rows) {
      auto dy = poisoned(ref.size());
      Status st = launch(dx->p, dy->p, n, f, rb);
      ASSERT_TRUE(st.is_ok()) << st.message();
      EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), 1e-2)
          << what << " glu n " << n << " out " << cs.out << " in " << cs.in << " rows " << rb;
    }
  }
}

TEST(CudaGemvFusion, Bf16GluMatchesCpu) {
  OST_REQUIRE_GPU();
  for (Case cs : {Case{1000, 4096}, Case{37, 1024}, Case{259, 12288}}) {
    auto w = randn_bf16(size_t(2 * cs.out * cs.in), 15, 0.05f);
    auto dw = to_dev(w);
    const ops::WeightView wref{ops::WType::F32, w.data(), 2 * cs.out, cs.in};
    check_glu("bf16", cs, wref, {2, 4, 8}, [&](const Bf* x, Bf* y, int n, const GemvFusion& f, int r) {
      if (r == 8 && n > 4) r = 4;
      GemvParams p{x, dw->p, nullptr, y, n, cs.out, cs.in};
      p.fuse = f;
      return launch_gemv(p, r, 0);
    });
  }
}

TEST(CudaGemvFusion, Int8GluMatchesCpu) {
  OST_REQUIRE_GPU();
  for (Case cs : {Case{1000, 4096}, Case{37, 1024}, Case{259, 12288}}) {
    auto wf = randn_bf16(size_t(2 * cs.out * cs.in), 16, 0.05f);
    auto qm = quant::quantize(quant::Format::INT8, wf.data(), 2 * cs.out, cs.in, 0);
    ASSERT_TRUE(qm.is_ok());
    DevBuf<int8_t> dw(qm->data.size());
    DevBuf<float> ds(qm->scale.size());
    ASSERT_EQ(cudaMemcpy(dw.p, qm->data.data(), qm->data.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(ds.p, qm->scale.data(), qm->scale.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ops::WeightView wref{ops::WType::INT8, qm->data.data(), 2 * cs.out, cs.in};
    wref.scale = qm->scale.data();
    check_glu("int8", cs, wref, {0, 2, 4}, [&](const Bf* x, Bf* y, int n, const GemvFusion& f, int r) {
      W8A16Params p{x, dw.p, ds.p, nullptr, y, n, cs.out, cs.in};
      p.rows_per_block = r;  // 0: timed on first use
      p.fuse = f;
      return launch_w8a16_gemv(p, 0);
    });
  }
}

TEST(CudaGemvFusion, Bf16MatchesCpu) {
  OST_REQUIRE_GPU();
  for (Case cs : {Case{1000, 4096}, Case{37, 12288}, Case{258, 1024}}) {
    auto w = randn_bf16(size_t(cs.out * cs.in), 5, 0.05f);
    auto dw = to_dev(w);
    const ops::WeightView wref{ops::WType::F32, w.data(), cs.out, cs.in};
    check_fusions("bf16", cs, wref, {1, 2, 4, 8}, [&](const Bf* x, Bf* y, int n, const GemvFusion& f, int r) {
      if (r == 8 && n > 4) r = 4;  // 8 rows per block only for n <= 4
      GemvParams p{x, dw->p, nullptr, y, n, cs.out, cs.in};
      p.fuse = f;
      return launch_gemv(p, r, 0);
    });
  }
}

TEST(CudaGemvFusion, Int8MatchesCpu) {
  OST_REQUIRE_GPU();
  for (Case cs : {Case{1000, 4096}, Case{37, 12288}, Case{258, 1024}}) {
    auto wf = randn_bf16(size_t(cs.out * cs.in), 6, 0.05f);
    auto qm = quant::quantize(quant::Format::INT8, wf.data(), cs.out, cs.in, 0);
    ASSERT_TRUE(qm.is_ok());
    DevBuf<int8_t> dw(qm->data.size());
    DevBuf<float> ds(qm->scale.size());
    ASSERT_EQ(cudaMemcpy(dw.p, qm->data.data(), qm->data.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(ds.p, qm->scale.data(), qm->scale.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ops::WeightView wref{ops::WType::INT8, qm->data.data(), cs.out, cs.in};
    wref.scale = qm->scale.data();
    check_fusions("int8", cs, wref, {1, 2, 4}, [&](const Bf* x, Bf* y, int n, const GemvFusion& f, int r) {
      W8A16Params p{x, dw.p, ds.p, nullptr, y, n, cs.out, cs.in};
      p.rows_per_block = r;
      p.fuse = f;
      return launch_w8a16_gemv(p, 0);
    });
  }
}

}  // namespace
}  // namespace ost::testing
