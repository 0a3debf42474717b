// Sampling candidates on the device for the serving loop's sampled rows (the host reference is
// model/candidates.h): the logit transform of each row (excluded ids, penalties, temperature)
// and the top-K of each row with its max and normaliser, so that only [rows, K] entries and
// two numbers per row go to the host instead of [rows, vocab] logits.
//
// topk.cu is compiled without fast math (src/CMakeLists.txt): the transform rounds each f32
// step as the host does and subnormals are kept.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/status.h"

namespace ost::cuda {

using bf16 = __nv_bfloat16;

// The most entries launch_topk selects per row.
constexpr int kMaxTopK = 1024;

// One row's transform (model/candidates.h: LogitTransform) and its slice [seen_begin, seen_end)
// of the seen-token list.
struct RowTransformDev {
  float temperature = 0.0f, repetition = 1.0f, presence = 0.0f, frequency = 0.0f;
  int32_t seen_begin = 0, seen_end = 0;
};
struct SeenTokenDev {
  int32_t id = 0, generated = 0;  // each id at most once per row
};

// t f32 [rows, d] = the logits x bf16 [rows, d] after row r's transform, as apply_transform:
// the excluded ids (int32 [1 + 15]: count, ids; sampling.h) -inf, the penalties over the row's
// seen tokens, then the division by the temperature (when > 0).
Status launch_logit_transform(const bf16* x, int64_t rows, int64_t d, const RowTransformDev* params,
                              const SeenTokenDev* seen, const int32_t* excluded, float* t, cudaStream_t s);

struct TopkEntry {
  float value = 0.0f;  // x[r, id]
  float raw = 0.0f;    // raw[r, id] (the value when raw is null)
  int32_t id = 0;
};
struct TopkStats {
  double sum = 0.0;  // Σ exp(double(x) - max) over the row (terms below e^-46 left out)
  float max = 0.0f;  // the largest non-NaN value (-inf when none)
  int32_t nan_count = 0;
};

// Per row r of x [rows, d] (T = float or bf16): stats[r], and out[r·kmax + j] for j <
// min(k[r], kmax, d): the largest values of the row sorted descending, ties by lower id (-0 and
// +0 equal), as a full sort of the row would order them.
template <typename T>
Status launch_topk(const T* x, const bf16* raw, int64_t rows, int64_t d, const int32_t* k, int kmax,
                   TopkEntry* out, TopkStats* stats, cudaStream_t s);

}  // namespace ost::cuda
