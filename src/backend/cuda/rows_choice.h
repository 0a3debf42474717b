// A GEMV's rows per block, chosen by timing the candidates on the call's own operands the first
// time a shape is seen outside CUDA graph capture (the INT8 and INT4 kernels use it).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "core/status.h"

namespace ost::cuda {

// The value of environment variable `var` when it is one of `allowed`, else 0 (A/B switches).
int env_choice(const char* var, std::initializer_list<int> allowed);

class RowsChoice {
 public:
  using Key = std::tuple<int64_t, int64_t, int64_t, int>;  // n, out, in, variant
  // The choice made for `key` before; else, when timing is allowed (may_time and the stream not
  // capturing), each candidate launched once, then 5 times between events, and the fastest kept;
  // `fallback` otherwise (not remembered). `times`, when given, receives each timed candidate's
  // mean milliseconds per launch.
  Result<int> pick(const Key& key, std::initializer_list<int> candidates, int fallback, bool may_time,
                   cudaStream_t s, const std::function<Status(int)>& launch,
                   std::vector<std::pair<int, float>>* times = nullptr);

 private:
  std::mutex mu_;
  std::map<Key, int> chosen_;
};

}  // namespace ost::cuda
