#include "backend/cuda/rows_choice.h"

#include <cstdlib>

#include "backend/cuda/cuda_check.h"

namespace ost::cuda {

int env_choice(const char* var, std::initializer_list<int> allowed) {
  const char* e = std::getenv(var);
  if (!e) return 0;
  const int v = std::atoi(e);
  for (int a : allowed)
    if (v == a) return v;
  return 0;
}

Result<int> RowsChoice::pick(const Key& key, std::initializer_list<int> candidates, int fallback, bool may_time,
                             cudaStream_t s, const std::function<Status(int)>& launch,
                             std::vector<std::pair<int, float>>* times) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = chosen_.find(key);
    if (it != chosen_.end()) return it->second;
  }
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  OST_CUDA_RET(cudaStreamIsCapturing(s, &cap));
  if (cap != cudaStreamCaptureStatusNone || !may_time) return fallback;
  cudaEvent_t e0, e1;
  OST_CUDA_RET(cudaEventCreate(&e0));
  OST_CUDA_RET(cudaEventCreate(&e1));
  int best_r = fallback;
  float best = 1e30f;
  Status st = Status::ok();
  for (int r : candidates) {
    st = launch(r);
    if (!st.is_ok()) break;
    cudaEventRecord(e0, s);
    for (int i = 0; i < 5 && st.is_ok(); ++i) st = launch(r);
    if (!st.is_ok()) break;
    cudaEventRecord(e1, s);
    if (cudaEventSynchronize(e1) != cudaSuccess) {
      st = make_error("rows per block timing: %s", cudaGetErrorString(cudaGetLastError()));
      break;
    }
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (times) times->emplace_back(r, ms / 5);
    if (ms < best) best = ms, best_r = r;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  OST_TRY(st);
  std::lock_guard<std::mutex> lock(mu_);
  chosen_[key] = best_r;
  return best_r;
}

}  // namespace ost::cuda
