// Helpers of the quantized-linear tests: CPU views of a quantized matrix (for ops::matmul, the
// oracle) and its GPU copy as the runner keeps it.
#pragma once
#include <cuda_fp16.h>

#include <memory>
#include <vector>

#include "backend/ops.h"
#include "core/bf16.h"
#include "cuda_test_util.h"
#include "quant/quant.h"

namespace ost::testing {

inline ops::WeightView int8_view(const quant::QuantizedMatrix& m) {
  ops::WeightView w{ops::WType::INT8, m.data.data(), m.rows, m.cols};
  w.scale = m.scale.data();
  return w;
}

inline ops::WeightView int4_view(const quant::QuantizedMatrix& m) {
  ops::WeightView w{ops::WType::INT4, m.data.data(), m.rows, m.cols};
  w.scale = m.scale.data();
  w.zero = m.zero.data();
  w.group = m.group;
  return w;
}

struct Int8Dev {
  std::unique_ptr<DevBuf<int8_t>> w;
  std::unique_ptr<DevBuf<float>> scale;
};

// The GPU copy of an INT8 matrix: codes and per-channel scales as they are.
inline Int8Dev int8_to_dev(const quant::QuantizedMatrix& m) {
  Int8Dev d;
  d.w = std::make_unique<DevBuf<int8_t>>(m.data.size());
  d.scale = std::make_unique<DevBuf<float>>(m.scale.size());
  EXPECT_EQ(cudaMemcpy(d.w->p, m.data.data(), m.data.size(), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d.scale->p, m.scale.data(), m.scale.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

struct Int4Dev {
  std::unique_ptr<DevBuf<uint8_t>> w, zero;
  std::unique_ptr<DevBuf<__half>> scale;
};

// The GPU copy: nibbles and zero points as they are, the scales as f16 (the f32 values the
// quantizer keeps are f16 values, so the conversion is exact).
inline Int4Dev int4_to_dev(const quant::QuantizedMatrix& m) {
  Int4Dev d;
  d.w = std::make_unique<DevBuf<uint8_t>>(m.data.size());
  d.zero = std::make_unique<DevBuf<uint8_t>>(m.zero.size());
  d.scale = std::make_unique<DevBuf<__half>>(m.scale.size());
  std::vector<uint16_t> h(m.scale.size());
  for (size_t i = 0; i < h.size(); ++i) {
    h[i] = f32_to_f16(m.scale[i]);
    EXPECT_EQ(f16_to_f32(h[i]), m.scale[i]) << "scale " << i << " is not an f16 value";
  }
  EXPECT_EQ(cudaMemcpy(d.w->p, m.data.data(), m.data.size(), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d.zero->p, m.zero.data(), m.zero.size(), cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d.scale->p, h.data(), h.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

}  // namespace ost::testing
