// Helpers of the CUDA tests: skip without a GPU, bf16 device buffers from fp32 host data,
// NaN poisoning, relative L2 error.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "model/runner.h"

namespace ost::testing {

#define OST_REQUIRE_GPU() \
  if (!::ost::cuda_available()) GTEST_SKIP() << "no CUDA GPU visible"

inline std::string test_data() {
  const char* e = std::getenv("OST_TEST_DATA");
  return e && *e ? std::string(e) : std::string(OST_TEST_DATA);
}

// Random values already rounded to bf16 (so host and device see the same inputs).
inline std::vector<float> randn_bf16(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = round_bf16(d(rng));
  return v;
}

template <class T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

using Bf = __nv_bfloat16;

inline std::unique_ptr<DevBuf<Bf>> to_dev(const std::vector<float>& v) {
  auto d = std::make_unique<DevBuf<Bf>>(v.size());
  std::vector<bf16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(v[i]);
  EXPECT_EQ(cudaMemcpy(d->p, h.data(), h.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

template <class T>
inline std::unique_ptr<DevBuf<T>> to_dev_raw(const std::vector<T>& v) {
  auto d = std::make_unique<DevBuf<T>>(v.size());
  EXPECT_EQ(cudaMemcpy(d->p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

// A bf16 device buffer filled with NaN: every element the op fails to write stays NaN.
inline std::unique_ptr<DevBuf<Bf>> poisoned(size_t n) {
  auto d = std::make_unique<DevBuf<Bf>>(n);
  EXPECT_EQ(cudaMemset(d->p, 0xff, n * 2), cudaSuccess);  // 0xffff is a NaN in bf16
  return d;
}

inline std::vector<float> from_dev(const Bf* p, size_t n) {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<bf16_t> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), p, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_to_f32(h[i]);
  return v;
}

// ‖a − b‖ / ‖b‖; any NaN in a gives +inf.
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isnan(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace ost::testing
