#include "backend/cuda/gemm.h"

#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv.h"

namespace ost::cuda {

Gemm::~Gemm() {
  for (auto& [k, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.desc);
  }
  if (workspace_) cudaFree(workspace_);
  if (lt_) cublasLtDestroy(lt_);
}

Status Gemm::init(size_t workspace_bytes) {
  OST_CUBLAS_RET(cublasLtCreate(&lt_));
  workspace_bytes_ = workspace_bytes;
  const char* g = std::getenv("OST_GEMV");
  gemv_ = !(g && std::strcmp(g, "0") == 0);
  OST_CUDA_RET(cudaMalloc(&workspace_, workspace_bytes_));
  return Status::ok();
}

// Column-major view: yᵀ [out, n] = W [out, in] (W stored row-major = Wᵀ column-major, so op T)
// · xᵀ [in, n].
Result<Gemm::Plan*> Gemm::plan(int64_t n, int64_t out, int64_t in, bool bias, bool gelu) {
  const Key key{n, out, in, bias, gelu};
  auto it = plans_.find(key);
  if (it != plans_.end()) return &it->second;
  Plan p;
  OST_CUBLAS_RET(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  OST_CUBLAS_RET(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  OST_CUBLAS_RET(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (bias) {
    const cublasLtEpilogue_t ep = gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    OST_CUBLAS_RET(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
  }
  OST_CUBLAS_RET(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, uint64_t(in), uint64_t(out), in));
  OST_CUBLAS_RET(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, uint64_t(in), uint64_t(n), in));
  OST_CUBLAS_RET(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_16BF, uint64_t(out), uint64_t(n), out));
  cublasLtMatmulPreference_t pref;
  OST_CUBLAS_RET(cublasLtMatmulPreferenceCreate(&pref));
  OST_CUBLAS_RET(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_, sizeof workspace_bytes_));
  constexpr int kCandidates = 8;
  cublasLtMatmulHeuristicResult_t res[kCandidates] = {};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt_, p.desc, p.a, p.b, p.c, p.c, pref,
                                                           n <= kTuneMaxRows ? kCandidates : 1, res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    return make_error("cuBLASLt has no algorithm for bf16 GEMM n=%lld out=%lld in=%lld",
                      (long long)n, (long long)out, (long long)in);
  p.algo = res[0].algo;
  for (int i = 0; i < found; ++i)
    if (res[i].state == CUBLAS_STATUS_SUCCESS) p.candidates.push_back(res[i].algo);
  p.tune = !gelu && (p.candidates.size() >= 2 || (gemv_ && n <= kGemvMaxRows && in % 8 == 0));
  if (!p.tune) p.candidates.clear();
  return &plans_.emplace(key, p).first->second;
}

Status Gemm::run(const __nv_bfloat16* x, int64_t n, const __nv_bfloat16* w, int64_t out,
                 int64_t in, const __nv_bfloat16* bias, __nv_bfloat16* y, cudaStream_t s) {
  if (n == 0) return Status::ok();
  auto p = plan(n, out, in, bias != nullptr);
  OST_TRY(p.status());
  Plan& pl = **p;
  if (bias)
    OST_CUBLAS_RET(cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                  &bias, sizeof bias));
  const float alpha = 1.0f, beta = 0.0f;
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  OST_CUDA_RET(cudaStreamIsCapturing(s, &cap));
  if (pl.tune && cap == cudaStreamCaptureStatusNone) {
    // Time each candidate on this call's own operands (y is written, never read).
    cudaEvent_t e0, e1;
    OST_CUDA_RET(cudaEventCreate(&e0));
    OST_CUDA_RET(cudaEventCreate(&e1));
    float best = 1e30f;
    for (const cublasLtMatmulAlgo_t& a : pl.candidates) {
      if (cublasLtMatmul(lt_, pl.desc, &alpha, w, pl.a, x, pl.b, &beta, y, pl.c, y, pl.c, &a, workspace_,
                         workspace_bytes_, s) != CUBLAS_STATUS_SUCCESS)
        continue;
      OST_CUDA_RET(cudaEventRecord(e0, s));
      for (int r = 0; r < 5; ++r)
        cublasLtMatmul(lt_, pl.desc, &alpha, w, pl.a, x, pl.b, &beta, y, pl.c, y, pl.c, &a, workspace_,
                       workspace_bytes_, s);
      OST_CUDA_RET(cudaEventRecord(e1, s));
      OST_CUDA_RET(cudaEventSynchronize(e1));
      float ms = 0;
      OST_CUDA_RET(cudaEventElapsedTime(&ms, e0, e1));
      if (ms < best) best = ms, pl.algo = a;
    }
    const GemvParams gp{x, w, bias, y, int(n), out, in};
    int rows[4];
    const int nv = gemv_ && gemv_supports(n, in, x, w) ? gemv_variants(n, rows) : 0;
    for (int v = 0; v < nv; ++v) {
      OST_TRY(launch_gemv(gp, rows[v], s, false));
      OST_CUDA_RET(cudaEventRecord(e0, s));
      for (int r = 0; r < 5; ++r) OST_TRY(launch_gemv(gp, rows[v], s, false));
      OST_CUDA_RET(cudaEventRecord(e1, s));
      OST_CUDA_RET(cudaEventSynchronize(e1));
      float ms = 0;
      OST_CUDA_RET(cudaEventElapsedTime(&ms, e0, e1));
      if (ms < best) best = ms, pl.gemv_rows = rows[v];
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    pl.candidates.clear();
    pl.tune = false;
  }
  if (pl.gemv_rows > 0 && gemv_supports(n, in, x, w))
    return launch_gemv({x, w, bias, y, int(n), out, in}, pl.gemv_rows, s);
  OST_CUBLAS_RET(cublasLtMatmul(lt_, pl.desc, &alpha, w, pl.a, x, pl.b, &beta, y, pl.c, y, pl.c,
                                &pl.algo, workspace_, workspace_bytes_, s));
  return Status::ok();
}

Status Gemm::run_bias_gelu(const __nv_bfloat16* x, int64_t n, const __nv_bfloat16* w, int64_t out,
                           int64_t in, const __nv_bfloat16* bias, __nv_bfloat16* y, cudaStream_t s) {
  if (!bias) return make_error("gemm: the gelu epilogue needs a bias");
  if (n == 0) return Status::ok();
  auto p = plan(n, out, in, true, true);
  OST_TRY(p.status());
  Plan& pl = **p;
  OST_CUBLAS_RET(cublasLtMatmulDescSetAttribute(pl.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  const float alpha = 1.0f, beta = 0.0f;
  OST_CUBLAS_RET(cublasLtMatmul(lt_, pl.desc, &alpha, w, pl.a, x, pl.b, &beta, y, pl.c, y, pl.c, &pl.algo,
                                workspace_, workspace_bytes_, s));
  return Status::ok();
}

}  // namespace ost::cuda
