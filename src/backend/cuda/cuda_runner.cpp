// The CUDA model runner: bf16 weights uploaded once (q|k|v and gate|up fused into single
// matrices), cuBLASLt GEMMs (or the GEMV of gemv.h for decode), the kernels of kernels.h and
// attention.h (flash attention for prefill, split-K for decode), a paged KV cache (blocks of 16
// tokens from one pool, handed out at new_sequence and returned when the sequence is destroyed,
// or with engine pages the serving loop's BlockManager ids, given by set_block_table),
// and CUDA graphs for the decode step (one per batch size) whose greedy token and log-probability
// are computed on the GPU. The vision tower runs on the GPU too (cuda_vision.cpp).
//
// Ownership: the runner owns every device allocation; sequences hold block ids of its pool and
// must not outlive it. One thread drives a runner (the engine thread); all work goes to one
// stream and each call returns after the stream is synchronised.
#include "backend/cuda/cuda_runner_impl.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <deque>

#include "backend/cuda/sampling.h"
#include "core/bf16.h"

namespace ost {

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

namespace cuda {

CudaRunner::~CudaRunner() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& [b, g] : graphs_)
    if (g) cudaGraphExecDestroy(g);
  for (void* p : allocs_) cudaFree(p);
  if (staging_host_) cudaFreeHost(staging_host_);
  if (step_out_host_) cudaFreeHost(step_out_host_);
  if (stream_) cudaStreamDestroy(stream_);
}

Status CudaRunner::linear(const bf16* x, int64_t n, const bf16* w, const QLinear& q, int64_t out, int64_t in,
                          bf16* y, cudaStream_t s, bool x_q8) {
  if (q.f8 && x_q8) return fp8_gemm_.run_quantized(n, q.f8, out, in, y, fp8_scratch_, s);
  if (q.f8) return fp8_gemm_.run(x, n, q.f8, out, in, y, fp8_scratch_, s);
  if (q.q4) {
    if (n <= kW4GemvMaxRows)
      return launch_w4a16_gemv({x, q.q4, q.scale4, q.zero, nullptr, y, n, out, in, q.group}, s);
    auto widen = [&]() -> Status {
      OST_TRY(launch_dequant_int4({q.q4, q.scale4, q.zero, dequant_scratch_, out, in, q.group}, s));
      return gemm_.run(x, n, dequant_scratch_, out, in, nullptr, y, s);
    };
    return run_w4a16_prefill({x, q.q4, q.scale4, q.zero, nullptr, y, n, out, in, q.group}, widen, s);
  }
  if (!q.w) return gemm_.run(x, n, w, out, in, nullptr, y, s);
  if (n <= kW8GemvRunnerRows) return launch_w8a16_gemv({x, q.w, q.scale, nullptr, y, n, out, in}, s);
  auto widen = [&]() -> Status {
    OST_TRY(launch_dequant_int8({q.w, q.scale, dequant_scratch_, out, in}, s));
    return gemm_.run(x, n, dequant_scratch_, out, in, nullptr, y, s);
  };
  return run_w8a16_prefill({x, q.w, q.scale, nullptr, y, n, out, in}, widen, s);
}

Status CudaRunner::fused_linear(const bf16* x, int64_t n, const bf16* w, const QLinear& q, int64_t out, int64_t in,
                                bf16* y, const GemvFusion& f, cudaStream_t s) {
  if (q.q4) {
    if (f.norm_w || f.silu || f.residual) return make_error("W4A16: only the GLU decode fusion");
    W4A16Params p{x, q.q4, q.scale4, q.zero, nullptr, y, n, out, in, q.group};
    p.glu = f.glu;
    return launch_w4a16_gemv(p, s);
  }
  if (q.w) {
    W8A16Params p{x, q.w, q.scale, nullptr, y, n, out, in};
    p.fuse = f;
    return launch_w8a16_gemv(p, s);
  }
  GemvParams p{x, w, nullptr, y, int(n), out, in};
  p.fuse = f;
  return launch_gemv(p, fused_gemv_rows(n), s);
}

Result<VisionOutput> CudaRunner::device_rows(const VisionOutput& v, int64_t from, int64_t n) {
  const auto* d = static_cast<const DeviceVisionRows*>(v.device.get());
  if (!d || from < 0 || n <= 0 || from + n > d->rows)
    return make_error("image rows %lld..%lld of %lld", (long long)from, (long long)(from + n),
                      (long long)(d ? d->rows : 0));
  auto part = std::make_shared<DeviceVisionRows>();
  OST_CUDA_RET(cudaMalloc(&part->data, size_t(d->layers * n * d->width) * 2));
  part->rows = n;
  part->width = d->width;
  part->layers = d->layers;
  for (int k = 0; k < d->layers; ++k)
    OST_CUDA_RET(cudaMemcpyAsync(part->data + int64_t(k) * n * d->width, d->data + (int64_t(k) * d->rows + from) * d->width,
                                 size_t(n * d->width) * 2, cudaMemcpyDeviceToDevice, stream_));
  VisionOutput out;
  out.n_merged = n;
  out.device = std::move(part);
  return out;
}

// The decoder over n staged rows. Image rows (prefill only) replace the <|image_pad|> rows
// listed in the kImage field and the deepstack rows are added after the first layers.
// Logits of rows logits_from .. n-1 in slices of kMaxLogitRows: each slice leaves bf16 logits in
// logits_, their argmax in argmax_ and its log-probability in logprob_, and goes to host_logits
// as f32 when that is given (never inside a graph).
Status CudaRunner::forward(int64_t n, int64_t logits_from, const ImageRows* img, bool decode, int64_t past,
                           float* host_logits) {
  const TextConfig& c = cfg_.model.text;
  const int64_t H = c.hidden_size, D = c.head_dim, Q = int64_t(c.num_heads) * D,
                KV = int64_t(c.num_kv_heads) * D, I = c.intermediate_size, V = c.vocab_size;
  cudaStream_t s = stream_;
  const float eps = c.rms_norm_eps;
  int32_t* in = staging_dev_;
  mark_start();
  if (embed_q_.data) OST_TRY(launch_embed_gather({embed_q_, field(in, kIds), x_, n}, s));
  else OST_TRY(launch_embedding({embed_, field(in, kIds), x_, n, H}, s));
  if (img && img->n > 0)
    OST_TRY(launch_scatter_rows({x_, img->embeds, field(in, kImage), img->n, H, false}, s));
  // Decode with few rows: glu, the gate_up GEMV writes act_; fuse, the GEMVs also read x_ through
  // the RMSNorm, add into x_ and read gate_up through SiLU·up (no add_rms_norm / silu_mul).
  const bool small = decode && n <= kGemvMaxRows && !(img && img->n > 0) && H % 16 == 0 && I % 16 == 0 &&
                     Q % 16 == 0;
  const bool fuse = fused_decode_ && small && !has_int4_;
  // The GLU epilogue where it measured faster: INT8 weights, up to 4 rows (bf16 keeps the GEMM
  // timed per shape; INT8 from 5 rows takes the warp kernel).
  const bool glu = glu_decode_ && small && !fuse && n <= 4;
  // FP8 decode: the RMSNorm and SiLU·up kernels also write their output quantized for the FP8
  // linear that reads it (no activation-quantization launch before qkv, gate_up and down).
  auto q8_norm = [&](AddRmsNormParams np, const QLinear& next) {
    if (small && !fuse && fp8_prequant_ && next.f8 && H % 128 == 0) {
      const Fp8Gemm::ActScratch a = Fp8Gemm::act_scratch(fp8_scratch_, n, H);
      np.q8 = a.q;
      np.q8_scale = a.scale;
    }
    return np;
  };
  const auto q8_in = [&](const QLinear& q, int64_t in) {
    return small && !fuse && fp8_prequant_ && q.f8 && in % 128 == 0;
  };
  if (!fuse) OST_TRY(launch_add_rms_norm(q8_norm({x_, nullptr, layers_[0].attn_norm, h_, n, int(H), eps}, layers_[0].qkv_q), s));
  for (int l = 0; l < c.num_layers; ++l) {
    const Layer& L = layers_[size_t(l)];
    mark("norm/rope/act");
    if (fuse) {
      GemvFusion f;
      f.norm_w = L.attn_norm;
      f.eps = eps;
      OST_TRY(fused_linear(x_, n, L.qkv, L.qkv_q, Q + 2 * KV, H, qkv_, f, s));
    } else {
      OST_TRY(linear(h_, n, L.qkv, L.qkv_q, Q + 2 * KV, H, qkv_, s, q8_in(L.qkv_q, H)));
    }
    mark("gemm qkv");
    QkNormRopeParams qp;
    qp.qkv = qkv_;
    qp.q_norm = L.q_norm;
    qp.k_norm = L.k_norm;
    qp.pos = field(in, kPosT);  // kPosT, kPosH, kPosW are consecutive fields of kMaxRows
    qp.inv_freq = inv_freq_;
    qp.axis = axis_;
    qp.slot = field(in, kSlot);
    qp.q_out = q_;
    if (kv_fp8_) {
      qp.k_cache8 = kc8_[size_t(l)];
      qp.v_cache8 = vc8_[size_t(l)];
      qp.k_scale = ks_[size_t(l)];
      qp.v_scale = vs_[size_t(l)];
    } else {
      qp.k_cache = kc_[size_t(l)];
      qp.v_cache = vc_[size_t(l)];
    }
    qp.n = n;
    qp.n_heads = c.num_heads;
    qp.n_kv = c.num_kv_heads;
    qp.head_dim = int(D);
    qp.eps = eps;
    qp.pos_stride = kMaxRows;
    const int32_t* tables = in + size_t(kMaxRows) * kStepFields;
    const float scale = float(1.0 / std::sqrt(double(D)));
    const int group = c.num_heads / c.num_kv_heads;
    // What every attention launch shape below is given alike.
    auto set_common = [&](auto& ap) {
      ap.q = q_;
      if constexpr (requires { ap.k8; }) {  // the flash and split-K kernels read an fp8 cache
        if (kv_fp8_) {
          ap.k8 = kc8_[size_t(l)];
          ap.v8 = vc8_[size_t(l)];
          ap.k_scale = ks_[size_t(l)];
          ap.v_scale = vs_[size_t(l)];
        }
      }
      ap.k = kv_fp8_ ? nullptr : kc_[size_t(l)];
      ap.v = kv_fp8_ ? nullptr : vc_[size_t(l)];
      ap.out = attn_;
      ap.n = n;
      ap.n_heads = c.num_heads;
      ap.n_kv = c.num_kv_heads;
      ap.head_dim = int(D);
      ap.q_stride = ap.out_stride = Q;
      ap.block_table = tables;
      ap.block_size = kBlock;
      ap.scale = scale;
    };
    const bool split_decode = fast_attention_ && decode && decode_attention_supports(int(D), group);
    const bool mixed = mixed_ && fast_attention_;  // else the generic kernel takes every row
    if (!(split_decode && fused_qk_) || mixed) OST_TRY(launch_qk_norm_rope(qp, s));  // else inside the attention
    mark("norm/rope/act");
    if (mixed) {
      // Decode rows: split-K over their cache; each prefill segment: causal flash attention.
      if (mixed_->n_decode > 0) {
        DecodeAttentionParams ap;
        set_common(ap);
        ap.n = mixed_->n_decode;
        ap.row_len = field(in, kLen);
        ap.row_seq = field(in, kSeq);
        ap.table_width = table_width_;
        ap.partial = attn_partial_;
        ap.counters = attn_counters_;
        ap.splits = decode_attention_splits(mixed_->n_decode, c.num_kv_heads, sm_count_);
        OST_TRY(launch_decode_attention(ap, s));
      }
      for (const MixedLayout::Segment& g : mixed_->segments) {
        FlashAttentionParams ap;
        set_common(ap);
        ap.q = q_ + g.row * Q;
        ap.out = attn_ + g.row * Q;
        ap.n = g.n;
        ap.past = g.past;
        ap.block_table = tables + size_t(g.table_row) * table_width_;
        OST_TRY(launch_flash_attention(ap, s));
      }
    } else if (split_decode) {
      DecodeAttentionParams ap;
      if (fused_qk_) {
        ap.qkv = qkv_;
        ap.q_norm = L.q_norm;
        ap.k_norm = L.k_norm;
        ap.pos = qp.pos;
        ap.pos_stride = kMaxRows;
        ap.inv_freq = inv_freq_;
        ap.axis = axis_;
        ap.slot = qp.slot;
        ap.k_store = kc_[size_t(l)];
        ap.v_store = vc_[size_t(l)];
        ap.eps = eps;
      }
      set_common(ap);
      ap.row_len = field(in, kLen);
      ap.row_seq = field(in, kSeq);
      ap.table_width = table_width_;
      ap.partial = attn_partial_;
      ap.counters = attn_counters_;
      ap.splits = decode_attention_splits(n, c.num_kv_heads, sm_count_);
      OST_TRY(launch_decode_attention(ap, s));
    } else if (fast_attention_ && !decode && flash_attention_supports(int(D))) {
      FlashAttentionParams ap;  // one sequence (staging row 0), causal from cache index past
      set_common(ap);
      ap.past = past;
      OST_TRY(launch_flash_attention(ap, s));
    } else {
      if (kv_fp8_) return make_error("the generic attention kernel does not read an fp8 KV cache");
      AttentionParams ap;
      set_common(ap);
      ap.kv_stride = KV;
      ap.row_len = field(in, kLen);
      ap.row_seq = field(in, kSeq);
      ap.table_width = table_width_;
      OST_TRY(launch_attention(ap, s));
    }
    mark("attention");
    if (fuse) {
      GemvFusion f;
      f.residual = x_;
      OST_TRY(fused_linear(attn_, n, L.o, L.o_q, H, Q, x_, f, s));
      mark("gemm o");
      f = GemvFusion{};
      f.norm_w = L.ffn_norm;
      f.eps = eps;
      OST_TRY(fused_linear(x_, n, L.gu, L.gu_q, 2 * I, H, gu_, f, s));
      mark("gemm gate_up");
      f = GemvFusion{};
      f.silu = true;
      f.residual = x_;
      OST_TRY(fused_linear(gu_, n, L.down, L.down_q, H, I, x_, f, s));
      mark("gemm down");
      continue;
    }
    OST_TRY(linear(attn_, n, L.o, L.o_q, H, Q, h_, s));
    mark("gemm o");
    OST_TRY(launch_add_rms_norm(q8_norm({x_, h_, L.ffn_norm, h_, n, int(H), eps}, L.gu_q), s));
    mark("norm/rope/act");
    bool down_q8 = false;
    if (glu && (L.gu_q.w || L.gu_q.q4)) {
      GemvFusion f;
      f.glu = true;
      OST_TRY(fused_linear(h_, n, L.gu, L.gu_q, I, H, act_, f, s));  // W: 2·I rows, writes I
      mark("gemm gate_up");
    } else {
      OST_TRY(linear(h_, n, L.gu, L.gu_q, 2 * I, H, gu_, s, q8_in(L.gu_q, H)));
      mark("gemm gate_up");
      SiluMulParams sp{gu_, act_, n, I};
      down_q8 = q8_in(L.down_q, I);
      if (down_q8) {
        const Fp8Gemm::ActScratch a = Fp8Gemm::act_scratch(fp8_scratch_, n, I);
        sp.y = nullptr;
        sp.q8 = a.q;
        sp.q8_scale = a.scale;
      }
      OST_TRY(launch_silu_mul(sp, s));
      mark("norm/rope/act");
    }
    OST_TRY(linear(act_, n, L.down, L.down_q, H, I, h_, s, down_q8));
    mark("gemm down");
    const bool last = l + 1 == c.num_layers;
    const bf16* next = last ? norm_ : layers_[size_t(l + 1)].attn_norm;
    const QLinear none;  // the lm_head quantizes its own input
    OST_TRY(launch_add_rms_norm(q8_norm({x_, h_, next, h_, n, int(H), eps}, last ? none : layers_[size_t(l + 1)].qkv_q), s));
    if (img && img->n > 0 && size_t(l) < img->deepstack.size()) {
      OST_TRY(launch_scatter_rows({x_, img->deepstack[size_t(l)], field(in, kImage), img->n, H, true}, s));
      OST_TRY(launch_add_rms_norm({x_, nullptr, next, h_, n, int(H), eps}, s));
    }
  }
  if (fuse) OST_TRY(launch_add_rms_norm({x_, nullptr, norm_, h_, n, int(H), eps}, s));
  if (mixed_ && mixed_->n_logit > 0) {  // the listed rows, gathered, through lm_head
    mark("norm/rope/act");
    OST_TRY(launch_gather_rows(h_, field(in, kLogitRow), mixed_->n_logit, H, gu_, s));
    OST_TRY(linear(gu_, mixed_->n_logit, lm_head_, lm_head_q_, V, H, logits_, s));
    mark("gemm lm_head");
    OST_TRY(launch_argmax_logprob_excluding(logits_, mixed_->n_logit, V, excluded_dev_, argmax_, logprob_, s));
    mark("logits out");
  }
  const int64_t nl = n - logits_from;
  for (int64_t r0 = 0; r0 < nl; r0 += kMaxLogitRows) {
    const int64_t rn = std::min<int64_t>(kMaxLogitRows, nl - r0);
    mark("norm/rope/act");
    OST_TRY(linear(h_ + (logits_from + r0) * H, rn, lm_head_, lm_head_q_, V, H, logits_, s));
    mark("gemm lm_head");
    OST_TRY(launch_argmax_logprob_excluding(logits_, rn, V, excluded_dev_, argmax_, logprob_, s));
    mark("logits out");
    if (host_logits) {
      OST_TRY(launch_bf16_to_f32(logits_, logits_f32_, rn * V, s));
      OST_CUDA_RET(
          cudaMemcpyAsync(host_logits + r0 * V, logits_f32_, size_t(rn * V) * 4, cudaMemcpyDeviceToHost, s));
    }
  }
  return Status::ok();
}

Result<std::vector<float>> CudaRunner::prefill(SequenceState& st, const std::vector<int32_t>& ids,
                                               const MropePositions& pos, const VisionOutput* vision,
                                               bool all_logits) {
  auto& s = static_cast<CudaSequence&>(st);
  const ModelConfig& cfg = cfg_.model;
  const int64_t n = int64_t(ids.size()), H = cfg.text.hidden_size, V = cfg.text.vocab_size;
  if (s.runner != this) return make_error("prefill: the sequence was not made by this runner");
  if (n == 0) return make_error("prefill: no tokens");
  if (pos.n != n || int64_t(pos.pos.size()) != 3 * n)
    return make_error("prefill: %lld tokens but positions for %lld", (long long)n, (long long)pos.n);
  if (s.len + n > s.capacity)
    return make_error("prefill: %lld tokens do not fit the KV cache (%lld of %lld used)",
                      (long long)n, (long long)s.len, (long long)s.capacity);
  for (int64_t i = 0; i < n; ++i)
    if (ids[size_t(i)] < 0 || ids[size_t(i)] >= V)
      return make_error("prefill: token id %d at %lld is outside the vocabulary (%lld)", ids[size_t(i)],
                        (long long)i, (long long)V);
  const int64_t pads = std::count(ids.begin(), ids.end(), cfg.image_token_id);
  const int64_t rows = vision ? vision->n_merged : 0;
  if (pads != rows)
    return make_error("prefill: the prompt has %lld <|image_pad|> tokens but %lld image "
                      "embeddings were given", (long long)pads, (long long)rows);

  // Image rows and deepstack features, bf16 on the device for the whole prompt.
  DeviceScratch scratch;
  ImageRows img;
  if (rows > 0 && vision->device) {  // kept on the device by encode_images
    const auto* d = static_cast<const DeviceVisionRows*>(vision->device.get());
    if (d->rows != rows || d->width != H || d->layers != int(1 + cfg.vision.deepstack_visual_indexes.size()))
      return make_error("prefill: the vision output does not match this model");
    img.embeds = d->data;
    for (int k = 1; k < d->layers; ++k) img.deepstack.push_back(d->data + int64_t(k) * rows * H);
  } else if (rows > 0) {
    if (int64_t(vision->embeds.size()) != rows * H ||
        vision->deepstack.size() != cfg.vision.deepstack_visual_indexes.size())
      return make_error("prefill: the vision output does not match this model");
    std::vector<const std::vector<float>*> srcs = {&vision->embeds};
    for (const auto& d : vision->deepstack) {
      if (int64_t(d.size()) != rows * H) return make_error("prefill: the vision output does not match this model");
      srcs.push_back(&d);
    }
    std::vector<bf16_t> tmp(size_t(rows * H));
    for (size_t k = 0; k < srcs.size(); ++k) {
      for (size_t i = 0; i < tmp.size(); ++i) tmp[i] = f32_to_bf16((*srcs[k])[i]);
      auto d = scratch.alloc(tmp.size() * 2);
      OST_TRY(d.status());
      OST_CUDA_RET(cudaMemcpy(*d, tmp.data(), tmp.size() * 2, cudaMemcpyHostToDevice));
      if (k == 0) img.embeds = static_cast<bf16*>(*d);
      else img.deepstack.push_back(static_cast<bf16*>(*d));
    }
  }

  std::vector<float> logits(size_t((all_logits ? n : 1) * V));
  int64_t image_row = 0;
  for (int64_t c0 = 0; c0 < n; c0 += kMaxRows) {
    const int64_t cn = std::min<int64_t>(kMaxRows, n - c0);
    const bool last = c0 + cn == n;
    int32_t* h = staging_host_;
    int64_t ni = 0;
    for (int64_t i = 0; i < cn; ++i) {
      const int64_t t = s.len + i;  // cache index
      field(h, kIds)[i] = ids[size_t(c0 + i)];
      field(h, kPosT)[i] = int32_t(pos.pos[size_t(c0 + i)]);
      field(h, kPosH)[i] = int32_t(pos.pos[size_t(n + c0 + i)]);
      field(h, kPosW)[i] = int32_t(pos.pos[size_t(2 * n + c0 + i)]);
      field(h, kSlot)[i] = slot_of(s, t);
      field(h, kSeq)[i] = 0;
      field(h, kLen)[i] = int32_t(t + 1);
      if (ids[size_t(c0 + i)] == cfg.image_token_id) field(h, kImage)[ni++] = int32_t(i);
    }
    stage_table(0, s);
    OST_TRY(upload_staging(1));
    ImageRows chunk_img;
    if (ni > 0) {
      chunk_img.n = ni;
      chunk_img.embeds = img.embeds + image_row * H;
      for (const bf16* d : img.deepstack) chunk_img.deepstack.push_back(d + image_row * H);
    }
    const int64_t from = all_logits ? 0 : (last ? cn - 1 : cn);
    float* out = all_logits ? logits.data() + c0 * V : logits.data();
    OST_TRY(
        forward(cn, from, ni > 0 ? &chunk_img : nullptr, /*decode=*/false, s.len, cn > from ? out : nullptr));
    OST_CUDA_RET(cudaStreamSynchronize(stream_));
    s.len += cn;
    image_row += ni;
  }
  s.rope_delta = pos.rope_delta;
  return logits;
}

// Stages one decode step of several sequences and runs it (through the graph for this batch
// size when graphs are on). The outputs stay on the device.
Status CudaRunner::decode_step(const std::vector<SequenceState*>& seqs, const std::vector<int32_t>& ids) {
  const int64_t B = int64_t(seqs.size()), V = cfg_.model.text.vocab_size;
  if (B == 0 || size_t(B) != ids.size()) return make_error("decode: %zu sequences, %zu ids", seqs.size(), ids.size());
  if (B > kMaxSeqs) return make_error("decode: at most %d sequences per step", kMaxSeqs);
  int32_t* h = staging_host_;
  for (int64_t b = 0; b < B; ++b) {
    auto& s = static_cast<CudaSequence&>(*seqs[size_t(b)]);
    if (s.runner != this) return make_error("decode: a sequence was not made by this runner");
    if (s.len + 1 > s.capacity) return make_error("decode: the KV cache is full (%lld tokens)", (long long)s.capacity);
    if (ids[size_t(b)] < 0 || ids[size_t(b)] >= V) return make_error("decode: token id %d is outside the vocabulary", ids[size_t(b)]);
    for (int64_t o = 0; o < b; ++o)
      if (seqs[size_t(o)] == seqs[size_t(b)]) return make_error("decode: a sequence appears twice in one step");
    const int32_t p = int32_t(s.len + s.rope_delta);
    field(h, kIds)[b] = ids[size_t(b)];
    field(h, kPosT)[b] = field(h, kPosH)[b] = field(h, kPosW)[b] = p;
    field(h, kSlot)[b] = slot_of(s, s.len);
    field(h, kSeq)[b] = int32_t(b);
    field(h, kLen)[b] = int32_t(s.len + 1);
    stage_table(int(b), s);
  }
  OST_TRY(upload_staging(int(B)));
  const bool first = !graphs_.count(int(B));
  if (!use_graphs_ || first || profile_) {
    if (first) graphs_[int(B)] = nullptr;  // capture on the next step of this size
    OST_TRY(forward(B, 0, nullptr, /*decode=*/true, 0));
  } else {
    cudaGraphExec_t& exec = graphs_[int(B)];
    if (!exec) {
      OST_CUDA_RET(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      Status st = forward(B, 0, nullptr, /*decode=*/true, 0);
      cudaGraph_t graph = nullptr;
      const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
      if (!st) {
        if (graph) cudaGraphDestroy(graph);
        return st;
      }
      OST_CUDA_RET(e);
      const cudaError_t ie = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      OST_CUDA_RET(ie);
    }
    OST_CUDA_RET(cudaGraphLaunch(exec, stream_));
  }
  for (SequenceState* q : seqs) static_cast<CudaSequence*>(q)->len += 1;
  return Status::ok();
}

Result<std::vector<float>> CudaRunner::decode_batch(const std::vector<SequenceState*>& seqs,
                                                    const std::vector<int32_t>& ids) {
  OST_TRY(decode_step(seqs, ids));
  const size_t V = size_t(cfg_.model.text.vocab_size);
  std::vector<float> logits(seqs.size() * V);
  OST_TRY(launch_bf16_to_f32(logits_, logits_f32_, int64_t(logits.size()), stream_));
  OST_CUDA_RET(cudaMemcpyAsync(logits.data(), logits_f32_, logits.size() * 4, cudaMemcpyDeviceToHost, stream_));
  OST_CUDA_RET(cudaStreamSynchronize(stream_));
  return logits;
}

Result<std::vector<float>> CudaRunner::decode(SequenceState& s, int32_t id) {
  return decode_batch({&s}, {id});
}

Result<std::vector<GreedyToken>> CudaRunner::decode_batch_argmax(const std::vector<SequenceState*>& seqs,
                                                                 const std::vector<int32_t>& ids) {
  OST_TRY(decode_step(seqs, ids));
  const size_t B = seqs.size();
  auto* h = static_cast<int32_t*>(step_out_host_);  // ids [B], then log-probabilities [B]
  OST_CUDA_RET(cudaMemcpyAsync(h, argmax_, B * 4, cudaMemcpyDeviceToHost, stream_));
  OST_CUDA_RET(cudaMemcpyAsync(h + B, logprob_, B * 4, cudaMemcpyDeviceToHost, stream_));
  OST_CUDA_RET(cudaStreamSynchronize(stream_));
  std::vector<GreedyToken> out(B);
  for (size_t b = 0; b < B; ++b) {
    out[b].id = h[b];
    std::memcpy(&out[b].logprob, h + B + b, 4);
  }
  return out;
}

Status CudaRunner::set_excluded_tokens(const std::vector<int32_t>& ids) {
  OST_TRY(ModelRunner::set_excluded_tokens(ids));
  std::vector<int32_t> h(size_t(1 + kMaxExcludedTokens), 0);
  h[0] = int32_t(ids.size());
  std::copy(ids.begin(), ids.end(), h.begin() + 1);
  // Graphs read the list at run time: no recapture.
  OST_CUDA_RET(cudaStreamSynchronize(stream_));
  OST_CUDA_RET(cudaMemcpy(excluded_dev_, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  return Status::ok();
}

// One forward for the decode rows and the prefill chunks of a serving step (MixedLayout). Chunks
// whose image rows are not all kept on the device, or a step beyond the staging limits, go the
// separate way (ModelRunner::mixed_step).
Result<MixedStepOutput> CudaRunner::mixed_step(const std::vector<PrefillChunk>& chunks,
                                               const std::vector<SequenceState*>& decode,
                                               const std::vector<int32_t>& decode_ids, bool greedy) {
  const ModelConfig& cfg = cfg_.model;
  const int64_t H = cfg.text.hidden_size, V = cfg.text.vocab_size;
  const int64_t B = int64_t(decode.size()), G = int64_t(chunks.size());
  const int layers = int(1 + cfg.vision.deepstack_visual_indexes.size());
  bool eligible = mixed_steps_ && G > 0 && size_t(B) == decode_ids.size() && B + G <= kMaxSeqs &&
                  B + G <= kMaxLogitRows;
  int64_t rows = B, img_rows = 0;
  for (const PrefillChunk& c : chunks) {
    if (!eligible) break;
    rows += int64_t(c.ids.size());
    const int64_t pads = std::count(c.ids.begin(), c.ids.end(), cfg.image_token_id);
    const auto* d = c.vision ? static_cast<const DeviceVisionRows*>(c.vision->device.get()) : nullptr;
    if (pads > 0 && !(d && c.vision_from >= 0 && c.vision_from + pads <= d->rows && c.vision->n_merged == d->rows &&
                      d->width == H && d->layers == layers))
      eligible = false;
    if (c.ids.empty() || c.pos.n != int64_t(c.ids.size()) || (pads == 0 && c.vision)) eligible = false;
    img_rows += pads;
  }
  if (!eligible || rows > kMaxRows) {
    // The separate way takes a chunk's own rows: those kept on the device are cut here.
    std::vector<PrefillChunk> own = chunks;
    std::deque<VisionOutput> cut;
    for (PrefillChunk& c : own) {
      const int64_t pads = std::count(c.ids.begin(), c.ids.end(), cfg.image_token_id);
      if (pads == 0 || !c.vision || !c.vision->device || (c.vision_from == 0 && pads == c.vision->n_merged)) continue;
      auto part = device_rows(*c.vision, c.vision_from, pads);
      OST_TRY(part.status());
      cut.push_back(std::move(*part));
      c.vision = &cut.back();
      c.vision_from = 0;
    }
    return ModelRunner::mixed_step(own, decode, decode_ids, greedy);
  }

  int32_t* h = staging_host_;
  MixedLayout lay;
  lay.n_decode = B;
  for (int64_t b = 0; b < B; ++b) {
    auto& s = static_cast<CudaSequence&>(*decode[size_t(b)]);
    if (s.runner != this) return make_error("decode: a sequence was not made by this runner");
    if (s.len + 1 > s.capacity) return make_error("decode: the KV cache is full (%lld tokens)", (long long)s.capacity);
    if (decode_ids[size_t(b)] < 0 || decode_ids[size_t(b)] >= V)
      return make_error("decode: token id %d is outside the vocabulary", decode_ids[size_t(b)]);
    const int32_t p = int32_t(s.len + s.rope_delta);
    field(h, kIds)[b] = decode_ids[size_t(b)];
    field(h, kPosT)[b] = field(h, kPosH)[b] = field(h, kPosW)[b] = p;
    field(h, kSlot)[b] = slot_of(s, s.len);
    field(h, kSeq)[b] = int32_t(b);
    field(h, kLen)[b] = int32_t(s.len + 1);
    field(h, kLogitRow)[b] = int32_t(b);
    stage_table(int(b), s);
  }
  if (img_rows > 0 && !mixed_image_) {
    auto d = alloc(size_t(layers) * kMaxRows * H * 2);
    OST_TRY(d.status());
    mixed_image_ = static_cast<bf16*>(*d);
  }
  int64_t row = B, ni = 0;
  for (int64_t g = 0; g < G; ++g) {
    const PrefillChunk& c = chunks[size_t(g)];
    auto& s = static_cast<CudaSequence&>(*c.seq);
    const int64_t n = int64_t(c.ids.size()), ni0 = ni;
    if (s.runner != this) return make_error("prefill: the sequence was not made by this runner");
    if (s.len + n > s.capacity)
      return make_error("prefill: %lld tokens do not fit the KV cache (%lld of %lld used)", (long long)n,
                        (long long)s.len, (long long)s.capacity);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t id = c.ids[size_t(i)];
      if (id < 0 || id >= V) return make_error("prefill: token id %d is outside the vocabulary", id);
      const int64_t t = s.len + i;
      field(h, kIds)[row + i] = id;
      field(h, kPosT)[row + i] = int32_t(c.pos.pos[size_t(i)]);
      field(h, kPosH)[row + i] = int32_t(c.pos.pos[size_t(n + i)]);
      field(h, kPosW)[row + i] = int32_t(c.pos.pos[size_t(2 * n + i)]);
      field(h, kSlot)[row + i] = slot_of(s, t);
      field(h, kSeq)[row + i] = int32_t(B + g);
      field(h, kLen)[row + i] = int32_t(t + 1);
      if (id == cfg.image_token_id) field(h, kImage)[ni++] = int32_t(row + i);
    }
    if (ni > ni0) {  // this chunk's rows (from vision_from on) after the earlier chunks'
      const auto* d = static_cast<const DeviceVisionRows*>(c.vision->device.get());
      for (int k = 0; k < layers; ++k)
        OST_CUDA_RET(cudaMemcpyAsync(mixed_image_ + (int64_t(k) * kMaxRows + ni0) * H,
                                     d->data + (int64_t(k) * d->rows + c.vision_from) * H, size_t((ni - ni0) * H) * 2,
                                     cudaMemcpyDeviceToDevice, stream_));
    }
    field(h, kLogitRow)[B + g] = int32_t(row + n - 1);
    stage_table(int(B + g), s);
    lay.segments.push_back({row, n, s.len, int(B + g)});
    row += n;
  }
  lay.n_logit = B + G;
  OST_TRY(upload_staging(int(B + G)));
  ImageRows img;
  img.n = ni;
  if (ni > 0) {
    img.embeds = mixed_image_;
    for (int k = 1; k < layers; ++k) img.deepstack.push_back(mixed_image_ + int64_t(k) * kMaxRows * H);
  }
  mixed_ = &lay;
  Status st = forward(row, row, ni > 0 ? &img : nullptr, /*decode=*/false, 0);
  mixed_ = nullptr;
  OST_TRY(st);
  info_.mixed_forwards++;

  MixedStepOutput out;
  out.chunk_logits.resize(size_t(G));
  std::vector<float> tmp;
  // f32 logits of rows [from, from + count) of the gathered rows.
  auto fetch = [&](int64_t from, int64_t count, float* dst) -> Status {
    OST_TRY(launch_bf16_to_f32(logits_ + from * V, logits_f32_, count * V, stream_));
    OST_CUDA_RET(cudaMemcpyAsync(dst, logits_f32_, size_t(count * V) * 4, cudaMemcpyDeviceToHost, stream_));
    return Status::ok();
  };
  if (B > 0 && greedy) {
    auto* hp = static_cast<int32_t*>(step_out_host_);
    OST_CUDA_RET(cudaMemcpyAsync(hp, argmax_, size_t(B) * 4, cudaMemcpyDeviceToHost, stream_));
    OST_CUDA_RET(cudaMemcpyAsync(hp + B, logprob_, size_t(B) * 4, cudaMemcpyDeviceToHost, stream_));
  } else if (B > 0) {
    out.decode_logits.resize(size_t(B * V));
    OST_TRY(fetch(0, B, out.decode_logits.data()));
  }
  for (int64_t g = 0; g < G; ++g)
    if (chunks[size_t(g)].logits) {
      out.chunk_logits[size_t(g)].resize(size_t(V));
      OST_TRY(fetch(B + g, 1, out.chunk_logits[size_t(g)].data()));
    }
  OST_CUDA_RET(cudaStreamSynchronize(stream_));
  if (B > 0 && greedy) {
    auto* hp = static_cast<int32_t*>(step_out_host_);
    out.decode_tokens.resize(size_t(B));
    for (int64_t b = 0; b < B; ++b) {
      out.decode_tokens[size_t(b)].id = hp[b];
      std::memcpy(&out.decode_tokens[size_t(b)].logprob, hp + B + b, 4);
    }
  }
  for (SequenceState* q : decode) static_cast<CudaSequence*>(q)->len += 1;
  for (const PrefillChunk& c : chunks) {
    auto& s = static_cast<CudaSequence&>(*c.seq);
    s.len += int64_t(c.ids.size());
    s.rope_delta = c.pos.rope_delta;
  }
  return out;
}

// Decode steps of every batch size up to max_batch on scratch sequences of one token each: the
// first step of a size runs eagerly, the second captures its graph.
Status CudaRunner::warm_up(int max_batch) {
  max_batch = std::min(max_batch, kMaxSeqs);
  if (!use_graphs_ || max_batch < 1) return Status::ok();
  std::vector<std::unique_ptr<SequenceState>> seqs;
  std::vector<SequenceState*> ptrs;
  MropePositions pos;
  pos.n = 1;
  pos.pos = {0, 0, 0};
  const int32_t id = 0;
  for (int b = 0; b < max_batch; ++b) {
    auto s = new_sequence(2 * int64_t(max_batch) + 2);
    OST_TRY(s.status());
    OST_TRY(prefill(**s, {id}, pos, nullptr, false).status());
    ptrs.push_back(s->get());
    seqs.push_back(std::move(*s));
  }
  for (int b = 1; b <= max_batch; ++b) {
    std::vector<SequenceState*> sub(ptrs.begin(), ptrs.begin() + b);
    const std::vector<int32_t> ids(size_t(b), id);
    for (int rep = 0; rep < 2; ++rep) {
      auto it = graphs_.find(b);
      if (it != graphs_.end() && it->second) break;
      OST_TRY(decode_batch_argmax(sub, ids).status());
    }
  }
  return Status::ok();
}

Result<std::vector<int32_t>> CudaRunner::decode_greedy(const std::vector<SequenceState*>& seqs,
                                                       const std::vector<int32_t>& ids) {
  auto g = decode_batch_argmax(seqs, ids);
  OST_TRY(g.status());
  std::vector<int32_t> out;
  for (const GreedyToken& t : *g) out.push_back(t.id);
  return out;
}

}  // namespace cuda

Result<std::unique_ptr<ModelRunner>> load_cuda_runner(const std::string& dir, const quant::QuantConfig& quant_at_load) {
  if (!cuda_available()) return make_error("no CUDA GPU is visible; use --device cpu");
  auto r = std::make_unique<cuda::CudaRunner>();
  Status st = r->load(dir, quant_at_load);
  if (!st) return Error{st.message()};
  return std::unique_ptr<ModelRunner>(std::move(r));
}

const CudaRunnerInfo* cuda_runner_info(ModelRunner& r) {
  auto* c = dynamic_cast<cuda::CudaRunner*>(&r);
  return c ? &c->info() : nullptr;
}

Result<std::vector<int32_t>> cuda_decode_greedy(ModelRunner& r, const std::vector<SequenceState*>& seqs,
                                                const std::vector<int32_t>& ids) {
  auto* c = dynamic_cast<cuda::CudaRunner*>(&r);
  if (!c) return make_error("cuda_decode_greedy: not the CUDA runner");
  return c->decode_greedy(seqs, ids);
}

}  // namespace ost
