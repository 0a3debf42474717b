#include "engine/engine.h"

#include <algorithm>
#include <chrono>

#include "core/file_util.h"

namespace ost {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

size_t stop_holdback(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (auto& s : stops) {
    if (s.empty()) continue;
    for (size_t k = std::min(s.size() - 1, text.size()); k > hold; --k)
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  }
  return hold;
}

Result<PreprocessOptions> preprocess_options(const PreprocessorConfig& pc, int64_t min_pixels, int64_t max_pixels) {
  PreprocessOptions po;
  po.min_pixels = min_pixels > 0 ? min_pixels : pc.min_pixels;
  po.max_pixels = max_pixels > 0 ? max_pixels : pc.max_pixels;
  if (po.min_pixels > po.max_pixels) {
    if (min_pixels > 0 && max_pixels > 0)
      return make_error("min_pixels %lld exceeds max_pixels %lld", (long long)min_pixels, (long long)max_pixels);
    if (max_pixels > 0) po.min_pixels = po.max_pixels;
    else po.max_pixels = po.min_pixels;
  }
  po.patch_size = pc.patch_size;
  po.temporal_patch_size = pc.temporal_patch_size;
  po.merge_size = pc.merge_size;
  po.mean = pc.image_mean;
  po.std = pc.image_std;
  po.rescale_factor = pc.rescale_factor;
  return po;
}

Result<PreprocessOptions> image_preprocess_options(const PreprocessorConfig& pc, const GenerateRequest& req,
                                                   size_t i) {
  const bool low = i < req.detail.size() && req.detail[i] == ImageDetail::kLow;
  if (!low) return preprocess_options(pc, req.min_pixels, req.max_pixels);
  const int64_t f = int64_t(pc.patch_size) * pc.merge_size;
  int64_t cap = kLowDetailTokens * f * f;
  if (req.max_pixels > 0) cap = std::min(cap, req.max_pixels);
  // The request's min_pixels yields to the low-detail cap.
  return preprocess_options(pc, req.min_pixels > 0 ? std::min(req.min_pixels, cap) : 0, cap);
}

Result<std::unique_ptr<Engine>> Engine::load(const std::string& dir, const EngineOptions& opt) {
  if (opt.device != "cpu" && opt.device != "cuda" && opt.device != "auto")
    return make_error("unknown device \"%s\" (expected cpu, cuda or auto)", opt.device.c_str());
  if (!is_directory(dir)) return make_error("model folder %s does not exist", dir.c_str());
  auto e = std::make_unique<Engine>();
  e->dir_ = dir;
  const std::string tok_path = dir + "/tokenizer.json";
  if (!file_exists(tok_path)) return make_error("model folder %s has no tokenizer.json", dir.c_str());
  auto tok = Tokenizer::load(tok_path);
  if (!tok) return Error{tok.message()};
  e->tokenizer_ = std::move(*tok);
  const bool cuda = opt.device == "cuda" || (opt.device == "auto" && cuda_available());
  auto m = cuda ? load_cuda_runner(dir, opt.quant) : load_cpu_runner(dir, opt.quant);
  if (!m) return Error{m.message()};
  e->model_ = std::move(*m);
  return e;
}

Result<std::vector<int32_t>> build_prompt_ids(const Tokenizer& tok, const GenerateRequest& req,
                                              const std::vector<ImagePatches>& patches, int32_t pad) {
  ChatTemplateOptions opt;
  opt.tools = req.tools;
  auto text = format_chat(req.messages, opt);
  if (!text) return Error{text.message()};
  std::vector<int32_t> raw = tok.encode(*text);
  std::vector<int32_t> ids;
  ids.reserve(raw.size());
  size_t img = 0;
  for (int32_t id : raw) {
    if (id != pad) {
      ids.push_back(id);
      continue;
    }
    // An <|image_pad|> typed by the user (not from an image part) has no image behind it.
    if (img >= patches.size())
      return make_error("the prompt holds more <|image_pad|> tokens than images (%zu)", patches.size());
    ids.insert(ids.end(), size_t(patches[img].num_tokens()), pad);
    ++img;
  }
  if (img != patches.size())
    return make_error("%zu images given but the prompt has %zu image slots", patches.size(), img);
  return ids;
}

Result<std::vector<int32_t>> Engine::prompt_ids(const GenerateRequest& req,
                                                const std::vector<ImagePatches>& patches) const {
  return build_prompt_ids(tokenizer_, req, patches, model_->config().image_token_id);
}

Result<GenerateResult> Engine::generate(const GenerateRequest& req, const TokenCallback& on_token) {
  OST_TRY(validate(req.sampling, model_->config().text.vocab_size));
  if (req.max_tokens < 0) return make_error("max_tokens must be >= 0");
  if (int(req.images.size()) != count_images(req.messages))
    return make_error("%zu images given for %d image parts", req.images.size(), count_images(req.messages));
  const ModelConfig& cfg = model_->config();
  const int vocab = cfg.text.vocab_size;
  GenerateResult res;
  auto t0 = std::chrono::steady_clock::now();

  // Images -> patches (per-request pixel bounds and image detail override the model's).
  auto pop = preprocess_options(model_->preprocessor(), req.min_pixels, req.max_pixels);
  if (!pop) return Error{pop.message()};
  const PreprocessOptions& po = *pop;  // the normalisation, the same for every image
  // A runner that cuts the patches itself (on the GPU) gets the resized RGB8 images and the
  // normalisation table instead of the f32 patches (an eighth of the bytes to move).
  const bool rgb = model_->takes_rgb();
  std::vector<ImagePatches> patches;
  std::vector<Image> resized(req.images.size());
  std::vector<const Image*> rgb_images;
  for (size_t i = 0; i < req.images.size(); ++i) {
    auto po_i = image_preprocess_options(model_->preprocessor(), req, i);
    if (!po_i) return make_error("image %zu: %s", i + 1, po_i.message().c_str());
    auto p = rgb ? plan_patches(req.images[i], *po_i, &resized[i]) : preprocess_image(req.images[i], *po_i);
    if (!p) return make_error("image %zu: %s", i + 1, p.message().c_str());
    res.image_grids.push_back({p->grid_t, p->grid_h, p->grid_w});
    patches.push_back(std::move(*p));
    rgb_images.push_back(resized[i].rgb.empty() ? &req.images[i] : &resized[i]);
  }
  NormalizeTable lut{};
  if (rgb && !patches.empty()) {
    auto t = normalize_table(po);
    if (!t) return make_error("image 1: %s", t.message().c_str());
    lut = *t;
  }
  auto ids = prompt_ids(req, patches);
  if (!ids) return Error{ids.message()};
  res.prompt_ids = std::move(*ids);
  const int64_t n_prompt = int64_t(res.prompt_ids.size());
  const int64_t limit = cfg.text.max_position_embeddings > 0 ? cfg.text.max_position_embeddings : (1 << 20);
  if (n_prompt + req.max_tokens > limit)
    return make_error("prompt (%lld tokens) + max_tokens (%d) exceeds the context length %lld",
                      (long long)n_prompt, req.max_tokens, (long long)limit);
  auto pos = compute_mrope_positions(res.prompt_ids, res.image_grids, cfg);
  if (!pos) return Error{pos.message()};
  res.timings.preprocess_ms = ms_since(t0);

  // Vision tower over all images of the request at once (attention stays per image).
  auto t1 = std::chrono::steady_clock::now();
  VisionOutput vis;
  const bool has_images = !patches.empty();
  if (has_images) {
    std::vector<float> pixels;  // several images: their patch rows concatenated
    VisionInput vin;
    int64_t rows = 0;
    for (auto& p : patches) {
      if (patches.size() > 1) pixels.insert(pixels.end(), p.pixel_values.begin(), p.pixel_values.end());
      rows += int64_t(p.grid_t) * p.grid_h * p.grid_w;
      vin.grid_thw.push_back({p.grid_t, p.grid_h, p.grid_w});
    }
    vin.pixel_values = patches.size() > 1 ? pixels.data() : patches[0].pixel_values.data();
    vin.num_patches = rows;
    if (rgb) {
      vin.pixel_values = nullptr;
      vin.rgb = rgb_images;
      vin.lut = &lut;
    }
    vin.keep_on_device = true;  // only this request's prefill reads it
    auto v = model_->encode_images(vin);
    if (!v) return Error{v.message()};
    vis = std::move(*v);
  }
  res.timings.vision_ms = ms_since(t1);

  // Prefill.
  auto t2 = std::chrono::steady_clock::now();
  auto seq = model_->new_sequence(n_prompt + req.max_tokens);
  if (!seq) return Error{seq.message()};
  SequenceState& cache = **seq;
  const bool all_logits = req.prompt_logprobs > 0;
  auto logits = model_->prefill(cache, res.prompt_ids, *pos, has_images ? &vis : nullptr, all_logits);
  if (!logits) return Error{logits.message()};
  if (all_logits)
    for (int64_t i = 0; i < n_prompt; ++i)
      res.prompt_top_logprobs.push_back(top_logprobs(logits->data() + i * vocab, vocab, req.prompt_logprobs));
  std::vector<float> last(logits->end() - vocab, logits->end());
  res.timings.prefill_ms = ms_since(t2);

  // Decode loop.
  auto t3 = std::chrono::steady_clock::now();
  Sampler sampler(req.sampling, vocab);
  sampler.set_prompt(res.prompt_ids);
  StreamDecoder detok(tokenizer_, /*skip_special=*/true);
  const auto& eos = model_->generation().eos_token_ids;
  std::string text;      // all text so far
  size_t emitted = 0;    // bytes of `text` already handed to the callback
  res.finish_reason = "length";
  // Plain greedy without top logprobs: the runner picks the next token (on the GPU the logits
  // never leave it); its choice and log-probability equal the sampler's and top_logprobs'.
  const bool runner_argmax = req.top_logprobs == 0 && plain_greedy(req.sampling) && !req.response_format;
  std::unique_ptr<grammar::Matcher> matcher;
  std::vector<uint64_t> mask;
  std::vector<float> masked;
  if (req.response_format) {
    if (!vocab_index_) vocab_index_ = grammar::make_vocab_index(tokenizer_, vocab, eos);
    matcher = std::make_unique<grammar::Matcher>(req.response_format);
  }
  GreedyToken chosen;  // the runner's choice for this step (steps after the first)
  for (int step = 0; step < req.max_tokens; ++step) {
    GeneratedToken tok;
    if (runner_argmax && step > 0) {
      tok.id = chosen.id;
      tok.logprob = chosen.logprob;
    } else if (matcher || !req.sampling.logit_bias.empty()) {
      masked = last;
      add_logit_bias(req.sampling, masked.data(), vocab);
      if (matcher) {
        if (vocab_index_->fill_mask(*matcher, mask) == 0) return make_error("the response format allows no next token");
        grammar::apply_mask(mask, masked.data(), vocab);
      }
      tok.id = sampler.sample(masked.data());
      tok.top = top_logprobs(last.data(), vocab, req.top_logprobs, &tok.logprob, tok.id);
      if (matcher && !vocab_index_->accept(*matcher, tok.id))
        return make_error("the response format refused token %d", tok.id);
    } else {
      tok.id = sampler.sample(last.data());
      tok.top = top_logprobs(last.data(), vocab, req.top_logprobs, &tok.logprob, tok.id);
    }
    sampler.accept(tok.id);
    res.tokens.push_back(tok);
    const bool is_eos = !req.ignore_eos && std::find(eos.begin(), eos.end(), tok.id) != eos.end();
    const bool last_step = step + 1 == req.max_tokens;
    bool stopped = is_eos;
    if (!is_eos) text += detok.push(tok.id);
    if (is_eos || last_step) text += detok.flush();
    // The earliest stop string in the new text ends the answer; text before `emitted` was
    // checked already (a possible stop start is never emitted, see stop_holdback).
    size_t cut = std::string::npos;
    for (auto& s : req.stop)
      if (!s.empty()) cut = std::min(cut, text.find(s, emitted));
    if (cut != std::string::npos) {
      text.resize(cut);
      stopped = true;
    }
    if (stopped) res.finish_reason = "stop";
    size_t safe = stopped || last_step ? text.size() : text.size() - stop_holdback(text, req.stop);
    std::string delta = safe > emitted ? text.substr(emitted, safe - emitted) : "";
    emitted = std::max(emitted, safe);
    if (on_token && !on_token(tok, delta)) {
      res.finish_reason = "cancelled";
      break;
    }
    if (stopped || last_step) break;
    if (runner_argmax) {
      auto next = model_->decode_batch_argmax({&cache}, {tok.id});
      if (!next) return Error{next.message()};
      chosen = (*next)[0];
    } else {
      auto next = model_->decode(cache, tok.id);
      if (!next) return Error{next.message()};
      last = std::move(*next);
    }
  }
  res.text = std::move(text);
  res.timings.decode_ms = ms_since(t3);
  if (res.tokens.size() > 1 && res.timings.decode_ms > 0)
    res.timings.decode_tokens_per_s = double(res.tokens.size() - 1) / (res.timings.decode_ms / 1000.0);
  return res;
}

}  // namespace ost
