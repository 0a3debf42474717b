// The prefill GEMMs on quantized weights (quant_prefill.h) against the CPU op (ops::matmul on the
// INT8 / INT4 view, the oracle) and against the widening path (dequantize + the bf16 GEMM), both
// tile sizes, with and without bias. Outputs are poisoned with NaN and carry two guard rows past
// n: every element of the n rows must be written, none past them.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/cuda/gemm.h"
#include "backend/cuda/int4_gemm.h"
#include "backend/cuda/quant_gemm.h"
#include "backend/cuda/quant_prefill.h"
#include "cuda_test_util.h"
#include "quant_test_util.h"

namespace ost::testing {
namespace {

using namespace ost::cuda;

struct Shape {
  int64_t n, out, in;
};
// Rows 33 .. 1240; outputs / inputs of the 8B's o_proj, qkv, down_proj and gate_up (few rows for
// the largest: the CPU product is the test's cost), and small ones: outputs not a multiple of the
// 128-channel tile, fewer than one tile, odd.
const Shape kShapes[] = {{33, 4096, 4096},  {100, 6144, 4096}, {296, 4096, 12288}, {40, 24576, 4096},
                         {1240, 1000, 4096}, {33, 18, 64},      {77, 3, 128},       {100, 130, 192},
                         {1240, 257, 640},  {65, 129, 64}};

// Every tile size (rows × channels; 0 × 0: the default for n).
struct TileSize {
  int rows, cols;
};
const TileSize kTiles[] = {{0, 0}, {128, 128}, {64, 128}, {128, 64}, {64, 64}};

std::string label(const Shape& sh, bool bias, TileSize tile) {
  return std::to_string(sh.n) + "x" + std::to_string(sh.out) + "x" + std::to_string(sh.in) + (bias ? " bias" : "") +
         " tile " + std::to_string(tile.rows) + "x" + std::to_string(tile.cols);
}

// The n rows of y (n + 2 rows, poisoned before the launch); fails where a guard row was written.
std::vector<float> rows_written(const DevBuf<Bf>& y, int64_t n, int64_t out, const std::string& what) {
  std::vector<float> got = from_dev(y.p, size_t((n + 2) * out));
  int64_t past = 0;
  for (size_t i = size_t(n * out); i < got.size(); ++i) past += !std::isnan(got[i]);
  EXPECT_EQ(past, 0) << what << ": elements written past row n";
  got.resize(size_t(n * out));
  return got;
}

// ref + bias per output channel (the CPU op adds the bias to the fp32 sum the same way).
std::vector<float> with_bias(std::vector<float> ref, const std::vector<float>& b) {
  for (size_t i = 0; i < ref.size(); ++i) ref[i] += b[i % b.size()];
  return ref;
}

// The bf16 GEMM on the widened matrix dq (bf16 [out, in]), as the widening path runs it.
std::vector<float> widened_product(Gemm& gemm, const Bf* x, const Bf* dq, const Shape& sh) {
  auto dy = poisoned(size_t(sh.n * sh.out));
  EXPECT_TRUE(gemm.run(x, sh.n, dq, sh.out, sh.in, nullptr, dy->p, 0).is_ok());
  return from_dev(dy->p, size_t(sh.n * sh.out));
}

// launch(bias, tile, y) for each tile size, without and with the bias b: y against the CPU op's
// ref (+ b) within tol, and without bias against the widening path's product within tol_widened.
void check_tiles(const Shape& sh, const std::vector<float>& ref, const std::vector<float>& b,
                 const std::vector<float>& widened, double tol, double tol_widened, const std::string& tag,
                 const std::function<Status(bool, TileSize, Bf*)>& launch) {
  for (bool bias : {false, true}) {
    const std::vector<float> want = bias ? with_bias(ref, b) : ref;
    for (TileSize tile : kTiles) {
      auto dy = poisoned(size_t((sh.n + 2) * sh.out));
      Status st = launch(bias, tile, dy->p);
      ASSERT_TRUE(st.is_ok()) << st.message();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const std::string what = label(sh, bias, tile) + tag;
      const std::vector<float> got = rows_written(*dy, sh.n, sh.out, what);
      EXPECT_LE(rel_l2(got, want), tol) << what;
      if (!bias) EXPECT_LE(rel_l2(got, widened), tol_widened) << what << " vs the widening path";
    }
  }
}

TEST(CudaQuantPrefill, W8A16GemmMatchesCpu) {
  OST_REQUIRE_GPU();
  Gemm gemm;
  ASSERT_TRUE(gemm.init().is_ok());
  for (const Shape& sh : kShapes) {
    auto wf = randn_bf16(size_t(sh.out * sh.in), 21, 0.05f);
    auto qm = quant::quantize(quant::Format::INT8, wf.data(), sh.out, sh.in, 0);
    ASSERT_TRUE(qm.is_ok());
    const Int8Dev d = int8_to_dev(*qm);
    int8_t* dw = d.w->p;
    float* ds = d.scale->p;
    auto x = randn_bf16(size_t(sh.n * sh.in), uint32_t(sh.n));
    auto b = randn_bf16(size_t(sh.out), 7);
    auto dx = to_dev(x), db = to_dev(b);
    std::vector<float> ref(size_t(sh.n * sh.out));
    ops::matmul(x.data(), sh.n, int8_view(*qm), nullptr, ref.data());
    // The widening path: bf16(q · s) weights, then the bf16 GEMM.
    auto dq = poisoned(size_t(sh.out * sh.in));
    ASSERT_TRUE(launch_dequant_int8({dw, ds, dq->p, sh.out, sh.in}, 0).is_ok());
    const std::vector<float> widened = widened_product(gemm, dx->p, dq->p, sh);
    // exact products, fp32 sums: the output's bf16 rounding is nearly all of the error
    check_tiles(sh, ref, b, widened, 5e-3, 1e-2, "", [&](bool bias, TileSize tile, Bf* y) {
      return launch_w8a16_gemm({dx->p, dw, ds, bias ? db->p : nullptr, y, sh.n, sh.out, sh.in, tile.rows, tile.cols}, 0);
    });
  }
}

// Groups 64 to 256; the widening path rounds the same bf16((q − z) · s) weights, so the two differ
// only in the order of the fp32 sums.
TEST(CudaQuantPrefill, W4A16GemmMatchesCpu) {
  OST_REQUIRE_GPU();
  Gemm gemm;
  ASSERT_TRUE(gemm.init().is_ok());
  int i = 0;
  for (const Shape& sh : kShapes) {
    const int group = sh.in % 128 ? 64 : (++i % 3 == 0 && sh.in % 256 == 0) ? 256 : 128;
    auto wf = randn_bf16(size_t(sh.out * sh.in), 22, 0.05f);
    auto qm = quant::quantize(quant::Format::INT4, wf.data(), sh.out, sh.in, group);
    ASSERT_TRUE(qm.is_ok()) << qm.message();
    Int4Dev d = int4_to_dev(*qm);
    auto x = randn_bf16(size_t(sh.n * sh.in), uint32_t(100 + sh.n));
    auto b = randn_bf16(size_t(sh.out), 8);
    auto dx = to_dev(x), db = to_dev(b);
    std::vector<float> ref(size_t(sh.n * sh.out));
    ops::matmul(x.data(), sh.n, int4_view(*qm), nullptr, ref.data());
    auto dq = poisoned(size_t(sh.out * sh.in));
    ASSERT_TRUE(launch_dequant_int4({d.w->p, d.scale->p, d.zero->p, dq->p, sh.out, sh.in, group}, 0).is_ok());
    const std::vector<float> widened = widened_product(gemm, dx->p, dq->p, sh);
    check_tiles(sh, ref, b, widened, 1e-2, 5e-3, " g" + std::to_string(group), [&](bool bias, TileSize tile, Bf* y) {
      return launch_w4a16_gemm({dx->p, d.w->p, d.scale->p, d.zero->p, bias ? db->p : nullptr, y, sh.n, sh.out, sh.in,
                                group, tile.rows, tile.cols},
                               0);
    });
  }
}

// Shapes the kernel does not take are refused (the runner then widens).
TEST(CudaQuantPrefill, RefusesOtherShapes) {
  OST_REQUIRE_GPU();
  DevBuf<Bf> x(64 * 96), y(64 * 16);
  DevBuf<int8_t> w(16 * 96);
  DevBuf<float> s(16);
  EXPECT_FALSE(launch_w8a16_gemm({x.p, w.p, s.p, nullptr, y.p, 64, 16, 96}, 0).is_ok());  // in % 64
  EXPECT_FALSE(launch_w8a16_gemm({x.p, w.p, s.p, nullptr, y.p, 64, 16, 64, 32}, 0).is_ok());      // tile rows
  EXPECT_FALSE(launch_w8a16_gemm({x.p, w.p, s.p, nullptr, y.p, 64, 16, 64, 64, 256}, 0).is_ok());  // tile cols
  DevBuf<uint8_t> q(16 * 64), z(16 * 4);
  DevBuf<__half> sc(16 * 4);
  EXPECT_FALSE(launch_w4a16_gemm({x.p, q.p, sc.p, z.p, nullptr, y.p, 64, 16, 128, 32}, 0).is_ok());  // group 32
  EXPECT_FALSE(launch_w4a16_gemm({x.p, q.p, sc.p, z.p, nullptr, y.p, 64, 16, 96, 96}, 0).is_ok());   // in % 64
}

// run_w8a16_prefill: forced to the kernel it never widens (the tile sizes are timed), forced to
// widen it only widens, and left to choose it times both (the widening callback runs); the
// result is right every way.
TEST(CudaQuantPrefill, ChoiceRunsBothPaths) {
  OST_REQUIRE_GPU();
  const Shape sh{300, 520, 1024};  // a shape no other test times
  auto wf = randn_bf16(size_t(sh.out * sh.in), 23, 0.05f);
  auto qm = quant::quantize(quant::Format::INT8, wf.data(), sh.out, sh.in, 0);
  ASSERT_TRUE(qm.is_ok());
  const Int8Dev d = int8_to_dev(*qm);
  int8_t* dw = d.w->p;
  float* ds = d.scale->p;
  auto x = randn_bf16(size_t(sh.n * sh.in), 9);
  auto dx = to_dev(x);
  std::vector<float> ref(size_t(sh.n * sh.out));
  ops::matmul(x.data(), sh.n, int8_view(*qm), nullptr, ref.data());
  Gemm gemm;
  ASSERT_TRUE(gemm.init().is_ok());
  auto dq = poisoned(size_t(sh.out * sh.in));
  for (QuantGemmMode m : {kQuantGemmMma, kQuantGemmWiden, kQuantGemmAuto}) {
    quant_gemm_force(m);
    auto dy = poisoned(size_t((sh.n + 2) * sh.out));
    int widened = 0;
    auto widen = [&]() -> Status {
      ++widened;
      OST_TRY(launch_dequant_int8({dw, ds, dq->p, sh.out, sh.in}, 0));
      return gemm.run(dx->p, sh.n, dq->p, sh.out, sh.in, nullptr, dy->p, 0);
    };
    Status st = run_w8a16_prefill({dx->p, dw, ds, nullptr, dy->p, sh.n, sh.out, sh.in}, widen, 0);
    ASSERT_TRUE(st.is_ok()) << st.message();
    const std::vector<float> got = rows_written(*dy, sh.n, sh.out, "mode " + std::to_string(m));
    EXPECT_LE(rel_l2(got, ref), 1e-2) << "mode " << m;
    if (m == kQuantGemmMma) EXPECT_EQ(widened, 0);
    if (m == kQuantGemmWiden) EXPECT_EQ(widened, 1);
    if (m == kQuantGemmAuto) EXPECT_GE(widened, 6) << "the widening path was not timed";
  }
  quant_gemm_unforce();
}

}  // namespace
}  // namespace ost::testing
