// A minimal blocking HTTP/1.1 client for OpenAI-compatible endpoints: plain http:// only (put
// a TLS-terminating proxy in front of an https peer), one connection per request, chunked or
// fixed-length bodies, and a body callback so server-sent events are read as they arrive.
#pragma once
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace ost::eval {

struct HttpUrl {
  std::string host;
  int port = 80;
  std::string path;  // "/..." (at least "/")
};
Result<HttpUrl> parse_http_url(const std::string& url);

struct HttpReply {
  int status = 0;
  std::string body;  // empty when a body callback consumed it
};

// Called with each piece of the (de-chunked) body; return false to stop reading.
using BodyFn = std::function<bool(std::string_view)>;

// One request. `on_body` is used only for 2xx answers (others are collected into body).
Result<HttpReply> http_call(const HttpUrl& url, const std::string& method, const std::string& body,
                            const std::vector<std::pair<std::string, std::string>>& headers,
                            const BodyFn& on_body = {}, int timeout_s = 600);

// Incremental "data: ..." lines of an event stream.
class SseReader {
 public:
  // Calls fn(data) for each complete "data:" line; returns false when fn did.
  bool feed(std::string_view bytes, const std::function<bool(const std::string&)>& fn);

 private:
  std::string buf_;
};

}  // namespace ost::eval
