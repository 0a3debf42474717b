// Loading a checkpoint into the CUDA runner: configs, the mapped weights, each tensor uploaded
// once (q|k|v and gate|up stacked into single matrices; INT8, INT4 and FP8 kept in their formats
// with their scales), the KV pool, step buffers and the vision tower (cuda_vision.cpp).
#include "backend/cuda/cuda_runner_impl.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/sampling.h"
#include "core/bf16.h"

namespace ost::cuda {

Result<void*> CudaRunner::alloc(size_t bytes) {
  void* p = nullptr;
  OST_CUDA_RET(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
  allocs_.push_back(p);
  return p;
}

Result<bf16*> CudaRunner::upload_rows(const ops::WeightView& w) {
  auto d = alloc(size_t(w.rows * w.cols) * 2);
  OST_TRY(d.status());
  OST_TRY(copy_rows(w, static_cast<bf16*>(*d)));
  return static_cast<bf16*>(*d);
}

Status CudaRunner::copy_rows(const ops::WeightView& w, bf16* dst) {
  const size_t n = size_t(w.rows * w.cols);
  if (w.dtype == ops::WType::BF16) {
    OST_CUDA_RET(cudaMemcpy(dst, w.data, n * 2, cudaMemcpyHostToDevice));
  } else {
    std::vector<bf16_t> tmp(size_t(w.cols));
    std::vector<float> row(size_t(w.cols));
    for (int64_t r = 0; r < w.rows; ++r) {
      ops::weight_row_f32(w, r, row.data());
      for (int64_t c = 0; c < w.cols; ++c) tmp[size_t(c)] = f32_to_bf16(row[size_t(c)]);
      OST_CUDA_RET(cudaMemcpy(dst + r * w.cols, tmp.data(), tmp.size() * 2, cudaMemcpyHostToDevice));
    }
  }
  weight_bytes_ += n * 2;
  return Status::ok();
}

Result<bool> CudaRunner::upload_fp8(const std::vector<const ops::WeightView*>& parts, QLinear& out) {
  const int64_t B = kFp8Block, cols = parts[0]->cols, nb = (cols + B - 1) / B;
  int64_t rows = 0;
  bool aligned = true;  // every part but the last a whole number of 128-row blocks
  for (const ops::WeightView* w : parts) {
    if (w->dtype != ops::WType::FP8 || w->group != B || w->cols != cols || cols % 16 != 0) return false;
    if (w != parts.back() && w->rows % B != 0) aligned = false;
    rows += w->rows;
  }
  if (!fp8_max_in_) OST_TRY(fp8_gemm_.init());
  Fp8Weight f;
  f.scale_shift = aligned ? 7 : 0;
  f.scale_ld = aligned ? (nb + 3) / 4 * 4 : nb;
  const int64_t srows = aligned ? (rows + B - 1) / B : rows;
  std::vector<float> sc(size_t(srows * f.scale_ld), 0.0f);
  auto dw = alloc(size_t(rows * cols));
  OST_TRY(dw.status());
  int64_t r0 = 0;
  for (const ops::WeightView* w : parts) {
    OST_CUDA_RET(cudaMemcpy(static_cast<uint8_t*>(*dw) + r0 * cols, w->data, size_t(w->rows * cols),
                            cudaMemcpyHostToDevice));
    const int64_t n = aligned ? (w->rows + B - 1) / B : w->rows, d0 = aligned ? r0 / B : r0;
    for (int64_t r = 0; r < n; ++r)
      std::copy_n(w->scale + (aligned ? r : r / B) * nb, nb, sc.begin() + (d0 + r) * f.scale_ld);
    r0 += w->rows;
  }
  auto ds = alloc(sc.size() * 4);
  OST_TRY(ds.status());
  OST_CUDA_RET(cudaMemcpy(*ds, sc.data(), sc.size() * 4, cudaMemcpyHostToDevice));
  f.w = static_cast<const uint8_t*>(*dw);
  f.scale = static_cast<const float*>(*ds);
  out.f8 = f;
  weight_bytes_ += size_t(rows * cols) + sc.size() * 4;
  fp8_max_in_ = std::max(fp8_max_in_, cols);
  return true;
}

Result<bool> CudaRunner::upload_int4(const std::vector<const ops::WeightView*>& parts, QLinear& out) {
  const int64_t cols = parts[0]->cols;
  const int G = parts[0]->group;
  int64_t rows = 0;
  for (const ops::WeightView* w : parts) {
    if (w->dtype != ops::WType::INT4 || w->cols != cols || w->group != G || G <= 0 || G % 32 != 0 ||
        cols % G != 0 || !w->zero)
      return false;
    rows += w->rows;
  }
  const int64_t ng = cols / G;
  auto dw = alloc(size_t(rows * cols / 2));
  auto ds = alloc(size_t(rows * ng) * 2);
  auto dz = alloc(size_t(rows * ng));
  OST_TRY(dw.status());
  OST_TRY(ds.status());
  OST_TRY(dz.status());
  out.q4 = static_cast<uint8_t*>(*dw);
  out.scale4 = static_cast<__half*>(*ds);
  out.zero = static_cast<uint8_t*>(*dz);
  out.group = G;
  int64_t r0 = 0;
  std::vector<uint16_t> h;
  for (const ops::WeightView* w : parts) {
    OST_CUDA_RET(cudaMemcpy(out.q4 + r0 * cols / 2, w->data, size_t(w->rows * cols / 2), cudaMemcpyHostToDevice));
    h.resize(size_t(w->rows * ng));
    for (size_t i = 0; i < h.size(); ++i) h[i] = f32_to_f16(w->scale[i]);  // exact: f16 values (format.h)
    OST_CUDA_RET(cudaMemcpy(out.scale4 + r0 * ng, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
    OST_CUDA_RET(cudaMemcpy(out.zero + r0 * ng, w->zero, size_t(w->rows * ng), cudaMemcpyHostToDevice));
    r0 += w->rows;
  }
  weight_bytes_ += size_t(rows * cols / 2) + size_t(rows * ng) * 3;
  dequant_scratch_elems_ = std::max(dequant_scratch_elems_, size_t(rows * cols));  // allocated after the text weights
  has_int4_ = true;
  return true;
}

Result<bool> CudaRunner::upload_int8(const std::vector<const ops::WeightView*>& parts, QLinear& out) {
  if (parts[0]->dtype == ops::WType::FP8) return upload_fp8(parts, out);
  if (parts[0]->dtype == ops::WType::INT4) return upload_int4(parts, out);
  int64_t rows = 0;
  for (const ops::WeightView* w : parts) {
    if (w->dtype != ops::WType::INT8 || w->cols != parts[0]->cols || w->cols % 16 != 0) return false;
    rows += w->rows;
  }
  const int64_t cols = parts[0]->cols;
  auto dw = alloc(size_t(rows * cols));
  auto ds = alloc(size_t(rows) * 4);
  OST_TRY(dw.status());
  OST_TRY(ds.status());
  out.w = static_cast<int8_t*>(*dw);
  out.scale = static_cast<float*>(*ds);
  int64_t r0 = 0;
  for (const ops::WeightView* w : parts) {
    OST_CUDA_RET(cudaMemcpy(out.w + r0 * cols, w->data, size_t(w->rows * cols), cudaMemcpyHostToDevice));
    OST_CUDA_RET(cudaMemcpy(out.scale + r0, w->scale, size_t(w->rows) * 4, cudaMemcpyHostToDevice));
    r0 += w->rows;
  }
  weight_bytes_ += size_t(rows * cols) + size_t(rows) * 4;
  dequant_scratch_elems_ = std::max(dequant_scratch_elems_, size_t(rows * cols));  // allocated after the text weights
  return true;
}

Result<bf16*> CudaRunner::upload_vec(const std::vector<float>& v) {
  std::vector<bf16_t> tmp(v.size());
  for (size_t i = 0; i < v.size(); ++i) tmp[i] = f32_to_bf16(v[i]);  // exact: loaded from bf16
  auto d = alloc(tmp.size() * 2);
  OST_TRY(d.status());
  OST_CUDA_RET(cudaMemcpy(*d, tmp.data(), tmp.size() * 2, cudaMemcpyHostToDevice));
  weight_bytes_ += tmp.size() * 2;
  return static_cast<bf16*>(*d);
}

Status CudaRunner::load_embedding(const TextWeights& tw) {
  const ops::WeightView& e = tw.embed;
  const bool tied = e.data == tw.lm_head.data;
  if (tied && lm_head_) {  // the lm_head's bf16 copy (of a quantized table: its bf16 widening)
    embed_ = lm_head_;
    return Status::ok();
  }
  if (!ops::is_quantized(e.dtype)) {
    auto d = upload_rows(e);
    OST_TRY(d.status());
    embed_ = *d;
    return Status::ok();
  }
  // Quantized, kept as it is for launch_embed_gather; a tied table shares the lm_head's codes
  // (and, where the layout is the same, its INT8 / INT4 scales and zeros).
  const quant::Format f = e.dtype == ops::WType::INT8  ? quant::Format::INT8
                          : e.dtype == ops::WType::FP8 ? quant::Format::FP8
                                                       : quant::Format::INT4;
  const int g = f == quant::Format::INT8 ? 0 : int(e.group);
  const size_t n_scale = size_t(quant::scale_rows(f, e.rows, g) * quant::scale_cols(f, e.cols, g));
  const size_t n_zero = f == quant::Format::INT4 ? size_t(e.rows * quant::scale_cols(f, e.cols, g)) : 0;
  quant::QView q{f, nullptr, nullptr, nullptr, e.rows, e.cols, g};
  auto upload = [&](const void* src, size_t bytes) -> Result<void*> {
    auto d = alloc(bytes);
    OST_TRY(d.status());
    OST_CUDA_RET(cudaMemcpy(*d, src, bytes, cudaMemcpyHostToDevice));
    weight_bytes_ += bytes;
    return *d;
  };
  if (tied && f == quant::Format::INT8) {
    q.data = lm_head_q_.w;
    q.scale = lm_head_q_.scale;
  } else if (tied && f == quant::Format::INT4) {
    q.data = lm_head_q_.q4;
    q.scale = lm_head_q_.scale;
    q.zero = lm_head_q_.zero;
  } else if (tied) {
    q.data = lm_head_q_.f8.w;  // its block scales are stored padded: the table gets its own
  }
  if (!q.data) {
    auto d = upload(e.data, size_t(quant::weight_bytes(f, e.rows, e.cols)));
    OST_TRY(d.status());
    q.data = *d;
  }
  if (!q.scale) {
    auto d = upload(e.scale, n_scale * sizeof(*e.scale));
    OST_TRY(d.status());
    q.scale = static_cast<decltype(q.scale)>(*d);
  }
  if (n_zero && !q.zero) {
    auto d = upload(e.zero, n_zero);
    OST_TRY(d.status());
    q.zero = static_cast<const uint8_t*>(*d);
  }
  embed_q_ = q;
  return Status::ok();
}

Status CudaRunner::load(const std::string& dir, const quant::QuantConfig& quant_at_load) {
  auto cfg = load_folder_configs(dir);
  OST_TRY(cfg.status());
  cfg_ = std::move(*cfg);
  auto w = load_weights(dir, cfg_.model, quant_at_load);
  if (!w) return Error{w.message()};
  host_ = std::move(*w);
  const TextConfig& c = cfg_.model.text;
  const int64_t H = c.hidden_size, D = c.head_dim, Q = int64_t(c.num_heads) * D,
                KV = int64_t(c.num_kv_heads) * D, I = c.intermediate_size;

  cudaDeviceProp prop{};
  OST_CUDA_RET(cudaGetDeviceProperties(&prop, 0));
  info_.device = prop.name;
  sm_count_ = prop.multiProcessorCount;
  const char* attn = std::getenv("OST_ATTN");  // "simt": the generic kernel everywhere (A/B runs)
  fast_attention_ = !(attn && std::strcmp(attn, "simt") == 0);
  // OST_FUSED_QK=1: decode does the q/k norm + rope inside the attention kernel. Off by default:
  // bit-identical results but measured no faster on the H100 (5.94 vs 5.89 ms/step at batch 1,
  // 3903 vs 3990 tok/s at batch 32, 2026-11-25).
  const char* fq = std::getenv("OST_FUSED_QK");
  fused_qk_ = fq && std::strcmp(fq, "1") == 0;
  // Decode GEMV fusions (gemv.h GemvFusion). On by default: the INT8 gate_up GEMV pairs gate and
  // up rows and writes SiLU(gate)·up (no silu_mul; INT8 batch 1 3.95 vs 3.99 ms/step, bf16 5.90 vs
  // 5.87 so bf16 does not use it). OST_FUSED_DECODE=1 also reads the RMSNorm in
  // the qkv / gate_up GEMVs and adds the residual in o / down (no add_rms_norm in the layers):
  // slower on the H100 (every block recomputes the norm or SiLU of the whole input row; bf16
  // 6.10 vs 5.87 ms/step, INT8 5.26 vs 4.05 ms/step at batch 1, 2026-11-25).
  // fp8 KV cache: only the flash (prefill) and split-K (decode) kernels read it, and the fused
  // decode input (OST_FUSED_QK) writes a bf16 cache, so it stays off.
  kv_fp8_ = quant_at_load.kv_cache == quant::KvDType::FP8;
  if (kv_fp8_) {
    const int group = c.num_heads / c.num_kv_heads;
    if (!fast_attention_ || !flash_attention_supports(int(D)) || !decode_attention_supports(int(D), group))
      return make_error("--kv-cache-dtype fp8 needs the flash and split-K attention kernels (head_dim %lld, "
                        "group %d%s)",
                        (long long)D, group, fast_attention_ ? "" : ", OST_ATTN=simt");
    fused_qk_ = false;
  }
  // Engine pages are opt-in on the GPU until the paged path has run there.
  const char* ep = std::getenv("OST_ENGINE_PAGES");
  engine_pages_ = ep && std::strcmp(ep, "1") == 0;
  const char* fd = std::getenv("OST_FUSED_DECODE");
  fused_decode_ = fd && std::strcmp(fd, "1") == 0;
  const char* gd = std::getenv("OST_GLU_DECODE");
  glu_decode_ = !(gd && std::strcmp(gd, "0") == 0);
  const char* pq = std::getenv("OST_FP8_PREQUANT");
  fp8_prequant_ = !(pq && std::strcmp(pq, "0") == 0);
  OST_CUDA_RET(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  OST_TRY(gemm_.init());

  // Text weights, fused where one GEMM can serve several projections.
  const TextWeights& tw = host_->text;
  layers_.resize(size_t(c.num_layers));
  for (int l = 0; l < c.num_layers; ++l) {
    const TextLayerWeights& L = tw.layers[size_t(l)];
    if (!L.q.b.empty() || !L.k.b.empty() || !L.v.b.empty() || !L.o.b.empty())
      return make_error("the CUDA runner does not support attention biases yet");
    Layer& d = layers_[size_t(l)];
    // INT8 groups go up as int8 (W8A16), FP8 as e4m3 + block scales (W8A8), INT4 as nibbles +
    // group scales and zeros (W4A16; groups it cannot take and bf16 as bf16, copy_rows dequantizes).
    auto qkv_q = upload_int8({&L.q.w, &L.k.w, &L.v.w}, d.qkv_q);
    OST_TRY(qkv_q.status());
    if (!*qkv_q) {
      auto qkv = alloc(size_t((Q + 2 * KV) * H) * 2);
      OST_TRY(qkv.status());
      d.qkv = static_cast<bf16*>(*qkv);
      OST_TRY(copy_rows(L.q.w, d.qkv));
      OST_TRY(copy_rows(L.k.w, d.qkv + Q * H));
      OST_TRY(copy_rows(L.v.w, d.qkv + (Q + KV) * H));
    }
    auto gu_q = upload_int8({&L.gate.w, &L.up.w}, d.gu_q);
    OST_TRY(gu_q.status());
    if (!*gu_q) {
      auto gu = alloc(size_t(2 * I * H) * 2);
      OST_TRY(gu.status());
      d.gu = static_cast<bf16*>(*gu);
      OST_TRY(copy_rows(L.gate.w, d.gu));
      OST_TRY(copy_rows(L.up.w, d.gu + I * H));
    }
    auto o_q = upload_int8({&L.o.w}, d.o_q);
    OST_TRY(o_q.status());
    if (!*o_q) {
      auto o = upload_rows(L.o.w);
      OST_TRY(o.status());
      d.o = *o;
    }
    auto down_q = upload_int8({&L.down.w}, d.down_q);
    OST_TRY(down_q.status());
    if (!*down_q) {
      auto down = upload_rows(L.down.w);
      OST_TRY(down.status());
      d.down = *down;
    }
    for (auto [dst, src] : {std::pair{&d.attn_norm, &L.attn_norm}, std::pair{&d.ffn_norm, &L.ffn_norm},
                            std::pair{&d.q_norm, &L.q_norm}, std::pair{&d.k_norm, &L.k_norm}}) {
      auto v = upload_vec(*src);
      OST_TRY(v.status());
      *dst = *v;
    }
  }
  auto norm = upload_vec(tw.norm);
  OST_TRY(norm.status());
  norm_ = *norm;
  auto head_q = upload_int8({&tw.lm_head}, lm_head_q_);
  OST_TRY(head_q.status());
  if (!*head_q) {
    auto head = upload_rows(tw.lm_head);
    OST_TRY(head.status());
    lm_head_ = *head;
  }
  if (fp8_max_in_ > 0) {
    auto sc = alloc(Fp8Gemm::scratch_bytes(std::max(kMaxRows, kMaxLogitRows), fp8_max_in_));
    OST_TRY(sc.status());
    fp8_scratch_ = *sc;
  }
  if (dequant_scratch_elems_ > 0) {
    auto sc = alloc(dequant_scratch_elems_ * 2);
    OST_TRY(sc.status());
    dequant_scratch_ = static_cast<bf16*>(*sc);
  }
  info_.text_weight_bytes = weight_bytes_;
  OST_TRY(load_embedding(tw));

  // Rope constants, as mrope_tables computes them.
  std::vector<float> inv(size_t(D / 2));
  std::vector<int32_t> axis(size_t(D / 2));
  for (int i = 0; i < D / 2; ++i) {
    inv[size_t(i)] = 1.0f / std::pow(float(c.rope_theta), float(2 * i) / float(D));
    axis[size_t(i)] = (i % 3 == 1 && i < 3 * c.mrope_section[1])   ? 1
                      : (i % 3 == 2 && i < 3 * c.mrope_section[2]) ? 2
                                                                   : 0;
  }
  auto dinv = alloc(inv.size() * 4), daxis = alloc(axis.size() * 4);
  OST_TRY(dinv.status());
  OST_TRY(daxis.status());
  inv_freq_ = static_cast<float*>(*dinv);
  axis_ = static_cast<int32_t*>(*daxis);
  OST_CUDA_RET(cudaMemcpy(inv_freq_, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));
  OST_CUDA_RET(cudaMemcpy(axis_, axis.data(), axis.size() * 4, cudaMemcpyHostToDevice));

  OST_TRY(load_vision());

  // Step buffers for up to kMaxRows tokens per forward.
  const int64_t R = kMaxRows, V = c.vocab_size;
  struct B { bf16** p; int64_t elems; };
  for (B b : {B{&x_, R * H}, B{&h_, R * H}, B{&qkv_, R * (Q + 2 * KV)}, B{&q_, R * Q},
              B{&attn_, R * Q}, B{&gu_, R * 2 * I}, B{&act_, R * I}, B{&logits_, kMaxLogitRows * V}}) {
    auto d = alloc(size_t(b.elems) * 2);
    OST_TRY(d.status());
    *b.p = static_cast<bf16*>(*d);
  }
  auto lf = alloc(size_t(kMaxLogitRows * V) * 4);
  OST_TRY(lf.status());
  logits_f32_ = static_cast<float*>(*lf);
  auto am = alloc(size_t(R) * 8);
  OST_TRY(am.status());
  argmax_ = static_cast<int32_t*>(*am);
  logprob_ = reinterpret_cast<float*>(argmax_ + R);
  auto ex = alloc(size_t(1 + kMaxExcludedTokens) * 4);
  OST_TRY(ex.status());
  excluded_dev_ = static_cast<int32_t*>(*ex);
  OST_CUDA_RET(cudaMemset(excluded_dev_, 0, size_t(1 + kMaxExcludedTokens) * 4));
  OST_CUDA_RET(cudaMallocHost(&step_out_host_, size_t(R) * 8));
  auto part =
      alloc(cuda::decode_attention_partial_floats(kMaxSeqs, c.num_heads, int(D), kMaxDecodeSplits) * 4);
  OST_TRY(part.status());
  attn_partial_ = static_cast<float*>(*part);
  auto cnt = alloc(size_t(kMaxSeqs) * c.num_kv_heads * 4);
  OST_TRY(cnt.status());
  attn_counters_ = static_cast<int*>(*cnt);
  OST_CUDA_RET(cudaMemset(attn_counters_, 0, size_t(kMaxSeqs) * c.num_kv_heads * 4));
  staged_owner_.assign(kMaxSeqs, 0);

  // KV pool: half of what is free now, at most kMaxPoolTokens tokens. A (token, kv head) vector
  // of K or V takes 2·hd bytes in bf16, hd + 4 in fp8 (codes + scale).
  const int64_t vec_bytes = kv_fp8_ ? D + 4 : 2 * D;
  info_.kv_bytes_per_token = size_t(2 * c.num_layers * c.num_kv_heads * vec_bytes);
  info_.kv_block_tokens = kBlock;
  size_t free_b = 0, total_b = 0;
  OST_CUDA_RET(cudaMemGetInfo(&free_b, &total_b));
  const size_t per_block = info_.kv_bytes_per_token * kBlock;
  num_blocks_ = int64_t(std::min<size_t>(free_b / 2 / per_block, kMaxPoolTokens / kBlock));
  if (num_blocks_ < 4) return make_error("not enough GPU memory left for a KV cache");
  table_width_ = int(std::min<int64_t>(num_blocks_, kMaxSeqTokens / kBlock));
  auto pool = alloc(per_block * size_t(num_blocks_));
  OST_TRY(pool.status());
  const int64_t layer_elems = num_blocks_ * kBlock * KV;
  for (int l = 0; l < c.num_layers; ++l) {
    if (kv_fp8_) {  // per layer: K codes, V codes, K scales, V scales
      const int64_t vectors = num_blocks_ * kBlock * c.num_kv_heads;
      uint8_t* b = static_cast<uint8_t*>(*pool) + l * 2 * vectors * vec_bytes;
      kc8_.push_back(b);
      vc8_.push_back(b + layer_elems);
      ks_.push_back(reinterpret_cast<float*>(b + 2 * layer_elems));
      vs_.push_back(reinterpret_cast<float*>(b + 2 * layer_elems) + vectors);
      continue;
    }
    kc_.push_back(static_cast<bf16*>(*pool) + (2 * l) * layer_elems);
    vc_.push_back(static_cast<bf16*>(*pool) + (2 * l + 1) * layer_elems);
  }
  for (int64_t b = num_blocks_ - 1; b >= 0; --b) free_blocks_.push_back(int32_t(b));
  own_block_.assign(size_t(num_blocks_), 0);
  info_.kv_blocks = num_blocks_;

  // Step inputs: one pinned staging area, one device copy.
  staging_elems_ = size_t(R) * kStepFields + size_t(kMaxSeqs) * table_width_;
  OST_CUDA_RET(cudaMallocHost(&staging_host_, staging_elems_ * 4));
  auto sd = alloc(staging_elems_ * 4);
  OST_TRY(sd.status());
  staging_dev_ = static_cast<int32_t*>(*sd);

  const char* ms = std::getenv("OST_MIXED_STEP");
  mixed_steps_ = !(ms && std::string(ms) == "0");
  const char* g = std::getenv("OST_CUDA_GRAPHS");
  use_graphs_ = !(g && std::string(g) == "0");
  info_.weight_bytes = weight_bytes_;
  OST_CUDA_RET(cudaMemGetInfo(&info_.device_free_bytes, &info_.device_total_bytes));
  return Status::ok();
}

}  // namespace ost::cuda
