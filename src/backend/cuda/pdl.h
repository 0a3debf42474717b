// Programmatic dependent launch (sm_90): a kernel launched with launch_pdl may be scheduled
// while the kernel before it in the stream is still running; it must call pdl_wait() before it
// touches memory that earlier kernels write (weights may be read or prefetched before).
// pdl_wait() returns once every earlier kernel has finished and its writes are visible, so a
// chain of such kernels stays ordered transitively. Every kernel of this backend calls
// pdl_trigger() first (its dependents may be scheduled as soon as all its blocks run; they
// wait in turn) and pdl_wait() before its first dependent access. Without the launch
// attribute both are no-ops. On by default; OST_PDL=0 turns it off (A/B runs). Include from
// .cu files only.
#pragma once
#include <cuda_runtime.h>

#include <utility>

namespace ost::cuda {

bool pdl_enabled();

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;\n" ::); }

template <class... KArgs, class... Args>
cudaError_t launch_pdl(bool pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                       Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

template <class... KArgs, class... Args>
cudaError_t launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                       Args&&... args) {
  return launch_pdl(pdl_enabled(), kernel, grid, block, smem, s, std::forward<Args>(args)...);
}

}  // namespace ost::cuda
