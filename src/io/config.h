// Model folder configuration: config.json (transformers 4.57 and 5.x forms),
// preprocessor_config.json and generation_config.json.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "core/status.h"
#include "quant/format.h"

namespace ost {

struct TextConfig {
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int intermediate_size = 0;
  int vocab_size = 0;
  float rms_norm_eps = 1e-6f;
  double rope_theta = 5e6;
  std::array<int, 3> mrope_section{0, 0, 0};  // frequencies per axis T, H, W (sum = head_dim/2)
  bool mrope_interleaved = true;
  int max_position_embeddings = 0;
  bool attention_bias = false;
};

struct VisionConfig {
  int depth = 0;
  int hidden_size = 0;
  int num_heads = 0;
  int intermediate_size = 0;
  int in_channels = 3;
  int patch_size = 16;
  int temporal_patch_size = 2;
  int spatial_merge_size = 2;
  int out_hidden_size = 0;
  int num_position_embeddings = 0;
  std::vector<int> deepstack_visual_indexes;
  double rope_theta = 10000.0;
  float layer_norm_eps = 1e-6f;  // hard-coded in the reference
  int head_dim() const { return hidden_size / num_heads; }
  int merged_dim() const { return hidden_size * spatial_merge_size * spatial_merge_size; }
  int patch_dim() const { return in_channels * temporal_patch_size * patch_size * patch_size; }
};

struct ModelConfig {
  std::string model_type;
  TextConfig text;
  VisionConfig vision;
  int image_token_id = 151655;
  int video_token_id = 151656;
  int vision_start_token_id = 151652;
  int vision_end_token_id = 151653;
  bool tie_word_embeddings = false;
  std::string dtype = "bfloat16";
  quant::QuantConfig quant;  // from quantization_config; format None for a plain checkpoint
};

struct PreprocessorConfig {
  int64_t min_pixels = 65536;
  int64_t max_pixels = 16777216;
  int patch_size = 16;
  int temporal_patch_size = 2;
  int merge_size = 2;
  std::array<float, 3> image_mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> image_std{0.5f, 0.5f, 0.5f};
  double rescale_factor = 1.0 / 255.0;
};

struct GenerationConfig {
  std::vector<int> eos_token_ids;
  int bos_token_id = -1;
  int pad_token_id = -1;
  bool do_sample = false;
  float temperature = 1.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float repetition_penalty = 1.0f;
};

Result<ModelConfig> parse_model_config(const std::string& json_text);
Result<PreprocessorConfig> parse_preprocessor_config(const std::string& json_text);
Result<GenerationConfig> parse_generation_config(const std::string& json_text);

// Loads the three files of a model folder; the two optional ones fall back to Qwen3-VL defaults.
struct FolderConfigs {
  ModelConfig model;
  PreprocessorConfig preprocessor;
  GenerationConfig generation;
};
Result<FolderConfigs> load_folder_configs(const std::string& dir);

}  // namespace ost
