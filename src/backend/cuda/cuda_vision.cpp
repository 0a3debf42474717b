// The vision tower on the GPU (as model/vision.cpp): patch-embed GEMM with bias, bilinear
// learned pos-embed (fp32 on the device from the bf16 table, added in bf16), pre-LN blocks with
// the 2-D rope in fp32 and flash attention within each frame, gelu_tanh MLP; the final merger
// and the deepstack mergers (gelu_erf). The host only lays out the patch geometry; all buffers
// come from one workspace reused across calls, and the outputs either stay on the device for
// the prefill (VisionInput::keep_on_device) or come back as f32.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_runner_impl.h"
#include "backend/cuda/vision_rope.h"
#include "core/bf16.h"
#include "model/merge_order.h"

namespace ost::cuda {
namespace {

struct Grid {
  int t, h, w;
};


// Per patch row in merge-block order: (row, col, grid_h, grid_w) of its frame; and the
// attention segments (one per frame).
void patch_geometry(const std::vector<Grid>& grids, int m, std::vector<int32_t>& geo,
                    std::vector<int32_t>& cu) {
  cu.assign(1, 0);
  for (const Grid& g : grids)
    for (int t = 0; t < g.t; ++t) {
      for_each_patch_merge_order(g.h, g.w, m, [&](int r, int col) {
        for (int v : {r, col, g.h, g.w}) geo.push_back(v);
      });
      cu.push_back(cu.back() + g.h * g.w);
    }
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
  auto pt = upload_rows(vw.pos_embed);
  OST_TRY(pt.status());
  pos_table_ = *pt;
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

Status CudaRunner::run_merger(const VMerger& m, const bf16* x, int64_t N, bool norm_after_merge, bf16* y,
                              bf16* f1, bf16* out) {
  const VisionConfig& c = cfg_.model.vision;
  const int64_t H = c.hidden_size, D = c.merged_dim(), M = N * H / D, O = c.out_hidden_size;
  const float eps = c.layer_norm_eps;
  if (norm_after_merge)
    OST_TRY(launch_layer_norm({x, m.norm.w, m.norm.b, y, M, int(D), eps}, stream_));
  else
    OST_TRY(launch_layer_norm({x, m.norm.w, m.norm.b, y, N, int(H), eps}, stream_));
  OST_TRY(gemm_.run(y, M, m.fc1.w, D, D, m.fc1.b, f1, stream_));
  OST_TRY(launch_gelu(f1, M * D, /*erf=*/true, stream_));
  OST_TRY(gemm_.run(f1, M, m.fc2.w, O, D, m.fc2.b, out, stream_));
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
  const bool rgb = !in.rgb.empty();
  if (rgb) {  // RGB8 images cut into patches here: one frame each, at the grid's size
    if (in.rgb.size() != grids.size() || !in.lut)
      return make_error("encode_images: %zu RGB images for %zu grids", in.rgb.size(), grids.size());
    for (size_t i = 0; i < grids.size(); ++i) {
      const Image* im = in.rgb[i];
      if (!im || grids[i].t != 1 || im->width != grids[i].w * c.patch_size ||
          im->height != grids[i].h * c.patch_size || im->rgb.size() != size_t(im->width) * im->height * 3)
        return make_error("encode_images: RGB image %zu does not match its grid (%d, %d, %d)", i, grids[i].t,
                          grids[i].h, grids[i].w);
    }
    if (c.in_channels != 3) return make_error("encode_images: RGB input needs 3 input channels");
  } else if (!in.pixel_values) {
    return make_error("encode_images: pixel_values is null");
  }

  const int64_t N = in.num_patches, H = c.hidden_size, I = c.intermediate_size, P = c.patch_dim();
  const int64_t M = N / (m * m), O = c.out_hidden_size;
  const int heads = c.num_heads, hd = c.head_dim(), quarter = hd / 4;
  const float eps = c.layer_norm_eps;
  const int n_out = int(1 + ds_mergers_.size());
  cudaStream_t st = stream_;

  std::vector<int32_t> geo, cu;
  patch_geometry(grids, m, geo, cu);
  std::vector<float> inv(static_cast<size_t>(quarter));  // as model/vision.cpp rope_tables
  for (int k = 0; k < quarter; ++k)
    inv[size_t(k)] = 1.0f / std::pow(float(c.rope_theta), float(2 * k) / float(hd / 2));

  size_t rgb_bytes = 0;
  for (const Image* im : in.rgb) rgb_bytes += im->rgb.size();
  auto ws = vision_ws_.carve(
      {rgb ? rgb_bytes + 3 * 256 * 4 : size_t(N * P) * 4, size_t(N * P) * 2, size_t(N * H) * 2,
       size_t(N * H) * 2, size_t(N * 3 * H) * 2, size_t(N * H) * 2, size_t(N * I) * 2, size_t(N * hd / 2) * 4,
       size_t(N * hd / 2) * 4, geo.size() * 4, cu.size() * 4, inv.size() * 4,
       size_t(in.keep_on_device ? 0 : n_out * M * O) * 2, size_t(M * O) * 4},
      st);
  OST_TRY(ws.status());
  auto* px32 = static_cast<float*>((*ws)[0]);  // f32 [N, patch_dim], or the LUT and the RGB8 images
  auto* px = static_cast<bf16*>((*ws)[1]);     // bf16 [N, patch_dim]
  auto* x = static_cast<bf16*>((*ws)[2]);      // bf16 [N, hidden], the residual stream
  auto* h = static_cast<bf16*>((*ws)[3]);      // bf16 [N, hidden]
  auto* qkv = static_cast<bf16*>((*ws)[4]);    // bf16 [N, 3, heads, hd]
  auto* at = static_cast<bf16*>((*ws)[5]);     // bf16 [N, heads, hd]; merger scratch
  auto* ml = static_cast<bf16*>((*ws)[6]);     // bf16 [N, inter]; merger scratch
  auto* cs = static_cast<float*>((*ws)[7]);    // f32 [N, hd/2]
  auto* sn = static_cast<float*>((*ws)[8]);
  auto* geo_d = static_cast<int32_t*>((*ws)[9]);
  auto* cu_d = static_cast<int32_t*>((*ws)[10]);
  auto* inv_d = static_cast<float*>((*ws)[11]);
  auto* outs = static_cast<bf16*>((*ws)[12]);  // bf16 [n_out][M, out_hidden]
  auto* out32 = static_cast<float*>((*ws)[13]);
  std::shared_ptr<DeviceVisionRows> kept;
  if (in.keep_on_device) {  // the mergers write straight into the output that prefill reads
    kept = std::make_shared<DeviceVisionRows>();
    OST_CUDA_RET(cudaMalloc(&kept->data, size_t(n_out * M * O) * 2));
    kept->rows = M;
    kept->width = O;
    kept->layers = n_out;
    outs = kept->data;
  }

  mark_start();
  OST_CUDA_RET(cudaMemcpyAsync(geo_d, geo.data(), geo.size() * 4, cudaMemcpyHostToDevice, st));
  OST_CUDA_RET(cudaMemcpyAsync(cu_d, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice, st));
  OST_CUDA_RET(cudaMemcpyAsync(inv_d, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice, st));
  // The reference casts the pixels to bf16 first.
  if (rgb) {
    float* lut_d = px32;
    auto* bytes = reinterpret_cast<uint8_t*>(px32 + 3 * 256);
    OST_CUDA_RET(cudaMemcpyAsync(lut_d, in.lut->data(), 3 * 256 * 4, cudaMemcpyHostToDevice, st));
    int64_t row0 = 0;
    for (size_t i = 0; i < in.rgb.size(); ++i) {
      const Image& im = *in.rgb[i];
      OST_CUDA_RET(cudaMemcpyAsync(bytes, im.rgb.data(), im.rgb.size(), cudaMemcpyHostToDevice, st));
      const int64_t rows = int64_t(grids[i].h) * grids[i].w;
      OST_TRY(launch_vision_patchify({bytes, im.width, geo_d + 4 * row0, rows, lut_d, c.patch_size,
                                      c.temporal_patch_size, px + row0 * P}, st));
      bytes += im.rgb.size();
      row0 += rows;
    }
  } else {
    OST_CUDA_RET(cudaMemcpyAsync(px32, in.pixel_values, size_t(N * P) * 4, cudaMemcpyHostToDevice, st));
    OST_TRY(launch_f32_to_bf16(px32, px, N * P, st));
  }
  mark("upload + patches");
  OST_TRY(gemm_.run(px, N, patch_.w, H, P, patch_.b, x, st));
  OST_TRY(launch_vision_pos_embed({x, pos_table_, geo_d, N, int(H), host_->vision.pos_grid}, st));
  OST_TRY(launch_vision_rope_tables(geo_d, inv_d, N, quarter, cs, sn, st));
  mark("patch embed + pos");

  const bool flash = fast_attention_ && flash_attention_supports(hd);
  std::vector<int32_t> row_start, row_len;  // the generic kernel's addressing
  if (!flash) {
    for (size_t k = 0; k + 1 < cu.size(); ++k)
      for (int32_t r = cu[k]; r < cu[k + 1]; ++r) {
        row_start.push_back(cu[k]);
        row_len.push_back(cu[k + 1] - cu[k]);
      }
  }
  DeviceScratch scratch;
  int32_t *rs_d = nullptr, *rl_d = nullptr;
  if (!flash) {
    auto a = scratch.alloc(size_t(N) * 4), b = scratch.alloc(size_t(N) * 4);
    OST_TRY(a.status());
    OST_TRY(b.status());
    rs_d = static_cast<int32_t*>(*a);
    rl_d = static_cast<int32_t*>(*b);
    OST_CUDA_RET(cudaMemcpyAsync(rs_d, row_start.data(), size_t(N) * 4, cudaMemcpyHostToDevice, st));
    OST_CUDA_RET(cudaMemcpyAsync(rl_d, row_len.data(), size_t(N) * 4, cudaMemcpyHostToDevice, st));
  }

  // OST_VISION_GELU=kernel: fc1 rounds to bf16 and a separate kernel applies the gelu (A/B runs).
  static const bool gelu_epilogue = [] {
    const char* e = std::getenv("OST_VISION_GELU");
    return !(e && std::strcmp(e, "kernel") == 0);
  }();
  static const bool rope_pairs = [] {  // OST_VISION_ROPE=pair: one pair per thread (A/B runs)
    const char* e = std::getenv("OST_VISION_ROPE");
    return e && std::strcmp(e, "pair") == 0;
  }();
  // Each residual add is fused with the LayerNorm after it (the next block's norm1 included),
  // so h holds norm1's output when a block starts.
  OST_TRY(launch_layer_norm({x, vblocks_[0].norm1.w, vblocks_[0].norm1.b, h, N, int(H), eps}, st));
  for (int l = 0; l < c.depth; ++l) {
    const VBlock& b = vblocks_[size_t(l)];
    mark("norm / residual / gelu");
    OST_TRY(gemm_.run(h, N, b.qkv.w, 3 * H, H, b.qkv.b, qkv, st));
    mark("gemm qkv");
    const RopeParams rp{qkv, cs, sn, N, 3 * H, 2 * heads, hd};  // the q heads, then the k heads
    OST_TRY(rope_pairs ? launch_rope(rp, st) : launch_rope4(rp, st));
    mark("rope");
    const float scale = float(1.0 / std::sqrt(double(hd)));
    if (flash) {
      FlashAttentionParams ap;
      ap.q = qkv;
      ap.k = qkv + H;
      ap.v = qkv + 2 * H;
      ap.out = at;
      ap.n_heads = ap.n_kv = heads;
      ap.head_dim = hd;
      ap.q_stride = ap.kv_stride = 3 * H;
      ap.out_stride = H;
      ap.cu_seqlens = cu_d;
      ap.cu_seqlens_host = cu.data();
      ap.n_segments = int(cu.size() - 1);
      ap.scale = scale;
      OST_TRY(launch_flash_attention(ap, st));
    } else {
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
      ap.row_start = rs_d;
      ap.row_len = rl_d;
      ap.scale = scale;
      OST_TRY(launch_attention(ap, st));
    }
    mark("attention");
    OST_TRY(gemm_.run(at, N, b.proj.w, H, H, b.proj.b, h, st));
    mark("gemm proj");
    OST_TRY(launch_add_layer_norm({x, h, b.norm2.w, b.norm2.b, at, N, int(H), eps}, st));
    mark("norm / residual / gelu");
    if (gelu_epilogue && b.fc1.b) {  // gelu_tanh in the GEMM's epilogue
      OST_TRY(gemm_.run_bias_gelu(at, N, b.fc1.w, I, H, b.fc1.b, ml, st));
      mark("gemm fc1 + gelu");
    } else {
      OST_TRY(gemm_.run(at, N, b.fc1.w, I, H, b.fc1.b, ml, st));
      mark("gemm fc1");
      OST_TRY(launch_gelu(ml, N * I, /*erf=*/false, st));
      mark("norm / residual / gelu");
    }
    OST_TRY(gemm_.run(ml, N, b.fc2.w, H, I, b.fc2.b, h, st));
    mark("gemm fc2");
    if (l + 1 < c.depth) {
      const VBlock& next = vblocks_[size_t(l + 1)];
      OST_TRY(launch_add_layer_norm({x, h, next.norm1.w, next.norm1.b, at, N, int(H), eps}, st));
      std::swap(h, at);  // h: the next block's norm1 output; at: free until its attention
    } else {
      OST_TRY(launch_add(x, h, N * H, st));
    }
    mark("norm / residual / gelu");
    for (size_t j = 0; j < c.deepstack_visual_indexes.size(); ++j)
      if (c.deepstack_visual_indexes[j] == l)
        OST_TRY(run_merger(ds_mergers_[j], x, N, /*norm_after_merge=*/true, at, ml,
                           outs + int64_t(1 + j) * M * O));
    mark("mergers");
  }
  OST_TRY(run_merger(merger_, x, N, /*norm_after_merge=*/false, at, ml, outs));
  mark("mergers");

  VisionOutput out;
  out.n_merged = M;
  if (kept) {
    OST_CUDA_RET(cudaStreamSynchronize(st));
    out.device = std::move(kept);
    return out;
  }
  out.deepstack.resize(ds_mergers_.size());
  for (int k = 0; k < n_out; ++k) {
    std::vector<float>& dst = k == 0 ? out.embeds : out.deepstack[size_t(k - 1)];
    OST_TRY(launch_bf16_to_f32(outs + int64_t(k) * M * O, out32, M * O, st));
    dst.resize(size_t(M * O));
    OST_CUDA_RET(cudaMemcpyAsync(dst.data(), out32, dst.size() * 4, cudaMemcpyDeviceToHost, st));
    OST_CUDA_RET(cudaStreamSynchronize(st));
  }
  return out;
}

}  // namespace ost::cuda
