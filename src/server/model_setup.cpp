// The built-in demo model: the seeded tiny Qwen3-VL of the test fixtures (random weights, so
// its answers are noise), written on first use into a cache folder. Also: finding the bundled
// tokenizer and loading a model folder into an EngineLoop.
#include "server/model_setup.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "core/file_util.h"
#include "io/seeded.h"

namespace ost::server {

namespace fs = std::filesystem;

namespace {

// tests/data/qwen3vl-tiny, embedded so the binary needs no source tree.
const char* const kConfig = R"json({
 "image_token_id": 151655,
 "model_type": "qwen3_vl",
 "text_config": {
  "attention_bias": false,
  "attention_dropout": 0.0,
  "head_dim": 32,
  "hidden_act": "silu",
  "hidden_size": 64,
  "initializer_range": 0.02,
  "intermediate_size": 160,
  "max_position_embeddings": 262144,
  "model_type": "qwen3_vl_text",
  "num_attention_heads": 4,
  "num_hidden_layers": 4,
  "num_key_value_heads": 2,
  "pad_token_id": null,
  "rms_norm_eps": 1e-06,
  "rope_parameters": {
   "mrope_interleaved": true,
   "mrope_section": [
    6,
    5,
    5
   ],
   "rope_theta": 5000000.0,
   "rope_type": "default"
  },
  "tie_word_embeddings": false,
  "use_cache": true,
  "vocab_size": 151936
 },
 "tie_word_embeddings": false,
 "torch_dtype": "bfloat16",
 "transformers_version": "5.17.0",
 "video_token_id": 151656,
 "vision_config": {
  "deepstack_visual_indexes": [
   0,
   2
  ],
  "depth": 4,
  "hidden_act": "gelu_pytorch_tanh",
  "hidden_size": 64,
  "in_channels": 3,
  "initializer_range": 0.02,
  "intermediate_size": 128,
  "model_type": "qwen3_vl_vision",
  "num_heads": 4,
  "num_position_embeddings": 2304,
  "out_hidden_size": 64,
  "patch_size": 16,
  "rope_parameters": {
   "rope_theta": 10000.0,
   "rope_type": "axial"
  },
  "spatial_merge_size": 2,
  "temporal_patch_size": 2
 },
 "vision_end_token_id": 151653,
 "vision_start_token_id": 151652
})json";
const char* const kGeneration = R"json({
 "bos_token_id": 151643,
 "pad_token_id": 151643,
 "do_sample": true,
 "eos_token_id": [
  151645,
  151643
 ],
 "top_k": 20,
 "top_p": 0.8,
 "temperature": 0.7,
 "repetition_penalty": 1.0
})json";
const char* const kPreprocessor = R"json({
 "do_convert_rgb": true,
 "do_normalize": true,
 "do_rescale": true,
 "do_resize": true,
 "image_mean": [
  0.5,
  0.5,
  0.5
 ],
 "image_std": [
  0.5,
  0.5,
  0.5
 ],
 "merge_size": 2,
 "patch_size": 16,
 "temporal_patch_size": 2,
 "resample": 3,
 "rescale_factor": 0.00392156862745098,
 "size": {
  "longest_edge": 16777216,
  "shortest_edge": 65536
 },
 "image_processor_type": "Qwen2VLImageProcessor"
})json";

// Bumped when the demo's files change so an old cache is rebuilt.
const char* const kDemoStamp = "ostrakon-demo-v1 seed 20261124";

std::string exe_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.parent_path().string();
}

}  // namespace

std::string default_demo_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/ostrakon/demo-model";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/ostrakon/demo-model";
  return exe_dir() + "/demo-model";
}

std::string find_bundled_tokenizer() {
  std::error_code ec;
  for (fs::path start : {fs::path(exe_dir()), fs::current_path(ec)}) {
    for (fs::path p = start; !p.empty(); p = p.parent_path()) {
      const fs::path cand = p / "assets/qwen3/tokenizer.json";
      if (fs::exists(cand, ec)) return cand.string();
      if (p == p.parent_path()) break;
    }
  }
  return "";
}

Result<std::string> ensure_demo_model(const std::string& dir, const std::string& tokenizer_json) {
  const std::string stamp = dir + "/.ostrakon-demo";
  if (auto s = read_file(stamp); s && *s == kDemoStamp && file_exists(dir + "/model.safetensors") &&
                                 file_exists(dir + "/tokenizer.json"))
    return dir;
  if (tokenizer_json.empty() || !file_exists(tokenizer_json))
    return make_error("the demo model needs the Qwen3 tokenizer: run scripts/setup.sh (it fetches "
                      "assets/qwen3/tokenizer.json) or pass --tokenizer FILE");
  std::error_code ec;
  // Written into a fresh folder and renamed, so a crash never leaves a half model behind.
  const std::string tmp = dir + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp + "/config", ec);
  if (ec) return make_error("cannot create %s: %s", tmp.c_str(), ec.message().c_str());
  OST_TRY(write_file(tmp + "/config/config.json", kConfig));
  OST_TRY(write_file(tmp + "/config/generation_config.json", kGeneration));
  OST_TRY(write_file(tmp + "/config/preprocessor_config.json", kPreprocessor));
  TestModelOptions o;
  o.config_dir = tmp + "/config";
  o.seed = kDemoSeed;
  o.out_dir = tmp;
  o.tokenizer = tokenizer_json;
  OST_TRY(write_test_model(o));
  fs::remove_all(tmp + "/config", ec);
  OST_TRY(write_file(tmp + "/.ostrakon-demo", kDemoStamp));
  fs::remove_all(dir, ec);
  fs::create_directories(fs::path(dir).parent_path(), ec);
  fs::rename(tmp, dir, ec);
  if (ec) return make_error("cannot move the demo model into %s: %s", dir.c_str(), ec.message().c_str());
  return dir;
}

Result<std::unique_ptr<EngineLoop>> load_engine_loop(const std::string& dir, const std::string& device,
                                                     const std::string& model_name, const EngineLoopOptions& opt) {
  const std::string tok_path = dir + "/tokenizer.json";
  if (!file_exists(tok_path)) return make_error("model folder %s has no tokenizer.json", dir.c_str());
  auto tok = Tokenizer::load(tok_path);
  if (!tok) return Error{tok.message()};
  quant::QuantConfig qc;
  qc.kv_cache = opt.kv_cache_dtype;
  Result<std::unique_ptr<ModelRunner>> runner =
      device == "cuda" ? load_cuda_runner(dir, qc)
      : device == "cpu" ? load_cpu_runner(dir, qc, opt.cpu_engine_pages)
                        : Result<std::unique_ptr<ModelRunner>>(make_error("unknown device \"%s\" (cpu, cuda)", device.c_str()));
  if (!runner) return Error{runner.message()};
  return EngineLoop::start(std::move(*runner), std::move(*tok), model_name, opt);
}

}  // namespace ost::server
