#include "io/quantize_checkpoint.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "core/bf16.h"
#include "core/file_util.h"
#include "io/checkpoint.h"
#include "quant/quant.h"

namespace ost {
namespace {

enum class Role { Copy, Weight, Scale, Zero };

// One output tensor and where its bytes come from.
struct OutTensor {
  TensorSpec spec;
  std::string src;  // source tensor name
  Role role = Role::Copy;
};

float to_f32(DType t, const uint8_t* p) {
  switch (t) {
    case DType::BF16: {
      bf16_t b;
      std::memcpy(&b, p, 2);
      return bf16_to_f32(b);
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return f16_to_f32(h);
    }
    default: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
  }
}

// f32 -> a 1-D tensor's dtype (BF16, F16 or F32), round to nearest even.
void from_f32(DType t, float v, uint8_t* p) {
  if (t == DType::BF16) {
    const bf16_t b = f32_to_bf16(v);
    std::memcpy(p, &b, 2);
  } else if (t == DType::F16) {
    const uint16_t h = f32_to_f16(v);
    std::memcpy(p, &h, 2);
  } else {
    std::memcpy(p, &v, 4);
  }
}

// Every edit names a tensor of the plan and fits it (see QuantizeOptions::edits).
Status check_edits(const QuantizeOptions& opt, const Checkpoint& ck, const std::vector<std::string>& quantized) {
  std::vector<std::string> problems;
  for (const auto& [name, e] : opt.edits) {
    const TensorInfo* t = ck.find(name);
    if (!t) {
      problems.push_back(name + ": no such tensor");
      continue;
    }
    if (!e.col_scale.empty() || !e.row_scale.empty()) {
      if (std::find(quantized.begin(), quantized.end(), name) == quantized.end())
        problems.push_back(name + ": scales fold only into a matrix that is converted");
      else if ((!e.col_scale.empty() && int64_t(e.col_scale.size()) != t->shape[1]) ||
               (!e.row_scale.empty() && int64_t(e.row_scale.size()) != t->shape[0]))
        problems.push_back(name + ": the scales do not match its shape");
    }
    if (!e.values.empty()) {
      if (t->shape.size() != 1 || int64_t(e.values.size()) != t->numel()) {
        problems.push_back(name + ": new values fit only a 1-D tensor of the same size");
        continue;
      }
      uint8_t buf[4];
      for (float v : e.values) {
        from_f32(t->dtype, v, buf);
        if (to_f32(t->dtype, buf) != v) {
          problems.push_back(name + ": a new value is not exact in " + dtype_name(t->dtype));
          break;
        }
      }
    }
  }
  if (problems.empty()) return Status::ok();
  std::string msg = "quantize: edits that cannot be applied:";
  for (auto& p : problems) msg += "\n  " + p;
  return Error{msg};
}

Status copy_file(const std::string& from, const std::string& to) {
  auto data = read_file(from);
  if (!data) return Error{data.message()};
  return write_file(to, *data);
}

}  // namespace

void apply_scales(const TensorEdit& e, int64_t rows, int64_t cols, float* w) {
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 18))
  for (int64_t r = 0; r < rows; ++r) {
    float* wr = w + r * cols;
    if (!e.col_scale.empty())
      for (int64_t c = 0; c < cols; ++c) wr[c] *= e.col_scale[size_t(c)];
    if (!e.row_scale.empty())
      for (int64_t c = 0; c < cols; ++c) wr[c] *= e.row_scale[size_t(r)];
  }
}

Result<QuantizeSummary> quantize_checkpoint(const QuantizeOptions& opt) {
  const quant::QuantConfig& q = opt.quant;
  if (q.format == quant::Format::None) return make_error("quantize: no format given");
  if (opt.in_dir == opt.out_dir) return make_error("quantize: --out must differ from --model");
  auto cfg_text = read_file(opt.in_dir + "/config.json");
  if (!cfg_text) return make_error("no config.json in %s", opt.in_dir.c_str());
  auto cfg = parse_model_config(*cfg_text);
  if (!cfg) return Error{cfg.message()};
  if (cfg->quant.format != quant::Format::None)
    return make_error("%s is already quantized (%s)", opt.in_dir.c_str(), quant::format_name(cfg->quant.format));
  auto ck = Checkpoint::open(opt.in_dir, *cfg);
  if (!ck) return Error{ck.message()};

  // Plan every output tensor; refuse shapes the format cannot hold before writing anything.
  QuantizeSummary sum;
  std::vector<std::vector<OutTensor>> units;  // a weight and its companions stay in one shard
  std::vector<std::string> problems;
  nlohmann::json not_converted = nlohmann::json::array();
  for (const WeightSpec& w : expected_weights(*cfg)) {
    const TensorInfo& t = ck->get(w.name);
    sum.bytes_in += int64_t(t.nbytes);
    bool convert = false;
    if (w.linear) {
      auto sel = quant::selected(w.name, q.select, cfg->tie_word_embeddings);
      if (!sel) return Error{sel.message()};
      convert = *sel;
    }
    if (!convert) {
      if (w.linear) {
        sum.kept.push_back(w.name);
        not_converted.push_back(w.name.substr(0, w.name.size() - std::strlen(".weight")));
      }
      units.push_back({{{w.name, t.dtype, t.shape}, w.name, Role::Copy}});
      continue;
    }
    if (Status st = quant::check_shape(q.format, w.name, w.shape[0], w.shape[1], q.group_size); !st) {
      problems.push_back(st.message());
      continue;
    }
    sum.quantized.push_back(w.name);
    std::vector<OutTensor> u;
    const std::vector<int64_t> wshape =
        q.format == quant::Format::INT4 ? std::vector<int64_t>{w.shape[0], w.shape[1] / 2} : w.shape;
    u.push_back({{w.name, quant_dtype(q.format), wshape}, w.name, Role::Weight});
    for (const QuantCompanion& c : quant_companions(w, q))
      u.push_back({{c.name, c.dtypes[0], c.shape}, w.name, c.name.ends_with("_zero") ? Role::Zero : Role::Scale});
    units.push_back(std::move(u));
  }
  if (!problems.empty()) {
    std::string msg = "cannot quantize " + opt.in_dir + " to " + quant::format_name(q.format) + ":";
    for (auto& p : problems) msg += "\n  " + p;
    return Error{msg};
  }

  OST_TRY(check_edits(opt, *ck, sum.quantized));
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  if (!opt.quant_config_extra.empty()) {
    extra = nlohmann::ordered_json::parse(opt.quant_config_extra, nullptr, false);
    if (!extra.is_object()) return make_error("quantize: quant_config_extra is not a JSON object");
  }
  if (opt.dry_run) return sum;

  ::mkdir(opt.out_dir.c_str(), 0755);
  if (!is_directory(opt.out_dir)) return make_error("cannot create folder %s", opt.out_dir.c_str());

  // config.json with quantization_config; every other file but the weights travels as it is.
  nlohmann::ordered_json cj = nlohmann::ordered_json::parse(*cfg_text);
  nlohmann::ordered_json qc;
  if (q.format == quant::Format::FP8) {
    qc = {{"quant_method", "fp8"},
          {"fmt", "e4m3"},
          {"activation_scheme", "dynamic"},
          {"weight_block_size", {q.group_size, q.group_size}}};
  } else {
    qc = {{"quant_method", "ostrakon"}, {"weight_format", quant::format_name(q.format)}};
    if (q.format == quant::Format::INT4) qc["group_size"] = q.group_size;
    qc["scale_dtype"] = q.format == quant::Format::INT4 ? "float16" : "float32";
  }
  qc["modules_to_not_convert"] = not_converted;
  for (auto it = extra.begin(); it != extra.end(); ++it) qc[it.key()] = it.value();
  cj["quantization_config"] = qc;
  OST_TRY(write_file(opt.out_dir + "/config.json", cj.dump(2) + "\n"));
  if (DIR* d = opendir(opt.in_dir.c_str())) {
    std::vector<std::string> names;
    while (auto* e = readdir(d)) names.push_back(e->d_name);
    closedir(d);
    for (auto& n : names) {
      const std::string from = opt.in_dir + "/" + n;
      if (n == "." || n == ".." || n == "config.json" || n.ends_with(".safetensors") ||
          n == "model.safetensors.index.json" || is_directory(from))
        continue;
      OST_TRY(copy_file(from, opt.out_dir + "/" + n));
    }
  }

  // Shards.
  std::vector<std::vector<OutTensor>> shards(1);
  int64_t in_shard = 0, total = 0;
  for (auto& u : units) {
    int64_t bytes = 0;
    for (auto& o : u) {
      int64_t n = int64_t(dtype_size(o.spec.dtype));
      for (auto d : o.spec.shape) n *= d;
      bytes += n;
    }
    if (in_shard > 0 && in_shard + bytes > opt.shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    for (auto& o : u) shards.back().push_back(o);
    in_shard += bytes;
    total += bytes;
  }
  sum.bytes_out = total;

  // The tensor being converted, quantized once and served to the writer in chunks.
  std::string cached;
  quant::QuantizedMatrix qm;
  std::map<std::string, const OutTensor*> by_name;
  for (auto& s : shards)
    for (auto& o : s) by_name[o.spec.name] = &o;
  FillFn fill = [&](const TensorSpec& s, int64_t first, int64_t count, uint8_t* out) {
    const OutTensor& o = *by_name.at(s.name);
    const TensorInfo& t = ck->get(o.src);
    const auto edit = opt.edits.find(o.src);
    const TensorEdit* e = edit == opt.edits.end() ? nullptr : &edit->second;
    if (o.role == Role::Copy) {
      const size_t es = dtype_size(t.dtype);
      if (e && !e->values.empty()) {
        for (int64_t i = 0; i < count; ++i) from_f32(t.dtype, e->values[size_t(first + i)], out + size_t(i) * es);
        return;
      }
      std::memcpy(out, t.data + size_t(first) * es, size_t(count) * es);
      return;
    }
    if (cached != o.src) {
      const int64_t rows = t.shape[0], cols = t.shape[1];
      const size_t es = dtype_size(t.dtype);
      std::vector<float> f(size_t(rows * cols));
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < rows * cols; ++i) f[size_t(i)] = to_f32(t.dtype, t.data + size_t(i) * es);
      if (e) apply_scales(*e, rows, cols, f.data());
      quant::resize_for(qm, q.format, rows, cols, q.group_size);
      quant::quantize_rows(qm, 0, rows, f.data());
      cached = o.src;
    }
    switch (o.role) {
      case Role::Weight:
        std::memcpy(out, qm.data.data() + first, size_t(count));
        break;
      case Role::Scale:
        if (s.dtype == DType::F16) {  // INT4: the scales already hold f16 values
          for (int64_t i = 0; i < count; ++i) {
            const uint16_t h = f32_to_f16(qm.scale[size_t(first + i)]);
            std::memcpy(out + 2 * i, &h, 2);
          }
        } else {
          std::memcpy(out, qm.scale.data() + first, size_t(count) * 4);
        }
        break;
      case Role::Zero:
        std::memcpy(out, qm.zero.data() + first, size_t(count));
        break;
      case Role::Copy:
        break;
    }
  };
  int64_t done_before = 0;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char fn[64];
    if (shards.size() == 1) std::snprintf(fn, sizeof fn, "model.safetensors");
    else std::snprintf(fn, sizeof fn, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    std::vector<TensorSpec> specs;
    for (auto& o : shards[i]) specs.push_back(o.spec);
    int64_t shard_done = 0;
    auto progress = [&](int64_t done, int64_t) {
      shard_done = done;
      if (opt.progress) opt.progress(done_before + done, total);
    };
    OST_TRY(write_safetensors(opt.out_dir + "/" + fn, specs, fill, {{"format", "pt"}}, progress));
    done_before += shard_done;
    for (auto& s : specs) weight_map[s.name] = fn;
  }
  if (shards.size() > 1) {
    nlohmann::ordered_json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    OST_TRY(write_file(opt.out_dir + "/model.safetensors.index.json", idx.dump(2)));
  } else {
    ::unlink((opt.out_dir + "/model.safetensors.index.json").c_str());
  }
  return sum;
}

}  // namespace ost
