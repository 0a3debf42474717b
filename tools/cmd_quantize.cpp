// ostrakon quantize: a bf16 checkpoint -> int8 / fp8 / int4 weights, and an accuracy report of
// the quantized model against the original (quant_report.h) on image + prompt inputs.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "core/file_util.h"
#include "engine/engine.h"
#include "io/quantize_checkpoint.h"
#include "quant/quant.h"
#include "model/quant_report.h"
#include "tools/args.h"
#include "tools/commands.h"

namespace ost::tools {

namespace {

const char* kUsage =
    "usage: ostrakon quantize --model IN --out OUT --format int8|fp8|int4 [--group-size 128]\n"
    "                         [--skip REGEX] [--quantize-lm-head] [--quantize-vision]\n"
    "                         [--no-quantize-embeddings] [--report FILE] [--report-only]\n"
    "                         [--image PATH]... [--prompt TEXT]... [--continuation N] [--quiet]\n"
    "Quantizes the text decoder's linear weights (q/k/v/o, gate/up/down) and the token embedding\n"
    "table (in the same format, a row per token; --no-quantize-embeddings keeps it; tied to the\n"
    "lm_head, the table follows --quantize-lm-head); the vision tower, norms and lm_head stay as\n"
    "they are unless opted in. --skip keeps every tensor whose name matches. int4 and fp8 use\n"
    "groups (blocks) of --group-size inputs.\n"
    "--report FILE compares the quantized model with the original on the CPU (logits rel L2, KL,\n"
    "top-1 agreement, per-layer error) and writes Markdown; --report-only quantizes in memory\n"
    "and writes no checkpoint. Inputs: each --prompt alone and with each --image (defaults: a\n"
    "text prompt, and a seeded-noise image with a question).\n";

int fail(const std::string& msg, int code) {
  std::fprintf(stderr, "quantize: %s\n", msg.c_str());
  return code;
}

Image noise_image(int w, int h, uint32_t seed) {
  Image im{w, h, std::vector<uint8_t>(size_t(w) * h * 3)};
  uint32_t s = seed;
  for (auto& b : im.rgb) {
    s = s * 1664525u + 1013904223u;
    b = uint8_t(s >> 24);
  }
  return im;
}

// Prompt ids and patches of one user turn (images first), as the engine builds them.
Result<EvalCase> make_case(Engine& eng, const std::string& name, const std::vector<Image>& images,
                           const std::string& prompt) {
  GenerateRequest req;
  ChatMessage user{"user", {}, {}};
  for (size_t i = 0; i < images.size(); ++i) user.content.push_back(ContentPart::make_image());
  user.content.push_back(ContentPart::make_text(prompt));
  req.messages.push_back(std::move(user));
  auto pop = preprocess_options(eng.runner().preprocessor());
  if (!pop) return Error{pop.message()};
  const PreprocessOptions& po = *pop;
  EvalCase c;
  c.name = name;
  std::vector<ImagePatches> patches;
  for (auto& im : images) {
    auto p = preprocess_image(im, po);
    if (!p) return Error{p.message()};
    c.pixel_values.insert(c.pixel_values.end(), p->pixel_values.begin(), p->pixel_values.end());
    c.num_patches += int64_t(p->grid_t) * p->grid_h * p->grid_w;
    c.grid_thw.push_back({p->grid_t, p->grid_h, p->grid_w});
    patches.push_back(std::move(*p));
  }
  auto ids = eng.prompt_ids(req, patches);
  if (!ids) return Error{ids.message()};
  c.ids = std::move(*ids);
  return c;
}

}  // namespace

int cmd_quantize(int argc, char** argv) {
  auto args = Args::parse(argc, argv,
                          {"model", "out", "format", "group-size", "skip", "report", "image", "prompt", "continuation"},
                          {"quantize-lm-head", "quantize-vision", "no-quantize-embeddings", "report-only", "quiet", "help"});
  if (!args) {
    std::fprintf(stderr, "%s", kUsage);
    return fail(args.message(), 2);
  }
  if (args->has("help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  const bool report_only = args->has("report-only");
  if (!args->has("model")) return fail("--model IN is required", 2);
  if (!args->has("format")) return fail("--format int8|fp8|int4 is required", 2);
  if (!report_only && !args->has("out")) return fail("--out OUT is required (or --report-only)", 2);
  auto fmt = quant::parse_format(args->get("format"));
  if (!fmt || *fmt == quant::Format::None)
    return fail(fmt ? "--format must be int8, fp8 or int4" : fmt.message(), 2);
  auto group = args->get_int("group-size", 128, 2, 1 << 16);
  auto cont = args->get_int("continuation", 16, 0, 4096);
  for (const Status& s : {group.status(), cont.status()})
    if (!s) return fail(s.message(), 2);
  quant::QuantConfig qc;
  qc.format = *fmt;
  qc.group_size = int(*group);
  qc.select.lm_head = args->has("quantize-lm-head");
  qc.select.vision = args->has("quantize-vision");
  qc.select.embeddings = !args->has("no-quantize-embeddings");
  qc.select.skip = args->get("skip");
  if (auto sel = quant::selected("x", qc.select); !sel) return fail(sel.message(), 2);
  const bool quiet = args->has("quiet");
  const std::string in = args->get("model"), out = args->get("out");

  if (!report_only) {
    QuantizeOptions opt;
    opt.in_dir = in;
    opt.out_dir = out;
    opt.quant = qc;
    int last_pct = -1;
    auto t0 = std::chrono::steady_clock::now();
    opt.progress = [&](int64_t done, int64_t total) {
      const int pct = total ? int(100 * done / total) : 100;
      if (quiet || pct == last_pct) return;
      last_pct = pct;
      const int bar = pct / 4;
      std::fprintf(stderr, "\rquantize: [%.*s%*s] %3d%% of %.2f GB", bar, "#########################", 25 - bar,
                   "", pct, double(total) / 1e9);
    };
    auto sum = quantize_checkpoint(opt);
    if (!quiet && last_pct >= 0) std::fprintf(stderr, "\n");
    if (!sum) return fail(sum.message(), 1);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const bool emb = std::find(sum->quantized.begin(), sum->quantized.end(),
                               "model.language_model.embed_tokens.weight") != sum->quantized.end();
    std::fprintf(stderr,
                 "quantize: %s: %zu matrices to %s (token embeddings %s), %zu kept; weights %.2f GB -> %.2f GB "
                 "in %.1f s\n",
                 out.c_str(), sum->quantized.size(), quant::format_name(qc.format), emb ? "included" : "kept",
                 sum->kept.size(), double(sum->bytes_in) / 1e9, double(sum->bytes_out) / 1e9, s);
  }
  if (!args->has("report") && !report_only) return 0;

  // Accuracy report on the CPU: the original against the written (or in-memory) quantized model.
  EngineOptions eo;
  eo.device = "cpu";
  auto ref = Engine::load(in, eo);
  if (!ref) return fail(ref.message(), 1);
  auto qr = report_only ? load_cpu_runner(in, qc) : load_cpu_runner(out);
  if (!qr) return fail(qr.message(), 1);
  std::vector<std::string> prompts = args->all("prompt");
  if (prompts.empty()) prompts = {"Describe this picture in detail. What stands out first?"};
  std::vector<std::pair<std::string, Image>> images;
  for (auto& p : args->all("image")) {
    auto im = load_image_file(p);
    if (!im) return fail("image " + p + ": " + im.message(), 1);
    images.push_back({p.substr(p.find_last_of('/') + 1), std::move(*im)});
  }
  if (images.empty()) images.push_back({"noise_256x256", noise_image(256, 256, 7)});
  std::vector<EvalCase> cases;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto c = make_case(**ref, "text, prompt " + std::to_string(i + 1), {}, prompts[i]);
    if (!c) return fail(c.message(), 1);
    cases.push_back(std::move(*c));
    for (auto& [iname, im] : images) {
      auto ci = make_case(**ref, iname + ", prompt " + std::to_string(i + 1), {im}, prompts[i]);
      if (!ci) return fail(ci.message(), 1);
      cases.push_back(std::move(*ci));
    }
  }
  auto rep = compare_runners((*ref)->runner(), **qr, cases, int(*cont));
  if (!rep) return fail(rep.message(), 1);
  std::string title = std::string(quant::format_name(qc.format)) + " vs bf16: " + in;
  std::string md = rep->to_markdown(title);
  if (args->has("report")) {
    Status st = write_file(args->get("report"), md);
    if (!st) return fail(st.message(), 1);
    std::fprintf(stderr, "quantize: report written to %s\n", args->get("report").c_str());
  } else {
    std::printf("%s", md.c_str());
  }
  const LogitStats& t = rep->total;
  std::fprintf(stderr, "quantize: logits rel L2 %.4f, KL mean %.5f, top-1 %.1f%% (%.1f%% where margin > 1)\n",
               t.rel_l2(), t.kl_mean(), 100 * t.top1(), 100 * t.top1_confident());
  return 0;
}

}  // namespace ost::tools
