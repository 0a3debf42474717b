// The rope of kernels.h's launch_rope with 4 pairs per thread: 8-byte loads and stores of each
// half, the cos/sin of the 4 pairs as float4, 32-bit indexing. Consecutive threads walk the pair
// groups of a head, then the heads of a row, so a warp's accesses are contiguous.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.h"
#include "backend/cuda/vision_rope.h"

namespace ost::cuda {
namespace {

struct alignas(8) Bf4 {
  __nv_bfloat162 a, b;
};

__global__ void rope4_kernel(RopeParams p, int groups, int total) {
  pdl_trigger();
  pdl_wait();
  const int k = int(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= total) return;
  const int half = p.head_dim / 2;
  const int grp = k % groups, rest = k / groups;
  const int h = rest % p.n_heads, r = rest / p.n_heads;
  const int j = 4 * grp;
  bf16* x = p.x + int64_t(r) * p.row_stride + int64_t(h) * p.head_dim + j;
  const Bf4 lo = *reinterpret_cast<const Bf4*>(x), hi = *reinterpret_cast<const Bf4*>(x + half);
  const float4 c = *reinterpret_cast<const float4*>(p.cos + int64_t(r) * half + j);
  const float4 s = *reinterpret_cast<const float4*>(p.sin + int64_t(r) * half + j);
  const float2 a0 = __bfloat1622float2(lo.a), a1 = __bfloat1622float2(lo.b);
  const float2 b0 = __bfloat1622float2(hi.a), b1 = __bfloat1622float2(hi.b);
  Bf4 olo, ohi;
  olo.a = __floats2bfloat162_rn(a0.x * c.x - b0.x * s.x, a0.y * c.y - b0.y * s.y);
  olo.b = __floats2bfloat162_rn(a1.x * c.z - b1.x * s.z, a1.y * c.w - b1.y * s.w);
  ohi.a = __floats2bfloat162_rn(b0.x * c.x + a0.x * s.x, b0.y * c.y + a0.y * s.y);
  ohi.b = __floats2bfloat162_rn(b1.x * c.z + a1.x * s.z, b1.y * c.w + a1.y * s.w);
  *reinterpret_cast<Bf4*>(x) = olo;
  *reinterpret_cast<Bf4*>(x + half) = ohi;
}

}  // namespace

bool rope4_supports(const RopeParams& p) {
  const int half = p.head_dim / 2;
  return p.head_dim % 8 == 0 && half % 4 == 0 && p.row_stride % 4 == 0 &&
         reinterpret_cast<uintptr_t>(p.x) % 8 == 0 && reinterpret_cast<uintptr_t>(p.cos) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.sin) % 16 == 0 && p.n * p.n_heads * (half / 4) < (int64_t(1) << 31);
}

Status launch_rope4(const RopeParams& p, cudaStream_t s) {
  if (!rope4_supports(p)) return launch_rope(p, s);
  if (p.n == 0) return Status::ok();
  const int groups = p.head_dim / 8;
  const int total = int(p.n * p.n_heads * groups);
  OST_CUDA_RET(launch_pdl(rope4_kernel, dim3(unsigned((total + 255) / 256)), dim3(256), 0, s, p, groups, total));
  OST_LAUNCH_RET();
  return Status::ok();
}

}  // namespace ost::cuda
