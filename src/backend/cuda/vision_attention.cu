// The kernel of vision_attention.h.
//
// A block owns BM = 32·WARPS query rows of one head and walks the keys of their segment in
// tiles of 64, double-buffered in shared memory through cp.async. Per tile a warp computes
// S = Q·Kᵀ for its two m16 tiles (each K fragment from ldmatrix feeds both), the online softmax
// in the log2 domain (max on the raw scores, p = exp2(s·scale·log2e − m·scale·log2e)), and
// O += P·V with P rounded to bf16 (each V fragment from ldmatrix.trans feeds both m tiles).
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/mma_util.cuh"
#include "backend/cuda/pdl.h"
#include "backend/cuda/vision_attention.h"

namespace ost::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kTileKeys = 64;

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  const unsigned a = unsigned(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
  const unsigned a = unsigned(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldsm_x2_t(uint32_t (&r)[2], const void* p) {
  const unsigned a = unsigned(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(a));
}

// d += a·b: a 16×8 (row), b 8×8 (col).
__device__ __forceinline__ void mma_k8(float (&d)[4], const uint32_t (&a)[2], uint32_t b) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(b));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Shared row stride in elements: an odd number of 16-byte units, so the 8 rows one ldmatrix
// phase reads fall into distinct bank groups.
template <int HD>
__host__ __device__ constexpr int row_stride() {
  return (HD / 8) % 2 == 1 ? HD : HD + 8;
}

template <int HD, int WARPS>
constexpr size_t smem_bytes() {
  return size_t(WARPS * 32 + 4 * kTileKeys) * row_stride<HD>() * 2;
}

template <int HD, int WARPS>
__global__ void __launch_bounds__(WARPS * 32) vision_attention_kernel(FlashAttentionParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int LD = row_stride<HD>();
  constexpr int BM = WARPS * 32;
  constexpr int CH = HD / 8;         // 16-byte chunks per row
  constexpr int KS = HD / 16;        // full k16 steps of Q·Kᵀ; also 16-column tiles of P·V
  constexpr bool TAIL = HD % 16 != 0;  // one k8 step / one 8-column tile more
  constexpr int NO = HD / 8;         // 8-column output tiles
  constexpr int NT = WARPS * 32;
  constexpr int BN = kTileKeys;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [BM][LD]
  bf16* sK = sQ + BM * LD;                       // [2][BN][LD]
  bf16* sV = sK + 2 * BN * LD;                   // [2][BN][LD]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int gq = lane / 4, tq = lane % 4;
  const int h = blockIdx.y, g = h / (p.n_heads / p.n_kv);

  int64_t q0 = 0, k_begin = 0, k_end = 0;
  int q_rows = 0;
  {
    int t = int(blockIdx.x);
    for (int s = 0; s < p.n_segments; ++s) {
      const int len = p.cu_seqlens[s + 1] - p.cu_seqlens[s];
      const int nt = (len + BM - 1) / BM;
      if (t < nt) {
        q0 = p.cu_seqlens[s] + int64_t(t) * BM;
        q_rows = min(BM, len - t * BM);
        k_begin = p.cu_seqlens[s];
        k_end = p.cu_seqlens[s + 1];
        break;
      }
      t -= nt;
    }
    if (q_rows <= 0) return;
  }

  for (int c = tid; c < BM * CH; c += NT) {
    const int r = c / CH, cc = c % CH;
    const bool ok = r < q_rows;  // rows past the segment read zeros and are never stored
    const bf16* src = p.q + (ok ? (q0 + r) * p.q_stride + int64_t(h) * HD + cc * 8 : 0);
    cp_async16(sQ + r * LD + cc * 8, src, ok);
  }
  auto load_kv = [&](int kt, int buf) {
    const int64_t kb = k_begin + int64_t(kt) * BN;
    for (int c = tid; c < BN * CH; c += NT) {
      const int r = c / CH, cc = c % CH;
      const int64_t j = kb + r;
      const bool ok = j < k_end;
      const int64_t off = ok ? j * p.kv_stride + int64_t(g) * HD + cc * 8 : 0;
      cp_async16(sK + (buf * BN + r) * LD + cc * 8, p.k + off, ok);
      cp_async16(sV + (buf * BN + r) * LD + cc * 8, p.v + off, ok);
    }
  };
  const int n_kt = int((k_end - k_begin + BN - 1) / BN);
  load_kv(0, 0);
  cp_async_commit();

  const float sl = p.scale * kLog2e;
  uint32_t qf[2][KS][4];
  uint32_t qt[2][2];
  float o[2][NO][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < NO; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
  float m[2][2] = {{-INFINITY, -INFINITY}, {-INFINITY, -INFINITY}};
  float l[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};

  for (int kt = 0; kt < n_kt; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < n_kt) {
      load_kv(kt + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int ks = 0; ks < KS; ++ks)
          ldsm_x4(qf[mt][ks],
                  sQ + (warp * 32 + mt * 16 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + ks * 16 + 8 * (lane / 16));
      if (TAIL) {  // lanes 0-15: rows 0-15 of m tile 0, lanes 16-31: m tile 1
        uint32_t r[4];
        ldsm_x4(r, sQ + (warp * 32 + lane) * LD + KS * 16);
        qt[0][0] = r[0], qt[0][1] = r[1], qt[1][0] = r[2], qt[1][1] = r[3];
      }
    }

    // S = Q·Kᵀ: 2 m tiles × 8 key tiles.
    float s[2][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.0f;
    const bf16* kbuf = sK + buf * BN * LD;
#pragma unroll
    for (int np = 0; np < BN / 16; ++np) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        uint32_t b[4];
        ldsm_x4(b, kbuf + (np * 16 + (lane % 8) + 8 * (lane / 16)) * LD + ks * 16 + 8 * ((lane / 8) % 2));
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_k16(s[mt][2 * np], qf[mt][ks], b[0], b[1]);
          mma_k16(s[mt][2 * np + 1], qf[mt][ks], b[2], b[3]);
        }
      }
    }
    if (TAIL) {
#pragma unroll
      for (int half = 0; half < BN / 32; ++half) {
        uint32_t b[4];  // key tiles 4·half .. 4·half+3, columns KS·16 .. KS·16+7
        ldsm_x4(b, kbuf + (half * 32 + lane) * LD + KS * 16);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int i = 0; i < 4; ++i) mma_k8(s[mt][4 * half + i], qt[mt], b[i]);
      }
    }

    // Online softmax on rows gq and gq + 8 of each m tile (a row's 4 threads agree).
    const int64_t kb = k_begin + int64_t(kt) * BN;
    if (kb + BN > k_end) {
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (kb + nt * 8 + 2 * tq + (e & 1) >= k_end) s[0][nt][e] = s[1][nt][e] = -INFINITY;
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[mt][r], mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float corr = exp2f((m[mt][r] - m_use) * sl);
        const float msl = m_use * sl;
        m[mt][r] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
          const float p0 = exp2f(fmaf(s[mt][nt][2 * r], sl, -msl));
          const float p1 = exp2f(fmaf(s[mt][nt][2 * r + 1], sl, -msl));
          s[mt][nt][2 * r] = p0;
          s[mt][nt][2 * r + 1] = p1;
          sum += p0 + p1;
        }
        l[mt][r] = l[mt][r] * corr + sum;
#pragma unroll
        for (int dt = 0; dt < NO; ++dt) {
          o[mt][dt][2 * r] *= corr;
          o[mt][dt][2 * r + 1] *= corr;
        }
      }

    // O += P·V.
    const bf16* vbuf = sV + buf * BN * LD;
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        a[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < KS; ++dp) {
        uint32_t b[4];
        ldsm_x4_t(b, vbuf + (kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + dp * 16 + 8 * (lane / 16));
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_k16(o[mt][2 * dp], a[mt], b[0], b[1]);
          mma_k16(o[mt][2 * dp + 1], a[mt], b[2], b[3]);
        }
      }
      if (TAIL) {
        uint32_t b[2];  // keys kk·16 .. +15 (lanes 0-15 address them), columns KS·16 .. +7
        ldsm_x2_t(b, vbuf + (kk * 16 + (lane % 16)) * LD + KS * 16);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) mma_k16(o[mt][NO - 1], a[mt], b[0], b[1]);
      }
    }
    __syncthreads();  // the buffer is refilled two iterations on
  }

#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float L = l[mt][r];
      L += __shfl_xor_sync(0xffffffffu, L, 1);
      L += __shfl_xor_sync(0xffffffffu, L, 2);
      const float inv = L > 0.0f ? 1.0f / L : 0.0f;
      const int row = warp * 32 + mt * 16 + gq + 8 * r;
      if (row >= q_rows) continue;
      bf16* dst = p.out + (q0 + row) * p.out_stride + int64_t(h) * HD;
#pragma unroll
      for (int dt = 0; dt < NO; ++dt)
        *reinterpret_cast<__nv_bfloat162*>(dst + dt * 8 + 2 * tq) =
            __floats2bfloat162_rn(o[mt][dt][2 * r] * inv, o[mt][dt][2 * r + 1] * inv);
    }
}

template <int HD, int WARPS>
Status run(const FlashAttentionParams& p, cudaStream_t s) {
  constexpr size_t smem = smem_bytes<HD, WARPS>();
  static bool configured = false;  // one attribute call per instantiation
  if (!configured) {
    OST_CUDA_RET(cudaFuncSetAttribute(vision_attention_kernel<HD, WARPS>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    configured = true;
  }
  int64_t tiles = 0;
  for (int i = 0; i < p.n_segments; ++i)
    tiles += (p.cu_seqlens_host[i + 1] - p.cu_seqlens_host[i] + WARPS * 32 - 1) / (WARPS * 32);
  if (tiles == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(vision_attention_kernel<HD, WARPS>, dim3(unsigned(tiles), unsigned(p.n_heads)),
                          dim3(WARPS * 32), smem, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

template <int HD>
Status dispatch(const FlashAttentionParams& p, cudaStream_t s, int warps) {
  if (warps == 0) {
    static const int forced = [] {
      const char* e = std::getenv("OST_VISION_ATTN_WARPS");
      return e ? std::atoi(e) : 0;
    }();
    warps = forced;
  }
  // 4 warps: faster than 2 on the H100 at 1280x960 (12.59 vs 14.70 ms for the tower's 27
  // launches) and at 512x512 (0.79 vs 0.90 ms), 2026-11-25.
  if (warps == 0) warps = 4;
  if (warps == 4) return run<HD, 4>(p, s);
  if (warps == 2) return run<HD, 2>(p, s);
  return make_error("vision attention: %d warps per block is not a variant", warps);
}

}  // namespace

bool vision_attention_supports(int head_dim) { return head_dim == 64 || head_dim == 72; }

Status launch_vision_attention(const FlashAttentionParams& p, cudaStream_t s, int warps) {
  if (p.block_table || !p.cu_seqlens || !p.cu_seqlens_host)
    return make_error("vision attention: dense segments only");
  if (p.n_kv <= 0 || p.n_heads % p.n_kv != 0)
    return make_error("vision attention: %d heads over %d kv heads", p.n_heads, p.n_kv);
  switch (p.head_dim) {
    case 64:
      return dispatch<64>(p, s, warps);
    case 72:
      return dispatch<72>(p, s, warps);
    default:
      return make_error("vision attention: head_dim %d is not supported", p.head_dim);
  }
}

}  // namespace ost::cuda
