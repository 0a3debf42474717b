// ostrakon run: one prompt (with images) through the engine; text or one JSON object out.
#include <cstdio>
#include <nlohmann/json.hpp>

#include <cstring>

#include "core/file_util.h"
#include "engine/engine.h"
#include "io/safetensors.h"
#include "tools/args.h"
#include "tools/commands.h"

namespace ost::tools {

namespace {

const char* kUsage =
    "usage: ostrakon run --model DIR [--image PATH]... --prompt TEXT [--system TEXT]\n"
    "                    [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P]\n"
    "                    [--repetition-penalty R] [--presence-penalty P] [--frequency-penalty F]\n"
    "                    [--seed S] [--stop TEXT]... [--min-pixels N] [--max-pixels N]\n"
    "                    [--device cpu|cuda|auto] [--logprobs K] [--prompt-logprobs K] [--ignore-eos] [--json]\n"
    "                    [--quant int8|fp8|int4]  (quantize the text decoder's linears and the\n"
    "                    token embeddings at load) [--no-quantize-embeddings]\n"
    "                    [--kv-cache-dtype bf16|fp8]  (fp8: e4m3 K/V with a scale per token and kv head)\n"
    "                    [--dump FILE]   (every named intermediate of the prompt pass, f32 safetensors)\n"
    "                    [--json-schema FILE | --json-object]  (the answer is JSON valid for the\n"
    "                    schema in FILE / any JSON object, by constrained decoding)\n"
    "Images come before the text in the user turn. --temperature 0 is greedy (the default).\n";

nlohmann::json top_json(const std::vector<TokenLogprob>& top) {
  auto a = nlohmann::json::array();
  for (auto& t : top) a.push_back({{"token_id", t.token_id}, {"logprob", t.logprob}});
  return a;
}

int fail(const std::string& msg, int code) {
  std::fprintf(stderr, "run: %s\n", msg.c_str());
  return code;
}

}  // namespace

int cmd_run(int argc, char** argv) {
  auto args = Args::parse(argc, argv,
                          {"model", "image", "prompt", "system", "max-tokens", "temperature", "top-p",
                           "top-k", "min-p", "repetition-penalty", "presence-penalty", "frequency-penalty",
                           "seed", "stop", "min-pixels", "max-pixels", "device", "logprobs", "prompt-logprobs", "dump", "quant",
                           "kv-cache-dtype", "json-schema"},
                          {"json", "help", "ignore-eos", "no-quantize-embeddings", "json-object"});
  if (!args) {
    std::fprintf(stderr, "%s", kUsage);
    return fail(args.message(), 2);
  }
  if (args->has("help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  if (!args->has("model")) return fail("--model DIR is required", 2);
  if (!args->has("prompt")) return fail("--prompt TEXT is required", 2);

  GenerateRequest req;
  auto max_tokens = args->get_int("max-tokens", 256, 0, 1 << 20);
  auto temperature = args->get_double("temperature", 0.0, 0.0, 100.0);
  auto top_p = args->get_double("top-p", 1.0, 1e-9, 1.0);
  auto top_k = args->get_int("top-k", 0, 0, 1 << 30);
  auto min_p = args->get_double("min-p", 0.0, 0.0, 1.0);
  auto rep = args->get_double("repetition-penalty", 1.0, 1e-6, 100.0);
  auto pres = args->get_double("presence-penalty", 0.0, -2.0, 2.0);
  auto freq = args->get_double("frequency-penalty", 0.0, -2.0, 2.0);
  auto seed = args->get_int("seed", 0, 0, INT64_MAX);
  auto lp = args->get_int("logprobs", 0, 0, 1000);
  auto plp = args->get_int("prompt-logprobs", 0, 0, 1000);
  auto minpx = args->get_int("min-pixels", 0, 1, INT64_MAX);
  auto maxpx = args->get_int("max-pixels", 0, 1, INT64_MAX);
  for (const Status& s : {max_tokens.status(), temperature.status(), top_p.status(), top_k.status(),
                          min_p.status(), rep.status(), pres.status(), freq.status(), seed.status(),
                          lp.status(), plp.status(), minpx.status(), maxpx.status()})
    if (!s) return fail(s.message(), 2);
  req.max_tokens = int(*max_tokens);
  req.sampling.temperature = float(*temperature);
  req.sampling.top_p = float(*top_p);
  req.sampling.top_k = int(*top_k);
  req.sampling.min_p = float(*min_p);
  req.sampling.repetition_penalty = float(*rep);
  req.sampling.presence_penalty = float(*pres);
  req.sampling.frequency_penalty = float(*freq);
  req.sampling.seed = uint64_t(*seed);
  req.top_logprobs = int(*lp);
  req.prompt_logprobs = int(*plp);
  req.min_pixels = *minpx;
  req.max_pixels = *maxpx;
  req.stop = args->all("stop");
  req.ignore_eos = args->has("ignore-eos");
  if (args->has("json-schema") && args->has("json-object")) return fail("give --json-schema or --json-object, not both", 2);
  if (args->has("json-object")) req.response_format = grammar::json_object_grammar();
  if (args->has("json-schema")) {
    const std::string path = args->get("json-schema");
    auto text = read_file(path);
    if (!text) return fail("--json-schema " + path + ": " + text.message(), 2);
    auto schema = nlohmann::ordered_json::parse(*text, nullptr, false);
    if (schema.is_discarded()) return fail("--json-schema " + path + ": not valid JSON", 2);
    auto g = grammar::compile_json_schema(schema);
    if (!g) return fail("--json-schema " + path + ": " + g.message(), 2);
    req.response_format = *g;
  }

  if (args->has("system")) req.messages.push_back({"system", {ContentPart::make_text(args->get("system"))}, {}});
  ChatMessage user{"user", {}, {}};
  for (auto& path : args->all("image")) {
    auto img = load_image_file(path);
    if (!img) return fail("image " + path + ": " + img.message(), 1);
    req.images.push_back(std::move(*img));
    user.content.push_back(ContentPart::make_image());
  }
  user.content.push_back(ContentPart::make_text(args->get("prompt")));
  req.messages.push_back(std::move(user));

  EngineOptions eo;
  eo.device = args->get("device", "auto");
  if (args->has("quant")) {
    auto qf = quant::parse_format(args->get("quant"));
    if (!qf) return fail(qf.message(), 2);
    eo.quant.format = *qf;
  }
  auto kvd = quant::parse_kv_dtype(args->get("kv-cache-dtype", "bf16"));
  if (!kvd) return fail(kvd.message(), 2);
  eo.quant.kv_cache = *kvd;
  eo.quant.select.embeddings = !args->has("no-quantize-embeddings");
  auto engine = Engine::load(args->get("model"), eo);
  if (!engine) return fail(engine.message(), 1);
  // --dump: the named intermediates of the first pass (vision tower + prefill), one f32 tensor
  // each ("txt.layer_out.3"), to diff layer by layer against a reference and find where a
  // mismatch starts.
  std::vector<std::pair<TensorSpec, std::vector<float>>> dumped;
  bool dumping = args->has("dump");
  if (dumping) {
    (*engine)->runner().set_dump([&](const std::string& name, int layer, const float* data,
                                     const std::vector<int64_t>& shape) {
      if (!dumping) return;
      int64_t n = 1;
      for (auto d : shape) n *= d;
      std::string key = layer >= 0 ? name + "." + std::to_string(layer) : name;
      for (auto& [spec, v] : dumped)
        if (spec.name == key) key += "+";  // a later chunk of the same intermediate
      dumped.push_back({TensorSpec{key, DType::F32, shape}, std::vector<float>(data, data + n)});
    });
  }
  auto res = (*engine)->generate(req, [&](const GeneratedToken&, const std::string&) {
    dumping = false;  // decode steps are not dumped
    return true;
  });
  if (args->has("dump")) {
    std::vector<TensorSpec> specs;
    for (auto& d : dumped) specs.push_back(d.first);
    size_t i = 0;
    Status st = write_safetensors(args->get("dump"), specs,
                                  [&](const TensorSpec& s, int64_t first, int64_t count, uint8_t* out) {
                                    while (dumped[i].first.name != s.name) ++i;
                                    std::memcpy(out, dumped[i].second.data() + first, size_t(count) * 4);
                                  });
    if (!st) return fail(st.message(), 1);
    std::fprintf(stderr, "run: wrote %zu intermediates to %s\n", specs.size(), args->get("dump").c_str());
  }
  if (!res) return fail(res.message(), 1);

  if (!args->has("json")) {
    std::printf("%s\n", res->text.c_str());
    const Timings& t = res->timings;
    std::fprintf(stderr,
                 "[%zu prompt tokens, %zu generated, %s] preprocess %.1f ms, vision %.1f ms, "
                 "prefill %.1f ms, decode %.1f ms (%.1f tokens/s)\n",
                 res->prompt_ids.size(), res->tokens.size(), res->finish_reason.c_str(), t.preprocess_ms,
                 t.vision_ms, t.prefill_ms, t.decode_ms, t.decode_tokens_per_s);
    return 0;
  }
  nlohmann::json out;
  out["prompt_tokens"] = res->prompt_ids.size();
  out["completion_tokens"] = res->tokens.size();
  out["finish_reason"] = res->finish_reason;
  out["text"] = res->text;
  auto ids = nlohmann::json::array();
  auto logprobs = nlohmann::json::array();
  for (auto& t : res->tokens) {
    ids.push_back(t.id);
    logprobs.push_back({{"token_id", t.id}, {"logprob", t.logprob}, {"top_logprobs", top_json(t.top)}});
  }
  out["token_ids"] = ids;
  out["logprobs"] = logprobs;
  auto plps = nlohmann::json::array();
  for (auto& p : res->prompt_top_logprobs) plps.push_back(top_json(p));
  out["prompt_top_logprobs"] = plps;
  auto grids = nlohmann::json::array();
  for (auto& g : res->image_grids) grids.push_back({g[0], g[1], g[2]});
  out["image_grid_thw"] = grids;
  const Timings& t = res->timings;
  out["timings"] = {{"preprocess_ms", t.preprocess_ms}, {"vision_ms", t.vision_ms},
                    {"prefill_ms", t.prefill_ms},       {"decode_ms", t.decode_ms},
                    {"decode_tokens_per_s", t.decode_tokens_per_s}};
  std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return 0;
}

}  // namespace ost::tools
