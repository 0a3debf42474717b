// A 16-byte global load that bypasses L1 (ld.global.nc.L1::no_allocate): for weights that a
// kernel reads once, so they do not evict what it reuses (x rows, scales).
#pragma once
#include <cuda_runtime.h>

namespace ost::cuda {

__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

}  // namespace ost::cuda
