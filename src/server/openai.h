// The OpenAI chat-completions dialect: request JSON -> GenerateRequest (images decoded, every
// field type-checked) and the response / stream-chunk JSON. Errors carry the HTTP status and
// the OpenAI error shape {"error": {"message", "type", "param", "code"}}.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/engine.h"
#include "engine/engine_loop.h"

namespace ost::server {

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" -> null
  std::string code;   // "" -> null
};
std::string error_body(const ApiError& e);

struct RequestLimits {
  int max_images = 8;                    // per request
  int64_t max_image_pixels = 50'000'000; // width*height of a decoded image, checked on the header
  int64_t max_image_bytes = 32 << 20;    // encoded size of one image
  std::string allow_file_dir;            // file:// URLs only under this folder ("" = refused)
  int default_max_tokens = 1024;         // when the request gives none (clipped to what fits)
  uint32_t json_max_string = 0;          // response_format: characters per JSON string (0: no limit)
};

struct ChatRequest {
  GenerateRequest gen;
  std::string model;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;
  int top_logprobs = 0;
  bool tools = false;  // tools were given (and tool_choice is not "none"): parse tool calls in the answer
  int n = 1;           // choices (kMaxChoices at most)
};
constexpr int kMaxChoices = 16;

// false + err on any problem with the request.
bool parse_chat_request(const std::string& body, const RequestLimits& lim, ChatRequest& out, ApiError& err);

// Decodes standard or URL-safe base64 (padding optional, no whitespace inside); false if invalid.
bool base64_decode(std::string_view in, std::string& out);

// Logprobs of one generated token in OpenAI's shape ({token, logprob, bytes, top_logprobs}).
nlohmann::json token_logprob_json(const Tokenizer& tok, const GeneratedToken& t);

std::string new_completion_id();  // "chatcmpl-" + 24 hex digits
std::string new_tool_call_id();   // "call_" + 24 hex digits

// A streamed answer when tools may be called. Text passes through until a <tool_call> starts;
// a tail that may begin one (and the whitespace before it) is held back. From the first
// <tool_call> on everything is kept, and at the end it is parsed into calls (parse_tool_calls)
// or, if it is not a well-formed list of calls, given back as text.
class ToolStream {
 public:
  explicit ToolStream(bool on) : on_(on) {}
  std::string add(const std::string& delta);  // the text to send now
  bool finish(ParsedToolCalls& calls);        // true: send calls; else send rest() as text
  const std::string& rest() const { return rest_; }

 private:
  bool on_ = false;
  bool in_call_ = false;
  std::string held_, rest_;
};

// OpenAI's tool_calls array for parsed calls ({id, type: "function", function: {name,
// arguments}}); with stream, each entry also carries its index (a stream delta).
nlohmann::json tool_calls_json(const std::vector<ToolCall>& calls, bool stream);

}  // namespace ost::server
