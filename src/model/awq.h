// Activation-aware scales for INT4 weights (AWQ). Input channels with a large mean |activation|
// lose the most to weight quantization. For a group of linears sharing one input x, the weight
// columns are multiplied by s_j before quantizing and x_j is divided by s_j, folded exactly into
// the op that makes x:
//   q/k/v    input x = input_layernorm(h): its weight is divided by s
//   gate/up  input x = post_attention_layernorm(h): its weight is divided by s
//   down     input x = silu(gate)·up: up_proj's rows are divided by s (up is linear in its
//            output channel j), and up is quantized after that
// o_proj is not scaled: its input channel (q head h, d) is v's channel (kv head of h, d) mixed
// over tokens, so the only fold point, v_proj's row, would force one scale on all the q heads
// of a kv head (GQA), and v_proj itself belongs to the q/k/v group being searched.
//
// Norm weights stay in their checkpoint dtype (bf16): the folded weight n' = bf16(n / s) is
// rounded, so the scale actually applied is s' = n / n', and the columns are multiplied by s'
// (not s): the folded model computes what the original does up to f32 rounding.
//
// The search, per layer and group: m_j = mean over every calibration token of |x_j| (clamped
// from below at 1e-4·max m), s = m^α / sqrt(max(m^α)·min(m^α)), α from a grid that includes 0
// (s = 1: plain round-to-nearest), the α with the least
//   loss = ‖X·Wᵀ − X·(Q(W·diag(s'))·diag(1/s'))ᵀ‖²
// over a subsample X of the calibration rows, W the group's matrices stacked, Q the INT4 group
// quantizer exactly as the checkpoint stores it (f16 scales, u8 zero points). A group keeps
// s = 1 unless some α beats α = 0, so on the calibration rows the search never does worse than
// round-to-nearest. The inputs come from one pass of the original model: the folding leaves the
// function unchanged, so each layer sees the inputs it would see in the folded model.
#pragma once
#include <array>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "io/quantize_checkpoint.h"
#include "model/quant_report.h"

namespace ost {

// The inputs of one decoder layer's linear groups, in this order.
enum class AwqInput : int { QKV = 0, GateUp = 1, Down = 2 };
inline constexpr int kAwqInputs = 3;
const char* awq_input_name(AwqInput g);  // "q/k/v", "gate/up", "down"

struct AwqLayerInputs {
  std::array<std::vector<float>, kAwqInputs> mean_abs;  // f32 [in]: over every calibration token
  std::array<std::vector<float>, kAwqInputs> rows;      // f32 [rows, in]: the sampled tokens
};

struct AwqCalibration {
  std::vector<AwqLayerInputs> layers;
  int samples = 0;
  int64_t tokens = 0;  // calibration tokens run through the model
  int64_t rows = 0;    // rows kept per input for the loss: every ceil(tokens / max_rows)-th token
};

// One prefill of the original model per case (images and prompt ids as a request has them),
// reading the three inputs of every decoder layer through the runner's dump hook
// (txt.attn_norm, txt.ffn_norm, txt.ffn_act).
Result<AwqCalibration> collect_awq_inputs(ModelRunner& m, const std::vector<EvalCase>& cases, int64_t max_rows,
                                         const std::function<void(int done, int samples)>& progress = {});

std::vector<float> default_awq_alphas();  // 0, 0.05, ..., 1

struct AwqOptions {
  int group_size = 128;
  std::vector<float> alphas = default_awq_alphas();  // must include 0
  quant::SelectOptions select;  // the checkpoint's selection: a group is searched only when all of
                                // its linears (and, for down, up_proj) are converted
  std::function<void(int done, int layers)> progress;
};

struct AwqChoice {
  bool searched = false;  // false: some linear of the group (or up_proj, for down) stays unconverted
  float alpha = 0.0f;
  double loss_rtn = 0.0;  // α = 0, plain round-to-nearest
  double loss = 0.0;      // the chosen α, <= loss_rtn
};

struct AwqResult {
  std::vector<std::array<AwqChoice, kAwqInputs>> layers;
  std::map<std::string, TensorEdit> edits;  // what quantize_checkpoint folds in
  std::vector<float> alphas;
  int samples = 0;
  int64_t tokens = 0, rows = 0;
  double loss_rtn() const;  // Σ over every searched group
  double loss() const;
  std::string to_markdown() const;    // the chosen α and the loss against round-to-nearest per layer
  std::string config_json() const;    // keys for config.json's quantization_config
};

// Searches the scales of the bf16 checkpoint in model_dir (the model cal was collected from).
Result<AwqResult> search_awq_scales(const std::string& model_dir, const AwqCalibration& cal, const AwqOptions& opt);

// ‖X·Wᵀ − X·(Q(W·diag(s))·diag(1/s))ᵀ‖² for X f32 [m, in], W f32 [out, in], s f32 [in]; Q the INT4
// quantizer with groups of `group` inputs.
double awq_loss(const float* x, int64_t m, const float* w, int64_t out, int64_t in, const float* s, int group);

}  // namespace ost
