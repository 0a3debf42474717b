// Token choice on the device for the serving loop: the greedy token of each logits row with a
// set of token ids that may not be chosen (the vision placeholders), and its log-probability
// under the unmasked distribution, as the engine's Sampler and top_logprobs compute them.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/status.h"

namespace ost::cuda {

using bf16 = __nv_bfloat16;

// At most this many excluded ids.
constexpr int kMaxExcludedTokens = 15;

// excluded: device int32 [1 + kMaxExcludedTokens]: the count, then the ids (read at run time,
// so a captured graph sees later changes). out[r] = the largest of x[r, :] outside the excluded
// ids (the lowest id on ties; -1 when every id is excluded); logprob[r] = x[r, out[r]] -
// logsumexp(x[r, :]) over all ids, fp32.
Status launch_argmax_logprob_excluding(const bf16* x, int64_t rows, int64_t d, const int32_t* excluded,
                                       int32_t* out, float* logprob, cudaStream_t s);

}  // namespace ost::cuda

namespace ost::cuda {

// dst[i, :] = src[idx[i], :] for i < n, rows of `width` bf16 (dst and src do not overlap): the
// rows of a mixed step whose logits are wanted.
Status launch_gather_rows(const bf16* src, const int32_t* idx, int64_t n, int64_t width, bf16* dst,
                          cudaStream_t s);

}  // namespace ost::cuda
