// The W8A16 and W4A16 kernels against the CPU reference (ops::matmul on an INT8 / INT4 view,
// quant/quant.h), and the CUDA runner with INT8 / INT4 weights against the CPU runner with the
// same weights.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <nlohmann/json.hpp>

#include "backend/cuda/gemm.h"
#include "backend/cuda/int4_gemm.h"
#include "backend/cuda/quant_gemm.h"
#include "backend/cuda/quant_prefill.h"
#include "backend/ops.h"
#include "common/temp_dir.h"
#include "core/bf16.h"
#include "cuda_test_util.h"
#include "quant_test_util.h"
#include "io/seeded.h"
#include "quant/quant.h"

namespace ost::testing {
namespace {

using namespace ost::cuda;

TEST(CudaQuant, W8A16GemvMatchesCpu) {
  OST_REQUIRE_GPU();
  struct S { int64_t out, in; };
  for (S sh : {S{256, 512}, S{1000, 4096}, S{4104, 1024}, S{18, 16}, S{1027, 12288}, S{3, 4096}}) {
    auto wf = randn_bf16(size_t(sh.out * sh.in), 11, 0.05f);
    auto qm = quant::quantize(quant::Format::INT8, wf.data(), sh.out, sh.in, 0);
    ASSERT_TRUE(qm.is_ok());
    DevBuf<int8_t> dw(qm->data.size());
    DevBuf<float> ds(qm->scale.size());
    ASSERT_EQ(cudaMemcpy(dw.p, qm->data.data(), qm->data.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(ds.p, qm->scale.data(), qm->scale.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 8, 13, 32}) {
      auto x = randn_bf16(size_t(n * sh.in), uint32_t(20 + n));
      auto b = randn_bf16(size_t(sh.out), 5);
      auto dx = to_dev(x), db = to_dev(b);
      const bool with_bias = n % 2;
      std::vector<float> ref(size_t(n * sh.out));
      ops::matmul(x.data(), n, int8_view(*qm), with_bias ? b.data() : nullptr, ref.data());
      for (int rows : {0, 1, 2, 4}) {  // every rows-per-block variant (0: the default)
        auto dy = poisoned(size_t(n * sh.out));
        W8A16Params p{dx->p, dw.p, ds.p, with_bias ? db->p : nullptr, dy->p, n, sh.out, sh.in};
        p.rows_per_block = rows;
        Status st = launch_w8a16_gemv(p, 0);
        ASSERT_TRUE(st.is_ok()) << st.message();
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), 1e-2) << n << "x" << sh.out << "x" << sh.in << " rows " << rows;
      }
    }
    // Prefill path: dequantize to bf16, then the bf16 GEMM.
    Gemm g;
    ASSERT_TRUE(g.init().is_ok());
    auto dq = poisoned(size_t(sh.out * sh.in));
    ASSERT_TRUE(launch_dequant_int8({dw.p, ds.p, dq->p, sh.out, sh.in}, 0).is_ok());
    const int64_t n = 77;
    auto x = randn_bf16(size_t(n * sh.in), 3);
    auto dx = to_dev(x);
    auto dy = poisoned(size_t(n * sh.out));
    ASSERT_TRUE(g.run(dx->p, n, dq->p, sh.out, sh.in, nullptr, dy->p, 0).is_ok());
    std::vector<float> ref(size_t(n * sh.out));
    ops::matmul(x.data(), n, int8_view(*qm), nullptr, ref.data());
    EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), 1e-2) << "dequant " << sh.out << "x" << sh.in;
  }
}

// Widening INT8 to bf16 (the prefill path) gives exactly bf16(q · scale[row]) for every element,
// through the 16-byte path (cols % 16 == 0) and the element-wise one.
TEST(CudaQuant, DequantInt8Exact) {
  OST_REQUIRE_GPU();
  struct S { int64_t rows, cols; };
  for (S sh : {S{256, 4096}, S{7, 16}, S{1027, 12288}, S{33, 24}, S{5, 7}}) {
    auto wf = randn_bf16(size_t(sh.rows * sh.cols), 31, 0.05f);
    auto qm = quant::quantize(quant::Format::INT8, wf.data(), sh.rows, sh.cols, 0);
    ASSERT_TRUE(qm.is_ok());
    DevBuf<int8_t> dw(qm->data.size());
    DevBuf<float> ds(qm->scale.size());
    ASSERT_EQ(cudaMemcpy(dw.p, qm->data.data(), qm->data.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(ds.p, qm->scale.data(), qm->scale.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    auto dq = poisoned(size_t(sh.rows * sh.cols));
    ASSERT_TRUE(launch_dequant_int8({dw.p, ds.p, dq->p, sh.rows, sh.cols}, 0).is_ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> got = from_dev(dq->p, size_t(sh.rows * sh.cols));
    int64_t bad = 0;
    for (int64_t r = 0; r < sh.rows; ++r)
      for (int64_t c = 0; c < sh.cols; ++c) {
        const float want = bf16_to_f32(f32_to_bf16(float(int8_t(qm->data[size_t(r * sh.cols + c)])) * qm->scale[size_t(r)]));
        if (!(got[size_t(r * sh.cols + c)] == want)) ++bad;
      }
    EXPECT_EQ(bad, 0) << sh.rows << "x" << sh.cols;
  }
}

struct Int4Shape {
  int64_t out, in;
  int group;
};
// Inputs 4096 and 12288, outputs not a multiple of the rows per block (16 or 32 for the
// tensor-core variants, fewer than one block too), groups 32 to 256; in and G multiples of 128
// run every variant, the others the scalar ones.
const Int4Shape kInt4Shapes[] = {{1000, 4096, 128}, {1027, 12288, 128}, {4102, 4096, 32}, {18, 64, 32},
                                 {3, 12288, 32},    {257, 4096, 64},    {5, 4096, 128},   {77, 12288, 256},
                                 {4104, 4096, 128}};
// Every variant (0: the timed choice); the tensor-core ones refuse shapes they cannot run.
const int kW4Variants[] = {0, kW4Scalar2, kW4Scalar4, kW4Mma16x4, kW4Mma16x8, kW4Mma32x4, kW4Mma32x8};
bool w4_variant_runs(int v, const Int4Shape& sh) { return v < 100 || w4a16_mma_ok(sh.in, sh.group); }

TEST(CudaQuant, W4A16GemvMatchesCpu) {
  OST_REQUIRE_GPU();
  std::map<int, double> worst;  // largest rel L2 per variant
  for (Int4Shape sh : kInt4Shapes) {
    auto wf = randn_bf16(size_t(sh.out * sh.in), 12, 0.05f);
    auto qm = quant::quantize(quant::Format::INT4, wf.data(), sh.out, sh.in, sh.group);
    ASSERT_TRUE(qm.is_ok()) << qm.message();
    Int4Dev d = int4_to_dev(*qm);
    for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 8, 13, 32}) {
      auto x = randn_bf16(size_t(n * sh.in), uint32_t(40 + n));
      auto b = randn_bf16(size_t(sh.out), 6);
      auto dx = to_dev(x), db = to_dev(b);
      const bool with_bias = n % 2;
      std::vector<float> ref(size_t(n * sh.out));
      ops::matmul(x.data(), n, int4_view(*qm), with_bias ? b.data() : nullptr, ref.data());
      for (int v : kW4Variants) {
        auto dy = poisoned(size_t(n * sh.out));
        W4A16Params p{dx->p, d.w->p, d.scale->p, d.zero->p, with_bias ? db->p : nullptr, dy->p, n, sh.out, sh.in,
                      sh.group};
        p.variant = v;
        Status st = launch_w4a16_gemv(p, 0);
        if (!w4_variant_runs(v, sh)) {
          EXPECT_FALSE(st.is_ok()) << "variant " << v << " ran in " << sh.in << " g" << sh.group;
          continue;
        }
        ASSERT_TRUE(st.is_ok()) << st.message();
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        // fp32 sums: the bf16 rounding of the output is nearly all of the error (~1e-3)
        const double e = rel_l2(from_dev(dy->p, ref.size()), ref);
        worst[v] = std::max(worst[v], e);
        EXPECT_LE(e, 5e-3) << n << "x" << sh.out << "x" << sh.in << " g" << sh.group << " variant " << v;
      }
    }
  }
  for (auto [v, e] : worst) std::printf("w4a16 variant %4d: worst rel L2 %.3e\n", v, e);
}

// The GLU epilogue: W holds 2·out rows (gate, then up), y = SiLU(gate)·up from the bf16-rounded
// products.
TEST(CudaQuant, W4A16GluMatchesCpu) {
  OST_REQUIRE_GPU();
  for (Int4Shape sh : {Int4Shape{1001, 4096, 128}, Int4Shape{77, 12288, 32}, Int4Shape{13, 12288, 128}}) {
    const int64_t rows = 2 * sh.out;
    auto wf = randn_bf16(size_t(rows * sh.in), 13, 0.05f);
    auto qm = quant::quantize(quant::Format::INT4, wf.data(), rows, sh.in, sh.group);
    ASSERT_TRUE(qm.is_ok()) << qm.message();
    Int4Dev d = int4_to_dev(*qm);
    for (int64_t n = 1; n <= 8; ++n) {
      auto x = randn_bf16(size_t(n * sh.in), uint32_t(60 + n));
      auto dx = to_dev(x);
      std::vector<float> gu(size_t(n * rows)), ref(size_t(n * sh.out));
      ops::matmul(x.data(), n, int4_view(*qm), nullptr, gu.data());
      for (int64_t m = 0; m < n; ++m)
        for (int64_t o = 0; o < sh.out; ++o) {
          const float g = round_bf16(gu[size_t(m * rows + o)]), u = round_bf16(gu[size_t(m * rows + sh.out + o)]);
          ref[size_t(m * sh.out + o)] = round_bf16(g / (1.0f + std::exp(-g))) * u;
        }
      for (int v : kW4Variants) {
        if (!w4_variant_runs(v, sh)) continue;
        auto dy = poisoned(size_t(n * sh.out));
        W4A16Params p{dx->p, d.w->p, d.scale->p, d.zero->p, nullptr, dy->p, n, sh.out, sh.in, sh.group};
        p.variant = v;
        p.glu = true;
        Status st = launch_w4a16_gemv(p, 0);
        ASSERT_TRUE(st.is_ok()) << st.message();
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), 1e-2) << "glu " << n << "x" << sh.out << " variant " << v;
      }
    }
  }
}

// Prefill path: the dequantized matrix against the CPU dequantization (each element the bf16 of
// it), then the bf16 GEMM on it against the CPU product.
TEST(CudaQuant, Int4DequantMatchesCpu) {
  OST_REQUIRE_GPU();
  Gemm g;
  ASSERT_TRUE(g.init().is_ok());
  for (Int4Shape sh : kInt4Shapes) {
    auto wf = randn_bf16(size_t(sh.out * sh.in), 14, 0.05f);
    auto qm = quant::quantize(quant::Format::INT4, wf.data(), sh.out, sh.in, sh.group);
    ASSERT_TRUE(qm.is_ok()) << qm.message();
    Int4Dev d = int4_to_dev(*qm);
    auto dq = poisoned(size_t(sh.out * sh.in));
    Status st = launch_dequant_int4({d.w->p, d.scale->p, d.zero->p, dq->p, sh.out, sh.in, sh.group}, 0);
    ASSERT_TRUE(st.is_ok()) << st.message();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto got = from_dev(dq->p, size_t(sh.out * sh.in));
    std::vector<float> row(size_t(sh.in));
    int64_t bad = 0;
    for (int64_t r = 0; r < sh.out; ++r) {
      quant::dequant_segment(qm->view(), r, 0, sh.in, row.data());
      for (int64_t k = 0; k < sh.in; ++k)
        if (!(got[size_t(r * sh.in + k)] == round_bf16(row[size_t(k)]))) ++bad;
    }
    EXPECT_EQ(bad, 0) << sh.out << "x" << sh.in << " g" << sh.group;
    const int64_t n = 77;
    auto x = randn_bf16(size_t(n * sh.in), 3);
    auto dx = to_dev(x);
    auto dy = poisoned(size_t(n * sh.out));
    ASSERT_TRUE(g.run(dx->p, n, dq->p, sh.out, sh.in, nullptr, dy->p, 0).is_ok());
    std::vector<float> ref(size_t(n * sh.out));
    ops::matmul(x.data(), n, int4_view(*qm), nullptr, ref.data());
    EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), 1e-2) << "dequant gemm " << sh.out << "x" << sh.in;
  }
}

// The CUDA runner against the CPU runner, both with the same quantized weights (INT8 as W8A16,
// INT4 as W4A16), prefill and decode (the fused GEMVs).
// `wide`: the tiny config with the text model widened to hidden 128 and MLP 384 (a config
// folder written here), so that INT4 with group 128 runs the tensor-core GEMV variants.
void runner_matches_cpu(quant::Format format, bool wide = false) {
  TempDir dir;
  TestModelOptions o;
  o.config_dir = test_data() + "/qwen3vl-tiny";
  if (wide) {
    const std::string cdir = dir / "config";
    std::filesystem::create_directories(cdir);
    for (const char* f : {"generation_config.json", "preprocessor_config.json"})
      std::filesystem::copy(o.config_dir + "/" + f, cdir + "/" + f);
    std::ifstream cf(o.config_dir + "/config.json");
    nlohmann::json cfg = nlohmann::json::parse(cf);
    cfg["text_config"]["hidden_size"] = 128;
    cfg["text_config"]["intermediate_size"] = 384;
    cfg["vision_config"]["out_hidden_size"] = 128;
    std::ofstream(cdir + "/config.json") << cfg.dump(2);
    o.config_dir = cdir;
  }
  o.seed = 20261124;
  o.out_dir = dir / "model";
  ASSERT_TRUE(write_test_model(o).is_ok());
  quant::QuantConfig qc;
  qc.format = format;
  qc.group_size = wide ? 128 : 32;  // INT4: the tiny model's 64 inputs
  auto c = load_cpu_runner(o.out_dir, qc);
  auto g = load_cuda_runner(o.out_dir, qc);
  ASSERT_TRUE(c.is_ok()) << c.message();
  ASSERT_TRUE(g.is_ok()) << g.message();
  std::vector<int32_t> ids = {151644, 872, 198};
  std::mt19937 rng(5);
  while (ids.size() < 40) ids.push_back(int32_t(rng() % 150000));
  auto pos = compute_mrope_positions(ids, {}, (*c)->config());
  ASSERT_TRUE(pos.is_ok());
  auto sc = (*c)->new_sequence(64);
  auto sg = (*g)->new_sequence(64);
  ASSERT_TRUE(sc.is_ok() && sg.is_ok());
  auto lc = (*c)->prefill(**sc, ids, *pos, nullptr, true);  // 40 rows: the prefill GEMM path (quant_prefill.h)
  auto lg = (*g)->prefill(**sg, ids, *pos, nullptr, true);
  ASSERT_TRUE(lc.is_ok() && lg.is_ok()) << lg.message();
  EXPECT_LE(rel_l2(*lg, *lc), 2e-2);
  for (int step = 0; step < 4; ++step) {  // decode: the W8A16 kernel
    const int32_t next = int32_t(1000 + step);
    auto dc = (*c)->decode(**sc, next);
    auto dg = (*g)->decode(**sg, next);
    ASSERT_TRUE(dc.is_ok() && dg.is_ok()) << dg.message();
    EXPECT_LE(rel_l2(*dg, *dc), 2e-2) << "decode step " << step;
  }
}

TEST(CudaQuant, Int8RunnerMatchesCpuInt8Runner) {
  OST_REQUIRE_GPU();
  runner_matches_cpu(quant::Format::INT8);
}

// The full decode fusions (RMSNorm prologue, residual epilogue, SiLU prologue), opt-in.
TEST(CudaQuant, FusedDecodeRunnerMatchesCpu) {
  OST_REQUIRE_GPU();
  setenv("OST_FUSED_DECODE", "1", 1);
  runner_matches_cpu(quant::Format::INT8);
  runner_matches_cpu(quant::Format::None);
  unsetenv("OST_FUSED_DECODE");
}

TEST(CudaQuant, Int4RunnerMatchesCpuInt4Runner) {
  OST_REQUIRE_GPU();
  runner_matches_cpu(quant::Format::INT4);
}

// The 40-row prefill through each path of quant_prefill.h, forced: the GEMM on the quantized
// weights (INT8 on the tiny model, whose down_proj's 160 inputs still widen; INT4 with group 128
// on the wide one) and the widening path.
TEST(CudaQuant, QuantPrefillRunnerPaths) {
  OST_REQUIRE_GPU();
  for (QuantGemmMode m : {kQuantGemmMma, kQuantGemmWiden}) {
    SCOPED_TRACE(m == kQuantGemmMma ? "mma" : "widen");
    quant_gemm_force(m);
    runner_matches_cpu(quant::Format::INT8);
    runner_matches_cpu(quant::Format::INT8, true);
    runner_matches_cpu(quant::Format::INT4, true);
  }
  quant_gemm_unforce();
}

// Group 128 on a text model of 128 / 384 inputs: every decode GEMV on one variant at a time.
TEST(CudaQuant, Int4RunnerTensorCoreVariants) {
  OST_REQUIRE_GPU();
  for (int v : {int(kW4Mma16x4), int(kW4Mma16x8), int(kW4Mma32x4), int(kW4Mma32x8), int(kW4Scalar4), 0}) {
    SCOPED_TRACE("variant " + std::to_string(v));
    w4a16_force_variant(v);
    runner_matches_cpu(quant::Format::INT4, true);
  }
  w4a16_force_variant(0);
}

}  // namespace
}  // namespace ost::testing
