// What the CUDA backend offers beyond the ModelRunner interface: facts about the loaded model
// on the device, a greedy decode step that keeps the logits on the GPU (only the argmax crosses
// PCIe), and the two device ceilings (HBM copy bandwidth, bf16 GEMM rate) every speed figure is
// printed next to. All of it is plain C++ (no CUDA header), so tools can use it.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/runner.h"

namespace ost {

struct CudaRunnerInfo {
  std::string device;               // GPU name
  size_t weight_bytes = 0;          // all weights on the device (bf16)
  size_t text_weight_bytes = 0;     // decoder layers + final norm + lm_head (read once per step)
  size_t kv_bytes_per_token = 0;    // all layers, K and V
  int64_t kv_blocks = 0, kv_block_tokens = 0;
  size_t device_total_bytes = 0, device_free_bytes = 0;  // after loading
  int64_t mixed_forwards = 0;  // mixed steps run as one forward (decode rows + prefill chunks)
};

// nullptr when r is not the CUDA runner.
const CudaRunnerInfo* cuda_runner_info(ModelRunner& r);

// One decode step of several sequences; returns the greedy next token of each. Same effect on
// the sequences as decode_batch.
Result<std::vector<int32_t>> cuda_decode_greedy(ModelRunner& r, const std::vector<SequenceState*>& seqs,
                                                const std::vector<int32_t>& ids);

// One decode step run eagerly with events between the ops: milliseconds per op category, in
// order of first appearance. Same effect on the sequences as decode_batch.
Result<std::vector<std::pair<std::string, double>>> cuda_profile_decode(
    ModelRunner& r, const std::vector<SequenceState*>& seqs, const std::vector<int32_t>& ids);

// encode_images run eagerly with events between the ops: milliseconds per category.
Result<std::vector<std::pair<std::string, double>>> cuda_profile_vision(ModelRunner& r, const VisionInput& in);

struct DeviceCeilings {
  std::string device;
  double copy_gb_per_s = 0;   // device-to-device copy, bytes read + written per second
  double gemm_tflops = 0;     // bf16 GEMM through cuBLASLt, fp32 accumulation
  int gemm_size = 0;          // the square size it was measured at
};
Result<DeviceCeilings> measure_device_ceilings();

}  // namespace ost
