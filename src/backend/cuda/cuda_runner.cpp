// Entry points of the CUDA backend, seen by the engine through model/runner.h.
#include <cuda_runtime.h>

#include "model/runner.h"

namespace ost {

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

Result<std::unique_ptr<ModelRunner>> load_cuda_runner(const std::string& dir) {
  if (!cuda_available()) return make_error("no CUDA GPU is visible; use --device cpu");
  return make_error("the CUDA model runner is not in this build yet; use --device cpu");
}

}  // namespace ost
