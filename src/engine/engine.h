// The engine of one request: chat -> tokens, images -> patches -> vision tower, prefill,
// then the decode loop with sampling and stop conditions. The CPU path here is the oracle
// the faster paths are tested against.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "chat/chat.h"
#include "engine/sampler.h"
#include "grammar/vocab.h"
#include "model/runner.h"
#include "tokenizer/tokenizer.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace ost {

struct EngineOptions {
  std::string device = "auto";  // cpu | cuda | auto (cuda when a GPU is visible)
  quant::QuantConfig quant;     // quantize the text decoder's bf16 linears at load (run --quant)
};

// OpenAI's image_url.detail: kLow caps the image at kLowDetailTokens vision tokens (after
// the merge), for quick answers; kAuto and kHigh use the request's bounds.
enum class ImageDetail : uint8_t { kAuto, kLow, kHigh };
constexpr int64_t kLowDetailTokens = 256;

struct GenerateRequest {
  std::vector<ChatMessage> messages;  // images appear as ContentPart::kImage, in order
  std::vector<Image> images;          // one per image part, in order of appearance
  std::vector<ImageDetail> detail;    // per image, or empty (all kAuto)
  int64_t min_pixels = 0;             // 0: the model's preprocessor_config
  int64_t max_pixels = 0;
  SamplingParams sampling;
  int max_tokens = 256;
  std::vector<std::string> stop;  // stop strings (not included in the text)
  bool ignore_eos = false;
  int top_logprobs = 0;     // per generated token: the top K of its distribution
  int prompt_logprobs = 0;  // per prompt position: the top K of the next-token distribution
  std::vector<std::string> tools;  // tool definitions for the chat template (ChatTemplateOptions::tools)
  // Structured output: the answer is written in this JSON grammar (null: free text). Each step
  // masks the tokens it cannot take; the log-probabilities stay the unmasked distribution's.
  std::shared_ptr<const grammar::Grammar> response_format;
};

struct GeneratedToken {
  int32_t id = 0;
  float logprob = 0.0f;                 // of the chosen token, under the raw model distribution
  std::vector<TokenLogprob> top;        // top_logprobs entries
};

struct Timings {
  double preprocess_ms = 0, vision_ms = 0, prefill_ms = 0, decode_ms = 0;
  double decode_tokens_per_s = 0;
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids;
  std::vector<GeneratedToken> tokens;  // EOS included when it ended the answer
  std::string text;
  std::string finish_reason;  // "stop" | "length" | "cancelled"
  std::vector<std::vector<TokenLogprob>> prompt_top_logprobs;
  std::vector<std::array<int, 3>> image_grids;
  Timings timings;
};

// The model's image preprocessing with per-request pixel bounds (0: the model's own). A bound
// given alone that conflicts with the model's other bound moves that one; two given bounds
// that conflict are an error.
// Image i of req: the request's bounds, and for a low-detail image at most kLowDetailTokens
// merged tokens (max_pixels = kLowDetailTokens · (patch · merge)², smaller if the request's is).
Result<PreprocessOptions> image_preprocess_options(const PreprocessorConfig& pc, const GenerateRequest& req, size_t i);
Result<PreprocessOptions> preprocess_options(const PreprocessorConfig& pc, int64_t min_pixels = 0,
                                             int64_t max_pixels = 0);

// Chat -> text -> ids with every <|image_pad|> expanded to its image's token count.
Result<std::vector<int32_t>> build_prompt_ids(const Tokenizer& tok, const GenerateRequest& req,
                                              const std::vector<ImagePatches>& patches, int32_t image_token_id);

// How many bytes at the end of `text` must be held back from a stream because they may still
// become the start of a stop string.
size_t stop_holdback(const std::string& text, const std::vector<std::string>& stops);

// Called after each generated token with the text it completes (may be empty while a UTF-8
// character or a possible stop string is held back). Return false to cancel.
using TokenCallback = std::function<bool(const GeneratedToken&, const std::string& delta)>;

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> load(const std::string& model_dir, const EngineOptions& opt = {});

  Result<GenerateResult> generate(const GenerateRequest& req, const TokenCallback& on_token = {});

  // Prompt ids of a request with every <|image_pad|> expanded to its image's token count.
  Result<std::vector<int32_t>> prompt_ids(const GenerateRequest& req, const std::vector<ImagePatches>& patches) const;

  const Tokenizer& tokenizer() const { return tokenizer_; }
  ModelRunner& runner() { return *model_; }
  const std::string& model_dir() const { return dir_; }

 private:
  std::string dir_;
  Tokenizer tokenizer_;
  std::unique_ptr<ModelRunner> model_;
  std::unique_ptr<grammar::VocabIndex> vocab_index_;  // built for the first response_format
};

}  // namespace ost
