// ostrakon bench engine: one request through the engine (TTFT split into preprocess, vision and
// prefill; greedy decode), then a pure decode loop over the runner at the requested batch size
// with the argmax on the GPU. Every speed is printed next to its limit: the device's measured
// copy bandwidth and GEMM rate, and the decode roofline (bytes read per step / bandwidth).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "engine/engine.h"
#include "tools/args.h"
#include "tools/commands.h"
#ifdef OSTRAKON_HAVE_CUDA
#include "backend/cuda/cuda_runner.h"
#endif

namespace ost::tools {

namespace {

const char* kUsage =
    "usage: ostrakon bench engine --model DIR [--image-size WxH] [--prompt-tokens N]\n"
    "                             [--max-tokens N] [--batch N] [--json]\n"
    "Runs on the CUDA backend. --image-size 0 gives a text-only prompt (default 512x512).\n";

int fail(const std::string& msg, int code) {
  std::fprintf(stderr, "bench: %s\n", msg.c_str());
  return code;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "engine") != 0) {
    std::fprintf(stderr, "%s", kUsage);
    return argc >= 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) ? 0 : 2;
  }
#ifndef OSTRAKON_HAVE_CUDA
  return fail("this build has no CUDA backend", 2);
#else
  auto args = Args::parse(argc - 1, argv + 1, {"model", "image-size", "prompt-tokens", "max-tokens", "batch"},
                          {"json", "help"});
  if (!args) {
    std::fprintf(stderr, "%s", kUsage);
    return fail(args.message(), 2);
  }
  if (args->has("help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  if (!args->has("model")) return fail("--model DIR is required", 2);
  auto prompt_tokens = args->get_int("prompt-tokens", 30, 1, 100000);
  auto max_tokens = args->get_int("max-tokens", 128, 2, 100000);
  auto batch = args->get_int("batch", 1, 1, 64);
  for (const Status& s : {prompt_tokens.status(), max_tokens.status(), batch.status()})
    if (!s) return fail(s.message(), 2);
  int iw = 512, ih = 512;
  const std::string size = args->get("image-size", "512x512");
  if (size == "0") iw = ih = 0;
  else if (std::sscanf(size.c_str(), "%dx%d", &iw, &ih) != 2 || iw <= 0 || ih <= 0)
    return fail("--image-size must be WxH or 0", 2);

  nlohmann::json out;
  auto ceil = measure_device_ceilings();
  if (!ceil) return fail(ceil.message(), 1);
  out["device"] = ceil->device;
  out["copy_gb_per_s"] = ceil->copy_gb_per_s;
  out["gemm_bf16_tflops"] = ceil->gemm_tflops;

  auto t_load = std::chrono::steady_clock::now();
  EngineOptions eo;
  eo.device = "cuda";
  auto eng = Engine::load(args->get("model"), eo);
  if (!eng) return fail(eng.message(), 1);
  out["load_s"] = ms_since(t_load) / 1000.0;
  ModelRunner& r = (*eng)->runner();
  const CudaRunnerInfo* info = cuda_runner_info(r);
  if (!info) return fail("the engine did not load the CUDA runner", 1);
  out["weights_gib"] = double(info->weight_bytes) / double(1 << 30);
  out["text_weights_gib"] = double(info->text_weight_bytes) / double(1 << 30);
  out["kv_pool_tokens"] = info->kv_blocks * info->kv_block_tokens;

  // The request: one synthetic image (seeded noise) + a question of about N tokens.
  GenerateRequest req;
  ChatMessage user;
  user.role = "user";
  if (iw > 0) {
    Image img;
    img.width = iw;
    img.height = ih;
    img.rgb.resize(size_t(iw) * ih * 3);
    std::mt19937 rng(7);
    for (auto& b : img.rgb) b = uint8_t(rng() & 0xff);
    req.images.push_back(std::move(img));
    user.content.push_back(ContentPart::make_image());
  }
  std::string q;
  for (int64_t i = 0; i < *prompt_tokens; ++i) q += i ? " word" : "word";
  user.content.push_back(ContentPart::make_text(q));
  req.messages.push_back(user);
  req.max_tokens = int(*max_tokens);
  req.ignore_eos = true;
  req.sampling.temperature = 0.0f;

  // Warm-up (handles, GEMM plans, decode graph), then the measured run.
  {
    GenerateRequest w = req;
    w.max_tokens = 4;
    auto res = (*eng)->generate(w);
    if (!res) return fail(res.message(), 1);
  }
  auto res = (*eng)->generate(req);
  if (!res) return fail(res.message(), 1);
  const Timings& t = res->timings;
  out["prompt_tokens"] = res->prompt_ids.size();
  out["generated_tokens"] = res->tokens.size();
  out["ttft_ms"] = {{"preprocess", t.preprocess_ms}, {"vision", t.vision_ms}, {"prefill", t.prefill_ms},
                    {"total", t.preprocess_ms + t.vision_ms + t.prefill_ms}};
  out["engine_decode_tokens_per_s"] = t.decode_tokens_per_s;

  // Pure decode at the requested batch: every sequence holds the same prompt.
  const int B = int(*batch);
  const int steps = int(*max_tokens);
  std::vector<std::unique_ptr<SequenceState>> seqs;
  std::vector<SequenceState*> ptrs;
  std::vector<int32_t> ids;
  auto pos = compute_mrope_positions(res->prompt_ids, res->image_grids, r.config());
  if (!pos) return fail(pos.message(), 1);
  VisionOutput vis;
  const VisionOutput* vp = nullptr;
  if (!res->image_grids.empty()) {
    // Placeholder rows: decode speed does not depend on their values.
    int64_t n_img = 0;
    for (int32_t id : res->prompt_ids) n_img += id == r.config().image_token_id;
    vis.n_merged = n_img;
    vis.embeds.assign(size_t(n_img * r.config().text.hidden_size), 0.01f);
    vis.deepstack.assign(r.config().vision.deepstack_visual_indexes.size(), vis.embeds);
    vp = &vis;
  }
  for (int b = 0; b < B; ++b) {
    auto s = r.new_sequence(int64_t(res->prompt_ids.size()) + steps + 8);
    if (!s) return fail(s.message(), 1);
    auto l = r.prefill(**s, res->prompt_ids, *pos, vp, false);
    if (!l) return fail(l.message(), 1);
    ptrs.push_back(s->get());
    seqs.push_back(std::move(*s));
    ids.push_back(res->tokens.empty() ? 0 : res->tokens[0].id);
  }
  for (int i = 0; i < 3; ++i) {  // warm-up (graph capture for this batch size)
    auto g = cuda_decode_greedy(r, ptrs, ids);
    if (!g) return fail(g.message(), 1);
    ids = *g;
  }
  const int timed = std::max(1, steps - 3);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < timed; ++i) {
    auto g = cuda_decode_greedy(r, ptrs, ids);
    if (!g) return fail(g.message(), 1);
    ids = *g;
  }
  const double step_ms = ms_since(t0) / timed;
  auto prof = cuda_profile_decode(r, ptrs, ids);  // one eager step, events between the ops
  if (!prof) return fail(prof.message(), 1);
  nlohmann::json pj = nlohmann::json::object();
  for (auto& [k, v] : *prof) pj[k] = v;
  out["decode_step_breakdown_ms_eager"] = pj;
  const double ctx = double(res->prompt_ids.size()) + 3 + timed / 2.0;  // mean cache length
  const double bytes = double(info->text_weight_bytes) + B * ctx * double(info->kv_bytes_per_token);
  const double floor_ms = bytes / (ceil->copy_gb_per_s * 1e9) * 1e3;
  out["batch"] = B;
  out["decode_step_ms"] = step_ms;
  out["decode_tokens_per_s_per_seq"] = 1000.0 / step_ms;
  out["decode_tokens_per_s_total"] = 1000.0 * B / step_ms;
  out["decode_bytes_per_step_gb"] = bytes / 1e9;
  out["decode_roofline_step_ms"] = floor_ms;
  out["decode_fraction_of_roofline"] = floor_ms / step_ms;
  out["decode_achieved_gb_per_s"] = bytes / (step_ms * 1e-3) / 1e9;
  const double prefill_flops = 2.0 * double(res->prompt_ids.size()) * double(info->text_weight_bytes) / 2.0;
  out["prefill_tflops"] = prefill_flops / (t.prefill_ms * 1e-3) / 1e12;

  if (args->has("json")) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("device            %s\n", ceil->device.c_str());
  std::printf("ceilings          copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s (%d^3)\n", ceil->copy_gb_per_s,
              ceil->gemm_tflops, ceil->gemm_size);
  std::printf("weights on GPU    %.2f GiB (decoder + head %.2f GiB), load %.1f s\n",
              out["weights_gib"].get<double>(), out["text_weights_gib"].get<double>(), out["load_s"].get<double>());
  std::printf("prompt            %zu tokens (image %s), %zu generated\n", res->prompt_ids.size(), size.c_str(),
              res->tokens.size());
  std::printf("TTFT              %.1f ms = preprocess %.1f + vision %.1f + prefill %.1f (prefill %.0f TFLOP/s of %.0f)\n",
              t.preprocess_ms + t.vision_ms + t.prefill_ms, t.preprocess_ms, t.vision_ms, t.prefill_ms,
              out["prefill_tflops"].get<double>(), ceil->gemm_tflops);
  std::printf("engine decode     %.1f tok/s (host logits + sampler)\n", t.decode_tokens_per_s);
  std::printf("decode batch %-4d %.2f ms/step, %.1f tok/s per sequence, %.1f tok/s total\n", B, step_ms,
              1000.0 / step_ms, 1000.0 * B / step_ms);
  std::printf("decode roofline   %.3f GB/step / %.0f GB/s = %.2f ms/step -> %.0f%% of roofline (%.0f GB/s achieved)\n",
              bytes / 1e9, ceil->copy_gb_per_s, floor_ms, 100.0 * floor_ms / step_ms,
              out["decode_achieved_gb_per_s"].get<double>());
  std::printf("eager step split ");
  for (auto& [k, v] : *prof) std::printf(" %s %.2f ms;", k.c_str(), v);
  std::printf("\n");
  return 0;
#endif
}

}  // namespace ost::tools
