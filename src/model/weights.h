// The weight table of Qwen3-VL as the graph uses it: big matrices are views into the mapped
// checkpoint (bf16 stays bf16); 1-D tensors (norm scales, biases) are widened to fp32 at load.
#pragma once
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "io/checkpoint.h"
#include "io/config.h"

namespace ost {

using ops::WeightView;

struct Linear {
  WeightView w;          // [out, in]
  std::vector<float> b;  // f32 [out], empty when the layer has no bias
  const float* bias() const { return b.empty() ? nullptr : b.data(); }
};

struct Norm {
  std::vector<float> w;  // f32 [dim]
  std::vector<float> b;  // f32 [dim] (LayerNorm only)
};

struct VisionBlockWeights {
  Norm norm1, norm2;  // LayerNorm [hidden]
  Linear qkv;         // [3·hidden, hidden]: rows q | k | v, head-major inside each
  Linear proj;        // [hidden, hidden]
  Linear fc1, fc2;    // [inter, hidden], [hidden, inter]
};

struct MergerWeights {
  Norm norm;        // [hidden] (final merger) or [4·hidden] (deepstack mergers)
  Linear fc1, fc2;  // [4·hidden, 4·hidden], [out_hidden, 4·hidden]
};

struct VisionWeights {
  Linear patch;          // Conv3d [hidden, C·T·P·P] seen as a matrix over flattened patches
  WeightView pos_embed;  // [num_position_embeddings, hidden], a square grid of side ng
  int pos_grid = 0;      // ng
  std::vector<VisionBlockWeights> blocks;
  MergerWeights merger;
  std::vector<MergerWeights> deepstack;  // deepstack_merger_list.j, tapped after block idx[j]
};

struct TextLayerWeights {
  std::vector<float> attn_norm, ffn_norm;  // RMSNorm [hidden]
  std::vector<float> q_norm, k_norm;       // RMSNorm [head_dim], per head
  Linear q, k, v, o;                       // [heads·hd, hidden], 2× [kv·hd, hidden], [hidden, heads·hd]
  Linear gate, up, down;                   // [inter, hidden] ×2, [hidden, inter]
};

struct TextWeights {
  WeightView embed;         // [vocab, hidden], bf16 or quantized like a linear (quant/format.h)
  std::vector<float> norm;  // final RMSNorm [hidden]
  WeightView lm_head;       // [vocab, hidden] (= embed when tied)
  std::vector<TextLayerWeights> layers;
};

struct ModelWeights {
  Checkpoint checkpoint;  // owns the mappings every view points into
  // Buffers some views point into instead: scales widened to f32, weights quantized at load.
  // (std::list: the buffers never move.)
  std::list<std::vector<float>> owned_f32;
  std::list<std::vector<uint8_t>> owned_u8;
  VisionWeights vision;
  TextWeights text;
};

// Maps the checkpoint of `dir` (validated against cfg) and builds the table. Linear weights and
// the embedding table stored quantized (cfg.quant) become INT8/FP8/INT4 views. With `at_load`
// set, the bf16 matrices of its selection (quant::selected: by default the text decoder's
// linears and the embedding table) are quantized into owned buffers as they are read.
Result<std::unique_ptr<ModelWeights>> load_weights(const std::string& dir, const ModelConfig& cfg,
                                                   const quant::QuantConfig& at_load = {});

}  // namespace ost
