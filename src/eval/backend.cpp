#include "eval/backend.h"

#include <array>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "engine/engine_loop.h"
#include "eval/http_client.h"

namespace ost::eval {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string sniff_mime(const std::string& b) {
  if (b.size() >= 8 && b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) return "image/png";
  if (b.size() >= 3 && uint8_t(b[0]) == 0xFF && uint8_t(b[1]) == 0xD8) return "image/jpeg";
  if (b.size() >= 12 && b.compare(0, 4, "RIFF") == 0 && b.compare(8, 4, "WEBP") == 0) return "image/webp";
  return "application/octet-stream";
}

uint32_t crc32(const uint8_t* p, size_t n, uint32_t c = 0) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t x = i;
      for (int k = 0; k < 8; ++k) x = x & 1 ? 0xEDB88320u ^ (x >> 1) : x >> 1;
      t[i] = x;
    }
    return t;
  }();
  c = ~c;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return ~c;
}

void put_be32(std::string& s, uint32_t v) {
  for (int sh = 24; sh >= 0; sh -= 8) s += char((v >> sh) & 0xFF);
}

void put_chunk(std::string& png, const char* type, const std::string& data) {
  put_be32(png, uint32_t(data.size()));
  std::string body = std::string(type, 4) + data;
  png += body;
  put_be32(png, crc32(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
}

ChatMessage user_message(const std::string& prompt, size_t n_images) {
  ChatMessage m{"user", {}, {}};
  for (size_t i = 0; i < n_images; ++i) m.content.push_back(ContentPart::make_image());
  m.content.push_back(ContentPart::make_text(prompt));
  return m;
}

GenerateRequest make_request(const std::string& prompt, const std::vector<const EvalImage*>& images, int max_tokens) {
  GenerateRequest req;
  req.messages.push_back(user_message(prompt, images.size()));
  for (auto* im : images) req.images.push_back(im->decoded);
  req.max_tokens = max_tokens;
  req.sampling.temperature = 0;  // greedy: runs are repeatable and comparable
  return req;
}

// One request at a time through Engine::generate (which reports the per-stage timings).
class EngineBackend : public Backend {
 public:
  EngineBackend(std::unique_ptr<Engine> e, std::string device) : engine_(std::move(e)), device_(std::move(device)) {}
  AskResult ask(const std::string& prompt, const std::vector<const EvalImage*>& images, int max_tokens) override {
    std::lock_guard<std::mutex> lock(mu_);
    AskResult r;
    GenerateRequest req = make_request(prompt, images, max_tokens);
    const auto t0 = Clock::now();
    auto res = engine_->generate(req, [&](const GeneratedToken&, const std::string&) {
      if (r.ttft_ms < 0) r.ttft_ms = ms_between(t0, Clock::now());
      return true;
    });
    r.total_ms = ms_between(t0, Clock::now());
    if (!res) {
      r.error = res.message();
      return r;
    }
    r.text = res->text;
    r.finish_reason = res->finish_reason;
    r.prompt_tokens = int64_t(res->prompt_ids.size());
    r.completion_tokens = int64_t(res->tokens.size());
    r.has_timings = true;
    r.timings = res->timings;
    return r;
  }
  std::string model_name() const override { return engine_->model_dir(); }
  std::string target() const override { return "in-process (" + device_ + ")"; }

 private:
  std::mutex mu_;
  std::unique_ptr<Engine> engine_;
  std::string device_;
};

// Several requests at once through the batching EngineLoop, as the server runs them.
class LoopBackend : public Backend {
 public:
  LoopBackend(std::unique_ptr<EngineLoop> l, std::string dir, std::string device)
      : loop_(std::move(l)), dir_(std::move(dir)), device_(std::move(device)) {}
  AskResult ask(const std::string& prompt, const std::vector<const EvalImage*>& images, int max_tokens) override {
    AskResult r;
    const auto t0 = Clock::now();
    auto prep = loop_->prepare(make_request(prompt, images, max_tokens));
    if (!prep) {
      r.error = prep.message();
      return r;
    }
    Submitted sub = loop_->submit(std::move(*prep));
    if (sub.code != SubmitCode::kOk) {
      r.error = sub.message.empty() ? "the engine refused the request" : sub.message;
      return r;
    }
    for (;;) {
      RequestEvent ev;
      if (!sub.channel->pop(ev, std::chrono::milliseconds(1000))) continue;
      if (ev.kind == RequestEvent::Kind::kToken) {
        if (r.ttft_ms < 0) r.ttft_ms = ms_between(t0, Clock::now());
        r.text += ev.delta;
      } else if (ev.kind == RequestEvent::Kind::kDone) {
        r.finish_reason = ev.finish_reason;
        r.prompt_tokens = ev.prompt_tokens;
        r.completion_tokens = ev.completion_tokens;
        break;
      } else {
        r.error = ev.error;
        break;
      }
    }
    r.total_ms = ms_between(t0, Clock::now());
    return r;
  }
  std::string model_name() const override { return dir_; }
  std::string target() const override { return "in-process (" + device_ + ", batched)"; }

 private:
  std::unique_ptr<EngineLoop> loop_;
  std::string dir_, device_;
};

class HttpBackend : public Backend {
 public:
  HttpBackend(HttpUrl chat, std::string shown, std::string key, std::string model, int timeout_s)
      : chat_(std::move(chat)), shown_(std::move(shown)), key_(std::move(key)), model_(std::move(model)),
        timeout_s_(timeout_s) {}

  AskResult ask(const std::string& prompt, const std::vector<const EvalImage*>& images, int max_tokens) override {
    AskResult r;
    json content = json::array();
    for (auto* im : images)
      content.push_back({{"type", "image_url"},
                         {"image_url", {{"url", "data:" + im->mime + ";base64," + base64_encode(im->bytes)}}}});
    content.push_back({{"type", "text"}, {"text", prompt}});
    json body = {{"messages", json::array({{{"role", "user"}, {"content", content}}})},
                 {"max_tokens", max_tokens},
                 {"temperature", 0},
                 {"stream", true},
                 {"stream_options", {{"include_usage", true}}}};
    if (!model_.empty()) body["model"] = model_;
    std::vector<std::pair<std::string, std::string>> headers = {{"Content-Type", "application/json"},
                                                                {"Accept", "text/event-stream"}};
    if (!key_.empty()) headers.push_back({"Authorization", "Bearer " + key_});
    SseReader sse;
    bool done = false;
    const auto t0 = Clock::now();
    auto on_event = [&](const std::string& data) {
      if (data == "[DONE]") {
        done = true;
        return false;
      }
      json j = json::parse(data, nullptr, false);
      if (j.is_discarded()) return true;
      if (j.contains("error")) {
        r.error = j["error"].is_object() && j["error"].contains("message") ? j["error"]["message"].dump() : j["error"].dump();
        return false;
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        r.prompt_tokens = j["usage"].value("prompt_tokens", int64_t(0));
        r.completion_tokens = j["usage"].value("completion_tokens", int64_t(0));
      }
      if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
        const json& c = j["choices"][0];
        if (c.contains("delta") && c["delta"].is_object()) {
          const json& d = c["delta"];
          for (const char* k : {"content", "reasoning_content"})
            if (d.contains(k) && d[k].is_string() && !d[k].get<std::string>().empty()) {
              if (r.ttft_ms < 0) r.ttft_ms = ms_between(t0, Clock::now());
              if (std::string(k) == "content") r.text += d[k].get<std::string>();
            }
        }
        if (c.contains("finish_reason") && c["finish_reason"].is_string()) r.finish_reason = c["finish_reason"];
      }
      return true;
    };
    auto reply = http_call(chat_, "POST", body.dump(), headers,
                           [&](std::string_view piece) { return sse.feed(piece, on_event); }, timeout_s_);
    r.total_ms = ms_between(t0, Clock::now());
    if (!reply) {
      r.error = reply.message();
    } else if (reply->status / 100 != 2) {
      json e = json::parse(reply->body, nullptr, false);
      std::string msg = !e.is_discarded() && e.contains("error") && e["error"].is_object() && e["error"].contains("message")
                            ? e["error"]["message"].get<std::string>()
                            : reply->body.substr(0, 300);
      r.error = "HTTP " + std::to_string(reply->status) + ": " + msg;
    } else if (!done && r.error.empty() && r.finish_reason.empty()) {
      r.error = "the stream ended without [DONE]";
    }
    return r;
  }
  std::string model_name() const override { return model_; }
  std::string target() const override { return shown_; }

 private:
  HttpUrl chat_;
  std::string shown_, key_, model_;
  int timeout_s_;
};

}  // namespace

Result<EvalImage> load_eval_image(const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes) return make_error("cannot read image %s: %s", path.c_str(), bytes.message().c_str());
  auto img = decode_image(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size());
  if (!img) return make_error("image %s: %s", path.c_str(), img.message().c_str());
  EvalImage e;
  e.mime = sniff_mime(*bytes);
  e.bytes = std::move(*bytes);
  e.decoded = std::move(*img);
  return e;
}

EvalImage blank_like(const EvalImage& img) {
  EvalImage b;
  const int w = img.decoded.width, h = img.decoded.height;
  b.mime = "image/png";
  b.bytes = encode_png_gray(w, h, 128);
  b.decoded.width = w;
  b.decoded.height = h;
  b.decoded.rgb.assign(size_t(w) * size_t(h) * 3, 128);
  return b;
}

// 8-bit grayscale PNG with stored (uncompressed) deflate blocks: no zlib needed.
std::string encode_png_gray(int width, int height, uint8_t value) {
  std::string raw;
  raw.reserve(size_t(height) * (size_t(width) + 1));
  for (int y = 0; y < height; ++y) {
    raw += char(0);  // filter: none
    raw.append(size_t(width), char(value));
  }
  std::string z = "\x78\x01";
  for (size_t off = 0; off < raw.size() || off == 0;) {
    const size_t n = std::min<size_t>(65535, raw.size() - off);
    const bool last = off + n >= raw.size();
    z += char(last ? 1 : 0);
    z += char(n & 0xFF);
    z += char(n >> 8);
    z += char(~n & 0xFF);
    z += char((~n >> 8) & 0xFF);
    z.append(raw, off, n);
    off += n;
    if (last) break;
  }
  uint32_t a = 1, b = 0;
  for (unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  put_be32(z, (b << 16) | a);
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put_be32(ihdr, uint32_t(width));
  put_be32(ihdr, uint32_t(height));
  ihdr += std::string("\x08\x00\x00\x00\x00", 5);  // 8-bit gray, deflate, adaptive filter, no interlace
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", z);
  put_chunk(png, "IEND", "");
  return png;
}

std::string base64_encode(std::string_view in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  o.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    o += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    o += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    o += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return o;
}

Result<std::unique_ptr<Backend>> make_engine_backend(const std::string& dir, const std::string& device,
                                                     int concurrency) {
  const bool cuda = device == "cuda" || (device == "auto" && cuda_available());
  if (device != "cpu" && device != "cuda" && device != "auto")
    return make_error("unknown device \"%s\" (cpu, cuda, auto)", device.c_str());
  const std::string dev = cuda ? "cuda" : "cpu";
  if (concurrency <= 1) {
    EngineOptions eo;
    eo.device = dev;
    auto e = Engine::load(dir, eo);
    if (!e) return Error{e.message()};
    return std::unique_ptr<Backend>(new EngineBackend(std::move(*e), dev));
  }
  if (!is_directory(dir)) return make_error("model folder %s does not exist", dir.c_str());
  auto tok = Tokenizer::load(dir + "/tokenizer.json");
  if (!tok) return Error{tok.message()};
  auto runner = cuda ? load_cuda_runner(dir) : load_cpu_runner(dir);
  if (!runner) return Error{runner.message()};
  EngineLoopOptions lo;
  lo.max_running = concurrency;
  lo.max_queue = std::max(256, concurrency * 2);
  auto loop = EngineLoop::start(std::move(*runner), std::move(*tok), dir, lo);
  if (!loop) return Error{loop.message()};
  return std::unique_ptr<Backend>(new LoopBackend(std::move(*loop), dir, dev));
}

Result<std::unique_ptr<Backend>> make_http_backend(const std::string& url, const std::string& api_key,
                                                   const std::string& model, int timeout_s) {
  auto u = parse_http_url(url);
  if (!u) return Error{u.message()};
  auto ends = [](const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  std::string p = u->path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (p == "/") p.clear();
  std::string base;  // ".../v1"
  if (ends(p, "/chat/completions")) base = p.substr(0, p.size() - 17);
  else if (ends(p, "/v1")) base = p;
  else base = p + "/v1";
  HttpUrl chat = *u, models = *u;
  chat.path = base + "/chat/completions";
  models.path = base + "/models";
  std::string name = model;
  std::vector<std::pair<std::string, std::string>> headers;
  if (!api_key.empty()) headers.push_back({"Authorization", "Bearer " + api_key});
  if (name.empty()) {
    auto r = http_call(models, "GET", "", headers, {}, 30);
    if (!r) return Error{r.message()};
    if (r->status == 401 || r->status == 403)
      return make_error("%s: HTTP %d (check --api-key)", url.c_str(), r->status);
    json j = json::parse(r->body, nullptr, false);
    if (r->status == 200 && !j.is_discarded() && j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
        j["data"][0].contains("id") && j["data"][0]["id"].is_string())
      name = j["data"][0]["id"].get<std::string>();
  }
  const std::string shown = "http://" + u->host + ":" + std::to_string(u->port) + chat.path;
  return std::unique_ptr<Backend>(new HttpBackend(chat, shown, api_key, name, timeout_s));
}

}  // namespace ost::eval
