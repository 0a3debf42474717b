// ostrakon bench engine: one request through the engine (TTFT split into JPEG decode,
// preprocess, vision and prefill, median of several runs; greedy decode through the engine
// loop), then a pure decode loop over the runner at the requested batch size with the argmax on
// the GPU. Every speed is printed next to its limit: the device's measured copy bandwidth and
// GEMM rate, and the decode roofline (bytes read per step / bandwidth).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include <jpeglib.h>  // after <cstdio>: it uses FILE and size_t

#include "engine/engine.h"
#include "engine/engine_loop.h"
#include "tools/args.h"
#include "tools/commands.h"
#ifdef OSTRAKON_HAVE_CUDA
#include "backend/cuda/cuda_runner.h"
#endif

namespace ost::tools {

namespace {

const char* kUsage =
    "usage: ostrakon bench engine --model DIR [--image-size WxH] [--prompt-tokens N]\n"
    "                             [--max-tokens N] [--batch N] [--kv-cache-dtype bf16|fp8]\n"
    "                             [--kv-memory MB] [--json]\n"
    "Runs on the CUDA backend. --image-size 0 gives a text-only prompt (default 512x512).\n"
    "--kv-memory (default 1024, as serve): prints the KV blocks and sequences of this request's\n"
    "length that serve's pool of that size holds with this KV cache dtype.\n"
    "       ostrakon bench serve --url URL ...   (load generator; see ostrakon bench serve --help)\n";

int fail(const std::string& msg, int code) {
  std::fprintf(stderr, "bench: %s\n", msg.c_str());
  return code;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// A photo-like test image (smooth shading, edges, some sensor noise; seeded) encoded as a
// baseline JPEG at quality 90, so the request carries the bytes a client would send.
std::vector<uint8_t> synthetic_jpeg(int w, int h) {
  std::vector<uint8_t> rgb(size_t(w) * h * 3);
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.0f, 6.0f);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float u = float(x) / float(w), v = float(y) / float(h);
      const bool box = (x / 97 + y / 61) % 5 == 0;
      const float base[3] = {200 * u + 30 * std::sin(11 * v), 180 * v + 40 * std::cos(7 * u),
                             120 + 90 * std::sin(5 * (u + v))};
      for (int c = 0; c < 3; ++c) {
        const float val = (box ? 255 - base[c] : base[c]) + noise(rng);
        rgb[(size_t(y) * w + x) * 3 + c] = uint8_t(std::clamp(val, 0.0f, 255.0f));
      }
    }
  jpeg_compress_struct ci;
  jpeg_error_mgr err;
  ci.err = jpeg_std_error(&err);
  jpeg_create_compress(&ci);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&ci, &buf, &size);
  ci.image_width = JDIMENSION(w);
  ci.image_height = JDIMENSION(h);
  ci.input_components = 3;
  ci.in_color_space = JCS_RGB;
  jpeg_set_defaults(&ci);
  jpeg_set_quality(&ci, 90, TRUE);
  jpeg_start_compress(&ci, TRUE);
  while (ci.next_scanline < ci.image_height) {
    JSAMPROW row = rgb.data() + size_t(ci.next_scanline) * w * 3;
    jpeg_write_scanlines(&ci, &row, 1);
  }
  jpeg_finish_compress(&ci);
  std::vector<uint8_t> out(buf, buf + size);
  jpeg_destroy_compress(&ci);
  std::free(buf);
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "serve") == 0) return cmd_bench_serve(argc - 1, argv + 1);
  if (argc < 2 || std::strcmp(argv[1], "engine") != 0) {
    std::fprintf(stderr, "%s", kUsage);
    return argc >= 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) ? 0 : 2;
  }
#ifndef OSTRAKON_HAVE_CUDA
  return fail("this build has no CUDA backend", 2);
#else
  auto args = Args::parse(argc - 1, argv + 1, {"model", "image-size", "prompt-tokens", "max-tokens", "batch", "kv-cache-dtype", "kv-memory"},
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
  auto kv_mb = args->get_int("kv-memory", 1024, 1, 1 << 24);
  for (const Status& s : {prompt_tokens.status(), max_tokens.status(), batch.status(), kv_mb.status()})
    if (!s) return fail(s.message(), 2);
  auto kv_dtype = quant::parse_kv_dtype(args->get("kv-cache-dtype", "bf16"));
  if (!kv_dtype) return fail(kv_dtype.message(), 2);
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
  eo.quant.kv_cache = *kv_dtype;
  auto eng = Engine::load(args->get("model"), eo);
  if (!eng) return fail(eng.message(), 1);
  out["load_s"] = ms_since(t_load) / 1000.0;
  ModelRunner& r = (*eng)->runner();
  const CudaRunnerInfo* info = cuda_runner_info(r);
  if (!info) return fail("the engine did not load the CUDA runner", 1);
  out["weights_gib"] = double(info->weight_bytes) / double(1 << 30);
  out["text_weights_gib"] = double(info->text_weight_bytes) / double(1 << 30);
  out["kv_pool_tokens"] = info->kv_blocks * info->kv_block_tokens;
  out["kv_cache_dtype"] = quant::kv_dtype_name(*kv_dtype);
  out["kv_bytes_per_token"] = r.kv_bytes_per_token();

  // The request: one synthetic JPEG + a question of about N tokens.
  GenerateRequest req;
  ChatMessage user;
  user.role = "user";
  std::vector<uint8_t> jpeg;
  if (iw > 0) {
    jpeg = synthetic_jpeg(iw, ih);
    out["jpeg_bytes"] = jpeg.size();
    req.images.emplace_back();
    user.content.push_back(ContentPart::make_image());
  }
  std::string q;
  for (int64_t i = 0; i < *prompt_tokens; ++i) q += i ? " word" : "word";
  user.content.push_back(ContentPart::make_text(q));
  req.messages.push_back(user);
  req.max_tokens = int(*max_tokens);
  req.ignore_eos = true;
  req.sampling.temperature = 0.0f;

  // TTFT = JPEG decode + Engine::generate up to the first token (preprocess, vision, prefill).
  // A warm-up (handles, GEMM plans, decode graph), then the median of several runs.
  auto decode_jpeg = [&]() -> Status {
    if (jpeg.empty()) return Status::ok();
    auto img = decode_image(jpeg.data(), jpeg.size());
    if (!img) return Error{img.message()};
    req.images[0] = std::move(*img);
    return Status::ok();
  };
  {
    if (Status st = decode_jpeg(); !st) return fail(st.message(), 1);
    GenerateRequest w = req;
    w.max_tokens = 4;
    auto res = (*eng)->generate(w);
    if (!res) return fail(res.message(), 1);
  }
  std::vector<double> t_jpeg, t_pre, t_vis, t_pf, t_total;
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    if (Status st = decode_jpeg(); !st) return fail(st.message(), 1);
    const double dj = ms_since(t0);
    GenerateRequest w = req;
    w.max_tokens = 1;
    auto res = (*eng)->generate(w);
    if (!res) return fail(res.message(), 1);
    const Timings& t = res->timings;
    t_jpeg.push_back(dj);
    t_pre.push_back(t.preprocess_ms);
    t_vis.push_back(t.vision_ms);
    t_pf.push_back(t.prefill_ms);
    t_total.push_back(dj + t.preprocess_ms + t.vision_ms + t.prefill_ms);
  }
  // Where the vision tower's time goes: one eager run with events between the ops.
  nlohmann::json vsplit = nlohmann::json::object();
  std::vector<std::pair<std::string, double>> vprof;
  if (!req.images.empty()) {
    auto pop = preprocess_options(r.preprocessor());
    if (!pop) return fail(pop.message(), 1);
    const PreprocessOptions& po = *pop;
    Image resized;
    auto plan = plan_patches(req.images[0], po, &resized);
    auto lut = normalize_table(po);
    if (!plan || !lut) return fail(plan ? lut.message() : plan.message(), 1);
    VisionInput vin;
    vin.grid_thw = {{plan->grid_t, plan->grid_h, plan->grid_w}};
    vin.num_patches = int64_t(plan->grid_t) * plan->grid_h * plan->grid_w;
    vin.rgb = {resized.rgb.empty() ? &req.images[0] : &resized};
    vin.lut = &*lut;
    vin.keep_on_device = true;
    auto vp = cuda_profile_vision(r, vin);
    if (!vp) return fail(vp.message(), 1);
    vprof = *vp;
    for (auto& [k, v] : vprof) vsplit[k] = v;
  }
  out["vision_breakdown_ms_eager"] = vsplit;

  auto res = (*eng)->generate(req);  // the engine loop: decode speed with the runner's argmax
  if (!res) return fail(res.message(), 1);
  const Timings& t = res->timings;
  const double ttft = median(t_total), ttft_jpeg = median(t_jpeg), ttft_pre = median(t_pre),
               ttft_vis = median(t_vis), ttft_pf = median(t_pf);
  out["prompt_tokens"] = res->prompt_ids.size();
  out["generated_tokens"] = res->tokens.size();
  out["ttft_ms"] = {{"jpeg_decode", ttft_jpeg},
                    {"preprocess", ttft_pre},
                    {"vision", ttft_vis},
                    {"prefill", ttft_pf},
                    {"total", ttft},
                    {"min_total", *std::min_element(t_total.begin(), t_total.end())}};
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
  // What serve's pool of --kv-memory MB holds (EngineLoop: 16-token blocks at the runner's bytes
  // per token), in blocks and in sequences of this request's length (prompt + max tokens).
  const int64_t serve_blocks = kv_pool_blocks(*kv_mb, r.kv_bytes_per_token(), 16);
  const int64_t seq_blocks = (int64_t(res->prompt_ids.size()) + steps + 15) / 16;
  out["kv_memory_mb"] = *kv_mb;
  out["kv_memory_blocks"] = serve_blocks;
  out["kv_memory_max_sequences"] = serve_blocks / std::max<int64_t>(1, seq_blocks);
  out["decode_step_ms"] = step_ms;
  out["decode_tokens_per_s_per_seq"] = 1000.0 / step_ms;
  out["decode_tokens_per_s_total"] = 1000.0 * B / step_ms;
  out["decode_bytes_per_step_gb"] = bytes / 1e9;
  out["decode_roofline_step_ms"] = floor_ms;
  out["decode_fraction_of_roofline"] = floor_ms / step_ms;
  out["decode_achieved_gb_per_s"] = bytes / (step_ms * 1e-3) / 1e9;
  const double prefill_flops = 2.0 * double(res->prompt_ids.size()) * double(info->text_weight_bytes) / 2.0;
  out["prefill_tflops"] = prefill_flops / (ttft_pf * 1e-3) / 1e12;

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
  std::printf(
      "TTFT (median of %zu) %.1f ms = jpeg %.1f (%zu bytes) + preprocess %.1f + vision %.1f + prefill %.1f "
      "(prefill %.0f TFLOP/s of %.0f)\n",
      t_total.size(), ttft, ttft_jpeg, jpeg.size(), ttft_pre, ttft_vis, ttft_pf,
      out["prefill_tflops"].get<double>(), ceil->gemm_tflops);
  std::printf("kv cache          %s, %lld bytes/token; --kv-memory %lld MB: %lld blocks of 16 = %lld sequences of "
              "%lld tokens; device pool %lld tokens\n",
              quant::kv_dtype_name(*kv_dtype), (long long)r.kv_bytes_per_token(), (long long)*kv_mb,
              (long long)serve_blocks, (long long)out["kv_memory_max_sequences"].get<int64_t>(),
              (long long)(seq_blocks * 16), (long long)(info->kv_blocks * info->kv_block_tokens));
  std::printf("engine decode     %.1f tok/s (Engine::generate, greedy through decode_batch_argmax)\n",
              t.decode_tokens_per_s);
  std::printf("decode batch %-4d %.2f ms/step, %.1f tok/s per sequence, %.1f tok/s total\n", B, step_ms,
              1000.0 / step_ms, 1000.0 * B / step_ms);
  std::printf("decode roofline   %.3f GB/step / %.0f GB/s = %.2f ms/step -> %.0f%% of roofline (%.0f GB/s achieved)\n",
              bytes / 1e9, ceil->copy_gb_per_s, floor_ms, 100.0 * floor_ms / step_ms,
              out["decode_achieved_gb_per_s"].get<double>());
  std::printf("eager step split ");
  for (auto& [k, v] : *prof) std::printf(" %s %.2f ms;", k.c_str(), v);
  std::printf("\n");
  if (!vprof.empty()) {
    std::printf("eager vision split");
    for (auto& [k, v] : vprof) std::printf(" %s %.2f ms;", k.c_str(), v);
    std::printf("\n");
  }
  return 0;
#endif
}

}  // namespace ost::tools
