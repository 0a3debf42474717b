// The serving engine: one thread owns the model runner, the scheduler, the KV accounting and
// every request's state. Other threads only call prepare() (pure: images -> patches, chat ->
// prompt ids, checks), submit() (enqueue) and read the request's channel; cancel() is a flag
// the engine thread observes at the start of each step, when it frees the request's blocks.
//
// One step: take new requests and cancellations, plan (Scheduler), run the prefill chunks and
// every decode row in one ModelRunner::mixed_step (the runner's greedy choice when every decode
// row is plain greedy, else each sampled row's candidates, the full logits only when those do
// not decide the draw or the row has a response format, whose token mask needs them), then
// sample, detokenize, check stop conditions and push events. No exception escapes the loop: a failing request gets an error event.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/stats.h"
#include "model/runner.h"

namespace ost {

struct ScheduledChunk;

struct EngineLoopOptions {
  int block_size = 16;
  int64_t kv_memory_mb = 1024;  // KV pool, in the runner's bytes per token (kv_bytes_per_token)
  quant::KvDType kv_cache_dtype = quant::KvDType::BF16;  // for the runner server::load_engine_loop makes
  int max_running = 16;
  int64_t step_tokens = 2048;
  int64_t prefill_chunk = 512;
  int max_queue = 256;          // waiting requests beyond this are refused
  int image_cache_entries = 32; // vision-tower outputs kept by image content hash
  // With a runner that takes the engine's KV pages (ModelRunner::pages_from_engine: the CPU
  // runner when loaded with engine_pages; the CUDA runner with OST_ENGINE_PAGES=1, opt-in until
  // that path has run on a GPU), sequences read and write KV through their BlockManager tables
  // and prefix-cache hits are not computed again. Else (or with OST_ENGINE_PAGES=0) every
  // sequence has its own cache and recomputes them.
  bool engine_pages = true;
  bool cpu_engine_pages = false;  // for the CPU runner server::load_engine_loop makes
  // Decode steps whose rows are all plain greedy (temperature 0, no penalties, no top logprobs)
  // take the runner's choice (decode_batch_argmax, the vision placeholders excluded) instead of
  // the logits; the tokens and log-probabilities are the Sampler path's. The environment
  // variable OST_LOOP_HOST_SAMPLING=1 turns this off (A/B runs).
  bool runner_greedy = true;
  // Other decode steps take the runner's candidates for their sampled rows (mixed_step_candidates)
  // and the full logits of a row only when the candidates do not decide its draw; tokens and
  // log-probabilities equal the Sampler path's. OST_LOOP_HOST_SAMPLING=1 turns this off too.
  bool runner_candidates = true;
};

// Blocks of block_size tokens that kv_memory_mb MB holds at bytes_per_token (the serving loop's
// pool size; bench engine prints it), at most runner_pool_tokens / block_size when the runner has
// a fixed pool of its own (ModelRunner::kv_pool_tokens > 0).
int64_t kv_pool_blocks(int64_t kv_memory_mb, int64_t bytes_per_token, int block_size, int64_t runner_pool_tokens = 0);

// A request checked and tokenized, ready for the engine thread.
struct PreparedRequest {
  std::vector<int32_t> prompt_ids;  // every <|image_pad|> expanded
  std::vector<ImagePatches> patches;
  std::vector<std::array<int, 3>> grids;
  std::vector<uint64_t> image_hashes;  // content hash of each image's pixel values
  SamplingParams sampling;
  int max_tokens = 256;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  int top_logprobs = 0;
  std::shared_ptr<const grammar::Grammar> response_format;  // GenerateRequest::response_format
};

struct RequestEvent {
  enum class Kind { kToken, kDone, kError } kind = Kind::kToken;
  GeneratedToken token;  // kToken
  std::string delta;     // kToken: text this token completes (may be empty)
  // kDone
  std::string finish_reason;  // stop | length | cancelled
  // cached_tokens: prompt tokens read from the prefix cache instead of computed (0 when the
  // runner recomputes them)
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  std::string error;          // kError
  int index = 0;              // which choice of a request of several (submit's n)
};

// The per-request queue between the engine thread (producer) and one HTTP thread (consumer).
class RequestChannel {
 public:
  explicit RequestChannel(std::function<void()> wake) : wake_(std::move(wake)) {}
  void push(RequestEvent e);
  bool pop(RequestEvent& e, std::chrono::milliseconds timeout);  // false: nothing yet
  void cancel();
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestEvent> q_;
  std::atomic<bool> cancelled_{false};
  std::function<void()> wake_;
};

enum class SubmitCode { kOk, kQueueFull, kStopped, kTooManyChoices };  // the last: n > max_queue, never fits

struct Submitted {
  SubmitCode code = SubmitCode::kOk;
  std::shared_ptr<RequestChannel> channel;
  std::string message;
};

class EngineLoop {
 public:
  static Result<std::unique_ptr<EngineLoop>> start(std::unique_ptr<ModelRunner> runner, Tokenizer tokenizer,
                                                   std::string model_name, const EngineLoopOptions& opt);
  ~EngineLoop();  // stops the thread; requests still open get an error event

  // Any thread. max_tokens < 0 means "the default": as many as fit, at most -max_tokens.
  Result<PreparedRequest> prepare(const GenerateRequest& req) const;
  // n > 1: n independent choices of one request (OpenAI's `n`) on one channel, their events
  // told apart by RequestEvent::index; choice i samples with seed + i. Each choice takes a
  // queue place; cancelling the channel cancels them all.
  Submitted submit(PreparedRequest req, int n = 1);
  EngineSnapshot snapshot() const;

  const ModelConfig& config() const { return runner_->config(); }
  const std::string& model_name() const { return model_name_; }
  const Tokenizer& tokenizer() const { return tok_; }
  int64_t context_length() const;
  int64_t kv_capacity_tokens() const { return int64_t(num_blocks_) * opt_.block_size; }
  bool engine_pages() const { return paged_; }  // prefix hits are read, not computed

 private:
  struct Live;
  EngineLoop() = default;
  void run();
  void step();
  void finish(Live& r, const std::string& reason);
  void fail(Live& r, const std::string& message);
  Status ensure_vision(Live& r);
  Status give_blocks(Live& r, const ScheduledChunk& c);
  bool emit_token(Live& r, const float* logits);
  bool emit_candidates(Live& r, const RowCandidates& c);
  bool emit(Live& r, GeneratedToken tok);
  // The vocabulary's token-mask index, made once by the first request with a response format
  // (on its HTTP thread, in prepare()).
  const grammar::VocabIndex& vocab_index() const;

  std::unique_ptr<ModelRunner> runner_;
  Tokenizer tok_;
  std::string model_name_;
  EngineLoopOptions opt_;
  int num_blocks_ = 0;
  bool paged_ = false;

  mutable std::mutex mu_;  // guards inbox_, stop_, stats_
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Live>> inbox_;
  bool stop_ = false;
  bool wake_ = false;
  EngineSnapshot stats_;
  std::thread thread_;
  mutable std::once_flag vocab_once_;
  mutable std::unique_ptr<grammar::VocabIndex> vocab_;

  // Engine thread only.
  struct State;
  std::unique_ptr<State> st_;
};

}  // namespace ost
