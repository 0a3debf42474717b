// The serving load generator (ostrakon bench serve) against an in-process server with the demo
// model, and its building blocks: seeded arrivals, padded questions, synthetic photos.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "eval/serve_bench.h"
#include "eval/synth_image.h"
#include "test_server.h"
#include "tokenizer/tokenizer.h"
#include "vision/image.h"

namespace ost::testing {
namespace {

using nlohmann::json;

TEST(BenchServe, PoissonArrivalsAreSeededWithTheRequestedRate) {
  auto a = eval::poisson_arrivals(4000, 20.0, 1);
  EXPECT_EQ(a, eval::poisson_arrivals(4000, 20.0, 1));
  EXPECT_NE(a, eval::poisson_arrivals(4000, 20.0, 2));
  EXPECT_EQ(a[0], 0.0);
  for (size_t i = 1; i < a.size(); ++i) ASSERT_GT(a[i], a[i - 1]);
  // Mean gap 1/20 s; its standard error over 4000 gaps is 1.6%.
  EXPECT_NEAR(a.back() / double(a.size() - 1), 0.05, 0.05 * 0.08);
  // Exponential gaps: about 1/e of them are longer than the mean.
  int longer = 0;
  for (size_t i = 1; i < a.size(); ++i) longer += a[i] - a[i - 1] > 0.05;
  EXPECT_NEAR(double(longer) / double(a.size() - 1), std::exp(-1.0), 0.03);
  EXPECT_EQ(eval::poisson_arrivals(3, 0, 1), std::vector<double>(3, 0.0));  // closed loop: all at once
}

TEST(BenchServe, PercentilesInterpolateBetweenRanks) {
  const std::vector<double> v = {10, 20, 30, 40};
  EXPECT_DOUBLE_EQ(eval::percentile(v, 0), 10);
  EXPECT_DOUBLE_EQ(eval::percentile(v, 0.5), 25);
  EXPECT_DOUBLE_EQ(eval::percentile(v, 0.9), 37);
  EXPECT_DOUBLE_EQ(eval::percentile(v, 1), 40);
  EXPECT_DOUBLE_EQ(eval::percentile({7}, 0.99), 7);
  EXPECT_DOUBLE_EQ(eval::percentile({}, 0.5), 0);
}

TEST(BenchServe, PaddedQuestionHasAboutTheAskedTokens) {
  auto tok = Tokenizer::load(std::string(OST_ASSETS) + "/qwen3/tokenizer.json");
  ASSERT_TRUE(tok.is_ok()) << tok.message();
  for (int target : {32, 64, 256, 1024})
    for (uint64_t seed : {1, 2, 3}) {
      const std::string q = eval::padded_question(target, seed);
      // Exact with the Qwen3 tokenizer once the target exceeds the question.
      EXPECT_EQ(tok->encode(q).size(), size_t(target)) << q;
    }
  EXPECT_EQ(eval::padded_question(64, 5), eval::padded_question(64, 5));
  EXPECT_NE(eval::padded_question(64, 5), eval::padded_question(64, 6));
}

TEST(BenchServe, SyntheticPhotosAreDeterministicAndDecode) {
  const Image a = eval::synthetic_photo(96, 64, 11);
  EXPECT_EQ(a.rgb, eval::synthetic_photo(96, 64, 11).rgb);
  EXPECT_NE(a.rgb, eval::synthetic_photo(96, 64, 12).rgb);
  auto png = eval::encode_png(a);
  ASSERT_TRUE(png.is_ok()) << png.message();
  auto back = decode_image(reinterpret_cast<const uint8_t*>(png->data()), png->size());
  ASSERT_TRUE(back.is_ok()) << back.message();
  EXPECT_EQ(back->rgb, a.rgb);  // lossless
  const Image big = eval::synthetic_photo(320, 240, 3);
  auto jpg = eval::encode_jpeg(big, 90);
  ASSERT_TRUE(jpg.is_ok()) << jpg.message();
  auto dj = decode_image(reinterpret_cast<const uint8_t*>(jpg->data()), jpg->size());
  ASSERT_TRUE(dj.is_ok()) << dj.message();
  EXPECT_EQ(dj->width, 320);
  EXPECT_EQ(dj->height, 240);
  double err = 0;
  for (size_t i = 0; i < big.rgb.size(); ++i) err += std::abs(int(dj->rgb[i]) - int(big.rgb[i]));
  EXPECT_LT(err / double(big.rgb.size()), 8.0);
  // Photo-like, not flat: sensor noise and edges keep a q90 JPEG above 1 bit per pixel.
  EXPECT_GT(jpg->size() * 8, size_t(320 * 240));
}

// Every field the report promises, consistent with the per-request records.
void check_report(const json& j, int requests) {
  ASSERT_TRUE(j.is_object());
  for (const char* k : {"tool", "started_at", "config", "summary", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms",
                        "timeline", "requests", "warnings"})
    ASSERT_TRUE(j.contains(k)) << k;
  const json& s = j["summary"];
  for (const char* k :
       {"requests", "completed", "failed", "duration_s", "request_throughput", "output_token_throughput",
        "total_token_throughput", "goodput", "slo_attainment", "errors", "max_in_flight"})
    ASSERT_TRUE(s.contains(k)) << k;
  EXPECT_EQ(s["requests"], requests);
  EXPECT_EQ(s["completed"].get<int>() + s["failed"].get<int>(), requests);
  ASSERT_EQ(j["requests"].size(), size_t(requests));
  int failed = 0, errors = 0;
  int64_t completion = 0;
  size_t itl = 0;
  for (const json& r : j["requests"]) {
    if (!r["error_kind"].get<std::string>().empty()) {
      ++failed;
      continue;
    }
    completion += r["completion_tokens"].get<int64_t>();
    itl += r["itl_ms"].size();
    if (!r["ttft_ms"].is_null()) EXPECT_LE(r["ttft_ms"].get<double>(), r["e2e_ms"].get<double>());
    EXPECT_LE(r["scheduled_s"].get<double>(), r["start_s"].get<double>() + 1e-3);
  }
  for (auto& [k, v] : s["errors"].items()) errors += v["count"].get<int>();
  EXPECT_EQ(failed, s["failed"].get<int>());
  EXPECT_EQ(errors, failed);
  EXPECT_EQ(completion, s["completion_tokens_total"].get<int64_t>());
  EXPECT_EQ(j["itl_ms"]["count"].get<size_t>(), itl);
  EXPECT_EQ(j["e2e_ms"]["count"], s["completed"]);
  for (const char* m : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
    const json& p = j[m];
    if (p["count"].get<int>() == 0) continue;
    EXPECT_LE(p["min"].get<double>(), p["p50"].get<double>()) << m;
    EXPECT_LE(p["p50"].get<double>(), p["p90"].get<double>()) << m;
    EXPECT_LE(p["p90"].get<double>(), p["p99"].get<double>()) << m;
    EXPECT_LE(p["p99"].get<double>(), p["max"].get<double>()) << m;
    EXPECT_GE(p["mean"].get<double>(), p["min"].get<double>()) << m;
    EXPECT_LE(p["mean"].get<double>(), p["max"].get<double>()) << m;
  }
  if (s["completed"].get<int>() > 0) {
    EXPECT_GT(s["duration_s"].get<double>(), 0);
    EXPECT_NEAR(s["request_throughput"].get<double>(),
                s["completed"].get<double>() / s["duration_s"].get<double>(),
                0.02 * s["request_throughput"].get<double>() + 0.01);
  }
  EXPECT_LE(s["good_requests"].get<int>(), s["completed"].get<int>());
  // The timeline covers the run and sees every completed request's tokens.
  double tokens = 0;
  for (const json& b : j["timeline"])
    tokens += b["output_tokens_per_s"].get<double>() * j["timeline_bucket_s"].get<double>();
  EXPECT_NEAR(tokens, double(completion), 0.01 * double(completion) + 1);
}

TEST(BenchServe, AgainstTheDemoServer) {
  server::ApiServerOptions so;
  so.api_keys = {"bench-key"};
  TestServer s(so);
  eval::ServeBenchOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(s.port);
  o.api_key = "bench-key";
  o.concurrency = 3;
  o.requests = 6;
  o.image_width = 64, o.image_height = 48;
  o.prompt_tokens = 32;
  o.max_tokens = 4;
  o.slo_ttft_ms = 1e6, o.slo_tpot_ms = 1e6;  // every request is good
  o.seed = 9;
  auto r = eval::run_serve_bench(o);
  ASSERT_TRUE(r.is_ok()) << r.message();
  EXPECT_EQ(r->model, server::kDemoModelName);  // asked from /v1/models
  EXPECT_TRUE(r->warnings.empty());
  const json j = eval::serve_bench_json(*r);
  check_report(j, 6);
  const json& sm = j["summary"];
  EXPECT_EQ(sm["completed"], 6) << sm.dump();
  EXPECT_TRUE(sm["errors"].empty());
  EXPECT_TRUE(sm["usage_reported"].get<bool>());
  EXPECT_LE(sm["max_in_flight"].get<int>(), 3);
  EXPECT_EQ(sm["good_requests"], 6);
  EXPECT_DOUBLE_EQ(sm["goodput"].get<double>(), sm["request_throughput"].get<double>());
  EXPECT_EQ(j["ttft_ms"]["count"], 6);
  for (const json& q : j["requests"]) {
    EXPECT_EQ(q["status"], 200);
    EXPECT_GE(q["completion_tokens"].get<int>(), 1);
    EXPECT_LE(q["completion_tokens"].get<int>(), 4);
    EXPECT_GT(q["prompt_tokens"].get<int>(), 32);  // the question, the image and the template
  }
  // Each request carried its own picture: no vision-cache hits.
  EXPECT_EQ(s.metric("ost_image_cache_queries_total"), 6);
  EXPECT_EQ(s.metric("ost_image_cache_hits_total"), 0);
  const std::string html = eval::serve_bench_html(j);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("polyline"), std::string::npos);  // the CDFs
  EXPECT_EQ(html.find("<script"), std::string::npos);   // self-contained and static
  EXPECT_NE(eval::serve_bench_text(j).find("6 / 6"), std::string::npos);

  // Poisson arrivals follow the seeded schedule; PNG images; text survives a JSON round trip.
  o.concurrency = 0;
  o.rate = 40;
  o.requests = 5;
  o.image_format = "png";
  auto p = eval::run_serve_bench(o);
  ASSERT_TRUE(p.is_ok()) << p.message();
  const json pj = json::parse(eval::serve_bench_json(*p).dump());
  check_report(pj, 5);
  EXPECT_EQ(pj["config"]["mode"], "poisson");
  const auto sched = eval::poisson_arrivals(5, 40, 9);
  for (int i = 0; i < 5; ++i)
    EXPECT_NEAR(pj["requests"][i]["scheduled_s"].get<double>(), sched[size_t(i)], 1e-3);
  EXPECT_EQ(pj["summary"]["completed"], 5);
}

TEST(BenchServe, WrongKeyIsCountedAsErrors) {
  server::ApiServerOptions so;
  so.api_keys = {"bench-key"};
  TestServer s(so);
  eval::ServeBenchOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(s.port) + "/v1/chat/completions";
  o.api_key = "not-the-key";
  o.concurrency = 2;
  o.requests = 4;
  o.image_width = o.image_height = 0;  // text only
  o.max_tokens = 4;
  auto r = eval::run_serve_bench(o);
  ASSERT_TRUE(r.is_ok()) << r.message();
  EXPECT_EQ(r->warnings.size(), 1u);  // /v1/models refused too: no model name
  const json j = eval::serve_bench_json(*r);
  check_report(j, 4);
  EXPECT_EQ(j["summary"]["completed"], 0);
  EXPECT_EQ(j["summary"]["failed"], 4);
  EXPECT_EQ(j["summary"]["errors"]["401"]["count"], 4);
  EXPECT_EQ(j["summary"]["errors"]["401"]["example"], "invalid API key");
  EXPECT_EQ(j["summary"]["goodput"], 0.0);
  EXPECT_EQ(j["ttft_ms"]["count"], 0);
  auto m = http_request(s.port, "GET", "/metrics");
  EXPECT_NE(m.body.find("ost_requests_total{route=\"/v1/chat/completions\",status=\"401\"} 4"),
            std::string::npos);
  // Nothing listening: connection errors, not a failed run.
  o.url = "http://127.0.0.1:1";
  o.requests = 2;
  auto c = eval::run_serve_bench(o);
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(eval::serve_bench_json(*c)["summary"]["errors"]["connect"]["count"], 2);
  // Bad options are refused before anything is sent.
  o.concurrency = 0;
  EXPECT_FALSE(eval::run_serve_bench(o).is_ok());
  o.concurrency = 1;
  o.url = "https://example.com";
  EXPECT_FALSE(eval::run_serve_bench(o).is_ok());
}

// The command line end to end: `ostrakon bench serve` writes its JSON and HTML and its exit
// status says whether every request completed.
int run_command(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;)
    if (out) out->append(buf, n);
  const int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(BenchServe, CommandLine) {
  std::string help;
  run_command(std::string(OST_BIN) + " bench serve --help 2>&1", &help);
  ASSERT_NE(help.find("bench serve --url"), std::string::npos) << help;
  server::ApiServerOptions so;
  so.api_keys = {"cli-key"};
  TestServer s(so);
  TempDir dir;
  const std::string cmd =
      std::string(OST_BIN) + " bench serve --url http://127.0.0.1:" + std::to_string(s.port) +
      " --requests 4 --concurrency 2 --image-size 64x48 --prompt-tokens 24 --max-tokens 3" +
      " --no-progress --json " + dir / "b.json" + " --html " + dir / "b.html";
  std::string out;
  EXPECT_EQ(run_command(cmd + " --api-key cli-key", &out), 0) << out;
  EXPECT_NE(out.find("Successful requests:"), std::string::npos) << out;
  auto j = read_file(dir / "b.json");
  ASSERT_TRUE(j.is_ok());
  const json report = json::parse(*j);
  check_report(report, 4);
  EXPECT_EQ(report["summary"]["completed"], 4);
  EXPECT_EQ(report["config"]["max_tokens"], 3);
  auto h = read_file(dir / "b.html");
  ASSERT_TRUE(h.is_ok());
  EXPECT_NE(h->find("<svg"), std::string::npos);
  EXPECT_EQ(run_command(cmd + " --api-key wrong 2>/dev/null"), 1);  // requests failed
  EXPECT_EQ(json::parse(*read_file(dir / "b.json"))["summary"]["errors"]["401"]["count"], 4);
  EXPECT_EQ(run_command(std::string(OST_BIN) +
                        " bench serve --url http://x --rate 1 --concurrency 0 --image-size 3 2>/dev/null"),
            2);
}

}  // namespace
}  // namespace ost::testing
