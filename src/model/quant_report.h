// Accuracy of a quantized model against its bf16 original on image + prompt inputs.
//
// For each case the reference continues the prompt greedily for `continuation` tokens; both
// models then run the whole sequence teacher-forced (one prefill with every position's logits)
// and the logits of each position are compared:
//   rel L2      ‖q − ref‖ / ‖ref‖ over all logits
//   KL          KL(ref ‖ q) of the softmaxes, mean and max over positions
//   top-1       agreement of the argmax; also over the confident positions only, where the
//               reference's top-1 logit leads its second by more than `margin` (1 logit)
// and the hidden state after every decoder layer ("txt.layer_out", via set_dump) gives the
// per-layer relative L2.
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "model/runner.h"

namespace ost {

struct EvalCase {
  std::string name;
  std::vector<int32_t> ids;                  // prompt ids, image pads expanded
  std::vector<float> pixel_values;           // f32 [num_patches, patch_dim], empty: text only
  int64_t num_patches = 0;
  std::vector<std::array<int, 3>> grid_thw;
};

struct LogitStats {
  double sq_err = 0, sq_ref = 0;  // Σ (q − ref)², Σ ref²
  double kl_sum = 0, kl_max = 0;
  int64_t positions = 0, top1_agree = 0;
  int64_t confident = 0, confident_agree = 0;
  double rel_l2() const;
  double kl_mean() const { return positions ? kl_sum / double(positions) : 0.0; }
  double top1() const { return positions ? double(top1_agree) / double(positions) : 0.0; }
  double top1_confident() const { return confident ? double(confident_agree) / double(confident) : 0.0; }
  void add(const LogitStats& o);
};

// Prefills ids (c's prompt, or it continued) with c's images into a new sequence of m: logits
// f32 [ids, vocab] if all_logits, else the last row's. seq (optional) receives the sequence.
Result<std::vector<float>> prefill_case(ModelRunner& m, const EvalCase& c, const std::vector<int32_t>& ids,
                                        bool all_logits, int64_t extra_capacity = 1,
                                        std::unique_ptr<SequenceState>* seq = nullptr);

// Adds the comparison of logits f32 [n, vocab] to s.
void compare_logits(const float* ref, const float* q, int64_t n, int64_t vocab, float margin, LogitStats& s);

struct QuantReport {
  struct Case {
    std::string name;
    int64_t tokens = 0;  // prompt + continuation
    LogitStats stats;
  };
  std::vector<Case> cases;
  LogitStats total;
  std::vector<double> layer_rel_l2;  // per decoder layer, over every case and position
  std::string to_markdown(const std::string& title) const;
};

Result<QuantReport> compare_runners(ModelRunner& ref, ModelRunner& q, const std::vector<EvalCase>& cases,
                                    int continuation = 16, float margin = 1.0f);

}  // namespace ost
