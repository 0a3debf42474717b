// Where the answers come from: the engine in this process (Engine for one request at a time,
// EngineLoop when --concurrency asks for batching) or an OpenAI-compatible endpoint, ours or a
// peer's (images sent as base64 data URLs, answers streamed so the first token is timed).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "engine/engine.h"
#include "vision/image.h"

namespace ost::eval {

struct EvalImage {
  std::string mime;   // image/png, image/jpeg, image/webp
  std::string bytes;  // the encoded file (sent to endpoints)
  Image decoded;      // RGB8 (given to the engine)
};

// The image file as given, and a blank mid-gray image of the same size (the
// visual-necessity check: can the question be answered without looking?).
Result<EvalImage> load_eval_image(const std::string& path);
EvalImage blank_like(const EvalImage& img);

// Minimal encoders used for the blank images and the data URLs.
std::string encode_png_gray(int width, int height, uint8_t value);
std::string base64_encode(std::string_view in);

struct AskResult {
  std::string text;
  std::string finish_reason;
  std::string error;        // non-empty: the request failed
  double ttft_ms = -1;      // to the first generated token (-1 when none)
  double total_ms = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  bool has_timings = false;  // in-process single-request runs only
  Timings timings;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Thread-safe: called from up to `concurrency` worker threads at once.
  virtual AskResult ask(const std::string& prompt, const std::vector<const EvalImage*>& images, int max_tokens) = 0;
  virtual std::string model_name() const = 0;
  virtual std::string target() const = 0;  // "in-process cpu" / "http://host:port/v1/..."
};

// --model DIR: Engine when concurrency is 1, else an EngineLoop running up to that many at once.
Result<std::unique_ptr<Backend>> make_engine_backend(const std::string& model_dir, const std::string& device,
                                                     int concurrency);
// --url URL: "/v1/chat/completions" is appended unless the URL ends with it (or with "/v1").
// The model name is asked from GET /v1/models unless given.
Result<std::unique_ptr<Backend>> make_http_backend(const std::string& url, const std::string& api_key,
                                                   const std::string& model, int timeout_s = 600);

}  // namespace ost::eval
