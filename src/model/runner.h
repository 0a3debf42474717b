// The interface the engine drives a model through, whatever the backend: the CPU oracle
// (Qwen3VLModel) or the CUDA runner. One SequenceState per request holds its KV cache.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/candidates.h"
#include "model/qwen3vl.h"

namespace ost {

class SequenceState {
 public:
  virtual ~SequenceState() = default;
  virtual int64_t length() const = 0;  // tokens in the KV cache
};

// A greedy choice: the largest logit (the lowest id among equal maxima) and its log-probability
// under the raw distribution, log_softmax(logits)[id].
struct GreedyToken {
  int32_t id = 0;
  float logprob = 0.0f;
};

// One prefill chunk of a mixed step: ids at the sequence's next cache positions.
struct PrefillChunk {
  SequenceState* seq = nullptr;
  std::vector<int32_t> ids;
  MropePositions pos;                    // of these ids
  // The request's image rows (all of them, the runner's own device copy or host rows), or null
  // when the chunk has no <|image_pad|>; the chunk's pads take rows vision_from, vision_from + 1,
  // ... (a chunk may start or end inside an image).
  const VisionOutput* vision = nullptr;
  int64_t vision_from = 0;
  bool logits = false;                   // the last row's logits are wanted
};

// What a mixed step gives back: per chunk, the last row's logits (f32 [vocab], empty when not
// asked); per decode row either the runner's greedy choice or f32 [vocab] logits, or with
// mixed_step_candidates both the greedy choice and the row's candidates.
struct MixedStepOutput {
  std::vector<std::vector<float>> chunk_logits;
  std::vector<float> decode_logits;        // [n decode, vocab] unless greedy (candidates: host runners)
  std::vector<GreedyToken> decode_tokens;  // greedy, candidates
  std::vector<RowCandidates> decode_candidates;  // candidates: per decode row, as its spec asks
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const GenerationConfig& generation() const = 0;
  virtual const PreprocessorConfig& preprocessor() const = 0;
  virtual std::string device_name() const = 0;

  virtual Result<VisionOutput> encode_images(const VisionInput& in) = 0;
  // Whether encode_images accepts VisionInput::rgb (the runner cuts the patches itself).
  virtual bool takes_rgb() const { return false; }
  // A sequence with a cache of its own for `capacity` tokens (self-managed pages).
  virtual Result<std::unique_ptr<SequenceState>> new_sequence(int64_t capacity) = 0;

  // KV pages owned by the engine. A runner whose pages_from_engine() is true can address its KV
  // cache through the serving loop's block tables (BlockManager ids, blocks of
  // kv_block_tokens() tokens), so tokens found in the prefix cache are read, not computed again:
  //   new_paged_sequence(cached): a sequence holding no pages of its own whose first `cached`
  //     tokens (a multiple of the block size) are already written in the leading blocks its
  //     table will name, by another sequence;
  //   set_block_table(s, blocks): the sequence's blocks in token order, before any step that
  //     writes beyond the blocks it was last given (a table only grows while the sequence lives;
  //     ids below kv_pool_tokens() / kv_block_tokens() when the runner has a fixed pool).
  // The runner then writes KV only at positions >= `cached`, into blocks the engine holds for
  // this sequence alone, and never frees a block: the engine does. The default: no such mode.
  virtual bool pages_from_engine() const { return false; }
  virtual int kv_block_tokens() const { return 0; }
  virtual Result<std::unique_ptr<SequenceState>> new_paged_sequence(int64_t cached);
  virtual Status set_block_table(SequenceState& s, const std::vector<int>& blocks);
  // As Qwen3VLModel::prefill / decode. Logits f32 [n or 1, vocab] on the host.
  virtual Result<std::vector<float>> prefill(SequenceState& s, const std::vector<int32_t>& ids,
                                             const MropePositions& pos, const VisionOutput* vision,
                                             bool all_logits) = 0;
  virtual Result<std::vector<float>> decode(SequenceState& s, int32_t id) = 0;
  // One decode step for several sequences (continuous batching): logits f32 [n, vocab].
  // The default runs them one by one.
  virtual Result<std::vector<float>> decode_batch(const std::vector<SequenceState*>& seqs,
                                                  const std::vector<int32_t>& ids);
  // One decode step as decode_batch, returning only each sequence's greedy next token, so a
  // runner on a device can keep the logits there. The default takes decode_batch's logits and
  // computes the choice on the host exactly as the engine's Sampler (greedy, no penalties) and
  // top_logprobs do, so results are bit-identical to that path.
  virtual Result<std::vector<GreedyToken>> decode_batch_argmax(const std::vector<SequenceState*>& seqs,
                                                               const std::vector<int32_t>& ids);
  // Token ids that decode_batch_argmax never chooses from now on (the serving loop excludes the
  // vision placeholders, as its Sampler path masks them); the reported log-probability stays
  // that of the unmasked distribution. At most 15 ids.
  virtual Status set_excluded_tokens(const std::vector<int32_t>& ids);
  const std::vector<int32_t>& excluded_tokens() const { return excluded_tokens_; }
  // One step of the serving loop: the prefill chunks and one decode row per decode sequence.
  // greedy: decode rows give decode_batch_argmax's choice, else decode_batch's logits. The
  // default runs the chunks one by one (prefill, with their image rows cut from host rows) and
  // then the decode rows; a device runner may carry all rows in one forward (one weight pass).
  // Results equal the separate calls up to the backend's rounding.
  virtual Result<MixedStepOutput> mixed_step(const std::vector<PrefillChunk>& chunks,
                                             const std::vector<SequenceState*>& decode,
                                             const std::vector<int32_t>& decode_ids, bool greedy);
  // mixed_step for sampled decode rows without moving their logits: each decode row gets the
  // candidates its spec asks for (decode_candidates), over the logits with the excluded ids
  // masked, or when the spec asks for no entries the greedy choice (decode_tokens, as
  // decode_batch_argmax; a device runner fills decode_tokens for every row). The default runs mixed_step for the logits, keeps them in
  // decode_logits and computes compute_candidates on the host (rel_error 0). A device runner
  // computes them there and leaves decode_logits empty: decode_row_logits fetches a row.
  virtual Result<MixedStepOutput> mixed_step_candidates(const std::vector<PrefillChunk>& chunks,
                                                        const std::vector<SequenceState*>& decode,
                                                        const std::vector<int32_t>& decode_ids,
                                                        const std::vector<CandidateSpec>& specs);
  // f32 [vocab] logits of decode row `row` of the last mixed_step_candidates that left
  // decode_logits empty, valid until the runner runs the model again (the default: an error).
  virtual Result<std::vector<float>> decode_row_logits(int row);
  // Prepares what decode steps of 1 .. max_batch sequences need (the CUDA runner captures its
  // graphs), so the first requests of a server do not pay for it. The default does nothing.
  virtual Status warm_up(int max_batch) { return Status::ok(); }
  // Bytes one cached token takes (all layers, K and V, scales included); the serving loop sizes
  // its block pool from --kv-memory with it. The default: f32 K and V.
  virtual int64_t kv_bytes_per_token() const;
  // Tokens the runner's own KV pool holds (the CUDA runner sizes it from free GPU memory), which
  // bounds the serving loop's pool; 0: no fixed pool (the CPU runner allocates per sequence).
  virtual int64_t kv_pool_tokens() const { return 0; }
  virtual void set_dump(DumpFn fn) {}

 protected:
  std::vector<int32_t> excluded_tokens_;
};

// Host rows [a, b) of a vision output (embeds and every deepstack layer).
VisionOutput slice_vision(const VisionOutput& v, int64_t a, int64_t b);

// The CPU oracle behind the runner interface.
// quant_at_load: quantize the text decoder's bf16 linears while loading (quant::selected);
// its kv_cache picks the KV cache dtype (both runners).
// engine_pages: also keep the KV of every engine block in a pool (pages_from_engine), so a
// prefix hit copies the cached blocks into the sequence's cache instead of computing them.
Result<std::unique_ptr<ModelRunner>> load_cpu_runner(const std::string& dir, const quant::QuantConfig& quant_at_load = {},
                                                     bool engine_pages = false);

// The CUDA runner (nullptr + error when this build has no CUDA or no GPU is present).
Result<std::unique_ptr<ModelRunner>> load_cuda_runner(const std::string& dir, const quant::QuantConfig& quant_at_load = {});
bool cuda_available();

}  // namespace ost
