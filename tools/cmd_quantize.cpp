// ostrakon quantize: a bf16 checkpoint -> int8 / fp8 / int4 weights, and an accuracy report of
// the quantized model against the original (quant_report.h) on image + prompt inputs.
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "core/file_util.h"
#include "engine/engine.h"
#include "io/quantize_checkpoint.h"
#include "model/awq.h"
#include "model/quant_report.h"
#include "quant/quant.h"
#include "tools/args.h"
#include "tools/commands.h"

namespace ost::tools {

namespace {

const char* kUsage =
    "usage: ostrakon quantize --model IN --out OUT --format int8|fp8|int4 [--group-size 128]\n"
    "                         [--skip REGEX] [--quantize-lm-head] [--quantize-vision]\n"
    "                         [--no-quantize-embeddings] [--report FILE] [--report-only]\n"
    "                         [--image PATH]... [--prompt TEXT]... [--continuation N] [--quiet]\n"
    "                         [--calib-images DIR] [--calib-prompts FILE] [--calib-rows 512]\n"
    "Quantizes the text decoder's linear weights (q/k/v/o, gate/up/down) and the token embedding\n"
    "table (in the same format, a row per token; --no-quantize-embeddings keeps it; tied to the\n"
    "lm_head, the table follows --quantize-lm-head); the vision tower, norms and lm_head stay as\n"
    "they are unless opted in. --skip keeps every tensor whose name matches. int4 and fp8 use\n"
    "groups (blocks) of --group-size inputs.\n"
    "--report FILE compares the quantized model with the original on the CPU (logits rel L2, KL,\n"
    "top-1 agreement, per-layer error) and writes Markdown; --report-only quantizes in memory\n"
    "and writes no checkpoint. Inputs: each --prompt alone and with each --image (defaults: a\n"
    "text prompt, and a seeded-noise image with a question).\n"
    "--calib-images DIR (jpg/png/webp files) and/or --calib-prompts FILE (one prompt per line)\n"
    "turn on the activation-aware scale search (AWQ) for int4: with N images and P prompts there\n"
    "are max(N, P) samples, sample k being image k mod N with prompt k mod P (without a prompt\n"
    "file every image gets \"Describe this image in detail.\"); without images each prompt is a\n"
    "text-only sample. The original model runs each sample once on the CPU; per layer the\n"
    "scales of q/k/v, gate/up and down are searched on --calib-rows sampled tokens and folded\n"
    "into the norms and up_proj. config.json's quantization_config records the chosen alphas;\n"
    "--report adds them and the round-to-nearest model's accuracy for comparison.\n";

const char* kDefaultCalibPrompt = "Describe this image in detail.";

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

// The calibration samples (kUsage describes the pairing).
Result<std::vector<EvalCase>> calibration_cases(Engine& eng, const std::string& image_dir,
                                                const std::string& prompt_file) {
  std::vector<std::string> prompts;
  if (!prompt_file.empty()) {
    auto text = read_file(prompt_file);
    if (!text) return make_error("--calib-prompts: %s", text.message().c_str());
    size_t a = 0;
    while (a < text->size()) {
      size_t b = text->find('\n', a);
      if (b == std::string::npos) b = text->size();
      std::string line = text->substr(a, b - a);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") != std::string::npos) prompts.push_back(line);
      a = b + 1;
    }
    if (prompts.empty()) return make_error("--calib-prompts: %s has no prompt", prompt_file.c_str());
  }
  std::vector<std::string> images;
  if (!image_dir.empty()) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(image_dir, ec)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
      if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp"))
        images.push_back(e.path().string());
    }
    if (ec) return make_error("--calib-images: %s: %s", image_dir.c_str(), ec.message().c_str());
    if (images.empty()) return make_error("--calib-images: no jpg, png or webp file in %s", image_dir.c_str());
    std::sort(images.begin(), images.end());
    if (prompts.empty()) prompts.push_back(kDefaultCalibPrompt);
  }
  std::vector<EvalCase> cases;
  const size_t n = images.empty() ? prompts.size() : std::max(images.size(), prompts.size());
  for (size_t k = 0; k < n; ++k) {
    std::vector<Image> ims;
    std::string name = "prompt " + std::to_string(k % prompts.size() + 1);
    if (!images.empty()) {
      const std::string& path = images[k % images.size()];
      auto im = load_image_file(path);
      if (!im) return make_error("--calib-images: %s: %s", path.c_str(), im.message().c_str());
      ims.push_back(std::move(*im));
      name = path.substr(path.find_last_of('/') + 1) + ", " + name;
    }
    auto c = make_case(eng, name, ims, prompts[k % prompts.size()]);
    if (!c) return Error{name + ": " + c.message()};
    cases.push_back(std::move(*c));
  }
  return cases;
}

// A fresh folder under the system's temporary directory.
Result<std::string> make_temp_dir() {
  std::string t = (std::filesystem::temp_directory_path() / "ostrakon-quantize-XXXXXX").string();
  if (!mkdtemp(t.data())) return make_error("cannot create a temporary folder %s", t.c_str());
  return t;
}

}  // namespace

int cmd_quantize(int argc, char** argv) {
  auto args = Args::parse(argc, argv,
                          {"model", "out", "format", "group-size", "skip", "report", "image", "prompt", "continuation",
                           "calib-images", "calib-prompts", "calib-rows"},
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
  auto calib_rows = args->get_int("calib-rows", 512, 1, 1 << 20);
  for (const Status& s : {group.status(), cont.status(), calib_rows.status()})
    if (!s) return fail(s.message(), 2);
  const bool calib = args->has("calib-images") || args->has("calib-prompts");
  if (!calib && args->has("calib-rows")) return fail("--calib-rows needs --calib-images or --calib-prompts", 2);
  if (calib && *fmt != quant::Format::INT4)
    return fail(std::string("--calib-images/--calib-prompts: the activation-aware scale search is for --format "
                            "int4 only (not ") + quant::format_name(*fmt) + ")", 2);
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

  // The original model on the CPU: calibration (AWQ) and the accuracy report run it.
  std::unique_ptr<Engine> ref;
  if (calib || args->has("report") || report_only) {
    EngineOptions eo;
    eo.device = "cpu";
    auto r = Engine::load(in, eo);
    if (!r) return fail(r.message(), 1);
    ref = std::move(*r);
  }
  QuantizeOptions opt;
  opt.in_dir = in;
  opt.out_dir = out;
  opt.quant = qc;
  std::optional<AwqResult> awq;
  if (calib) {
    // What the writer would refuse, before the calibration pass.
    QuantizeOptions check = opt;
    check.dry_run = true;
    if (auto sum = quantize_checkpoint(check); !sum) return fail(sum.message(), 1);
    auto t0 = std::chrono::steady_clock::now();
    auto cases = calibration_cases(*ref, args->get("calib-images"), args->get("calib-prompts"));
    if (!cases) return fail(cases.message(), 1);
    auto step = [&](const char* what) {
      return [&, what](int done, int total) {
        if (!quiet) std::fprintf(stderr, "\rquantize: %s %d/%d", what, done, total);
        if (!quiet && done == total) std::fprintf(stderr, "\n");
      };
    };
    auto cal = collect_awq_inputs(ref->runner(), *cases, *calib_rows, step("calibration sample"));
    if (!cal) return fail(cal.message(), 1);
    AwqOptions ao;
    ao.group_size = qc.group_size;
    ao.select = qc.select;
    ao.progress = step("AWQ scale search, layer");
    auto res = search_awq_scales(in, *cal, ao);
    if (!res) return fail(res.message(), 1);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr,
                 "quantize: AWQ on %d samples (%lld tokens, %lld rows per input): calibration loss %.3f of "
                 "round-to-nearest, %zu tensors rescaled, in %.1f s\n",
                 cal->samples, (long long)cal->tokens, (long long)cal->rows,
                 res->loss_rtn() > 0 ? res->loss() / res->loss_rtn() : 1.0, res->edits.size(), s);
    opt.edits = res->edits;
    opt.quant_config_extra = res->config_json();
    awq = std::move(*res);
  }
  // --report-only with AWQ: the scales live in the written checkpoint, so write it to a
  // temporary folder.
  std::string written = out;
  if (report_only && calib) {
    auto tmp = make_temp_dir();
    if (!tmp) return fail(tmp.message(), 1);
    written = opt.out_dir = *tmp;
  }
  struct RemoveTemp {
    std::string dir;
    ~RemoveTemp() {
      std::error_code ec;
      if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    }
  } remove_temp{report_only && calib ? written : ""};

  if (!report_only || calib) {
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
                 "quantize: %s: %zu matrices to %s%s (token embeddings %s), %zu kept; weights %.2f GB -> %.2f GB "
                 "in %.1f s\n",
                 written.c_str(), sum->quantized.size(), quant::format_name(qc.format), awq ? " with AWQ scales" : "",
                 emb ? "included" : "kept", sum->kept.size(), double(sum->bytes_in) / 1e9, double(sum->bytes_out) / 1e9,
                 s);
  }
  if (!args->has("report") && !report_only) return 0;

  // Accuracy report on the CPU: the original against the written (or in-memory) quantized model;
  // with AWQ also against plain round-to-nearest (quantized at load), for comparison.
  auto qr = report_only && !calib ? load_cpu_runner(in, qc) : load_cpu_runner(written);
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
    auto c = make_case(*ref, "text, prompt " + std::to_string(i + 1), {}, prompts[i]);
    if (!c) return fail(c.message(), 1);
    cases.push_back(std::move(*c));
    for (auto& [iname, im] : images) {
      auto ci = make_case(*ref, iname + ", prompt " + std::to_string(i + 1), {im}, prompts[i]);
      if (!ci) return fail(ci.message(), 1);
      cases.push_back(std::move(*ci));
    }
  }
  auto rep = compare_runners(ref->runner(), **qr, cases, int(*cont));
  if (!rep) return fail(rep.message(), 1);
  const std::string fmt_name = std::string(quant::format_name(qc.format)) + (awq ? " (AWQ)" : "");
  std::string md = rep->to_markdown(fmt_name + " vs bf16: " + in);
  std::optional<QuantReport> rtn;
  if (awq) {
    auto rq = load_cpu_runner(in, qc);
    if (!rq) return fail(rq.message(), 1);
    auto r = compare_runners(ref->runner(), **rq, cases, int(*cont));
    if (!r) return fail(r.message(), 1);
    rtn = std::move(*r);
    md += "\n" + rtn->to_markdown(std::string(quant::format_name(qc.format)) + " (round-to-nearest) vs bf16: " + in);
    md += "\n" + awq->to_markdown();
  }
  if (args->has("report")) {
    Status st = write_file(args->get("report"), md);
    if (!st) return fail(st.message(), 1);
    std::fprintf(stderr, "quantize: report written to %s\n", args->get("report").c_str());
  } else {
    std::printf("%s", md.c_str());
  }
  auto summary = [](const char* what, const LogitStats& t) {
    std::fprintf(stderr, "quantize: %slogits rel L2 %.4f, KL mean %.5f, top-1 %.1f%% (%.1f%% where margin > 1)\n", what,
                 t.rel_l2(), t.kl_mean(), 100 * t.top1(), 100 * t.top1_confident());
  };
  summary(awq ? "AWQ: " : "", rep->total);
  if (rtn) summary("round-to-nearest: ", rtn->total);
  return 0;
}

}  // namespace ost::tools
