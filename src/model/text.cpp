// Qwen3-VL text decoder (Qwen3VLTextModel + lm_head) over a KV cache:
//   embed (image rows replace <|image_pad|>) -> layers:
//     x += o( attn( rope(q_norm(q(rms(x)))), rope(k_norm(k(rms(x)))), v(rms(x)) ) )
//     x += down( silu(gate(rms(x))) · up(rms(x)) )
//     after layer l < n_deepstack: x[image tokens] += deepstack[l]
//   -> final rms -> lm_head for the requested tokens.
// K and V go into the cache after the q/k-norm and rope (k) and as projected (v): as f32, or as
// fp8 codes + scales that attention reads back dequantized (KvCache::fp8).
#include <algorithm>
#include <cmath>

#include "backend/ops.h"
#include "model/graph.h"
#include "quant/quant.h"

namespace ost {

Status text_forward(const ModelConfig& cfg, const TextWeights& w, KvCache& cache, const TextBatch& b,
                    const Dumper& dump, float* logits) {
  const TextConfig& c = cfg.text;
  const int64_t n = b.n, H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int64_t Q = int64_t(c.num_heads) * D, KV = int64_t(c.num_kv_heads) * D;
  const int64_t p0 = cache.len;
  const float eps = c.rms_norm_eps;
  OST_CHECK(p0 + n <= cache.capacity);

  // Embeddings, then the image rows in place of the <|image_pad|> tokens.
  std::vector<float> x(size_t(n * H));  // f32 [n, hidden], the residual stream
  ops::embedding(w.embed, b.ids, n, x.data());
  std::vector<int64_t> image_tok;  // batch indices of the <|image_pad|> tokens
  if (b.n_image_rows > 0) {
    for (int64_t i = 0; i < n; ++i)
      if (b.ids[i] == cfg.image_token_id) image_tok.push_back(i);
    OST_CHECK(int64_t(image_tok.size()) == b.n_image_rows);
  }
  for (size_t r = 0; r < image_tok.size(); ++r)
    std::copy_n(b.image_rows + int64_t(r) * H, H, x.data() + image_tok[r] * H);
  dump("txt.embed", -1, x.data(), {n, H});

  std::vector<float> cos(size_t(n * D / 2)), sin(size_t(n * D / 2));  // f32 [n, hd/2]
  mrope_tables(c, b.pos, n, cos.data(), sin.data());

  std::vector<float> h(size_t(n * H));                        // f32 [n, hidden], scratch
  std::vector<float> q(size_t(n * Q));                        // f32 [n, heads, hd]
  std::vector<float> attn(size_t(n * Q));                     // f32 [n, heads, hd]
  std::vector<float> gate(size_t(n * I)), up(size_t(n * I));  // f32 [n, inter]
  // fp8 cache: this batch's k, v before quantization f32 [n, kv_heads, hd], and the whole
  // cache dequantized for attention f32 [p0 + n, kv_heads, hd].
  const int64_t NV = n * c.num_kv_heads;  // (token, kv head) vectors of this batch
  std::vector<float> k_new, v_new, k_all, v_all;
  if (cache.fp8) {
    k_new.resize(size_t(n * KV));
    v_new.resize(size_t(n * KV));
    k_all.resize(size_t((p0 + n) * KV));
    v_all.resize(size_t((p0 + n) * KV));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const TextLayerWeights& L = w.layers[size_t(l)];
    // f32 [n, kv_heads, hd]: in the cache, or (fp8) quantized into it below
    float* k = cache.fp8 ? k_new.data() : cache.k[size_t(l)].data() + p0 * KV;
    float* v = cache.fp8 ? v_new.data() : cache.v[size_t(l)].data() + p0 * KV;

    ops::rms_norm(x.data(), n, H, L.attn_norm.data(), eps, h.data());
    dump("txt.attn_norm", l, h.data(), {n, H});
    ops::matmul(h.data(), n, L.q.w, L.q.bias(), q.data());
    ops::matmul(h.data(), n, L.k.w, L.k.bias(), k);
    ops::matmul(h.data(), n, L.v.w, L.v.bias(), v);
    ops::rms_norm(q.data(), n * c.num_heads, D, L.q_norm.data(), eps, q.data());
    ops::rms_norm(k, n * c.num_kv_heads, D, L.k_norm.data(), eps, k);
    ops::rope(q.data(), n, c.num_heads, int(D), Q, cos.data(), sin.data());
    ops::rope(k, n, c.num_kv_heads, int(D), KV, cos.data(), sin.data());
    dump("txt.q", l, q.data(), {n, c.num_heads, D});
    dump("txt.k", l, k, {n, c.num_kv_heads, D});
    dump("txt.v", l, v, {n, c.num_kv_heads, D});
    const float* k_read = cache.fp8 ? k_all.data() : cache.k[size_t(l)].data();
    const float* v_read = cache.fp8 ? v_all.data() : cache.v[size_t(l)].data();
    if (cache.fp8) {
      const int64_t v0 = p0 * c.num_kv_heads, NA = v0 + NV;
      uint8_t* k8 = cache.k8[size_t(l)].data();
      uint8_t* v8 = cache.v8[size_t(l)].data();
      float* ks = cache.k_scale[size_t(l)].data();
      float* vs = cache.v_scale[size_t(l)].data();
      quant::quantize_kv_fp8(k, NV, int(D), k8 + v0 * D, ks + v0);
      quant::quantize_kv_fp8(v, NV, int(D), v8 + v0 * D, vs + v0);
      quant::dequantize_kv_fp8(k8, ks, NA, int(D), k_all.data());
      quant::dequantize_kv_fp8(v8, vs, NA, int(D), v_all.data());
    }

    ops::AttentionParams p;
    p.n_q = n;
    p.n_kv = p0 + n;
    p.n_heads = c.num_heads;
    p.n_kv_heads = c.num_kv_heads;
    p.head_dim = int(D);
    p.q_stride = p.out_stride = Q;
    p.kv_stride = KV;
    p.causal = true;
    p.q_pos0 = p0;
    p.scale = float(1.0 / std::sqrt(double(D)));
    ops::attention(p, q.data(), k_read, v_read, attn.data());
    dump("txt.attn", l, attn.data(), {n, c.num_heads, D});
    ops::matmul(attn.data(), n, L.o.w, L.o.bias(), h.data());
    dump("txt.attn_out", l, h.data(), {n, H});
    ops::add(x.data(), h.data(), n * H, x.data());

    ops::rms_norm(x.data(), n, H, L.ffn_norm.data(), eps, h.data());
    dump("txt.ffn_norm", l, h.data(), {n, H});
    ops::matmul(h.data(), n, L.gate.w, nullptr, gate.data());
    ops::matmul(h.data(), n, L.up.w, nullptr, up.data());
    ops::silu_mul(gate.data(), up.data(), n * I, gate.data());
    dump("txt.ffn_act", l, gate.data(), {n, I});  // down's input
    ops::matmul(gate.data(), n, L.down.w, nullptr, h.data());
    dump("txt.ffn_out", l, h.data(), {n, H});
    ops::add(x.data(), h.data(), n * H, x.data());

    if (size_t(l) < b.deepstack_rows.size())
      for (size_t r = 0; r < image_tok.size(); ++r) {
        float* xr = x.data() + image_tok[r] * H;
        ops::add(xr, b.deepstack_rows[size_t(l)] + int64_t(r) * H, H, xr);
      }
    dump("txt.layer_out", l, x.data(), {n, H});
  }

  const int64_t nl = n - b.logits_from;
  if (nl > 0) {
    ops::rms_norm(x.data() + b.logits_from * H, nl, H, w.norm.data(), eps, h.data());
    dump("txt.result_norm", -1, h.data(), {nl, H});
    ops::matmul(h.data(), nl, w.lm_head, nullptr, logits);
    dump("txt.logits", -1, logits, {nl, w.lm_head.rows});
  }
  return Status::ok();
}

}  // namespace ost
