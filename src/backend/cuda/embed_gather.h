// Token embedding gather from a quantized table (INT8 / FP8 / INT4, the layouts of
// quant/format.h, kept on the GPU as stored): out[i, :] = bf16(dequant(table[ids[i], :])).
// Each value is dequantized with one f32 product, as quant::dequant_segment does, and rounded to
// bf16 (nearest even), so the rows equal ops::embedding's on the CPU for the same table. One block
// per id; each thread step widens 8 values (one 8-, 8- or 4-byte load, one 16-byte store) when
// d % 8 == 0 and the groups (FP8 blocks, INT4 groups) are multiples of 8, else one value.
// bf16 tables take launch_embedding (kernels.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/status.h"
#include "quant/format.h"

namespace ost::cuda {

struct EmbedGatherParams {
  quant::QView table;            // INT8, FP8 or INT4 [vocab, d], device pointers
  const int32_t* ids = nullptr;  // int32 [n], each in [0, vocab) (not checked here)
  __nv_bfloat16* out = nullptr;  // bf16 [n, d]
  int64_t n = 0;
};
Status launch_embed_gather(const EmbedGatherParams& p, cudaStream_t s);

}  // namespace ost::cuda
