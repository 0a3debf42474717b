#include "io/config.h"

#include <nlohmann/json.hpp>

#include "core/file_util.h"

namespace ost {

using nlohmann::json;

namespace {

// Reads `key` of `j` into `out` when present; a wrong type is an error naming the key.
template <class T>
Status get_opt(const json& j, const char* where, const char* key, T& out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::ok();
  try {
    out = it->get<T>();
  } catch (const std::exception&) {
    return make_error("%s: \"%s\" has the wrong type", where, key);
  }
  return Status::ok();
}

template <class T>
Status get_req(const json& j, const char* where, const char* key, T& out) {
  if (!j.contains(key) || j[key].is_null()) return make_error("%s: missing \"%s\"", where, key);
  return get_opt(j, where, key, out);
}

Result<json> parse_json(const std::string& text, const char* what) {
  try {
    return json::parse(text);
  } catch (const std::exception& e) {
    return make_error("%s: invalid JSON: %s", what, e.what());
  }
}

Status parse_text(const json& t, bool& tie, TextConfig& c) {
  const char* w = "config.json text_config";
  OST_TRY(get_req(t, w, "hidden_size", c.hidden_size));
  OST_TRY(get_req(t, w, "num_hidden_layers", c.num_layers));
  OST_TRY(get_req(t, w, "num_attention_heads", c.num_heads));
  OST_TRY(get_req(t, w, "intermediate_size", c.intermediate_size));
  OST_TRY(get_req(t, w, "vocab_size", c.vocab_size));
  c.num_kv_heads = c.num_heads;
  OST_TRY(get_opt(t, w, "num_key_value_heads", c.num_kv_heads));
  c.head_dim = c.num_heads ? c.hidden_size / c.num_heads : 0;
  OST_TRY(get_opt(t, w, "head_dim", c.head_dim));
  OST_TRY(get_opt(t, w, "rms_norm_eps", c.rms_norm_eps));
  OST_TRY(get_opt(t, w, "max_position_embeddings", c.max_position_embeddings));
  OST_TRY(get_opt(t, w, "attention_bias", c.attention_bias));
  OST_TRY(get_opt(t, w, "tie_word_embeddings", tie));
  // 5.x: rope_parameters {rope_theta, mrope_section, ...}; 4.57: rope_theta + rope_scaling.
  const json* rope = nullptr;
  if (t.contains("rope_parameters") && t["rope_parameters"].is_object()) rope = &t["rope_parameters"];
  else if (t.contains("rope_scaling") && t["rope_scaling"].is_object()) rope = &t["rope_scaling"];
  OST_TRY(get_opt(t, w, "rope_theta", c.rope_theta));
  std::vector<int> sec;
  if (rope) {
    OST_TRY(get_opt(*rope, "config.json rope parameters", "rope_theta", c.rope_theta));
    OST_TRY(get_opt(*rope, "config.json rope parameters", "mrope_section", sec));
    OST_TRY(get_opt(*rope, "config.json rope parameters", "mrope_interleaved", c.mrope_interleaved));
    std::string type = "default";
    OST_TRY(get_opt(*rope, "config.json rope parameters", "rope_type", type));
    if (type != "default" && type != "mrope")
      return make_error("config.json: rope_type \"%s\" is not supported", type.c_str());
  }
  if (sec.empty()) return make_error("config.json: missing mrope_section in the rope parameters");
  if (sec.size() != 3) return make_error("config.json: mrope_section must have 3 entries");
  c.mrope_section = {sec[0], sec[1], sec[2]};
  if (c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 ||
      c.head_dim <= 0 || c.intermediate_size <= 0 || c.vocab_size <= 0)
    return make_error("config.json: text sizes must be positive");
  if (c.num_heads % c.num_kv_heads)
    return make_error("config.json: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                      c.num_heads, c.num_kv_heads);
  if (c.head_dim % 2 || sec[0] + sec[1] + sec[2] != c.head_dim / 2)
    return make_error("config.json: mrope_section sums to %d, expected head_dim/2 = %d",
                      sec[0] + sec[1] + sec[2], c.head_dim / 2);
  return Status::ok();
}

Status parse_vision(const json& v, VisionConfig& c) {
  const char* w = "config.json vision_config";
  OST_TRY(get_req(v, w, "depth", c.depth));
  OST_TRY(get_req(v, w, "hidden_size", c.hidden_size));
  OST_TRY(get_req(v, w, "num_heads", c.num_heads));
  OST_TRY(get_req(v, w, "intermediate_size", c.intermediate_size));
  OST_TRY(get_req(v, w, "out_hidden_size", c.out_hidden_size));
  OST_TRY(get_req(v, w, "num_position_embeddings", c.num_position_embeddings));
  OST_TRY(get_opt(v, w, "in_channels", c.in_channels));
  OST_TRY(get_opt(v, w, "patch_size", c.patch_size));
  OST_TRY(get_opt(v, w, "temporal_patch_size", c.temporal_patch_size));
  OST_TRY(get_opt(v, w, "spatial_merge_size", c.spatial_merge_size));
  OST_TRY(get_opt(v, w, "deepstack_visual_indexes", c.deepstack_visual_indexes));
  if (v.contains("rope_parameters") && v["rope_parameters"].is_object())
    OST_TRY(get_opt(v["rope_parameters"], w, "rope_theta", c.rope_theta));
  std::string act = "gelu_pytorch_tanh";
  OST_TRY(get_opt(v, w, "hidden_act", act));
  if (act != "gelu_pytorch_tanh")
    return make_error("config.json: vision hidden_act \"%s\" is not supported", act.c_str());
  if (c.depth <= 0 || c.hidden_size <= 0 || c.num_heads <= 0 || c.hidden_size % c.num_heads ||
      c.intermediate_size <= 0 || c.out_hidden_size <= 0 || c.patch_size <= 0 ||
      c.temporal_patch_size <= 0 || c.spatial_merge_size <= 0)
    return make_error("config.json: bad vision sizes");
  int g = 1;
  while (g * g < c.num_position_embeddings) ++g;
  if (g * g != c.num_position_embeddings)
    return make_error("config.json: num_position_embeddings %d is not a square", c.num_position_embeddings);
  if ((c.head_dim() / 2) % 2)
    return make_error("config.json: vision head_dim %d must be a multiple of 4", c.head_dim());
  for (int i : c.deepstack_visual_indexes)
    if (i < 0 || i >= c.depth) return make_error("config.json: deepstack index %d out of range", i);
  return Status::ok();
}

// quantization_config: Qwen's FP8 form, or ours for int8/int4 (quant/format.h).
Status parse_quant(const json& q, quant::QuantConfig& out) {
  const char* w = "config.json quantization_config";
  if (!q.is_object()) return make_error("%s: not an object", w);
  std::string method;
  OST_TRY(get_req(q, w, "quant_method", method));
  if (method == "fp8") {
    std::string fmt = "e4m3";
    OST_TRY(get_opt(q, w, "fmt", fmt));
    if (fmt != "e4m3") return make_error("%s: fp8 fmt \"%s\" is not supported (only e4m3)", w, fmt.c_str());
    std::vector<int> block{128, 128};
    OST_TRY(get_opt(q, w, "weight_block_size", block));
    if (block.size() != 2 || block[0] != block[1] || block[0] <= 0)
      return make_error("%s: weight_block_size must be a square [B, B]", w);
    out.format = quant::Format::FP8;
    out.group_size = block[0];
    return Status::ok();
  }
  if (method == "ostrakon") {
    std::string fmt;
    OST_TRY(get_req(q, w, "weight_format", fmt));
    auto f = quant::parse_format(fmt);
    if (!f || *f == quant::Format::None || *f == quant::Format::FP8)
      return make_error("%s: weight_format \"%s\" is not int8 or int4", w, fmt.c_str());
    out.format = *f;
    OST_TRY(get_opt(q, w, "group_size", out.group_size));
    if (out.format == quant::Format::INT4 && (out.group_size <= 0 || out.group_size % 2))
      return make_error("%s: group_size %d must be a positive even number", w, out.group_size);
    return Status::ok();
  }
  return make_error("%s: quant_method \"%s\" is not supported (fp8 or ostrakon)", w, method.c_str());
}

}  // namespace

Result<ModelConfig> parse_model_config(const std::string& text) {
  auto jr = parse_json(text, "config.json");
  if (!jr) return Error{jr.message()};
  const json& j = *jr;
  if (!j.is_object()) return make_error("config.json: not a JSON object");
  ModelConfig c;
  OST_TRY(get_opt(j, "config.json", "model_type", c.model_type));
  if (!c.model_type.empty() && c.model_type != "qwen3_vl")
    return make_error("config.json: model_type \"%s\" is not supported (expected qwen3_vl)",
                      c.model_type.c_str());
  if (!j.contains("text_config") || !j["text_config"].is_object())
    return make_error("config.json: missing \"text_config\"");
  if (!j.contains("vision_config") || !j["vision_config"].is_object())
    return make_error("config.json: missing \"vision_config\"");
  bool tie_text = false;
  OST_TRY(parse_text(j["text_config"], tie_text, c.text));
  OST_TRY(parse_vision(j["vision_config"], c.vision));
  c.tie_word_embeddings = tie_text;
  OST_TRY(get_opt(j, "config.json", "tie_word_embeddings", c.tie_word_embeddings));
  OST_TRY(get_opt(j, "config.json", "image_token_id", c.image_token_id));
  OST_TRY(get_opt(j, "config.json", "video_token_id", c.video_token_id));
  OST_TRY(get_opt(j, "config.json", "vision_start_token_id", c.vision_start_token_id));
  OST_TRY(get_opt(j, "config.json", "vision_end_token_id", c.vision_end_token_id));
  OST_TRY(get_opt(j, "config.json", "torch_dtype", c.dtype));
  OST_TRY(get_opt(j, "config.json", "dtype", c.dtype));
  OST_TRY(get_opt(j["text_config"], "config.json", "dtype", c.dtype));
  if (j.contains("quantization_config")) OST_TRY(parse_quant(j["quantization_config"], c.quant));
  else if (j["text_config"].contains("quantization_config"))
    OST_TRY(parse_quant(j["text_config"]["quantization_config"], c.quant));
  if (c.vision.out_hidden_size != c.text.hidden_size)
    return make_error("config.json: vision out_hidden_size %d != text hidden_size %d",
                      c.vision.out_hidden_size, c.text.hidden_size);
  return c;
}

Result<PreprocessorConfig> parse_preprocessor_config(const std::string& text) {
  auto jr = parse_json(text, "preprocessor_config.json");
  if (!jr) return Error{jr.message()};
  const json& j = *jr;
  const char* w = "preprocessor_config.json";
  PreprocessorConfig c;
  if (j.contains("size") && j["size"].is_object()) {
    OST_TRY(get_opt(j["size"], w, "shortest_edge", c.min_pixels));
    OST_TRY(get_opt(j["size"], w, "longest_edge", c.max_pixels));
  }
  OST_TRY(get_opt(j, w, "min_pixels", c.min_pixels));
  OST_TRY(get_opt(j, w, "max_pixels", c.max_pixels));
  OST_TRY(get_opt(j, w, "patch_size", c.patch_size));
  OST_TRY(get_opt(j, w, "temporal_patch_size", c.temporal_patch_size));
  OST_TRY(get_opt(j, w, "merge_size", c.merge_size));
  OST_TRY(get_opt(j, w, "rescale_factor", c.rescale_factor));
  std::vector<float> mean, stdv;
  OST_TRY(get_opt(j, w, "image_mean", mean));
  OST_TRY(get_opt(j, w, "image_std", stdv));
  if (!mean.empty()) {
    if (mean.size() != 3) return make_error("%s: image_mean must have 3 values", w);
    c.image_mean = {mean[0], mean[1], mean[2]};
  }
  if (!stdv.empty()) {
    if (stdv.size() != 3) return make_error("%s: image_std must have 3 values", w);
    c.image_std = {stdv[0], stdv[1], stdv[2]};
  }
  if (c.min_pixels <= 0 || c.max_pixels < c.min_pixels || c.patch_size <= 0 || c.merge_size <= 0)
    return make_error("%s: bad sizes", w);
  return c;
}

Result<GenerationConfig> parse_generation_config(const std::string& text) {
  auto jr = parse_json(text, "generation_config.json");
  if (!jr) return Error{jr.message()};
  const json& j = *jr;
  const char* w = "generation_config.json";
  GenerationConfig c;
  if (j.contains("eos_token_id")) {
    if (j["eos_token_id"].is_array()) OST_TRY(get_opt(j, w, "eos_token_id", c.eos_token_ids));
    else if (j["eos_token_id"].is_number_integer()) c.eos_token_ids = {j["eos_token_id"].get<int>()};
  }
  OST_TRY(get_opt(j, w, "bos_token_id", c.bos_token_id));
  OST_TRY(get_opt(j, w, "pad_token_id", c.pad_token_id));
  OST_TRY(get_opt(j, w, "do_sample", c.do_sample));
  OST_TRY(get_opt(j, w, "temperature", c.temperature));
  OST_TRY(get_opt(j, w, "top_k", c.top_k));
  OST_TRY(get_opt(j, w, "top_p", c.top_p));
  OST_TRY(get_opt(j, w, "repetition_penalty", c.repetition_penalty));
  return c;
}

Result<FolderConfigs> load_folder_configs(const std::string& dir) {
  FolderConfigs f;
  if (!is_directory(dir)) return make_error("model folder %s does not exist", dir.c_str());
  auto cfg = read_file(dir + "/config.json");
  if (!cfg) return make_error("model folder %s: no config.json", dir.c_str());
  auto mc = parse_model_config(*cfg);
  if (!mc) return Error{mc.message()};
  f.model = std::move(*mc);
  if (file_exists(dir + "/preprocessor_config.json")) {
    auto t = read_file(dir + "/preprocessor_config.json");
    if (!t) return Error{t.message()};
    auto pc = parse_preprocessor_config(*t);
    if (!pc) return Error{pc.message()};
    f.preprocessor = *pc;
  }
  f.generation.eos_token_ids = {151645, 151643};
  if (file_exists(dir + "/generation_config.json")) {
    auto t = read_file(dir + "/generation_config.json");
    if (!t) return Error{t.message()};
    auto gc = parse_generation_config(*t);
    if (!gc) return Error{gc.message()};
    f.generation = *gc;
  }
  return f;
}

}  // namespace ost
