// FP8 (e4m3) W8A8 linear layers on the GPU: y[n, out] = x[n, in] · Wᵀ with the semantics of the
// CPU reference (ops::matmul on FP8 weights, quant::quantize_act_fp8):
//   * W: e4m3 [out, in] with one f32 scale per 128×128 block (Qwen's FP8 layout, quant/format.h);
//   * x: quantized per token in blocks of 128 inputs, s = amax/448, q = e4m3(x · (1/s));
//   * y[m, o] = Σ_blocks s_x[m, b] · s_w[o, b] · Σ_{k in b} q_x[m, k] · q_w[o, k], fp32, bf16 out.
// Two paths:
//   decode (n <= kFp8GemvMaxRows): launch_fp8_act_quant (or the kernel that wrote x, see
//     Fp8Gemm::run_quantized), then launch_fp8_gemv streams the e4m3 weights once with 16-byte
//     loads: from 2 rows of x on the FP8 tensor cores (mma.sync, the x rows as the 8 columns;
//     in % 128 == 0) with both scales applied per 128-input block, else one warp per two output
//     channels applying them per 16-input chunk (launch_fp8_gemv_fused below: the same product
//     in one kernel, opt-in);
//   prefill: Fp8Gemm runs cuBLASLt's FP8 GEMM with 128×128 block scales on W and 1×128 scales on
//     x (Hopper tensor cores), when cuBLASLt offers an algorithm for the shape (the heuristic's
//     candidates are timed on the first eager call of each shape); otherwise the GEMV kernel
//     over slices of 8 rows (correct, not fast).
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include "core/status.h"

namespace ost::cuda {

constexpr int64_t kFp8GemvMaxRows = 8;
constexpr int kFp8Block = 128;

// An FP8 matrix on the GPU. The scale of weight (r, k) is scale[(r >> scale_shift) · scale_ld +
// k / 128]: scale_shift 7 is the checkpoint's 128×128 block layout (rows of blocks padded to
// scale_ld = a multiple of 4, as cuBLASLt wants); scale_shift 0 holds one row of block scales per
// output channel (used when matrices whose row counts are not multiples of 128 are stacked).
struct Fp8Weight {
  const uint8_t* w = nullptr;  // e4m3 [out, in], in % 16 == 0
  const float* scale = nullptr;
  int64_t scale_ld = 0;
  int scale_shift = 7;
  explicit operator bool() const { return w != nullptr; }
};

// Per-token activation quantization: x bf16 [n, in] -> q e4m3 [n, in], scale f32 with the
// scale of (row m, block b) at scale[b · n + m] (cuBLASLt's outer-dimension-major 1×128 layout).
// With n_valid >= 0, rows n_valid .. n-1 are padding (zeros, scale 1) and x is not read there.
Status launch_fp8_act_quant(const __nv_bfloat16* x, int64_t n, int64_t in, uint8_t* q, float* scale,
                            cudaStream_t s, int64_t n_valid = -1);

// y bf16 [n, out] from the quantized x (q, scale as above; n <= kFp8GemvMaxRows).
struct Fp8GemvParams {
  const uint8_t* xq = nullptr;
  const float* xs = nullptr;
  Fp8Weight w;
  __nv_bfloat16* y = nullptr;
  int64_t n = 0, out = 0, in = 0;
  int64_t y_ld = 0;  // row stride of y (0: out)
};
Status launch_fp8_gemv(const Fp8GemvParams& p, cudaStream_t s);

// A decode kernel with the activation quantization fused in (no separate launch, weights
// requested before the previous kernel finishes): y = x · Wᵀ from bf16 x [n, in], any n (slices of
// 8 rows), in % 16 == 0 and in <= 16384. Fp8Gemm::run uses it for n <= 8 only with
// OST_FP8_GEMV=fused: it measured slower than the two-kernel path (fp8_gemm.cu).
bool fp8_fused_gemv_supported(int64_t in);
bool fp8_mma_gemv_enabled();
bool fp8_mma_gemv_forced();
bool fp8_fused_gemv_enabled();
Status launch_fp8_gemv_fused(const __nv_bfloat16* x, int64_t n, const Fp8Weight& w, __nv_bfloat16* y, int64_t y_ld,
                             int64_t out, int64_t in, cudaStream_t s);

class Fp8Gemm {
 public:
  Fp8Gemm() = default;
  ~Fp8Gemm();
  Fp8Gemm(const Fp8Gemm&) = delete;
  Fp8Gemm& operator=(const Fp8Gemm&) = delete;

  Status init(size_t workspace_bytes = size_t(32) << 20);
  static int64_t padded_rows(int64_t n) { return (n + 3) / 4 * 4; }
  // Bytes of scratch run() needs for n rows of in inputs (the quantized x and its scales).
  static size_t scratch_bytes(int64_t n, int64_t in);
  // y = x · Wᵀ. y must have room for padded_rows(n) rows: the GEMM path writes the padding rows
  // past n too. scratch: scratch_bytes(n, in), 16-byte aligned. OST_FP8_GEMM=gemv forces the
  // GEMV slices for every n, OST_FP8_GEMV=fused the fused decode kernel (A/B checks).
  Status run(const __nv_bfloat16* x, int64_t n, const Fp8Weight& w, int64_t out, int64_t in, __nv_bfloat16* y,
             void* scratch, cudaStream_t s);
  // Decode (n <= kFp8GemvMaxRows) from an x quantized already, by the kernel that produced it
  // (AddRmsNormParams::q8, SiluMulParams::q8) into act_scratch(scratch, n, in): the GEMV alone.
  Status run_quantized(int64_t n, const Fp8Weight& w, int64_t out, int64_t in, __nv_bfloat16* y, void* scratch,
                       cudaStream_t s);
  // Where run() and run_quantized() keep the quantized x of n rows in scratch.
  struct ActScratch {
    uint8_t* q;
    float* scale;
  };
  static ActScratch act_scratch(void* scratch, int64_t n, int64_t in);
  // Whether cuBLASLt has an algorithm for this shape (plans it if needed).
  bool lt_supported(int64_t n, int64_t out, int64_t in, const Fp8Weight& w);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    std::vector<cublasLtMatmulAlgo_t> candidates;  // heuristic's picks, timed on the first eager call
    bool ok = false;
  };
  using Key = std::tuple<int64_t, int64_t, int64_t>;  // n, out, in
  Plan& plan(int64_t n, int64_t out, int64_t in);

  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  bool force_gemv_ = false;
  std::map<Key, Plan> plans_;
};

}  // namespace ost::cuda
