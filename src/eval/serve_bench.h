// A load generator for any OpenAI-compatible chat endpoint (ours, vLLM, SGLang, llama.cpp
// server): seeded Poisson arrivals or a fixed number of requests in flight, each a streamed
// chat completion with images as base64 data URLs and a question of about N tokens. Every
// request is timed from the client's side (TTFT, TPOT, inter-token gaps, end to end) and the
// run is summarized (percentiles, throughput, goodput under SLOs, errors by status) as JSON,
// a console table and a self-contained HTML page with inline SVG charts.
//
// Threads: the calling thread dispatches arrivals; worker threads (at most the concurrency
// cap) each run one blocking request at a time. The records are written only by their worker.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/status.h"

namespace ost::eval {

struct ServeBenchOptions {
  std::string url;      // http://host:port, .../v1 or .../v1/chat/completions
  std::string api_key;  // "" : no Authorization header
  std::string model;    // "" : the first id of GET /v1/models (omitted from requests if none)
  double rate = 0;      // requests/s, Poisson arrivals (seeded); 0: closed loop
  int concurrency = 0;  // closed loop: requests in flight; with a rate: the cap (0: no cap)
  int requests = 100;
  int image_width = 512, image_height = 512;  // synthetic images; 0: text-only requests
  std::string image_format = "jpeg";          // jpeg | png
  std::string images_dir;                     // the images of this folder instead (cycled)
  int images_per_request = 1;
  int prompt_tokens = 64;  // the question's text, about this many tokens
  int max_tokens = 64;
  bool ignore_eos = false;                  // ask for exactly max_tokens (vLLM, SGLang, llama.cpp know it)
  double temperature = 0;  // > 0: sampled requests, request i with seed i
  double top_p = -1;       // < 0: not sent
  int top_k = -1;          // < 0: not sent
  double slo_ttft_ms = 0, slo_tpot_ms = 0;  // goodput bounds; 0: none
  uint64_t seed = 0;
  int timeout_s = 600;  // per read on a request's connection
};

// One request as the client saw it. Times in ms; start/scheduled in s from the run's start.
struct RequestRecord {
  int index = 0;
  double scheduled_s = 0;  // arrival time
  double start_s = 0;      // when it was sent (later than scheduled when the cap held it back)
  double ttft_ms = -1;     // to the first non-empty content delta; -1: none came
  double tpot_ms = -1;     // (e2e - ttft) / (completion_tokens - 1); -1 below two tokens
  double e2e_ms = 0;
  std::vector<double> itl_ms;  // gaps between content chunks
  int64_t prompt_tokens = 0, completion_tokens = 0;
  bool usage_reported = false;  // else completion_tokens counts content chunks
  int status = 0;               // HTTP status; 0: no answer
  std::string error_kind;       // "" ok; "401", "429", ...; "connect", "timeout", "stream", "incomplete"
  std::string error;
  bool ok() const { return error_kind.empty(); }
};

struct ServeBenchResult {
  ServeBenchOptions options;
  std::string target;      // the chat completions URL
  std::string model;       // as sent ("" : not sent)
  std::string started_at;  // UTC, ISO 8601
  std::vector<std::string> warnings;
  int64_t request_bytes = 0;  // all request bodies
  double prepare_s = 0;       // building the requests (not part of the run)
  double duration_s = 0;      // first arrival to last answer
  int max_in_flight = 0;
  std::vector<RequestRecord> records;  // by index
};

struct BenchProgress {
  int total = 0, done = 0, failed = 0, in_flight = 0;
  double elapsed_s = 0;
};
using ProgressFn = std::function<void(const BenchProgress&)>;

// Sends every request and waits for all of them. Errors only for bad options or inputs; a
// failing endpoint gives records with errors.
Result<ServeBenchResult> run_serve_bench(const ServeBenchOptions& opt, const ProgressFn& progress = {});

// Building blocks, exposed for tests.
std::vector<double> poisson_arrivals(int n, double rate, uint64_t seed);  // seconds, ascending
std::string padded_question(int tokens, uint64_t seed);                   // ~1 token per word
// Linear interpolation between closest ranks (numpy's default); `sorted` ascending, q in [0, 1].
double percentile(const std::vector<double>& sorted, double q);

// The summary (config, counts, percentiles, throughput, goodput, errors, timeline) and the
// per-request records. The HTML and the console table are drawn from this JSON only, so a
// saved file can be rendered again.
nlohmann::json serve_bench_json(const ServeBenchResult& r);
std::string serve_bench_text(const nlohmann::json& j);
std::string serve_bench_html(const nlohmann::json& j);

}  // namespace ost::eval
