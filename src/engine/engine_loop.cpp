#include "engine/engine_loop.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <list>
#include <optional>
#include <unordered_map>

#include "core/sha256.h"
#include "engine/scheduler.h"

namespace ost {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}


uint64_t hash64(const void* data, size_t n) {
  const std::string hex = sha256_hex(data, n);
  return std::stoull(hex.substr(0, 16), nullptr, 16);
}

// Token key for the prefix cache: the id for text, the image's content and place for images.
uint64_t image_key(uint64_t image_hash, int64_t index) {
  uint64_t h = image_hash ^ (uint64_t(index) * 0x9E3779B97F4A7C15ull);
  h = (h ^ (h >> 29)) * 0xBF58476D1CE4E5B9ull;
  return (h ^ (h >> 32)) | (1ull << 63);  // token ids never have the top bit
}

MropePositions slice_positions(const MropePositions& p, int64_t a, int64_t b) {
  MropePositions out;
  out.n = b - a;
  out.rope_delta = p.rope_delta;
  out.pos.resize(size_t(3 * out.n));
  for (int ax = 0; ax < 3; ++ax)
    std::copy(p.pos.begin() + ax * p.n + a, p.pos.begin() + ax * p.n + b, out.pos.begin() + ax * out.n);
  return out;
}

}  // namespace

// ---- RequestChannel ----

void RequestChannel::push(RequestEvent e) {
  {
    std::lock_guard<std::mutex> l(mu_);
    q_.push_back(std::move(e));
  }
  cv_.notify_all();
}

bool RequestChannel::pop(RequestEvent& e, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  if (!cv_.wait_for(l, timeout, [&] { return !q_.empty(); })) return false;
  e = std::move(q_.front());
  q_.pop_front();
  return true;
}

void RequestChannel::cancel() {
  if (!cancelled_.exchange(true) && wake_) wake_();
}

// ---- engine-thread state ----

struct EngineLoop::Live {
  uint64_t id = 0;
  PreparedRequest req;
  std::shared_ptr<RequestChannel> ch;
  SchedSeq seq;
  std::vector<int32_t> tokens;  // prompt + generated
  std::unique_ptr<SequenceState> state;
  size_t blocks_given = 0;  // engine pages: the size of the block table the runner last got
  // All images of the request, concatenated; a request of one image shares the cached output,
  // which a device runner keeps on the device. Made when a prefill chunk first needs image rows
  // (never when the prefix cache holds every image token).
  std::shared_ptr<const VisionOutput> vision;
  MropePositions pos;                    // of `tokens` when the current computation started
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<grammar::Matcher> matcher;  // with a response format: where the answer stands
  std::unique_ptr<StreamDecoder> detok;
  std::string text;
  size_t emitted = 0;
  int generated = 0;
  int index = 0;  // the choice, for requests of several
  Clock::time_point submitted, last_token;
  bool done = false;
};

struct EngineLoop::State {
  std::unique_ptr<BlockManager> blocks;
  std::unique_ptr<Scheduler> sched;
  std::unordered_map<SchedSeq*, std::unique_ptr<Live>> live;
  // Vision outputs by image hash, most recently used at the front.
  std::list<std::pair<uint64_t, std::shared_ptr<const VisionOutput>>> image_lru;
  uint64_t next_id = 1;
  std::vector<uint64_t> mask;                  // the token mask of the row being sampled
};

int64_t kv_pool_blocks(int64_t kv_memory_mb, int64_t bytes_per_token, int block_size, int64_t runner_pool_tokens) {
  if (bytes_per_token <= 0 || block_size <= 0) return 0;
  const int64_t blocks = (kv_memory_mb << 20) / (bytes_per_token * block_size);
  return runner_pool_tokens > 0 ? std::min(blocks, runner_pool_tokens / block_size) : blocks;
}

Result<std::unique_ptr<EngineLoop>> EngineLoop::start(std::unique_ptr<ModelRunner> runner, Tokenizer tokenizer,
                                                      std::string model_name, const EngineLoopOptions& opt) {
  std::unique_ptr<EngineLoop> e(new EngineLoop());
  e->runner_ = std::move(runner);
  e->tok_ = std::move(tokenizer);
  e->model_name_ = std::move(model_name);
  e->opt_ = opt;
  if (const char* env = std::getenv("OST_LOOP_HOST_SAMPLING"); env && std::string(env) == "1")
    e->opt_.runner_greedy = e->opt_.runner_candidates = false;
  {
    // Vision placeholders are never generated (emit_token masks them; the runner skips them).
    const ModelConfig& mc = e->runner_->config();
    std::vector<int32_t> ex;
    for (int id : {mc.image_token_id, mc.video_token_id, mc.vision_start_token_id, mc.vision_end_token_id})
      if (id >= 0 && id < mc.text.vocab_size && std::find(ex.begin(), ex.end(), id) == ex.end()) ex.push_back(id);
    OST_TRY(e->runner_->set_excluded_tokens(ex));
  }
  OST_TRY(e->runner_->warm_up(opt.max_running));
  if (const char* env = std::getenv("OST_ENGINE_PAGES"); env && std::string(env) == "0") e->opt_.engine_pages = false;
  e->paged_ = e->opt_.engine_pages && e->runner_->pages_from_engine();
  if (e->paged_ && e->runner_->kv_block_tokens() != opt.block_size)
    return make_error("the runner's KV pages hold %d tokens, the engine's blocks %d", e->runner_->kv_block_tokens(),
                      opt.block_size);
  const int64_t bytes_per_token = e->runner_->kv_bytes_per_token();
  const int64_t blocks =
      kv_pool_blocks(opt.kv_memory_mb, bytes_per_token, opt.block_size, e->runner_->kv_pool_tokens());
  if (blocks < 1)
    return make_error("--kv-memory %lld MB holds no block of %d tokens (%lld bytes per token)",
                      (long long)opt.kv_memory_mb, opt.block_size, (long long)bytes_per_token);
  if (opt.max_running < 1 || opt.step_tokens < opt.max_running || opt.prefill_chunk < 1)
    return make_error("engine options: need max_running >= 1, step_tokens >= max_running, prefill_chunk >= 1");
  e->num_blocks_ = int(std::min<int64_t>(blocks, 1 << 30));
  e->st_ = std::make_unique<State>();
  e->st_->blocks = std::make_unique<BlockManager>(e->num_blocks_, opt.block_size);
  SchedulerOptions so;
  so.max_running = opt.max_running;
  so.step_tokens = opt.step_tokens;
  so.prefill_chunk = opt.prefill_chunk;
  so.skip_cached_compute = e->paged_;  // else the runner's own cache recomputes prefix hits
  e->st_->sched = std::make_unique<Scheduler>(*e->st_->blocks, so);
  e->stats_.model_name = e->model_name_;
  e->stats_.device = e->runner_->device_name();
  e->stats_.ready = true;
  e->stats_.kv_blocks_total = e->num_blocks_;
  e->stats_.kv_blocks_free = e->num_blocks_;
  e->stats_.kv_block_size = opt.block_size;
  e->thread_ = std::thread([p = e.get()] { p->run(); });
  return e;
}

EngineLoop::~EngineLoop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t EngineLoop::context_length() const {
  const int m = runner_->config().text.max_position_embeddings;
  return m > 0 ? m : (1 << 20);
}

Result<PreparedRequest> EngineLoop::prepare(const GenerateRequest& req) const {
  OST_TRY(validate(req.sampling, runner_->config().text.vocab_size));
  if (int(req.images.size()) != count_images(req.messages))
    return make_error("%zu images given for %d image parts", req.images.size(), count_images(req.messages));
  PreparedRequest out;
  const PreprocessorConfig& pc = runner_->preprocessor();
  if (auto bounds = preprocess_options(pc, req.min_pixels, req.max_pixels); !bounds) return Error{bounds.message()};
  for (size_t i = 0; i < req.images.size(); ++i) {
    auto po = image_preprocess_options(pc, req, i);
    if (!po) return make_error("image %zu: %s", i + 1, po.message().c_str());
    auto p = preprocess_image(req.images[i], *po);
    if (!p) return make_error("image %zu: %s", i + 1, p.message().c_str());
    out.grids.push_back({p->grid_t, p->grid_h, p->grid_w});
    out.image_hashes.push_back(hash64(p->pixel_values.data(), p->pixel_values.size() * sizeof(float)));
    out.patches.push_back(std::move(*p));
  }
  auto ids = build_prompt_ids(tok_, req, out.patches, runner_->config().image_token_id);
  if (!ids) return Error{ids.message()};
  out.prompt_ids = std::move(*ids);
  auto pos = compute_mrope_positions(out.prompt_ids, out.grids, runner_->config());
  if (!pos) return Error{pos.message()};

  const int64_t n = int64_t(out.prompt_ids.size());
  const int64_t limit = std::min(context_length(), kv_capacity_tokens());
  if (n >= limit)
    return make_error("prompt too long: %lld tokens, the limit is %lld (context length %lld, KV memory for "
                      "%lld tokens)",
                      (long long)n, (long long)limit - 1, (long long)context_length(),
                      (long long)kv_capacity_tokens());
  if (req.max_tokens < 0) {
    out.max_tokens = int(std::min<int64_t>(-int64_t(req.max_tokens), limit - n));
  } else {
    if (n + req.max_tokens > limit)
      return make_error("prompt too long: %lld prompt tokens + max_tokens %d exceed the limit of %lld tokens",
                        (long long)n, req.max_tokens, (long long)limit);
    out.max_tokens = req.max_tokens;
  }
  out.sampling = req.sampling;
  out.stop = req.stop;
  out.ignore_eos = req.ignore_eos;
  out.top_logprobs = req.top_logprobs;
  if (req.response_format && req.ignore_eos) return make_error("ignore_eos cannot be used with a response format");
  out.response_format = req.response_format;
  if (out.response_format) vocab_index();  // on this thread, not the engine's (~0.5 s once)
  return out;
}

Submitted EngineLoop::submit(PreparedRequest req, int n) {
  Submitted res;
  if (n < 1) {
    res.code = SubmitCode::kStopped;
    res.message = "a request needs at least one choice";
    return res;
  }
  res.channel = std::make_shared<RequestChannel>([this] {
    {
      std::lock_guard<std::mutex> l(mu_);
      wake_ = true;
    }
    cv_.notify_all();
  });
  std::vector<std::unique_ptr<Live>> choices;
  for (int i = 0; i < n; ++i) {
    auto live = std::make_unique<Live>();
    live->req = i + 1 < n ? req : std::move(req);
    live->req.sampling.seed += uint64_t(i);
    live->index = i;
    live->submitted = Clock::now();
    live->ch = res.channel;
    choices.push_back(std::move(live));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) {
      res.code = SubmitCode::kStopped;
      res.message = "the engine is shutting down";
      return res;
    }
    if (n > opt_.max_queue) {
      res.code = SubmitCode::kTooManyChoices;
      res.message = std::to_string(n) + " choices are more than the queue holds (" + std::to_string(opt_.max_queue) + ")";
      return res;
    }
    if (int64_t(inbox_.size()) + stats_.waiting + n > opt_.max_queue) {
      res.code = SubmitCode::kQueueFull;
      res.message = "the request queue is full (" + std::to_string(opt_.max_queue) + " places, " +
                    std::to_string(n) + " asked); retry later";
      return res;
    }
    for (auto& c : choices) inbox_.push_back(std::move(c));
  }
  cv_.notify_all();
  return res;
}

const grammar::VocabIndex& EngineLoop::vocab_index() const {
  std::call_once(vocab_once_, [this] {
    vocab_ = grammar::make_vocab_index(tok_, runner_->config().text.vocab_size, runner_->generation().eos_token_ids);
  });
  return *vocab_;
}

EngineSnapshot EngineLoop::snapshot() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

void EngineLoop::run() {
  for (;;) {
    std::deque<std::unique_ptr<Live>> fresh;
    {
      std::unique_lock<std::mutex> l(mu_);
      const bool idle = st_->live.empty();
      if (idle) cv_.wait(l, [&] { return stop_ || !inbox_.empty() || wake_; });
      wake_ = false;
      if (stop_) break;
      fresh.swap(inbox_);
    }
    for (auto& r : fresh) {
      r->id = st_->next_id++;
      r->tokens = r->req.prompt_ids;
      r->seq.id = r->id;
      r->seq.num_prompt = int64_t(r->tokens.size());
      const int32_t pad = runner_->config().image_token_id;
      size_t img = 0;
      int64_t in_img = 0;
      for (size_t i = 0; i < r->tokens.size(); ++i) {
        if (r->tokens[i] != pad) {
          if (in_img > 0) ++img, in_img = 0;
          r->seq.keys.push_back(uint64_t(uint32_t(r->tokens[i])));
          continue;
        }
        // Pads of consecutive images are not adjacent (vision_end/start sit between them).
        r->seq.keys.push_back(image_key(img < r->req.image_hashes.size() ? r->req.image_hashes[img] : 0, in_img));
        if (++in_img == r->req.patches[std::min(img, r->req.patches.size() - 1)].num_tokens()) ++img, in_img = 0;
      }
      r->sampler = std::make_unique<Sampler>(r->req.sampling, runner_->config().text.vocab_size);
      r->sampler->set_prompt(r->tokens);
      if (r->req.response_format) {
        vocab_index();  // made by prepare() already, unless the request did not come through it
        r->matcher = std::make_unique<grammar::Matcher>(r->req.response_format);
      }
      r->detok = std::make_unique<StreamDecoder>(tok_, /*skip_special=*/true);
      SchedSeq* key = &r->seq;
      st_->sched->add(key);
      st_->live.emplace(key, std::move(r));
    }
    try {
      step();
    } catch (const std::exception& ex) {
      std::vector<Live*> all;
      for (auto& [k, r] : st_->live) all.push_back(r.get());
      for (Live* r : all) fail(*r, std::string("internal error: ") + ex.what());
    }
    // Drop finished requests and publish the state.
    for (auto it = st_->live.begin(); it != st_->live.end();)
      it = it->second->done ? st_->live.erase(it) : std::next(it);
    std::lock_guard<std::mutex> l(mu_);
    const BlockManager& b = *st_->blocks;
    stats_.waiting = int64_t(st_->sched->num_waiting());
    stats_.running = int64_t(st_->sched->num_running());
    stats_.kv_blocks_used = b.num_used();
    stats_.kv_blocks_free = b.num_free();
    stats_.kv_blocks_cached = b.num_cached();
    stats_.prefix_query_tokens = st_->sched->counters().prefix_query_tokens;
    stats_.prefix_hit_tokens = st_->sched->counters().prefix_hit_tokens;
    stats_.prefix_skipped_tokens = st_->sched->counters().prefix_skipped_tokens;
    stats_.computed_prompt_tokens = st_->sched->counters().computed_prompt_tokens;
    stats_.preemptions = st_->sched->counters().preemptions;
  }
  // Shutting down: every open request gets an answer.
  std::lock_guard<std::mutex> l(mu_);
  for (auto& r : inbox_) r->ch->push({RequestEvent::Kind::kError, {}, {}, {}, 0, 0, 0, "the server is shutting down"});
  for (auto& [k, r] : st_->live)
    if (!r->done) r->ch->push({RequestEvent::Kind::kError, {}, {}, {}, 0, 0, 0, "the server is shutting down"});
}

void EngineLoop::finish(Live& r, const std::string& reason) {
  if (r.done) return;
  st_->sched->finish(&r.seq);
  r.state.reset();
  r.done = true;
  RequestEvent e;
  e.kind = RequestEvent::Kind::kDone;
  e.finish_reason = reason;
  e.prompt_tokens = r.seq.num_prompt;
  e.completion_tokens = r.generated;
  e.cached_tokens = r.seq.cached_tokens;
  e.index = r.index;
  r.ch->push(std::move(e));
  std::lock_guard<std::mutex> l(mu_);
  stats_.e2e_s.observe(seconds_between(r.submitted, Clock::now()));
  if (reason == "stop") stats_.finished_stop++;
  else if (reason == "length") stats_.finished_length++;
  else stats_.finished_cancelled++;
}

void EngineLoop::fail(Live& r, const std::string& message) {
  if (r.done) return;
  st_->sched->finish(&r.seq);
  r.state.reset();
  r.done = true;
  RequestEvent e;
  e.kind = RequestEvent::Kind::kError;
  e.error = message;
  e.index = r.index;
  r.ch->push(std::move(e));
  std::lock_guard<std::mutex> l(mu_);
  stats_.finished_error++;
}

Status EngineLoop::ensure_vision(Live& r) {
  if (r.vision || r.req.patches.empty()) return Status::ok();
  // One image: the cached output itself (kept on the device when the runner can).
  const bool share = r.req.patches.size() == 1;
  auto out = std::make_shared<VisionOutput>();
  int64_t hits = 0;
  for (size_t i = 0; i < r.req.patches.size(); ++i) {
    const uint64_t h = r.req.image_hashes[i];
    std::shared_ptr<const VisionOutput> v;
    for (auto it = st_->image_lru.begin(); it != st_->image_lru.end(); ++it)
      if (it->first == h && (share || !(it->second->n_merged > 0 && it->second->embeds.empty()))) {
        v = it->second;
        st_->image_lru.splice(st_->image_lru.begin(), st_->image_lru, it);
        ++hits;
        break;
      }
    if (!v) {
      const ImagePatches& p = r.req.patches[i];
      VisionInput in;
      in.pixel_values = p.pixel_values.data();
      in.num_patches = int64_t(p.grid_t) * p.grid_h * p.grid_w;
      in.grid_thw = {{p.grid_t, p.grid_h, p.grid_w}};
      in.keep_on_device = share;
      auto enc = runner_->encode_images(in);
      if (!enc) return make_error("image %zu: %s", i + 1, enc.message().c_str());
      v = std::make_shared<const VisionOutput>(std::move(*enc));
      st_->image_lru.emplace_front(h, v);
      while (int(st_->image_lru.size()) > opt_.image_cache_entries) st_->image_lru.pop_back();
    }
    if (share) {
      r.vision = v;
      break;
    }
    out->embeds.insert(out->embeds.end(), v->embeds.begin(), v->embeds.end());
    out->deepstack.resize(v->deepstack.size());
    for (size_t d = 0; d < v->deepstack.size(); ++d)
      out->deepstack[d].insert(out->deepstack[d].end(), v->deepstack[d].begin(), v->deepstack[d].end());
    out->n_merged += v->n_merged;
  }
  if (!share) r.vision = std::move(out);
  std::lock_guard<std::mutex> l(mu_);
  stats_.image_queries += int64_t(r.req.patches.size());
  stats_.image_hits += hits;
  return Status::ok();
}

// Samples the next token from `logits` (f32 [vocab]), streams its text; true when finished.
bool EngineLoop::emit_token(Live& r, const float* logits) {
  const ModelConfig& cfg = runner_->config();
  const int vocab = cfg.text.vocab_size;
  // Vision placeholders are never generated: they would be read as images on recompute.
  std::vector<float> masked(logits, logits + vocab);
  add_logit_bias(r.req.sampling, masked.data(), vocab);
  for (int id : {cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id})
    if (id >= 0 && id < vocab) masked[size_t(id)] = -INFINITY;
  // A response format: only the tokens that continue it (its special tokens are masked too).
  if (r.matcher) {
    const auto t0 = Clock::now();
    if (vocab_->fill_mask(*r.matcher, st_->mask) == 0) {
      fail(r, "the response format allows no next token");
      return true;
    }
    grammar::apply_mask(st_->mask, masked.data(), vocab);
    std::lock_guard<std::mutex> l(mu_);
    stats_.constrained_tokens++;
    stats_.token_mask_s += seconds_between(t0, Clock::now());
  }
  GeneratedToken tok;
  tok.id = r.sampler->sample(masked.data());
  tok.top = top_logprobs(logits, vocab, r.req.top_logprobs, &tok.logprob, tok.id);
  if (r.matcher && !vocab_->accept(*r.matcher, tok.id)) {
    fail(r, "internal error: the response format refused the token it allowed");
    return true;
  }
  return emit(r, std::move(tok));
}

// The same from a runner's candidates (model/candidates.h); false, with nothing consumed, when
// they do not decide the token or its log-probabilities (then emit_token on the full logits).
bool EngineLoop::emit_candidates(Live& r, const RowCandidates& c) {
  GeneratedToken tok;
  float lse = 0.0f;
  if (!candidate_lse(c, lse) ||
      !candidate_top_logprobs(c, runner_->config().text.vocab_size, r.req.top_logprobs, lse, tok.top))
    return false;
  const std::optional<int32_t> id = r.sampler->sample(c);
  if (!id) return false;
  const auto it = std::find_if(c.top.begin(), c.top.end(), [&](const Candidate& k) { return k.id == *id; });
  OST_CHECK(it != c.top.end());
  tok.id = *id;
  tok.logprob = it->raw - lse;
  emit(r, std::move(tok));
  return true;
}

// Streams the chosen token's text and checks the stop conditions; true when finished.
bool EngineLoop::emit(Live& r, GeneratedToken tok) {
  r.sampler->accept(tok.id);
  r.tokens.push_back(tok.id);
  r.seq.keys.push_back(uint64_t(uint32_t(tok.id)));
  r.generated++;

  const auto& eos = runner_->generation().eos_token_ids;
  const bool is_eos = !r.req.ignore_eos && std::find(eos.begin(), eos.end(), tok.id) != eos.end();
  const bool last = r.generated >= r.req.max_tokens;
  bool stopped = is_eos;
  if (!is_eos) r.text += r.detok->push(tok.id);
  if (is_eos || last) r.text += r.detok->flush();
  size_t cut = std::string::npos;
  for (auto& s : r.req.stop)
    if (!s.empty()) cut = std::min(cut, r.text.find(s, r.emitted));
  if (cut != std::string::npos) {
    r.text.resize(cut);
    stopped = true;
  }
  const size_t safe = stopped || last ? r.text.size() : r.text.size() - stop_holdback(r.text, r.req.stop);
  RequestEvent e;
  e.kind = RequestEvent::Kind::kToken;
  e.token = std::move(tok);
  e.delta = safe > r.emitted ? r.text.substr(r.emitted, safe - r.emitted) : "";
  r.emitted = std::max(r.emitted, safe);
  e.index = r.index;
  r.ch->push(std::move(e));

  const auto now = Clock::now();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (r.generated == 1) stats_.ttft_s.observe(seconds_between(r.submitted, now));
    else stats_.itl_s.observe(seconds_between(r.last_token, now));
    stats_.generated_tokens++;
  }
  r.last_token = now;
  if (stopped || last) {
    finish(r, stopped ? "stop" : "length");
    return true;
  }
  return false;
}

// Engine pages: hands the runner the sequence's block table when it grew since the last step,
// after checking that the chunk writes only blocks this sequence holds alone (never a block
// shared through the prefix cache).
Status EngineLoop::give_blocks(Live& r, const ScheduledChunk& c) {
  if (!paged_) return Status::ok();
  if (!st_->blocks->writable(r.seq.table, c.start, c.start + c.count))
    return make_error("internal error: tokens %lld..%lld would be written into a shared KV block", (long long)c.start,
                      (long long)(c.start + c.count));
  if (r.seq.table.blocks.size() == r.blocks_given) return Status::ok();
  OST_TRY(runner_->set_block_table(*r.state, r.seq.table.blocks));
  r.blocks_given = r.seq.table.blocks.size();
  return Status::ok();
}

void EngineLoop::step() {
  Scheduler& sched = *st_->sched;
  // Cancellations first: their blocks go back to the pool before this step is planned.
  for (auto& [k, r] : st_->live)
    if (!r->done && r->ch->cancelled()) finish(*r, "cancelled");

  StepPlan plan = sched.schedule();
  for (SchedSeq* s : plan.preempted) st_->live.at(s)->state.reset();
  if (plan.empty()) {
    // Nothing runs and the head of the queue cannot be placed: it does not fit the pool alone.
    if (sched.num_running() == 0 && sched.num_waiting() > 0) {
      Live& r = *st_->live.at(sched.waiting().front());
      fail(r, "the request does not fit the KV memory (raise --kv-memory)");
    }
    return;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    stats_.steps++;
    stats_.batch_size.observe(double(plan.chunks.size()));
  }

  const int vocab = runner_->config().text.vocab_size;
  std::vector<ScheduledChunk> ok;  // chunks that ran
  std::vector<std::pair<Live*, std::vector<float>>> to_sample;
  std::vector<std::pair<Live*, GeneratedToken>> chosen;  // the runner's greedy choices
  std::vector<Live*> dec_live;
  std::vector<SequenceState*> dec_states;
  std::vector<int32_t> dec_ids;
  std::vector<ScheduledChunk> dec_chunks;
  std::vector<Live*> pre_live;
  std::vector<ScheduledChunk> pre_chunks;
  std::vector<PrefillChunk> pre;

  for (const ScheduledChunk& c : plan.chunks) {
    Live& r = *st_->live.at(c.seq);
    if (r.done) continue;
    const bool decode = c.count == 1 && r.state && r.state->length() == c.start && c.start >= r.seq.num_prompt &&
                        c.samples();
    if (decode) {
      if (Status st = give_blocks(r, c); !st) {
        fail(r, st.message());
        continue;
      }
      dec_live.push_back(&r);
      dec_states.push_back(r.state.get());
      dec_ids.push_back(r.tokens[size_t(c.start)]);
      dec_chunks.push_back(c);
      continue;
    }
    if (!r.state) {  // a fresh computation (first admission or after preemption)
      if (r.seq.preemptions == 0) {
        std::lock_guard<std::mutex> l(mu_);
        stats_.prompt_tokens += r.seq.num_prompt;
      }
      // With engine pages the first c.start tokens are prefix-cache hits, already in the
      // leading blocks of the table; else the sequence computes everything in its own cache.
      OST_CHECK(paged_ || c.start == 0);
      auto s = paged_ ? runner_->new_paged_sequence(c.start)
                      : runner_->new_sequence(int64_t(r.req.prompt_ids.size()) + r.req.max_tokens);
      if (!s) {
        fail(r, s.message());
        continue;
      }
      r.state = std::move(*s);
      r.blocks_given = 0;
      auto pos = compute_mrope_positions(r.tokens, r.req.grids, runner_->config());
      if (!pos) {
        fail(r, pos.message());
        continue;
      }
      r.pos = std::move(*pos);
    }
    OST_CHECK(r.state->length() == c.start && c.start + c.count <= r.pos.n);
    if (Status st = give_blocks(r, c); !st) {
      fail(r, st.message());
      continue;
    }
    const int32_t pad = runner_->config().image_token_id;
    const auto first = r.tokens.begin() + c.start, end = first + c.count;
    PrefillChunk pc;
    pc.seq = r.state.get();
    pc.ids.assign(first, end);
    pc.pos = slice_positions(r.pos, c.start, c.start + c.count);
    pc.logits = c.samples();
    if (std::count(first, end, pad) > 0) {  // image rows from the first pad of the chunk on
      if (Status st = ensure_vision(r); !st) {
        fail(r, st.message());
        continue;
      }
      pc.vision = r.vision.get();
      pc.vision_from = std::count(r.tokens.begin(), first, pad);
    }
    pre_live.push_back(&r);
    pre_chunks.push_back(c);
    pre.push_back(std::move(pc));
  }

  // Plain greedy rows only: the runner chooses and the logits stay where they are. Otherwise the
  // sampled rows get candidates (the plain greedy ones still the runner's choice). A row with a
  // response format or a logit_bias needs its whole logits row: neither shortcut sees the mask
  // or the bias.
  auto whole_row = [](const Live* r) { return r->matcher || !r->req.sampling.logit_bias.empty(); };
  auto runner_greedy = [&](const Live* r) {
    return r->req.top_logprobs == 0 && plain_greedy(r->req.sampling) && !whole_row(r);
  };
  const bool runner_choice = opt_.runner_greedy && std::all_of(dec_live.begin(), dec_live.end(), runner_greedy);
  const bool candidates = !runner_choice && opt_.runner_candidates && !dec_live.empty();
  std::vector<CandidateSpec> specs;
  if (candidates)
    for (const Live* r : dec_live)
      specs.push_back(runner_greedy(r) || whole_row(r) ? CandidateSpec()
                                                       : r->sampler->candidate_spec(r->req.top_logprobs));
  std::vector<std::pair<Live*, size_t>> from_candidates;  // decode rows sampled from out.decode_candidates
  std::vector<std::pair<Live*, size_t>> full_rows;        // candidates steps: rows sampled from full logits
  MixedStepOutput out;
  if (!pre.empty() || !dec_states.empty()) {
    auto res = candidates ? runner_->mixed_step_candidates(pre, dec_states, dec_ids, specs)
                          : runner_->mixed_step(pre, dec_states, dec_ids, runner_choice);
    if (!res) {
      for (Live* r : pre_live) fail(*r, res.message());
      for (Live* r : dec_live) fail(*r, res.message());
    } else {
      out = std::move(*res);
      for (size_t i = 0; i < pre_live.size(); ++i) {
        ok.push_back(pre_chunks[i]);
        if (pre_chunks[i].samples()) to_sample.emplace_back(pre_live[i], std::move(out.chunk_logits[i]));
      }
      for (size_t i = 0; i < dec_live.size(); ++i) {
        ok.push_back(dec_chunks[i]);
        if (runner_choice || (candidates && runner_greedy(dec_live[i]))) {
          GeneratedToken tok;
          tok.id = out.decode_tokens[i].id;
          tok.logprob = out.decode_tokens[i].logprob;
          chosen.emplace_back(dec_live[i], std::move(tok));
        } else if (candidates && !whole_row(dec_live[i])) {
          from_candidates.emplace_back(dec_live[i], i);
        } else if (candidates) {
          full_rows.emplace_back(dec_live[i], i);
        } else {
          to_sample.emplace_back(dec_live[i], std::vector<float>(out.decode_logits.begin() + int64_t(i) * vocab,
                                                                 out.decode_logits.begin() + int64_t(i + 1) * vocab));
        }
      }
    }
  }

  StepPlan done_plan;
  for (auto& c : ok)
    if (!st_->live.at(c.seq)->done) done_plan.chunks.push_back(c);
  sched.complete(done_plan);
  for (auto& [r, logits] : to_sample)
    if (!r->done) emit_token(*r, logits.data());
  // Decode row i of a candidates step from its full logits.
  auto emit_full_row = [&](Live& r, size_t i) {
    if (!out.decode_logits.empty()) {  // a host runner: the logits came with the candidates
      emit_token(r, out.decode_logits.data() + i * size_t(vocab));
      return;
    }
    auto logits = runner_->decode_row_logits(int(i));
    if (!logits) fail(r, logits.message());
    else emit_token(r, logits->data());
  };
  for (auto& [r, i] : from_candidates) {
    if (r->done) continue;
    const bool decided = emit_candidates(*r, out.decode_candidates[i]);
    {
      std::lock_guard<std::mutex> l(mu_);
      stats_.candidate_rows++;
      if (!decided) stats_.sampling_fallbacks++;
    }
    if (!decided) emit_full_row(*r, i);
  }
  for (auto& [r, i] : full_rows)
    if (!r->done) emit_full_row(*r, i);
  for (auto& [r, tok] : chosen)
    if (!r->done) emit(*r, std::move(tok));
}

}  // namespace ost
