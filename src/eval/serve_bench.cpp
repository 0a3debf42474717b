#include "eval/serve_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include "core/file_util.h"
#include "eval/backend.h"
#include "eval/http_client.h"
#include "eval/synth_image.h"

namespace ost::eval {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

uint64_t mix(uint64_t x) {  // splitmix64 finalizer: seeds -> independent streams
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

double unit(uint64_t& s) {  // (0, 1]
  s = mix(s);
  return double((s >> 11) + 1) / double(1ull << 53);
}

// Common words that are one token each with their leading space (exactly so in the Qwen3
// vocabulary, a test checks it; nearly so in other English BPE vocabularies), so a padded
// question has as many tokens as words.
const char* const kWords[] = {
    "the",    "shelf",  "store", "price", "label", "box",    "red",    "blue",   "green", "left",   "right",
    "top",    "bottom", "row",   "item",  "brand", "sale",   "new",    "old",    "small", "large",  "bottle",
    "can",    "pack",   "milk",  "bread", "water", "juice",  "coffee", "tea",    "rice",  "sugar",  "salt",
    "oil",    "soap",   "paper", "fruit", "apple", "orange", "lemon",  "bag",    "card",  "tag",    "sign",
    "floor",  "door",   "light", "front", "back",  "next",   "near",   "under",  "over",  "white",  "black",
    "yellow", "brown",  "gray",  "half",  "full",  "empty",  "open",   "closed", "first", "second", "third",
    "last",   "each",   "every", "some",  "many",  "few",    "more",   "less",   "same",  "other",  "shown",
    "seen",   "placed", "stock", "count", "total", "cost",   "deal",   "offer",  "week",  "day",    "time",
    "size",   "color",  "shape", "line",  "side",  "end",    "part",   "set",    "kind",  "type"};
constexpr int kNumWords = int(sizeof(kWords) / sizeof(kWords[0]));

// Store-shelf questions with their length in Qwen3 tokens.
struct Question {
  const char* text;
  int tokens;
};
const Question kQuestions[] = {
    {"How many facings of each product are on the shelf, and which price labels are missing?", 19},
    {"List the products you can see, shelf by shelf, from left to right.", 16},
    {"Is any shelf empty or out of stock? Answer with the shelf number and the gap's position.", 20},
    {"Which brand has the most facings, and is its price label readable?", 15},
    {"Describe this photo of a store shelf in detail.", 10}};

std::string now_iso_utc() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

std::string mime_of(const std::string& bytes) {
  if (bytes.size() >= 8 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) return "image/png";
  if (bytes.size() >= 3 && uint8_t(bytes[0]) == 0xFF && uint8_t(bytes[1]) == 0xD8) return "image/jpeg";
  if (bytes.size() >= 12 && bytes.compare(0, 4, "RIFF") == 0 && bytes.compare(8, 4, "WEBP") == 0)
    return "image/webp";
  return "";
}

// The routes of an OpenAI-compatible base URL.
struct Routes {
  HttpUrl chat, models;
  std::string shown;
};

Result<Routes> routes_of(const std::string& url) {
  auto u = parse_http_url(url);
  if (!u) return Error{u.message()};
  std::string p = u->path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (p == "/") p.clear();
  auto ends = [&](const std::string& suf) {
    return p.size() >= suf.size() && p.compare(p.size() - suf.size(), suf.size(), suf) == 0;
  };
  std::string base;  // ".../v1"
  if (ends("/chat/completions"))
    base = p.substr(0, p.size() - 17);
  else if (ends("/v1"))
    base = p;
  else
    base = p + "/v1";
  Routes r{*u, *u, ""};
  r.chat.path = base + "/chat/completions";
  r.models.path = base + "/models";
  const bool v6 = u->host.find(':') != std::string::npos;
  r.shown = "http://" + (v6 ? "[" + u->host + "]" : u->host) + ":" + std::to_string(u->port) + r.chat.path;
  return r;
}

// The encoded images each request carries.
Result<std::vector<std::string>> folder_images(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return make_error("--images %s is not a folder", dir.c_str());
  std::vector<std::string> paths;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    std::string ext = e.path().extension().string();
    for (auto& c : ext) c = char(std::tolower(uint8_t(c)));
    if (ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp")
      paths.push_back(e.path().string());
  }
  if (ec) return make_error("cannot list %s: %s", dir.c_str(), ec.message().c_str());
  std::sort(paths.begin(), paths.end());
  if (paths.empty()) return make_error("--images %s holds no .jpg, .png or .webp file", dir.c_str());
  std::vector<std::string> urls;
  for (auto& p : paths) {
    auto bytes = read_file(p);
    if (!bytes) return Error{bytes.message()};
    const std::string mime = mime_of(*bytes);
    if (mime.empty()) return make_error("%s is not a JPEG, PNG or WebP file", p.c_str());
    urls.push_back("data:" + mime + ";base64," + base64_encode(*bytes));
  }
  return urls;
}

std::string synthetic_url(const ServeBenchOptions& o, uint64_t seed) {
  Image img = synthetic_photo(o.image_width, o.image_height, seed);
  const bool png = o.image_format == "png";
  auto bytes = png ? encode_png(img) : encode_jpeg(img, 90);
  if (!bytes) return "";
  return std::string(png ? "data:image/png;base64," : "data:image/jpeg;base64,") + base64_encode(*bytes);
}

// Every request body, built before the clock starts. Synthetic images differ per request so an
// endpoint's image and prefix caches see what a stream of new photos would give them.
Result<std::vector<std::string>> build_bodies(const ServeBenchOptions& o, const std::string& model) {
  const int n = o.requests;
  const bool with_images = o.images_per_request > 0 && (!o.images_dir.empty() || o.image_width > 0);
  std::vector<std::string> folder;
  if (with_images && !o.images_dir.empty()) {
    auto f = folder_images(o.images_dir);
    if (!f) return Error{f.message()};
    folder = std::move(*f);
  }
  std::vector<std::string> bodies(static_cast<size_t>(n));
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  auto work = [&] {
    for (int i; (i = next.fetch_add(1)) < n && !failed;) {
      json content = json::array();
      if (with_images)
        for (int k = 0; k < o.images_per_request; ++k) {
          std::string url = folder.empty()
                                ? synthetic_url(o, mix(o.seed ^ mix(uint64_t(i) * 131 + uint64_t(k))))
                                : folder[size_t(i * o.images_per_request + k) % folder.size()];
          if (url.empty()) failed = true;
          content.push_back({{"type", "image_url"}, {"image_url", {{"url", std::move(url)}}}});
        }
      content.push_back(
          {{"type", "text"}, {"text", padded_question(o.prompt_tokens, mix(o.seed + 7919 * uint64_t(i)))}});
      json body = {{"messages", json::array({{{"role", "user"}, {"content", std::move(content)}}})},
                   {"max_tokens", o.max_tokens},
                   {"temperature", o.temperature},
                   {"stream", true},
                   {"stream_options", {{"include_usage", true}}}};
      if (!model.empty()) body["model"] = model;
      if (o.ignore_eos) body["ignore_eos"] = true;
      if (o.temperature > 0) body["seed"] = i;
      if (o.top_p >= 0) body["top_p"] = o.top_p;
      if (o.top_k >= 0) body["top_k"] = o.top_k;
      bodies[size_t(i)] = body.dump();
    }
  };
  const int threads = std::clamp(int(std::thread::hardware_concurrency()), 1, 16);
  std::vector<std::thread> ts;
  for (int t = 1; t < threads && n > 8; ++t) ts.emplace_back(work);
  work();
  for (auto& t : ts) t.join();
  if (failed)
    return make_error("cannot encode a %dx%d %s image", o.image_width, o.image_height,
                      o.image_format.c_str());
  return bodies;
}

std::string error_message(const std::string& body) {
  json e = json::parse(body, nullptr, false);
  if (!e.is_discarded() && e.is_object() && e.contains("error")) {
    const json& err = e["error"];
    if (err.is_object() && err.contains("message") && err["message"].is_string()) return err["message"];
    if (err.is_string()) return err;
  }
  return body.substr(0, 200);
}

// One streamed request, timed.
void run_one(const HttpUrl& chat, const std::vector<std::pair<std::string, std::string>>& headers,
             const std::string& body, int timeout_s, Clock::time_point t0, RequestRecord& rec) {
  auto since = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  const Clock::time_point sent = Clock::now();
  rec.start_s = since(t0, sent) / 1000;
  Clock::time_point last{};
  int64_t chunks = 0;
  bool done = false;
  std::string finish;
  SseReader sse;
  auto on_event = [&](const std::string& data) {
    if (data == "[DONE]") {
      done = true;
      return false;
    }
    json j = json::parse(data, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return true;
    if (j.contains("error")) {
      rec.error_kind = "stream";
      rec.error = j["error"].is_object() && j["error"].contains("message") ? j["error"]["message"].dump()
                                                                           : j["error"].dump();
      return false;
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      rec.prompt_tokens = j["usage"].value("prompt_tokens", int64_t(0));
      rec.completion_tokens = j["usage"].value("completion_tokens", int64_t(0));
      rec.usage_reported = true;
    }
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return true;
    const json& c = j["choices"][0];
    if (c.contains("delta") && c["delta"].is_object()) {
      const json& d = c["delta"];
      bool text = false;
      for (const char* k : {"content", "reasoning_content", "reasoning"})
        text |= d.contains(k) && d[k].is_string() && !d[k].get_ref<const std::string&>().empty();
      if (text) {
        const Clock::time_point now = Clock::now();
        if (chunks == 0)
          rec.ttft_ms = since(sent, now);
        else
          rec.itl_ms.push_back(since(last, now));
        last = now;
        ++chunks;
      }
    }
    if (c.contains("finish_reason") && c["finish_reason"].is_string()) finish = c["finish_reason"];
    return true;
  };
  auto reply = http_call(
      chat, "POST", body, headers, [&](std::string_view piece) { return sse.feed(piece, on_event); },
      timeout_s);
  rec.e2e_ms = since(sent, Clock::now());
  if (!reply) {
    const bool timeout = reply.message().find("timed out") != std::string::npos;
    rec.error_kind = timeout ? "timeout" : "connect";
    rec.error = reply.message();
  } else {
    rec.status = reply->status;
    if (reply->status != 200) {
      rec.error_kind = std::to_string(reply->status);
      rec.error = error_message(reply->body);
    } else if (rec.error_kind.empty() && !done && finish.empty()) {
      rec.error_kind = "incomplete";
      rec.error = "the stream ended without a finish_reason or [DONE]";
    }
  }
  if (!rec.usage_reported) rec.completion_tokens = chunks;
  if (rec.ok() && rec.ttft_ms >= 0 && rec.completion_tokens >= 2)
    rec.tpot_ms = (rec.e2e_ms - rec.ttft_ms) / double(rec.completion_tokens - 1);
}

}  // namespace

std::vector<double> poisson_arrivals(int n, double rate, uint64_t seed) {
  std::vector<double> t(size_t(std::max(0, n)), 0.0);
  if (rate <= 0) return t;
  uint64_t s = mix(seed ^ 0x5EEDull);
  double now = 0;
  for (auto& x : t) {
    x = now;  // the first request goes at 0: the run starts with it
    now += -std::log(unit(s)) / rate;
  }
  return t;
}

std::string padded_question(int tokens, uint64_t seed) {
  uint64_t s = mix(seed);
  const Question& q = kQuestions[mix(s) % (sizeof(kQuestions) / sizeof(kQuestions[0]))];
  std::string text = q.text;
  // The rest is a context line of random words: " Context:" is 2 tokens, each word one.
  const int words = tokens - q.tokens - 2;
  if (words <= 0) return text;
  text += " Context:";
  for (int i = 0; i < words; ++i) {
    s = mix(s);
    text += ' ';
    text += kWords[s % kNumWords];
  }
  return text;
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const double pos = std::clamp(q, 0.0, 1.0) * double(sorted.size() - 1);
  const size_t lo = size_t(pos);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - double(lo));
}

Result<ServeBenchResult> run_serve_bench(const ServeBenchOptions& opt, const ProgressFn& progress) {
  if (opt.requests < 1) return make_error("--requests must be at least 1");
  if (opt.rate < 0 || !std::isfinite(opt.rate)) return make_error("--rate must be positive");
  if (opt.rate == 0 && opt.concurrency < 1) return make_error("give --rate R or --concurrency C");
  if (opt.image_format != "jpeg" && opt.image_format != "png")
    return make_error("--image-format must be jpeg or png");
  if (opt.image_width < 0 || opt.image_height < 0 || (opt.image_width == 0) != (opt.image_height == 0))
    return make_error("--image-size must be WxH (or 0 for text only)");
  auto routes = routes_of(opt.url);
  if (!routes) return Error{routes.message()};

  ServeBenchResult res;
  res.options = opt;
  res.target = routes->shown;
  std::vector<std::pair<std::string, std::string>> headers = {{"Content-Type", "application/json"},
                                                              {"Accept", "text/event-stream"}};
  if (!opt.api_key.empty()) headers.push_back({"Authorization", "Bearer " + opt.api_key});

  res.model = opt.model;
  if (res.model.empty()) {
    auto r = http_call(routes->models, "GET", "", headers, {}, 30);
    json j = r && r->status == 200 ? json::parse(r->body, nullptr, false) : json();
    if (j.is_object() && j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
        j["data"][0].is_object() && j["data"][0].contains("id") && j["data"][0]["id"].is_string())
      res.model = j["data"][0]["id"];
    else
      res.warnings.push_back("GET " + routes->models.path + " gave no model (" +
                             (r ? "HTTP " + std::to_string(r->status) : r.message()) +
                             "): requests are sent without \"model\"");
  }

  const auto p0 = Clock::now();
  auto bodies = build_bodies(opt, res.model);
  if (!bodies) return Error{bodies.message()};
  res.prepare_s = std::chrono::duration<double>(Clock::now() - p0).count();
  for (auto& b : *bodies) res.request_bytes += int64_t(b.size());

  const int n = opt.requests;
  const std::vector<double> arrivals = poisson_arrivals(n, opt.rate, opt.seed);
  const int cap = opt.concurrency > 0 ? opt.concurrency : n;
  res.records.resize(size_t(n));
  res.started_at = now_iso_utc();

  std::mutex mu;
  std::condition_variable cv;
  std::deque<int> ready;
  int idle = 0, in_flight = 0, done = 0, failed = 0;
  bool closed = false;
  std::vector<std::thread> workers;
  const Clock::time_point t0 = Clock::now();
  auto report = [&] {  // with mu held
    if (!progress) return;
    progress({n, done, failed, in_flight, std::chrono::duration<double>(Clock::now() - t0).count()});
  };
  auto worker = [&] {
    std::unique_lock<std::mutex> l(mu);
    for (;;) {
      ++idle;
      cv.wait(l, [&] { return !ready.empty() || closed; });
      --idle;
      if (ready.empty()) return;
      const int i = ready.front();
      ready.pop_front();
      ++in_flight;
      res.max_in_flight = std::max(res.max_in_flight, in_flight);
      l.unlock();
      RequestRecord& rec = res.records[size_t(i)];
      rec.index = i;
      rec.scheduled_s = arrivals[size_t(i)];
      run_one(routes->chat, headers, (*bodies)[size_t(i)], opt.timeout_s, t0, rec);
      l.lock();
      --in_flight;
      ++done;
      failed += rec.ok() ? 0 : 1;
      report();
    }
  };
  for (int i = 0; i < n; ++i) {
    std::this_thread::sleep_until(
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(arrivals[size_t(i)])));
    std::lock_guard<std::mutex> l(mu);
    ready.push_back(i);
    // A new worker when every idle one is already spoken for (up to the cap).
    if (int(ready.size()) > idle && int(workers.size()) < cap) workers.emplace_back(worker);
    cv.notify_one();
    report();
  }
  {
    std::lock_guard<std::mutex> l(mu);
    closed = true;
  }
  cv.notify_all();
  for (auto& w : workers) w.join();
  double end = 0;
  for (auto& r : res.records) end = std::max(end, r.start_s + r.e2e_ms / 1000);
  res.duration_s = end;
  return res;
}

}  // namespace ost::eval
