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
};

struct ChatRequest {
  GenerateRequest gen;
  std::string model;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;
  int top_logprobs = 0;
};

// false + err on any problem with the request.
bool parse_chat_request(const std::string& body, const RequestLimits& lim, ChatRequest& out, ApiError& err);

// Decodes standard or URL-safe base64 (padding optional, no whitespace inside); false if invalid.
bool base64_decode(std::string_view in, std::string& out);

// Logprobs of one generated token in OpenAI's shape ({token, logprob, bytes, top_logprobs}).
nlohmann::json token_logprob_json(const Tokenizer& tok, const GeneratedToken& t);

std::string new_completion_id();  // "chatcmpl-" + 24 hex digits

}  // namespace ost::server
