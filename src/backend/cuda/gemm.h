// bf16 GEMM through cuBLASLt: y[n, out] = x[n, in] · W[out, in]ᵀ (+ bias[out]), fp32
// accumulation, bf16 output rounded once (the bias is added in the epilogue, before rounding).
// The algorithm of each shape is picked once and cached: for small n (decode, where the
// product is a bandwidth-bound GEMV) the heuristic's top candidates are timed on the first call
// made outside graph capture and the fastest is kept, the GEMV kernels of gemv.h (n <= 8) among
// them unless OST_GEMV=0; otherwise the heuristic's first choice.
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

class Gemm {
 public:
  Gemm() = default;
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  Status init(size_t workspace_bytes = size_t(32) << 20);
  // x bf16 [n, in] (row stride in), w bf16 [out, in], bias bf16 [out] or null, y bf16 [n, out].
  Status run(const __nv_bfloat16* x, int64_t n, const __nv_bfloat16* w, int64_t out, int64_t in,
             const __nv_bfloat16* bias, __nv_bfloat16* y, cudaStream_t s);
  // y = gelu_tanh(x · Wᵀ + bias) with the gelu in cuBLASLt's epilogue (CUBLASLT_EPILOGUE_GELU_BIAS,
  // the tanh form), applied to the fp32 sum before the one bf16 rounding. bias is required; the
  // heuristic's first algorithm, no GEMV (for the vision MLP's many rows).
  Status run_bias_gelu(const __nv_bfloat16* x, int64_t n, const __nv_bfloat16* w, int64_t out, int64_t in,
                       const __nv_bfloat16* bias, __nv_bfloat16* y, cudaStream_t s);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    std::vector<cublasLtMatmulAlgo_t> candidates;  // heuristic's top picks, timed on first use
    bool tune = false;                              // time the candidates on the next eager call
    int gemv_rows = 0;                              // > 0: the GEMV kernel with this many rows per block
  };
  static constexpr int64_t kTuneMaxRows = 64;
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool>;  // n, out, in, bias, gelu
  Result<Plan*> plan(int64_t n, int64_t out, int64_t in, bool bias, bool gelu = false);

  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  bool gemv_ = true;
  std::map<Key, Plan> plans_;
};

}  // namespace ost::cuda
