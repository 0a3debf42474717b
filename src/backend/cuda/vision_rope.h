// The vision tower's rope (launch_rope of kernels.h: x[j], x[j + hd/2] of each head rotated by
// cos/sin[row][j], fp32 math, in place) four pairs per thread with vector accesses. Needs
// head_dim/2 a multiple of 4, row_stride a multiple of 4, x 8-byte and the tables 16-byte
// aligned; otherwise launch_rope4 runs launch_rope.
#pragma once
#include "backend/cuda/kernels.h"

namespace ost::cuda {

bool rope4_supports(const RopeParams& p);
Status launch_rope4(const RopeParams& p, cudaStream_t s);

}  // namespace ost::cuda
