// ostrakon bench serve: load an OpenAI-compatible endpoint (ours or a peer's) with streamed
// image+text chat requests and report latency percentiles, throughput and goodput.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "core/file_util.h"
#include "eval/serve_bench.h"
#include "tools/args.h"
#include "tools/commands.h"

namespace ost::tools {

namespace {

const char* kUsage =
    "usage: ostrakon bench serve --url URL [--api-key KEY] [--model NAME]\n"
    "                            [--rate R | --concurrency C] [--requests N]\n"
    "                            [--image-size WxH | --images DIR] [--image-format jpeg|png] "
    "[--images-per-request K]\n"
    "                            [--prompt-tokens N] [--max-tokens N] [--ignore-eos]\n"
    "                            [--temperature T] [--top-p P] [--top-k K]\n"
    "                            [--slo-ttft-ms X] [--slo-tpot-ms Y] [--seed S] [--timeout S]\n"
    "                            [--json FILE] [--html FILE] [--no-progress]\n"
    "Sends N streamed chat completions (stream_options.include_usage) to URL (http://host:port, .../v1\n"
    "or .../v1/chat/completions): Poisson arrivals at R requests/s (seeded; --concurrency then caps the\n"
    "requests in flight) or C requests always in flight (default: --concurrency 8). Each request carries\n"
    "its own synthetic photo-like image (default 512x512 JPEG; --image-size 0 for text only) or the\n"
    "images of DIR in turn, and a question of about N tokens (default 64). Reports TTFT, TPOT,\n"
    "inter-token and end-to-end latency percentiles, request and token throughput, goodput within the\n"
    "SLOs and errors by HTTP status. Requests are greedy unless --temperature is given (then request i\n"
    "carries seed i, and --top-p / --top-k when given). Exit status: 0 when every request completed, 1 otherwise.\n";

int fail(const std::string& msg, int code) {
  std::fprintf(stderr, "bench serve: %s\n", msg.c_str());
  return code;
}

// "640x480" -> (640, 480); "0" -> (0, 0).
bool parse_size(const std::string& s, int& w, int& h) {
  if (s == "0") return w = h = 0, true;
  int n = 0;
  if (std::sscanf(s.c_str(), "%dx%d%n", &w, &h, &n) != 2 || n != int(s.size())) return false;
  return w > 0 && h > 0 && w <= 16384 && h <= 16384;
}

// One line on stderr: redrawn in place on a terminal, every 10% otherwise.
class ProgressBar {
 public:
  ProgressBar() : tty_(::isatty(2) != 0) {}
  void draw(const eval::BenchProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    const bool last = p.done == p.total;
    if (tty_) {
      if (!last && now - shown_ < std::chrono::milliseconds(100)) return;
    } else {
      const int decile = p.total ? p.done * 10 / p.total : 10;
      if (decile == decile_) return;
      decile_ = decile;
    }
    shown_ = now;
    const int width = 30, fill = p.total ? p.done * width / p.total : width;
    std::string bar(size_t(fill), '#');
    bar.resize(size_t(width), '.');
    std::fprintf(stderr, "%s[%s] %d/%d done, %d failed, %d in flight, %.1f s%s", tty_ ? "\r" : "",
                 bar.c_str(), p.done, p.total, p.failed, p.in_flight, p.elapsed_s, tty_ && !last ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  bool tty_;
  int decile_ = -1;
  std::chrono::steady_clock::time_point shown_{};
};

}  // namespace

int cmd_bench_serve(int argc, char** argv) {
  auto args = Args::parse(argc, argv,
                          {"url", "api-key", "model", "rate", "concurrency", "requests", "image-size",
                           "images", "image-format", "images-per-request", "prompt-tokens", "max-tokens",
                           "slo-ttft-ms", "slo-tpot-ms", "seed", "timeout", "json", "html", "temperature", "top-p",
                           "top-k"},
                          {"help", "ignore-eos", "no-progress"});
  if (!args) {
    std::fprintf(stderr, "%s", kUsage);
    return fail(args.message(), 2);
  }
  if (args->has("help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  if (!args->has("url")) {
    std::fprintf(stderr, "%s", kUsage);
    return fail("--url is required", 2);
  }
  if (args->has("image-size") && args->has("images"))
    return fail("give --image-size or --images, not both", 2);

  eval::ServeBenchOptions o;
  o.url = args->get("url");
  o.api_key = args->get("api-key");
  o.model = args->get("model");
  auto rate = args->get_double("rate", 0, 0, 1e6);
  auto conc = args->get_int("concurrency", args->has("rate") ? 0 : 8, 0, 100000);
  auto requests = args->get_int("requests", 100, 1, 10'000'000);
  auto per = args->get_int("images-per-request", 1, 0, 64);
  auto prompt = args->get_int("prompt-tokens", 64, 1, 1 << 20);
  auto max_tokens = args->get_int("max-tokens", 64, 1, 1 << 20);
  auto slo_ttft = args->get_double("slo-ttft-ms", 0, 0, 1e9);
  auto slo_tpot = args->get_double("slo-tpot-ms", 0, 0, 1e9);
  auto seed = args->get_int("seed", 0, 0, INT64_MAX);
  auto timeout = args->get_int("timeout", 600, 1, 86400);
  auto temperature = args->get_double("temperature", 0, 0, 100);
  auto top_p = args->get_double("top-p", 1, 0, 1);
  auto top_k = args->get_int("top-k", 0, 0, 1 << 20);
  for (const Status& s :
       {rate.status(), conc.status(), requests.status(), per.status(), prompt.status(), max_tokens.status(),
        slo_ttft.status(), slo_tpot.status(), seed.status(), timeout.status(), temperature.status(), top_p.status(),
        top_k.status()})
    if (!s) return fail(s.message(), 2);
  if (args->has("rate") && *rate <= 0) return fail("--rate must be positive", 2);
  if (!args->has("rate") && *conc < 1) return fail("--concurrency must be at least 1", 2);
  o.rate = *rate;
  o.concurrency = int(*conc);
  o.requests = int(*requests);
  o.images_per_request = int(*per);
  o.prompt_tokens = int(*prompt);
  o.max_tokens = int(*max_tokens);
  o.slo_ttft_ms = *slo_ttft;
  o.slo_tpot_ms = *slo_tpot;
  o.seed = uint64_t(*seed);
  o.timeout_s = int(*timeout);
  o.ignore_eos = args->has("ignore-eos");
  o.temperature = *temperature;
  o.top_p = args->has("top-p") ? *top_p : -1;
  o.top_k = args->has("top-k") ? int(*top_k) : -1;
  o.images_dir = args->get("images");
  o.image_format = args->get("image-format", "jpeg");
  if (args->has("image-size") && !parse_size(args->get("image-size"), o.image_width, o.image_height))
    return fail("--image-size must be WxH (for example 512x512) or 0", 2);

  ProgressBar bar;
  eval::ProgressFn progress;
  if (!args->has("no-progress")) progress = [&](const eval::BenchProgress& p) { bar.draw(p); };
  auto res = eval::run_serve_bench(o, progress);
  if (!res) return fail(res.message(), 2);
  const nlohmann::json j = eval::serve_bench_json(*res);
  std::printf("%s", eval::serve_bench_text(j).c_str());
  if (args->has("json")) {
    if (Status st = write_file(args->get("json"), j.dump(1) + "\n"); !st) return fail(st.message(), 1);
    std::printf("wrote %s\n", args->get("json").c_str());
  }
  if (args->has("html")) {
    if (Status st = write_file(args->get("html"), eval::serve_bench_html(j)); !st)
      return fail(st.message(), 1);
    std::printf("wrote %s\n", args->get("html").c_str());
  }
  return j["summary"]["failed"].get<int>() == 0 ? 0 : 1;
}

}  // namespace ost::tools
