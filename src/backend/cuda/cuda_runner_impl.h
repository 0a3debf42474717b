// The CUDA runner class, shared by cuda_runner.cpp (text decoder, KV cache, decode graphs) and
// cuda_vision.cpp (vision tower). Internal to the backend.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_runner.h"
#include "backend/cuda/embed_gather.h"
#include "backend/cuda/fp8_gemm.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/int4_gemm.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/quant_gemm.h"
#include "backend/cuda/quant_prefill.h"
#include "model/runner.h"
#include "model/weights.h"

namespace ost::cuda {

// Device allocations that live for one call.
class DeviceScratch {
 public:
  ~DeviceScratch() {
    for (void* p : ptrs_) cudaFree(p);
  }
  Result<void*> alloc(size_t bytes) {
    void* p = nullptr;
    OST_CUDA_RET(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
    ptrs_.push_back(p);
    return p;
  }

 private:
  std::vector<void*> ptrs_;
};

// One device allocation reused across calls and grown to the largest request; carve() hands
// out 256-byte aligned pieces of it. Growing waits for the stream (the old buffer may be in use).
class Workspace {
 public:
  ~Workspace() {
    if (p_) cudaFree(p_);
  }
  Result<std::vector<void*>> carve(const std::vector<size_t>& sizes, cudaStream_t s) {
    size_t total = 0;
    for (size_t b : sizes) total += (b + 255) / 256 * 256;
    if (total > cap_) {
      if (p_) {
        OST_CUDA_RET(cudaStreamSynchronize(s));
        OST_CUDA_RET(cudaFree(p_));
        p_ = nullptr;
        cap_ = 0;
      }
      OST_CUDA_RET(cudaMalloc(&p_, total));
      cap_ = total;
    }
    std::vector<void*> out;
    char* c = static_cast<char*>(p_);
    for (size_t b : sizes) {
      out.push_back(c);
      c += (b + 255) / 256 * 256;
    }
    return out;
  }

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

// Vision output kept on the device: bf16 [1 + deepstack layers][n_merged, out_hidden] (the
// final merger's rows first), one allocation.
struct DeviceVisionRows {
  ~DeviceVisionRows() {
    if (data) cudaFree(data);
  }
  __nv_bfloat16* data = nullptr;
  int64_t rows = 0, width = 0;
  int layers = 0;  // 1 + deepstack
};

class CudaRunner;

class CudaSequence final : public SequenceState {
 public:
  ~CudaSequence() override;
  int64_t length() const override { return len; }
  CudaRunner* runner = nullptr;
  std::vector<int32_t> blocks;  // pool block ids, in token order
  int64_t len = 0, capacity = 0, rope_delta = 0;
  // Unique per runner and renewed whenever `blocks` changes: which staged block table rows are
  // current.
  uint64_t id = 0;
  bool paged = false;  // the blocks are the engine's (set_block_table), not taken from the pool
};

class CudaRunner final : public ModelRunner {
 public:
  static constexpr int kBlock = 16;              // tokens per KV block
  static constexpr int64_t kMaxRows = 2048;      // tokens per forward (prefill chunk)
  static constexpr int64_t kMaxLogitRows = 512;  // logits rows per lm_head slice
  static constexpr int kMaxSeqs = 64;            // sequences per decode step
  static constexpr size_t kMaxPoolTokens = 1 << 20;
  static constexpr int64_t kMaxSeqTokens = 1 << 17;

  ~CudaRunner() override;
  Status load(const std::string& dir, const quant::QuantConfig& quant_at_load = {});
  const CudaRunnerInfo& info() const { return info_; }

  const ModelConfig& config() const override { return cfg_.model; }
  const GenerationConfig& generation() const override { return cfg_.generation; }
  const PreprocessorConfig& preprocessor() const override { return cfg_.preprocessor; }
  std::string device_name() const override { return "cuda:" + info_.device; }
  Result<VisionOutput> encode_images(const VisionInput& in) override;
  bool takes_rgb() const override { return true; }
  Result<std::unique_ptr<SequenceState>> new_sequence(int64_t capacity) override;
  bool pages_from_engine() const override { return engine_pages_; }
  int kv_block_tokens() const override { return kBlock; }
  Result<std::unique_ptr<SequenceState>> new_paged_sequence(int64_t cached) override;
  Status set_block_table(SequenceState& s, const std::vector<int>& blocks) override;
  Result<std::vector<float>> prefill(SequenceState& s, const std::vector<int32_t>& ids,
                                     const MropePositions& pos, const VisionOutput* vision,
                                     bool all_logits) override;
  Result<std::vector<float>> decode(SequenceState& s, int32_t id) override;
  Result<std::vector<float>> decode_batch(const std::vector<SequenceState*>& seqs,
                                          const std::vector<int32_t>& ids) override;
  Result<std::vector<GreedyToken>> decode_batch_argmax(const std::vector<SequenceState*>& seqs,
                                                       const std::vector<int32_t>& ids) override;
  Status set_excluded_tokens(const std::vector<int32_t>& ids) override;
  Status warm_up(int max_batch) override;
  int64_t kv_bytes_per_token() const override { return int64_t(info_.kv_bytes_per_token); }
  int64_t kv_pool_tokens() const override { return num_blocks_ * kBlock; }
  Result<MixedStepOutput> mixed_step(const std::vector<PrefillChunk>& chunks, const std::vector<SequenceState*>& decode,
                                     const std::vector<int32_t>& decode_ids, bool greedy) override;
  // cuda_candidates.cpp: the sampled rows' candidates computed on the device.
  Result<MixedStepOutput> mixed_step_candidates(const std::vector<PrefillChunk>& chunks,
                                                const std::vector<SequenceState*>& decode,
                                                const std::vector<int32_t>& decode_ids,
                                                const std::vector<CandidateSpec>& specs) override;
  Result<std::vector<float>> decode_row_logits(int row) override;
  Result<std::vector<int32_t>> decode_greedy(const std::vector<SequenceState*>& seqs,
                                             const std::vector<int32_t>& ids);
  void release_blocks(const std::vector<int32_t>& blocks);
  Result<std::vector<std::pair<std::string, double>>> profile_decode(const std::vector<SequenceState*>& seqs,
                                                                     const std::vector<int32_t>& ids);
  Result<std::vector<std::pair<std::string, double>>> profile_vision(const VisionInput& in);

 private:
  // Per-row int32 inputs of a forward, each a field of kMaxRows in the staging area, followed
  // by the block tables (kMaxSeqs rows of table_width_).
  enum StepField { kIds, kPosT, kPosH, kPosW, kSlot, kSeq, kLen, kImage, kLogitRow, kStepFields };
  // A mixed step's rows: decode rows 0 .. n_decode-1 (split-K decode attention), then prefill
  // segments (causal flash attention each); logits for the n_logit rows listed in kLogitRow.
  struct MixedLayout {
    int64_t n_decode = 0;
    struct Segment {
      int64_t row = 0, n = 0, past = 0;
      int table_row = 0;
    };
    std::vector<Segment> segments;
    int64_t n_logit = 0;
  };
  const MixedLayout* mixed_ = nullptr;  // set by mixed_step for its forward
  bool mixed_steps_ = true;             // OST_MIXED_STEP=0: chunks and decodes run separately
  bf16* mixed_image_ = nullptr;         // image rows of a mixed step, [1 + deepstack][kMaxRows, hidden]
  // An INT8 weight-only linear (quant_gemm.h): int8 [out, in] + f32 scale [out]; null: bf16.
  struct QLinear {
    int8_t* w = nullptr;
    float* scale = nullptr;
    Fp8Weight f8;  // FP8 W8A8 (fp8_gemm.h): set instead of w
    // INT4 W4A16 (int4_gemm.h), set instead of w: u8 nibbles [out, in/2], f16 scale4 and u8 zero
    // [out, in/group]
    uint8_t* q4 = nullptr;
    __half* scale4 = nullptr;
    uint8_t* zero = nullptr;
    int group = 0;
  };
  struct Layer {
    bf16 *qkv = nullptr, *o = nullptr, *gu = nullptr, *down = nullptr;  // [out, in]
    QLinear qkv_q, o_q, gu_q, down_q;  // set instead of the bf16 matrix when the weights are INT8
    bf16 *attn_norm = nullptr, *ffn_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
  };
  struct ImageRows {
    int64_t n = 0;
    const bf16* embeds = nullptr;            // bf16 [n, hidden]
    std::vector<const bf16*> deepstack;      // per deepstack layer, bf16 [n, hidden]
  };
  struct VLinear {
    bf16 *w = nullptr, *b = nullptr;
  };
  struct VNorm {
    bf16 *w = nullptr, *b = nullptr;
  };
  struct VBlock {
    VNorm norm1, norm2;
    VLinear qkv, proj, fc1, fc2;
  };
  struct VMerger {
    VNorm norm;
    VLinear fc1, fc2;
  };

  Result<void*> alloc(size_t bytes);
  Status copy_rows(const ops::WeightView& w, bf16* dst);
  Result<bf16*> upload_rows(const ops::WeightView& w);
  Result<bf16*> upload_vec(const std::vector<float>& v);
  // Rows of several INT8 views stacked into one int8 matrix (false when any part is not INT8).
  Result<bool> upload_int8(const std::vector<const ops::WeightView*>& parts, QLinear& out);
  // The same for FP8 views (block scales kept; upload_int8 hands FP8 groups to it).
  Result<bool> upload_fp8(const std::vector<const ops::WeightView*>& parts, QLinear& out);
  // The same for INT4 views (in and group multiples of 32, one group size; else false: bf16).
  Result<bool> upload_int4(const std::vector<const ops::WeightView*>& parts, QLinear& out);
  // y = x · Wᵀ through the W8A16 / W4A16 kernel (q.w / q.q4 set, n <= 32), for larger n the
  // prefill GEMM on the quantized weights or dequantize + bf16 GEMM, whichever timed faster
  // (quant_prefill.h), or the bf16 GEMM. x_q8 (FP8 q, decode): x was quantized into
  // fp8_scratch_ by the kernel that wrote it, and is not read.
  Status linear(const bf16* x, int64_t n, const bf16* w, const QLinear& q, int64_t out, int64_t in, bf16* y,
                cudaStream_t s, bool x_q8 = false);
  // Decode (n <= 8): the same product through the GEMV kernels with the fusions of gemv.h.
  Status fused_linear(const bf16* x, int64_t n, const bf16* w, const QLinear& q, int64_t out, int64_t in, bf16* y,
                      const GemvFusion& f, cudaStream_t s);
  // The token embedding table (after the lm_head): embed_ (bf16) or embed_q_ (quantized).
  Status load_embedding(const TextWeights& tw);
  Status load_linear(const Linear& l, VLinear& out);
  Status load_norm(const Norm& n, VNorm& out);
  Status load_vision();
  // x bf16 [N, hidden] -> bf16 [N/m², out_hidden] at out; scratch: y, f1 bf16 [N, hidden].
  Status run_merger(const VMerger& m, const bf16* x, int64_t N, bool norm_after_merge, bf16* y, bf16* f1,
                    bf16* out);

  // Image rows [from, from + n) of a vision output kept on the device, as an output of their own.
  Result<VisionOutput> device_rows(const VisionOutput& v, int64_t from, int64_t n);
  int32_t* field(int32_t* base, StepField f) const;
  int32_t slot_of(const CudaSequence& s, int64_t i) const;
  void stage_table(int seq, const CudaSequence& s);
  Status upload_staging(int n_seqs);
  // n staged rows: one sequence's prompt chunk at cache indices past .. past+n-1 (prefill), or
  // one row per sequence (decode).
  Status forward(int64_t n, int64_t logits_from, const ImageRows* img, bool decode, int64_t past,
                 float* host_logits = nullptr);
  void mark_start();
  void mark(const char* category);  // profiling: time since the previous mark goes to category
  std::vector<std::pair<std::string, double>> collect_marks();
  Status decode_step(const std::vector<SequenceState*>& seqs, const std::vector<int32_t>& ids);

  FolderConfigs cfg_;
  std::unique_ptr<ModelWeights> host_;  // mapped checkpoint (the pos-embed table is read from it)
  CudaRunnerInfo info_;
  size_t weight_bytes_ = 0;
  std::vector<void*> allocs_;
  cudaStream_t stream_ = nullptr;
  Gemm gemm_;

  std::vector<Layer> layers_;
  bf16 *embed_ = nullptr, *norm_ = nullptr, *lm_head_ = nullptr;
  quant::QView embed_q_;  // set instead of embed_ when the table stays quantized (device pointers)
  QLinear lm_head_q_;
  bf16* dequant_scratch_ = nullptr;  // bf16, the largest INT8 matrix (prefill of INT8 linears)
  size_t dequant_scratch_elems_ = 0;
  Fp8Gemm fp8_gemm_;             // FP8 linears (initialized with the first one)
  void* fp8_scratch_ = nullptr;  // quantized activations of kMaxRows rows (Fp8Gemm::scratch_bytes)
  int64_t fp8_max_in_ = 0;
  float* inv_freq_ = nullptr;   // f32 [hd/2]
  int32_t* axis_ = nullptr;     // int32 [hd/2]

  VLinear patch_;
  bf16* pos_table_ = nullptr;  // bf16 [pos_grid², vision hidden]
  Workspace vision_ws_;
  std::vector<VBlock> vblocks_;
  VMerger merger_;
  std::vector<VMerger> ds_mergers_;

  // Step buffers (kMaxRows rows).
  bf16 *x_ = nullptr, *h_ = nullptr, *qkv_ = nullptr, *q_ = nullptr, *attn_ = nullptr;
  bf16 *gu_ = nullptr, *act_ = nullptr, *logits_ = nullptr;
  float* logits_f32_ = nullptr;
  int32_t* argmax_ = nullptr;  // int32 [kMaxRows], then f32 [kMaxRows] log-probabilities
  float* logprob_ = nullptr;
  int32_t* excluded_dev_ = nullptr;  // int32 [16]: count, then the ids the argmax skips
  void* step_out_host_ = nullptr;  // pinned: argmax and log-probabilities of a decode step
  float* attn_partial_ = nullptr;  // decode attention chunks
  int* attn_counters_ = nullptr;   // int32 [kMaxSeqs, n_kv], finished chunks (zero between launches)
  int sm_count_ = 132;
  Workspace cand_ws_;       // mixed_step_candidates: row parameters, entries, sums
  int64_t cand_rows_ = 0;   // decode rows of the last mixed_step_candidates

  // Paged KV cache: per layer bf16 [num_blocks·kBlock, n_kv, hd] for K and for V.
  std::vector<bf16*> kc_, vc_;
  // fp8 (--kv-cache-dtype fp8) instead: per layer e4m3 [num_blocks·kBlock, n_kv, hd] and f32
  // scales [num_blocks·kBlock, n_kv], for K and for V.
  bool kv_fp8_ = false;
  std::vector<uint8_t*> kc8_, vc8_;
  std::vector<float*> ks_, vs_;
  int64_t num_blocks_ = 0;
  int table_width_ = 0;
  std::vector<int32_t> free_blocks_;
  // 1: held by a sequence of the runner's own (new_sequence). Engine pages must not name those;
  // the runner cannot see which blocks the engine holds, so a caller uses one kind at a time,
  // or as tests do, gives the engine's kind blocks the pool does not hand out.
  std::vector<uint8_t> own_block_;

  std::vector<std::pair<int, int>> dirty_tables_;  // (staging row, blocks) to upload next
  bool fast_attention_ = true;  // flash / split-K attention (OST_ATTN=simt: the generic kernel)
  bool glu_decode_ = true;      // decode: gate_up GEMV writes SiLU(gate)·up (OST_GLU_DECODE=0: off)
  bool has_int4_ = false;       // some linear is W4A16 (no OST_FUSED_DECODE prologues for it)
  bool fp8_prequant_ = true;    // FP8 decode: norms and SiLU·up write quantized x (OST_FP8_PREQUANT=0: off)
  bool fused_decode_ = false;   // decode: also norms, residual adds inside the GEMVs (OST_FUSED_DECODE=1)
  bool engine_pages_ = false;   // KV pages from the serving loop's BlockManager (OST_ENGINE_PAGES=1)
  bool fused_qk_ = false;       // decode: q/k norm + rope inside the attention kernel (OST_FUSED_QK=1)
  std::vector<uint64_t> staged_owner_;  // sequence id whose block table each staging row holds
  uint64_t next_seq_id_ = 1;
  int32_t* staging_host_ = nullptr;  // pinned
  int32_t* staging_dev_ = nullptr;
  size_t staging_elems_ = 0;

  bool use_graphs_ = true;
  bool profile_ = false;
  std::vector<std::pair<const char*, cudaEvent_t>> marks_;
  std::map<int, cudaGraphExec_t> graphs_;  // decode step per batch size
};

}  // namespace ost::cuda
