#include "model/weights.h"

#include <cmath>
#include <cstring>

#include "core/bf16.h"
#include "quant/quant.h"

namespace ost {
namespace {

Result<ops::WType> weight_type(const TensorInfo& t) {
  switch (t.dtype) {
    case DType::BF16:
      return ops::WType::BF16;
    case DType::F16:
      return ops::WType::F16;
    case DType::F32:
      return ops::WType::F32;
    default:
      return make_error("tensor %s: dtype %s is not supported", t.name.c_str(), dtype_name(t.dtype));
  }
}

ops::WType quant_wtype(quant::Format f) {
  return f == quant::Format::INT8 ? ops::WType::INT8 : f == quant::Format::FP8 ? ops::WType::FP8 : ops::WType::INT4;
}

// Reads tensors by name; the checkpoint has already checked names and shapes.
class Reader {
 public:
  Reader(ModelWeights& owner, const ModelConfig& cfg, const quant::QuantConfig& at_load)
      : c_(owner.checkpoint), owner_(owner), cfg_(cfg), at_load_(at_load) {}

  // A linear weight [out, in] or the embedding table: stored quantized, quantized now (at_load),
  // or as it is.
  Result<WeightView> linear_weight(const std::string& name) const {
    const TensorInfo& t = c_.get(name);
    const quant::QuantConfig& q = cfg_.quant;
    if (q.format != quant::Format::None && t.shape.size() == 2 && t.dtype == quant_dtype(q.format))
      return stored_quantized(t, q);
    auto w = matrix(name);
    OST_TRY(w.status());
    if (at_load_.format == quant::Format::None || t.shape.size() != 2) return w;
    auto sel = quant::selected(name, at_load_.select, cfg_.tie_word_embeddings);
    OST_TRY(sel.status());
    if (!*sel) return w;
    return quantize_now(name, *w);
  }

  // The tensor as a matrix [shape[0], prod(shape[1:])].
  Result<WeightView> matrix(const std::string& name) const {
    const TensorInfo& t = c_.get(name);
    auto wt = weight_type(t);
    OST_TRY(wt.status());
    int64_t cols = 1;
    for (size_t i = 1; i < t.shape.size(); ++i) cols *= t.shape[i];
    return WeightView{*wt, t.data, t.shape.empty() ? 1 : t.shape[0], cols};
  }

  Result<std::vector<float>> vec(const std::string& name) const {
    auto m = matrix(name);
    OST_TRY(m.status());
    std::vector<float> out(size_t(m->rows * m->cols));
    ops::WeightView flat{m->dtype, m->data, 1, m->rows * m->cols};
    ops::weight_row_f32(flat, 0, out.data());
    return out;
  }

  Status linear(const std::string& prefix, bool bias, Linear& out) const {
    auto w = linear_weight(prefix + ".weight");
    OST_TRY(w.status());
    out.w = *w;
    if (bias) {
      auto b = vec(prefix + ".bias");
      OST_TRY(b.status());
      out.b = std::move(*b);
    }
    return Status::ok();
  }

  Status norm(const std::string& prefix, bool bias, Norm& out) const {
    auto w = vec(prefix + ".weight");
    OST_TRY(w.status());
    out.w = std::move(*w);
    if (bias) {
      auto b = vec(prefix + ".bias");
      OST_TRY(b.status());
      out.b = std::move(*b);
    }
    return Status::ok();
  }

  Status merger(const std::string& p, MergerWeights& m) const {
    OST_TRY(norm(p + "norm", true, m.norm));
    OST_TRY(linear(p + "linear_fc1", true, m.fc1));
    return linear(p + "linear_fc2", true, m.fc2);
  }

 private:
  // f32 copy of a scale tensor (f32, bf16 or f16 in the file; the mapping may be unaligned).
  // INT4 scales are f16 values (format.h): those of older f32 / bf16 files are rounded to f16.
  const float* owned_scale(const TensorInfo& t, bool f16_values) const {
    std::vector<float>& v = owner_.owned_f32.emplace_back(size_t(t.numel()));
    if (t.dtype == DType::F32) {
      std::memcpy(v.data(), t.data, v.size() * 4);
    } else {
      for (size_t i = 0; i < v.size(); ++i) {
        uint16_t b;
        std::memcpy(&b, t.data + 2 * i, 2);
        v[i] = t.dtype == DType::F16 ? f16_to_f32(b) : bf16_to_f32(b);
      }
    }
    if (f16_values && t.dtype != DType::F16)
      for (float& x : v) x = quant::int4_scale(x);
    return v.data();
  }

  Result<WeightView> stored_quantized(const TensorInfo& t, const quant::QuantConfig& q) const {
    WeightView w{quant_wtype(q.format), t.data, t.shape[0],
                 q.format == quant::Format::INT4 ? t.shape[1] * 2 : t.shape[1]};
    w.group = q.format == quant::Format::INT8 ? 0 : q.group_size;
    const std::string base = t.name;
    w.scale = owned_scale(c_.get(base + (q.format == quant::Format::FP8 ? "_scale_inv" : "_scale")),
                          q.format == quant::Format::INT4);
    if (q.format == quant::Format::INT4) w.zero = c_.get(base + "_zero").data;
    return w;
  }

  Result<WeightView> quantize_now(const std::string& name, const WeightView& src) const {
    OST_TRY(quant::check_shape(at_load_.format, name, src.rows, src.cols, at_load_.group_size));
    std::vector<float> f(size_t(src.rows * src.cols));
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < src.rows; ++r) ops::weight_row_f32(src, r, f.data() + r * src.cols);
    auto qm = quant::quantize(at_load_.format, f.data(), src.rows, src.cols, at_load_.group_size);
    OST_TRY(qm.status());
    WeightView w{quant_wtype(at_load_.format), nullptr, src.rows, src.cols};
    w.group = qm->group;
    w.data = owner_.owned_u8.emplace_back(std::move(qm->data)).data();
    w.scale = owner_.owned_f32.emplace_back(std::move(qm->scale)).data();
    if (!qm->zero.empty()) w.zero = owner_.owned_u8.emplace_back(std::move(qm->zero)).data();
    return w;
  }

  const Checkpoint& c_;
  ModelWeights& owner_;
  const ModelConfig& cfg_;
  const quant::QuantConfig& at_load_;
};

Status load_vision(const Reader& r, const VisionConfig& c, VisionWeights& v) {
  const std::string p = "model.visual.";
  OST_TRY(r.linear(p + "patch_embed.proj", true, v.patch));
  auto pe = r.matrix(p + "pos_embed.weight");
  OST_TRY(pe.status());
  v.pos_embed = *pe;
  v.pos_grid = int(std::lround(std::sqrt(double(c.num_position_embeddings))));
  if (int64_t(v.pos_grid) * v.pos_grid != c.num_position_embeddings)
    return make_error("vision num_position_embeddings %d is not a square", c.num_position_embeddings);
  v.blocks.resize(size_t(c.depth));
  for (int i = 0; i < c.depth; ++i) {
    const std::string b = p + "blocks." + std::to_string(i) + ".";
    VisionBlockWeights& w = v.blocks[size_t(i)];
    OST_TRY(r.norm(b + "norm1", true, w.norm1));
    OST_TRY(r.norm(b + "norm2", true, w.norm2));
    OST_TRY(r.linear(b + "attn.qkv", true, w.qkv));
    OST_TRY(r.linear(b + "attn.proj", true, w.proj));
    OST_TRY(r.linear(b + "mlp.linear_fc1", true, w.fc1));
    OST_TRY(r.linear(b + "mlp.linear_fc2", true, w.fc2));
  }
  OST_TRY(r.merger(p + "merger.", v.merger));
  v.deepstack.resize(c.deepstack_visual_indexes.size());
  for (size_t j = 0; j < v.deepstack.size(); ++j)
    OST_TRY(r.merger(p + "deepstack_merger_list." + std::to_string(j) + ".", v.deepstack[j]));
  return Status::ok();
}

Status load_text(const Reader& r, const ModelConfig& cfg, TextWeights& t) {
  const TextConfig& c = cfg.text;
  const std::string p = "model.language_model.";
  auto embed = r.linear_weight(p + "embed_tokens.weight");
  OST_TRY(embed.status());
  t.embed = *embed;
  auto head = cfg.tie_word_embeddings ? embed : r.linear_weight("lm_head.weight");
  OST_TRY(head.status());
  t.lm_head = *head;
  auto norm = r.vec(p + "norm.weight");
  OST_TRY(norm.status());
  t.norm = std::move(*norm);
  t.layers.resize(size_t(c.num_layers));
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string l = p + "layers." + std::to_string(i) + ".";
    TextLayerWeights& w = t.layers[size_t(i)];
    for (auto [name, dst] : {std::pair{"input_layernorm", &w.attn_norm},
                             {"post_attention_layernorm", &w.ffn_norm},
                             {"self_attn.q_norm", &w.q_norm},
                             {"self_attn.k_norm", &w.k_norm}}) {
      auto v = r.vec(l + name + ".weight");
      OST_TRY(v.status());
      *dst = std::move(*v);
    }
    OST_TRY(r.linear(l + "self_attn.q_proj", c.attention_bias, w.q));
    OST_TRY(r.linear(l + "self_attn.k_proj", c.attention_bias, w.k));
    OST_TRY(r.linear(l + "self_attn.v_proj", c.attention_bias, w.v));
    OST_TRY(r.linear(l + "self_attn.o_proj", c.attention_bias, w.o));
    OST_TRY(r.linear(l + "mlp.gate_proj", false, w.gate));
    OST_TRY(r.linear(l + "mlp.up_proj", false, w.up));
    OST_TRY(r.linear(l + "mlp.down_proj", false, w.down));
  }
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<ModelWeights>> load_weights(const std::string& dir, const ModelConfig& cfg,
                                                   const quant::QuantConfig& at_load) {
  if (at_load.format != quant::Format::None && cfg.quant.format != quant::Format::None)
    return make_error("%s is already quantized (%s); load it without --quant", dir.c_str(),
                      quant::format_name(cfg.quant.format));
  if (cfg.vision.deepstack_visual_indexes.size() > size_t(cfg.text.num_layers))
    return make_error("config: %zu deepstack layers but only %d decoder layers",
                      cfg.vision.deepstack_visual_indexes.size(), cfg.text.num_layers);
  auto ck = Checkpoint::open(dir, cfg);
  OST_TRY(ck.status());
  auto w = std::make_unique<ModelWeights>();
  w->checkpoint = std::move(*ck);
  Reader r(*w, cfg, at_load);
  OST_TRY(load_vision(r, cfg.vision, w->vision));
  OST_TRY(load_text(r, cfg, w->text));
  return w;
}

}  // namespace ost
