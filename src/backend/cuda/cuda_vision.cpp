// The vision tower on the GPU (as model/vision.cpp): patch-embed GEMM with bias, bilinear
// learned pos-embed (built on the host in fp32, added in bf16), pre-LN blocks with the 2-D rope
// in fp32 and non-causal attention within each image, gelu_tanh MLP; the final merger and the
// deepstack mergers (gelu_erf). The pos-embed and rope tables repeat the host code of
// model/vision.cpp (kept there in an anonymous namespace); they are small (N × hidden).
#include <algorithm>
#include <cmath>

#include "backend/cuda/cuda_runner_impl.h"
#include "core/bf16.h"

namespace ost::cuda {
namespace {

struct Grid {
  int t, h, w;
};

template <class F>
void for_each_patch_merge_order(int h, int w, int m, F&& f) {
  for (int br = 0; br < h / m; ++br)
    for (int bc = 0; bc < w / m; ++bc)
      for (int ir = 0; ir < m; ++ir)
        for (int ic = 0; ic < m; ++ic) f(br * m + ir, bc * m + ic);
}

// f32 [N, hidden] in merge-block order (align_corners bilinear from the ng×ng table, fp32).
void pos_embed(const VisionConfig& c, const VisionWeights& w, const std::vector<Grid>& grids, float* out) {
  const int64_t H = c.hidden_size;
  const int ng = w.pos_grid, m = c.spatial_merge_size;
  std::vector<float> rows(size_t(4 * H));
  int64_t n = 0;
  for (const Grid& g : grids) {
    auto axis = [ng](int len, std::vector<int>& lo, std::vector<int>& hi, std::vector<float>& frac) {
      lo.resize(size_t(len)), hi.resize(size_t(len)), frac.resize(size_t(len));
      for (int i = 0; i < len; ++i) {
        const float src = float(i) * float(ng - 1) / float(std::max(len - 1, 1));
        lo[size_t(i)] = int(src);
        hi[size_t(i)] = std::min(lo[size_t(i)] + 1, ng - 1);
        frac[size_t(i)] = src - float(lo[size_t(i)]);
      }
    };
    std::vector<int> hl, hh, wl, wh;
    std::vector<float> hf, wf;
    axis(g.h, hl, hh, hf);
    axis(g.w, wl, wh, wf);
    std::vector<float> frame(size_t(g.h) * size_t(g.w) * size_t(H));
    for (int i = 0; i < g.h; ++i)
      for (int j = 0; j < g.w; ++j) {
        const int64_t idx[4] = {int64_t(hl[i]) * ng + wl[j], int64_t(hl[i]) * ng + wh[j],
                                int64_t(hh[i]) * ng + wl[j], int64_t(hh[i]) * ng + wh[j]};
        const float dh = hf[i], dw = wf[j];
        const float wt[4] = {(1 - dh) * (1 - dw), (1 - dh) * dw, dh * (1 - dw), dh * dw};
        for (int q = 0; q < 4; ++q) ops::weight_row_f32(w.pos_embed, idx[q], rows.data() + q * H);
        float* dst = frame.data() + (int64_t(i) * g.w + j) * H;
        for (int64_t d = 0; d < H; ++d)
          dst[d] = wt[0] * rows[size_t(d)] + wt[1] * rows[size_t(H + d)] + wt[2] * rows[size_t(2 * H + d)] +
                   wt[3] * rows[size_t(3 * H + d)];
      }
    for (int t = 0; t < g.t; ++t)
      for_each_patch_merge_order(g.h, g.w, m, [&](int r, int col) {
        std::copy_n(frame.data() + (int64_t(r) * g.w + col) * H, H, out + n * H);
        ++n;
      });
  }
}

// cos, sin f32 [N, hd/2]: first quarter of the slots by patch row, second by column.
void rope_tables(const VisionConfig& c, const std::vector<Grid>& grids, float* cos, float* sin) {
  const int half = c.head_dim() / 2, quarter = half / 2;
  std::vector<float> inv(static_cast<size_t>(quarter));
  for (int k = 0; k < quarter; ++k) inv[size_t(k)] = 1.0f / std::pow(float(c.rope_theta), float(2 * k) / float(half));
  int64_t n = 0;
  for (const Grid& g : grids)
    for (int t = 0; t < g.t; ++t)
      for_each_patch_merge_order(g.h, g.w, c.spatial_merge_size, [&](int r, int col) {
        for (int k = 0; k < quarter; ++k) {
          const float a_row = float(r) * inv[size_t(k)], a_col = float(col) * inv[size_t(k)];
          cos[n * half + k] = float(std::cos(double(a_row)));
          sin[n * half + k] = float(std::sin(double(a_row)));
          cos[n * half + quarter + k] = float(std::cos(double(a_col)));
          sin[n * half + quarter + k] = float(std::sin(double(a_col)));
        }
        ++n;
      });
}

template <class T>
Result<T*> upload(DeviceScratch& s, const T* src, size_t n) {
  auto d = s.alloc(n * sizeof(T));
  OST_TRY(d.status());
  OST_CUDA_RET(cudaMemcpy(*d, src, n * sizeof(T), cudaMemcpyHostToDevice));
  return static_cast<T*>(*d);
}

Result<bf16*> upload_bf16(DeviceScratch& s, const float* src, size_t n) {
  std::vector<bf16_t> tmp(n);
  for (size_t i = 0; i < n; ++i) tmp[i] = f32_to_bf16(src[i]);
  auto d = upload(s, tmp.data(), n);
  OST_TRY(d.status());
  return reinterpret_cast<bf16*>(*d);
}

}  // namespace

Status CudaRunner::load_linear(const Linear& l, VLinear& out) {
  auto w = upload_rows(l.w);
  OST_TRY(w.status());
  out.w = *w;
  if (!l.b.empty()) {
    auto b = upload_vec(l.b);
    OST_TRY(b.status());
    out.b = *b;
  }
  return Status::ok();
}

Status CudaRunner::load_norm(const Norm& n, VNorm& out) {
  auto w = upload_vec(n.w);
  OST_TRY(w.status());
  auto b = upload_vec(n.b);
  OST_TRY(b.status());
  out.w = *w;
  out.b = *b;
  return Status::ok();
}

Status CudaRunner::load_vision() {
  const VisionWeights& vw = host_->vision;
  OST_TRY(load_linear(vw.patch, patch_));
  vblocks_.resize(vw.blocks.size());
  for (size_t i = 0; i < vw.blocks.size(); ++i) {
    const VisionBlockWeights& b = vw.blocks[i];
    VBlock& d = vblocks_[i];
    OST_TRY(load_norm(b.norm1, d.norm1));
    OST_TRY(load_norm(b.norm2, d.norm2));
    OST_TRY(load_linear(b.qkv, d.qkv));
    OST_TRY(load_linear(b.proj, d.proj));
    OST_TRY(load_linear(b.fc1, d.fc1));
    OST_TRY(load_linear(b.fc2, d.fc2));
  }
  auto merger = [&](const MergerWeights& m, VMerger& d) -> Status {
    OST_TRY(load_norm(m.norm, d.norm));
    OST_TRY(load_linear(m.fc1, d.fc1));
    OST_TRY(load_linear(m.fc2, d.fc2));
    return Status::ok();
  };
  OST_TRY(merger(vw.merger, merger_));
  ds_mergers_.resize(vw.deepstack.size());
  for (size_t j = 0; j < vw.deepstack.size(); ++j) OST_TRY(merger(vw.deepstack[j], ds_mergers_[j]));
  return Status::ok();
}

// x bf16 [N, hidden] -> out f32 [N/m², out_hidden] on the host.
Status CudaRunner::run_merger(const VMerger& m, const bf16* x, int64_t N, bool norm_after_merge,
                              std::vector<float>& out) {
  const VisionConfig& c = cfg_.model.vision;
  const int64_t H = c.hidden_size, D = c.merged_dim(), M = N * H / D, O = c.out_hidden_size;
  DeviceScratch s;
  auto y = s.alloc(size_t(N * H) * 2), f1 = s.alloc(size_t(M * D) * 2), o = s.alloc(size_t(M * O) * 2),
       of = s.alloc(size_t(M * O) * 4);
  for (auto* r : {&y, &f1, &o, &of}) OST_TRY(r->status());
  bf16* yb = static_cast<bf16*>(*y);
  bf16* f1b = static_cast<bf16*>(*f1);
  bf16* ob = static_cast<bf16*>(*o);
  const float eps = c.layer_norm_eps;
  if (norm_after_merge)
    OST_TRY(launch_layer_norm({x, m.norm.w, m.norm.b, yb, M, int(D), eps}, stream_));
  else
    OST_TRY(launch_layer_norm({x, m.norm.w, m.norm.b, yb, N, int(H), eps}, stream_));
  OST_TRY(gemm_.run(yb, M, m.fc1.w, D, D, m.fc1.b, f1b, stream_));
  OST_TRY(launch_gelu(f1b, M * D, /*erf=*/true, stream_));
  OST_TRY(gemm_.run(f1b, M, m.fc2.w, O, D, m.fc2.b, ob, stream_));
  OST_TRY(launch_bf16_to_f32(ob, static_cast<float*>(*of), M * O, stream_));
  out.resize(size_t(M * O));
  OST_CUDA_RET(cudaMemcpyAsync(out.data(), *of, out.size() * 4, cudaMemcpyDeviceToHost, stream_));
  OST_CUDA_RET(cudaStreamSynchronize(stream_));
  return Status::ok();
}

Result<VisionOutput> CudaRunner::encode_images(const VisionInput& in) {
  const VisionConfig& c = cfg_.model.vision;
  const int m = c.spatial_merge_size;
  if (in.grid_thw.empty()) return make_error("encode_images: no image grid given");
  std::vector<Grid> grids;
  int64_t total = 0;
  for (size_t i = 0; i < in.grid_thw.size(); ++i) {
    const auto [t, h, wd] = in.grid_thw[i];
    if (t <= 0 || h <= 0 || wd <= 0 || h % m != 0 || wd % m != 0)
      return make_error("encode_images: image %zu has grid (%d, %d, %d); t, h, w must be positive "
                        "and h, w multiples of %d", i, t, h, wd, m);
    grids.push_back({t, h, wd});
    total += int64_t(t) * h * wd;
  }
  if (total != in.num_patches)
    return make_error("encode_images: the grids cover %lld patches but %lld were given",
                      (long long)total, (long long)in.num_patches);
  if (!in.pixel_values) return make_error("encode_images: pixel_values is null");

  const int64_t N = in.num_patches, H = c.hidden_size, I = c.intermediate_size, P = c.patch_dim();
  const int heads = c.num_heads, hd = c.head_dim();
  const float eps = c.layer_norm_eps;
  cudaStream_t st = stream_;
  DeviceScratch s;

  // Host-side tables: pos-embed, rope, attention segments.
  std::vector<float> pe(size_t(N * H)), cs(size_t(N * hd / 2)), sn(size_t(N * hd / 2));
  pos_embed(c, host_->vision, grids, pe.data());
  rope_tables(c, grids, cs.data(), sn.data());
  std::vector<int32_t> row_start(static_cast<size_t>(N)), row_len(static_cast<size_t>(N));
  int64_t r = 0, s0 = 0;
  for (const Grid& g : grids)
    for (int t = 0; t < g.t; ++t) {
      const int64_t len = int64_t(g.h) * g.w;
      for (int64_t i = 0; i < len; ++i, ++r) {
        row_start[size_t(r)] = int32_t(s0);
        row_len[size_t(r)] = int32_t(len);
      }
      s0 += len;
    }

  auto px = upload_bf16(s, in.pixel_values, size_t(N * P));  // the reference casts to bf16 first
  auto ped = upload_bf16(s, pe.data(), pe.size());
  auto csd = upload(s, cs.data(), cs.size());
  auto snd = upload(s, sn.data(), sn.size());
  auto rsd = upload(s, row_start.data(), row_start.size());
  auto rld = upload(s, row_len.data(), row_len.size());
  OST_TRY(px.status());
  OST_TRY(ped.status());
  OST_TRY(csd.status());
  OST_TRY(snd.status());
  OST_TRY(rsd.status());
  OST_TRY(rld.status());
  auto xa = s.alloc(size_t(N * H) * 2), ha = s.alloc(size_t(N * H) * 2), qa = s.alloc(size_t(N * 3 * H) * 2),
       aa = s.alloc(size_t(N * H) * 2), ma = s.alloc(size_t(N * I) * 2);
  for (auto* a : {&xa, &ha, &qa, &aa, &ma}) OST_TRY(a->status());
  bf16* x = static_cast<bf16*>(*xa);    // bf16 [N, hidden], the residual stream
  bf16* h = static_cast<bf16*>(*ha);    // bf16 [N, hidden]
  bf16* qkv = static_cast<bf16*>(*qa);  // bf16 [N, 3, heads, hd]
  bf16* at = static_cast<bf16*>(*aa);   // bf16 [N, heads, hd]
  bf16* ml = static_cast<bf16*>(*ma);   // bf16 [N, inter]

  OST_TRY(gemm_.run(*px, N, patch_.w, H, P, patch_.b, x, st));
  OST_TRY(launch_add(x, *ped, N * H, st));

  VisionOutput out;
  out.n_merged = N / (m * m);
  out.deepstack.resize(ds_mergers_.size());
  for (int l = 0; l < c.depth; ++l) {
    const VBlock& b = vblocks_[size_t(l)];
    OST_TRY(launch_layer_norm({x, b.norm1.w, b.norm1.b, h, N, int(H), eps}, st));
    OST_TRY(gemm_.run(h, N, b.qkv.w, 3 * H, H, b.qkv.b, qkv, st));
    OST_TRY(launch_rope({qkv, *csd, *snd, N, 3 * H, heads, hd}, st));
    OST_TRY(launch_rope({qkv + H, *csd, *snd, N, 3 * H, heads, hd}, st));
    AttentionParams ap;
    ap.q = qkv;
    ap.k = qkv + H;
    ap.v = qkv + 2 * H;
    ap.out = at;
    ap.n = N;
    ap.n_heads = ap.n_kv = heads;
    ap.head_dim = hd;
    ap.q_stride = ap.kv_stride = 3 * H;
    ap.out_stride = H;
    ap.row_start = *rsd;
    ap.row_len = *rld;
    ap.scale = float(1.0 / std::sqrt(double(hd)));
    OST_TRY(launch_attention(ap, st));
    OST_TRY(gemm_.run(at, N, b.proj.w, H, H, b.proj.b, h, st));
    OST_TRY(launch_add(x, h, N * H, st));
    OST_TRY(launch_layer_norm({x, b.norm2.w, b.norm2.b, h, N, int(H), eps}, st));
    OST_TRY(gemm_.run(h, N, b.fc1.w, I, H, b.fc1.b, ml, st));
    OST_TRY(launch_gelu(ml, N * I, /*erf=*/false, st));
    OST_TRY(gemm_.run(ml, N, b.fc2.w, H, I, b.fc2.b, h, st));
    OST_TRY(launch_add(x, h, N * H, st));
    for (size_t j = 0; j < c.deepstack_visual_indexes.size(); ++j)
      if (c.deepstack_visual_indexes[j] == l)
        OST_TRY(run_merger(ds_mergers_[j], x, N, /*norm_after_merge=*/true, out.deepstack[j]));
  }
  OST_TRY(run_merger(merger_, x, N, /*norm_after_merge=*/false, out.embeds));
  return out;
}

}  // namespace ost::cuda
