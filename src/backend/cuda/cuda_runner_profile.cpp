// Profiling the CUDA runner: events recorded between the ops of one eager decode step or vision
// pass (mark), summed per category (the split `bench engine` prints).
#include <algorithm>

#include "backend/cuda/cuda_runner_impl.h"

namespace ost {
namespace cuda {

void CudaRunner::mark_start() {
  if (!profile_) return;
  marks_.clear();
  mark(nullptr);
}

void CudaRunner::mark(const char* category) {
  if (!profile_) return;
  cudaEvent_t e;
  if (cudaEventCreate(&e) != cudaSuccess) return;
  cudaEventRecord(e, stream_);
  marks_.push_back({category, e});
}

Result<std::vector<std::pair<std::string, double>>> CudaRunner::profile_decode(
    const std::vector<SequenceState*>& seqs, const std::vector<int32_t>& ids) {
  profile_ = true;
  Status st = decode_step(seqs, ids);
  profile_ = false;
  OST_TRY(st);
  OST_CUDA_RET(cudaStreamSynchronize(stream_));
  return collect_marks();
}

Result<std::vector<std::pair<std::string, double>>> CudaRunner::profile_vision(const VisionInput& in) {
  profile_ = true;
  auto r = encode_images(in);
  profile_ = false;
  OST_TRY(r.status());
  OST_CUDA_RET(cudaStreamSynchronize(stream_));
  return collect_marks();
}

std::vector<std::pair<std::string, double>> CudaRunner::collect_marks() {
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 1; i < marks_.size(); ++i) {
    float ms = 0;
    cudaEventElapsedTime(&ms, marks_[i - 1].second, marks_[i].second);
    const std::string cat = marks_[i].first;
    auto it = std::find_if(out.begin(), out.end(), [&](auto& p) { return p.first == cat; });
    if (it == out.end()) out.push_back({cat, double(ms)});
    else it->second += double(ms);
  }
  for (auto& m : marks_) cudaEventDestroy(m.second);
  marks_.clear();
  return out;
}

}  // namespace cuda

Result<std::vector<std::pair<std::string, double>>> cuda_profile_decode(
    ModelRunner& r, const std::vector<SequenceState*>& seqs, const std::vector<int32_t>& ids) {
  auto* c = dynamic_cast<cuda::CudaRunner*>(&r);
  if (!c) return make_error("cuda_profile_decode: not the CUDA runner");
  return c->profile_decode(seqs, ids);
}

Result<std::vector<std::pair<std::string, double>>> cuda_profile_vision(ModelRunner& r,
                                                                        const VisionInput& in) {
  auto* c = dynamic_cast<cuda::CudaRunner*>(&r);
  if (!c) return make_error("cuda_profile_vision: not the CUDA runner");
  return c->profile_vision(in);
}

}  // namespace ost
