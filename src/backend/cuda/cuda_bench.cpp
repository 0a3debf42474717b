// The two device ceilings every speed figure is compared with: HBM bandwidth, measured as a
// large device-to-device copy (bytes read + written), and the bf16 GEMM rate of cuBLASLt on a
// square product that fills the chip. Random (not zero) inputs; median of repeated runs.
#include <algorithm>
#include <random>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_runner.h"
#include "backend/cuda/gemm.h"
#include "core/bf16.h"

namespace ost {
namespace {

template <class F>
Result<float> median_ms(int reps, F&& f) {
  cudaEvent_t a, b;
  OST_CUDA_RET(cudaEventCreate(&a));
  OST_CUDA_RET(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < reps + 2; ++i) {  // two warm-up runs
    OST_CUDA_RET(cudaEventRecord(a));
    OST_TRY(f());
    OST_CUDA_RET(cudaEventRecord(b));
    OST_CUDA_RET(cudaEventSynchronize(b));
    float ms = 0;
    OST_CUDA_RET(cudaEventElapsedTime(&ms, a, b));
    if (i >= 2) t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

Result<DeviceCeilings> measure_device_ceilings() {
  DeviceCeilings out;
  cudaDeviceProp prop{};
  OST_CUDA_RET(cudaGetDeviceProperties(&prop, 0));
  out.device = prop.name;

  {  // copy: 1 GiB each way
    const size_t bytes = size_t(1) << 30;
    void *a = nullptr, *b = nullptr;
    OST_CUDA_RET(cudaMalloc(&a, bytes));
    OST_CUDA_RET(cudaMalloc(&b, bytes));
    OST_CUDA_RET(cudaMemset(a, 0x5a, bytes));
    auto ms = median_ms(10, [&]() -> Status {
      OST_CUDA_RET(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0));
      return Status::ok();
    });
    cudaFree(a);
    cudaFree(b);
    OST_TRY(ms.status());
    out.copy_gb_per_s = 2.0 * double(bytes) / (double(*ms) * 1e-3) / 1e9;
  }
  {  // GEMM 8192³
    const int n = 8192;
    out.gemm_size = n;
    std::vector<bf16_t> h(size_t(n) * n);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& v : h) v = f32_to_bf16(u(rng));
    __nv_bfloat16 *x = nullptr, *w = nullptr, *y = nullptr;
    OST_CUDA_RET(cudaMalloc(&x, h.size() * 2));
    OST_CUDA_RET(cudaMalloc(&w, h.size() * 2));
    OST_CUDA_RET(cudaMalloc(&y, h.size() * 2));
    OST_CUDA_RET(cudaMemcpy(x, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
    OST_CUDA_RET(cudaMemcpy(w, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
    cuda::Gemm g;
    OST_TRY(g.init());
    auto ms = median_ms(10, [&]() { return g.run(x, n, w, n, n, nullptr, y, 0); });
    cudaFree(x);
    cudaFree(w);
    cudaFree(y);
    OST_TRY(ms.status());
    out.gemm_tflops = 2.0 * double(n) * n * n / (double(*ms) * 1e-3) / 1e12;
  }
  return out;
}

}  // namespace ost
