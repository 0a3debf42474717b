#include "io/checkpoint.h"

#include <dirent.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "core/file_util.h"

namespace ost {

std::vector<WeightSpec> expected_weights(const ModelConfig& c) {
  std::vector<WeightSpec> w;
  const auto& t = c.text;
  const auto& v = c.vision;
  const int64_t H = t.hidden_size, D = t.head_dim, I = t.intermediate_size, V = t.vocab_size;
  const std::string lm = "model.language_model.";
  w.push_back({lm + "embed_tokens.weight", {V, H}, true});
  w.push_back({lm + "norm.weight", {H}});
  if (!c.tie_word_embeddings) w.push_back({"lm_head.weight", {V, H}, true});
  for (int l = 0; l < t.num_layers; ++l) {
    std::string p = lm + "layers." + std::to_string(l) + ".";
    w.push_back({p + "input_layernorm.weight", {H}});
    w.push_back({p + "post_attention_layernorm.weight", {H}});
    w.push_back({p + "self_attn.q_proj.weight", {t.num_heads * D, H}, true});
    w.push_back({p + "self_attn.k_proj.weight", {t.num_kv_heads * D, H}, true});
    w.push_back({p + "self_attn.v_proj.weight", {t.num_kv_heads * D, H}, true});
    w.push_back({p + "self_attn.o_proj.weight", {H, t.num_heads * D}, true});
    if (t.attention_bias) {
      w.push_back({p + "self_attn.q_proj.bias", {t.num_heads * D}});
      w.push_back({p + "self_attn.k_proj.bias", {t.num_kv_heads * D}});
      w.push_back({p + "self_attn.v_proj.bias", {t.num_kv_heads * D}});
      w.push_back({p + "self_attn.o_proj.bias", {H}});
    }
    w.push_back({p + "self_attn.q_norm.weight", {D}});
    w.push_back({p + "self_attn.k_norm.weight", {D}});
    w.push_back({p + "mlp.gate_proj.weight", {I, H}, true});
    w.push_back({p + "mlp.up_proj.weight", {I, H}, true});
    w.push_back({p + "mlp.down_proj.weight", {H, I}, true});
  }
  const std::string vp = "model.visual.";
  const int64_t VH = v.hidden_size, VI = v.intermediate_size, M = v.merged_dim(), O = v.out_hidden_size;
  w.push_back({vp + "patch_embed.proj.weight",
               {VH, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size}});
  w.push_back({vp + "patch_embed.proj.bias", {VH}});
  w.push_back({vp + "pos_embed.weight", {v.num_position_embeddings, VH}});
  for (int b = 0; b < v.depth; ++b) {
    std::string p = vp + "blocks." + std::to_string(b) + ".";
    w.push_back({p + "norm1.weight", {VH}});
    w.push_back({p + "norm1.bias", {VH}});
    w.push_back({p + "norm2.weight", {VH}});
    w.push_back({p + "norm2.bias", {VH}});
    w.push_back({p + "attn.qkv.weight", {3 * VH, VH}, true});
    w.push_back({p + "attn.qkv.bias", {3 * VH}});
    w.push_back({p + "attn.proj.weight", {VH, VH}, true});
    w.push_back({p + "attn.proj.bias", {VH}});
    w.push_back({p + "mlp.linear_fc1.weight", {VI, VH}, true});
    w.push_back({p + "mlp.linear_fc1.bias", {VI}});
    w.push_back({p + "mlp.linear_fc2.weight", {VH, VI}, true});
    w.push_back({p + "mlp.linear_fc2.bias", {VH}});
  }
  auto merger = [&](const std::string& p, int64_t norm_dim) {
    w.push_back({p + "norm.weight", {norm_dim}});
    w.push_back({p + "norm.bias", {norm_dim}});
    w.push_back({p + "linear_fc1.weight", {M, M}, true});
    w.push_back({p + "linear_fc1.bias", {M}});
    w.push_back({p + "linear_fc2.weight", {O, M}, true});
    w.push_back({p + "linear_fc2.bias", {O}});
  };
  merger(vp + "merger.", VH);
  for (size_t j = 0; j < v.deepstack_visual_indexes.size(); ++j)
    merger(vp + "deepstack_merger_list." + std::to_string(j) + ".", M);
  std::sort(w.begin(), w.end(), [](const WeightSpec& a, const WeightSpec& b) { return a.name < b.name; });
  return w;
}

namespace {

Result<std::vector<std::string>> shard_files(const std::string& dir) {
  std::vector<std::string> files;
  const std::string index = dir + "/model.safetensors.index.json";
  if (file_exists(index)) {
    auto text = read_file(index);
    if (!text) return Error{text.message()};
    try {
      auto j = nlohmann::json::parse(*text);
      std::set<std::string> uniq;
      for (auto& [k, v] : j.at("weight_map").items()) uniq.insert(v.get<std::string>());
      for (auto& f : uniq) {
        if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
          return make_error("%s: bad shard name \"%s\"", index.c_str(), f.c_str());
        files.push_back(dir + "/" + f);
      }
    } catch (const std::exception& e) {
      return make_error("%s: bad index: %s", index.c_str(), e.what());
    }
    return files;
  }
  if (file_exists(dir + "/model.safetensors")) return std::vector<std::string>{dir + "/model.safetensors"};
  DIR* d = opendir(dir.c_str());
  if (!d) return make_error("cannot list %s", dir.c_str());
  while (auto* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 12 && n.ends_with(".safetensors")) files.push_back(dir + "/" + n);
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  if (files.empty()) return make_error("model folder %s holds no .safetensors file", dir.c_str());
  return files;
}

// A linear weight stored quantized: its own shape and its companions' names, dtypes, shapes.
void check_quantized(const WeightSpec& w, const TensorInfo& t, const quant::QuantConfig& q,
                     const std::unordered_map<std::string, const TensorInfo*>& by_name,
                     std::set<std::string>& known, std::vector<std::string>& problems) {
  const int64_t rows = w.shape[0], cols = w.shape[1];
  const int g = q.group_size;
  if (Status st = quant::check_shape(q.format, w.name, rows, cols, g); !st) {
    problems.push_back(st.message());
    return;
  }
  const std::vector<int64_t> wshape =
      q.format == quant::Format::INT4 ? std::vector<int64_t>{rows, cols / 2} : w.shape;
  if (t.shape != wshape)
    problems.push_back("mis-shaped " + w.name + " (" + quant::format_name(q.format) + "): " + shape_str(t.shape) +
                       ", expected " + shape_str(wshape));
  for (const QuantCompanion& comp : quant_companions(w, q)) {
    known.insert(comp.name);
    auto it = by_name.find(comp.name);
    if (it == by_name.end()) {
      problems.push_back("missing " + comp.name + " " + shape_str(comp.shape));
      continue;
    }
    const TensorInfo& ct = *it->second;
    if (ct.shape != comp.shape)
      problems.push_back("mis-shaped " + comp.name + ": " + shape_str(ct.shape) + ", expected " + shape_str(comp.shape));
    else if (std::find(comp.dtypes.begin(), comp.dtypes.end(), ct.dtype) == comp.dtypes.end())
      problems.push_back(std::string("unsupported dtype ") + dtype_name(ct.dtype) + " for " + comp.name);
  }
}

}  // namespace

DType quant_dtype(quant::Format f) {
  switch (f) {
    case quant::Format::INT8:
      return DType::I8;
    case quant::Format::FP8:
      return DType::F8_E4M3;
    case quant::Format::INT4:
      return DType::U8;
    default:
      return DType::BF16;
  }
}

std::vector<QuantCompanion> quant_companions(const WeightSpec& w, const quant::QuantConfig& q) {
  const int64_t rows = w.shape[0], cols = w.shape[1];
  const int g = q.group_size;
  switch (q.format) {
    case quant::Format::INT8:
      return {{w.name + "_scale", {rows}, {DType::F32, DType::BF16}}};
    case quant::Format::FP8:
      return {{w.name + "_scale_inv",
               {quant::scale_rows(q.format, rows, g), quant::scale_cols(q.format, cols, g)},
               {DType::F32, DType::BF16}}};
    case quant::Format::INT4:
      return {{w.name + "_scale", {rows, cols / g}, {DType::F16, DType::F32, DType::BF16}},  // F32, BF16: older files
              {w.name + "_zero", {rows, cols / g}, {DType::U8}}};
    default:
      return {};
  }
}

Result<Checkpoint> Checkpoint::open(const std::string& dir, const ModelConfig& c) {
  auto files = shard_files(dir);
  if (!files) return Error{files.message()};
  Checkpoint ck;
  ck.files_ = *files;
  ck.shards_.reserve(ck.files_.size());
  for (auto& f : ck.files_) {
    auto s = SafetensorsFile::open(f);
    if (!s) return Error{s.message()};
    ck.shards_.push_back(std::move(*s));
  }
  std::vector<std::string> problems;
  for (auto& s : ck.shards_)
    for (auto& t : s.tensors()) {
      if (ck.by_name_.count(t.name)) problems.push_back("duplicate tensor " + t.name);
      ck.by_name_[t.name] = &t;
    }
  std::set<std::string> known;
  for (auto& w : expected_weights(c)) {
    known.insert(w.name);
    auto it = ck.by_name_.find(w.name);
    if (it == ck.by_name_.end()) {
      problems.push_back("missing " + w.name + " " + shape_str(w.shape));
      continue;
    }
    const TensorInfo& t = *it->second;
    if (w.linear && c.quant.format != quant::Format::None && t.dtype == quant_dtype(c.quant.format)) {
      check_quantized(w, t, c.quant, ck.by_name_, known, problems);
      continue;
    }
    if (t.shape != w.shape)
      problems.push_back("mis-shaped " + w.name + ": " + shape_str(t.shape) + ", expected " +
                         shape_str(w.shape));
    else if (t.dtype != DType::BF16 && t.dtype != DType::F16 && t.dtype != DType::F32)
      problems.push_back(std::string("unsupported dtype ") + dtype_name(t.dtype) + " for " + w.name);
  }
  std::vector<std::string> unexpected;
  for (auto& [name, t] : ck.by_name_)
    if (!known.count(name)) {
      // A tied checkpoint may still carry lm_head.weight; it is ignored.
      if (c.tie_word_embeddings && name == "lm_head.weight") continue;
      unexpected.push_back("unexpected " + name + " " + shape_str(t->shape));
    }
  std::sort(unexpected.begin(), unexpected.end());
  problems.insert(problems.end(), unexpected.begin(), unexpected.end());
  if (!problems.empty()) {
    std::string msg = "checkpoint " + dir + " does not match its config (" +
                      std::to_string(problems.size()) + " problems):";
    for (auto& p : problems) msg += "\n  " + p;
    return Error{msg};
  }
  return ck;
}

const TensorInfo* Checkpoint::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorInfo& Checkpoint::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  OST_CHECK(t != nullptr);
  return *t;
}

size_t Checkpoint::total_bytes() const {
  size_t n = 0;
  for (auto& [k, t] : by_name_) n += t->nbytes;
  return n;
}

}  // namespace ost
