// Qwen3-VL vision tower (Qwen3VLVisionModel):
//   patches -> Conv3d patch embed (one matmul) + bilinear learned pos-embed
//   -> depth × pre-LN blocks (2-D rope attention within each image, gelu_tanh MLP)
//   -> merger (LN per patch, 2×2 patches -> one token, fc1 · gelu_erf · fc2);
//   deepstack mergers (LN after the 2×2 merge) tap the blocks listed in deepstack_visual_indexes.
// Patch rows arrive in merge-block order (each 2×2 block of the grid is 4 consecutive rows), so
// pos-embed and rope ids are emitted in that order too and merging is a reshape.
#include <algorithm>
#include <cmath>

#include "backend/ops.h"
#include "model/graph.h"
#include "model/merge_order.h"

namespace ost {
namespace {

struct Grid {
  int t, h, w;
};


// Learned absolute position embedding, resampled bilinearly (align_corners) from the ng×ng
// table onto each image's grid, in fp32: src = i·(ng-1)/(n-1).
// out: f32 [N, hidden] in merge-block order, repeated for each of the t frames.
void pos_embed(const VisionConfig& c, const VisionWeights& w, const std::vector<Grid>& grids, float* out) {
  const int64_t H = c.hidden_size;
  const int ng = w.pos_grid, m = c.spatial_merge_size;
  std::vector<float> rows(size_t(4 * H));  // the 4 table rows of one patch, fp32
  int64_t n = 0;
  for (const Grid& g : grids) {
    // Source coordinate of each grid line: floor index, next index, fraction.
    auto axis = [ng](int len, std::vector<int>& lo, std::vector<int>& hi, std::vector<float>& frac) {
      lo.resize(size_t(len)), hi.resize(size_t(len)), frac.resize(size_t(len));
      for (int i = 0; i < len; ++i) {
        const float src = float(i) * float(ng - 1) / float(std::max(len - 1, 1));
        lo[i] = int(src);
        hi[i] = std::min(lo[i] + 1, ng - 1);
        frac[i] = src - float(lo[i]);
      }
    };
    std::vector<int> hl, hh, wl, wh;
    std::vector<float> hf, wf;
    axis(g.h, hl, hh, hf);
    axis(g.w, wl, wh, wf);
    std::vector<float> frame(size_t(g.h) * g.w * H);  // f32 [h·w, hidden], raster order
    for (int i = 0; i < g.h; ++i)
      for (int j = 0; j < g.w; ++j) {
        const int64_t idx[4] = {int64_t(hl[i]) * ng + wl[j], int64_t(hl[i]) * ng + wh[j],
                                int64_t(hh[i]) * ng + wl[j], int64_t(hh[i]) * ng + wh[j]};
        const float dh = hf[i], dw = wf[j];
        const float wt[4] = {(1 - dh) * (1 - dw), (1 - dh) * dw, dh * (1 - dw), dh * dw};
        for (int q = 0; q < 4; ++q) ops::weight_row_f32(w.pos_embed, idx[q], rows.data() + q * H);
        float* dst = frame.data() + (int64_t(i) * g.w + j) * H;
        for (int64_t d = 0; d < H; ++d)
          dst[d] = wt[0] * rows[d] + wt[1] * rows[H + d] + wt[2] * rows[2 * H + d] + wt[3] * rows[3 * H + d];
      }
    for (int t = 0; t < g.t; ++t)
      for_each_patch_merge_order(g.h, g.w, m, [&](int r, int col) {
        std::copy_n(frame.data() + (int64_t(r) * g.w + col) * H, H, out + n * H);
        ++n;
      });
  }
}

// 2-D rope tables: head_dim/2 angle slots per patch, the first half driven by the patch row,
// the second by its column, each with inv_freq[k] = θ^(-2k/(head_dim/2)), k < head_dim/4.
// cos, sin: f32 [N, head_dim/2].
void rope_tables(const VisionConfig& c, const std::vector<Grid>& grids, float* cos, float* sin) {
  const int half = c.head_dim() / 2, quarter = half / 2;
  std::vector<float> inv(static_cast<size_t>(quarter));
  for (int k = 0; k < quarter; ++k) inv[k] = 1.0f / std::pow(float(c.rope_theta), float(2 * k) / float(half));
  int64_t n = 0;
  for (const Grid& g : grids)
    for (int t = 0; t < g.t; ++t)
      for_each_patch_merge_order(g.h, g.w, c.spatial_merge_size, [&](int r, int col) {
        for (int k = 0; k < quarter; ++k) {
          const float a_row = float(r) * inv[k], a_col = float(col) * inv[k];
          cos[n * half + k] = float(std::cos(double(a_row)));
          sin[n * half + k] = float(std::sin(double(a_row)));
          cos[n * half + quarter + k] = float(std::cos(double(a_col)));
          sin[n * half + quarter + k] = float(std::sin(double(a_col)));
        }
        ++n;
      });
}

// x: f32 [N, hidden] -> f32 [N/m², out_hidden]. The final merger normalises each patch before
// the merge; the deepstack mergers normalise the merged 4·hidden vector.
std::vector<float> merger(const VisionConfig& c, const MergerWeights& w, const float* x, int64_t N,
                          bool norm_after_merge) {
  const int64_t H = c.hidden_size, D = c.merged_dim(), M = N * H / D;
  std::vector<float> y(size_t(N * H));  // f32 [N, hidden] == [M, 4·hidden]
  if (norm_after_merge)
    ops::layer_norm(x, M, D, w.norm.w.data(), w.norm.b.data(), c.layer_norm_eps, y.data());
  else
    ops::layer_norm(x, N, H, w.norm.w.data(), w.norm.b.data(), c.layer_norm_eps, y.data());
  std::vector<float> h(size_t(M * D));  // f32 [M, 4·hidden]
  ops::matmul(y.data(), M, w.fc1.w, w.fc1.bias(), h.data());
  ops::gelu_erf(h.data(), M * D);
  std::vector<float> out(size_t(M * c.out_hidden_size));  // f32 [M, out_hidden]
  ops::matmul(h.data(), M, w.fc2.w, w.fc2.bias(), out.data());
  return out;
}

}  // namespace

Result<VisionOutput> vision_forward(const VisionConfig& c, const VisionWeights& w, const VisionInput& in,
                                    const Dumper& dump) {
  const int m = c.spatial_merge_size;
  if (in.grid_thw.empty()) return make_error("encode_images: no image grid given");
  std::vector<Grid> grids;
  int64_t total = 0;
  for (size_t i = 0; i < in.grid_thw.size(); ++i) {
    const auto [t, h, wd] = in.grid_thw[i];
    if (t <= 0 || h <= 0 || wd <= 0 || h % m != 0 || wd % m != 0)
      return make_error(
          "encode_images: image %zu has grid (%d, %d, %d); t, h, w must be positive "
          "and h, w multiples of %d",
          i, t, h, wd, m);
    grids.push_back({t, h, wd});
    total += int64_t(t) * h * wd;
  }
  if (total != in.num_patches)
    return make_error("encode_images: the grids cover %lld patches but %lld were given", (long long)total,
                      (long long)in.num_patches);
  if (!in.pixel_values) return make_error("encode_images: pixel_values is null");

  const int64_t N = in.num_patches, H = c.hidden_size, I = c.intermediate_size;
  const int heads = c.num_heads, hd = c.head_dim();

  // Patch embedding: the Conv3d's kernel equals its stride, so it is a matmul over patch rows.
  std::vector<float> x(size_t(N * H));  // f32 [N, hidden], the residual stream
  ops::matmul(in.pixel_values, N, w.patch.w, w.patch.bias(), x.data());
  dump("vis.patch_embed", -1, x.data(), {N, H});
  std::vector<float> h(size_t(N * H));  // f32 [N, hidden], scratch
  pos_embed(c, w, grids, h.data());
  dump("vis.pos_embed", -1, h.data(), {N, H});
  ops::add(x.data(), h.data(), N * H, x.data());

  std::vector<float> cos(size_t(N * hd / 2)), sin(size_t(N * hd / 2));  // f32 [N, hd/2]
  rope_tables(c, grids, cos.data(), sin.data());

  // Attention segments: each frame of each image attends only within itself.
  std::vector<int64_t> seg = {0};
  for (const Grid& g : grids)
    for (int t = 0; t < g.t; ++t) seg.push_back(seg.back() + int64_t(g.h) * g.w);

  std::vector<float> qkv(size_t(N * 3 * H));  // f32 [N, 3, heads, hd]
  std::vector<float> attn(size_t(N * H));     // f32 [N, heads, hd]
  std::vector<float> mlp(size_t(N * I));      // f32 [N, inter]
  VisionOutput out;
  out.n_merged = N / (m * m);
  out.deepstack.resize(w.deepstack.size());
  const float eps = c.layer_norm_eps;
  for (int l = 0; l < c.depth; ++l) {
    const VisionBlockWeights& b = w.blocks[size_t(l)];
    ops::layer_norm(x.data(), N, H, b.norm1.w.data(), b.norm1.b.data(), eps, h.data());
    ops::matmul(h.data(), N, b.qkv.w, b.qkv.bias(), qkv.data());
    ops::rope(qkv.data(), N, heads, hd, 3 * H, cos.data(), sin.data());      // q
    ops::rope(qkv.data() + H, N, heads, hd, 3 * H, cos.data(), sin.data());  // k
    for (size_t s = 0; s + 1 < seg.size(); ++s) {
      const int64_t s0 = seg[s], len = seg[s + 1] - seg[s];
      ops::AttentionParams p;
      p.n_q = p.n_kv = len;
      p.n_heads = p.n_kv_heads = heads;
      p.head_dim = hd;
      p.q_stride = p.kv_stride = 3 * H;
      p.out_stride = H;
      p.causal = false;
      p.scale = float(1.0 / std::sqrt(double(hd)));
      const float* base = qkv.data() + s0 * 3 * H;
      ops::attention(p, base, base + H, base + 2 * H, attn.data() + s0 * H);
    }
    ops::matmul(attn.data(), N, b.proj.w, b.proj.bias(), h.data());
    dump("vis.attn_out", l, h.data(), {N, H});
    ops::add(x.data(), h.data(), N * H, x.data());

    ops::layer_norm(x.data(), N, H, b.norm2.w.data(), b.norm2.b.data(), eps, h.data());
    ops::matmul(h.data(), N, b.fc1.w, b.fc1.bias(), mlp.data());
    ops::gelu_tanh(mlp.data(), N * I);
    ops::matmul(mlp.data(), N, b.fc2.w, b.fc2.bias(), h.data());
    dump("vis.ffn_out", l, h.data(), {N, H});
    ops::add(x.data(), h.data(), N * H, x.data());
    dump("vis.block_out", l, x.data(), {N, H});

    for (size_t j = 0; j < c.deepstack_visual_indexes.size(); ++j) {
      if (c.deepstack_visual_indexes[j] != l) continue;
      out.deepstack[j] = merger(c, w.deepstack[j], x.data(), N, /*norm_after_merge=*/true);
      dump("vis.deepstack", l, out.deepstack[j].data(), {out.n_merged, c.out_hidden_size});
    }
  }
  out.embeds = merger(c, w.merger, x.data(), N, /*norm_after_merge=*/false);
  dump("vis.merger_out", -1, out.embeds.data(), {out.n_merged, c.out_hidden_size});
  return out;
}

}  // namespace ost
