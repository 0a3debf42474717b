// A streamed chat completion read the way a client does (eval's HTTP client and SSE reader).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "eval/http_client.h"

namespace ost::testing {

struct StreamAnswer {
  int status = 0;
  std::string text, finish_reason, error;
  int64_t prompt_tokens = -1, completion_tokens = -1;
  int events = 0;
  bool done = false;  // [DONE] came
};

// J: nlohmann::json, or ordered_json to keep the body's key order (a schema's properties).
template <class J = nlohmann::json>
StreamAnswer stream_chat(int port, J body) {
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  StreamAnswer a;
  eval::HttpUrl url{"127.0.0.1", port, "/v1/chat/completions"};
  eval::SseReader sse;
  auto on_event = [&](const std::string& data) {
    ++a.events;
    if (data == "[DONE]") return !(a.done = true);
    nlohmann::json j = nlohmann::json::parse(data, nullptr, false);
    if (j.is_discarded()) {
      a.error = "bad event: " + data;
      return false;
    }
    if (j.contains("error")) a.error = j["error"].dump();
    if (j["usage"].is_object()) {
      a.prompt_tokens = j["usage"]["prompt_tokens"];
      a.completion_tokens = j["usage"]["completion_tokens"];
    }
    if (!j["choices"].empty()) {
      const nlohmann::json& c = j["choices"][0];
      if (c["delta"].contains("content")) a.text += c["delta"]["content"].get<std::string>();
      if (c["finish_reason"].is_string()) a.finish_reason = c["finish_reason"];
    }
    return true;
  };
  auto r = eval::http_call(
      url, "POST", body.dump(), {{"Content-Type", "application/json"}},
      [&](std::string_view piece) { return sse.feed(piece, on_event); }, 120);
  if (!r)
    a.error = r.message();
  else
    a.status = r->status;
  return a;
}

}  // namespace ost::testing
