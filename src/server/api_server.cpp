#include "server/api_server.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <sstream>

#include "server/web_assets.h"

namespace ost::server {

using nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

ApiError not_allowed(const std::string& m) { return {405, m, "invalid_request_error", "", "method_not_allowed"}; }

bool equal_const_time(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

json usage_json(const RequestEvent& done) {
  return {{"prompt_tokens", done.prompt_tokens},
          {"completion_tokens", done.completion_tokens},
          {"total_tokens", done.prompt_tokens + done.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", done.cached_tokens}}}};
}

// Routes as metric labels: a fixed set, so unknown paths cannot grow the label space.
std::string route_label(const std::string& path) {
  for (const char* r : {"/v1/chat/completions", "/v1/models", "/health", "/metrics", "/info"})
    if (path == r) return r;
  return find_web_asset(path) ? "static" : "other";
}

void histogram_text(std::ostringstream& o, const std::string& name, const std::string& help, const Histogram& h) {
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    cum += h.counts[i];
    o << name << "_bucket{le=\"" << h.bounds[i] << "\"} " << cum << "\n";
  }
  o << name << "_bucket{le=\"+Inf\"} " << h.count << "\n";
  o << name << "_sum " << h.sum << "\n" << name << "_count " << h.count << "\n";
}

}  // namespace

ApiServer::ApiServer(ApiServerOptions opt) : opt_(std::move(opt)), http_(opt_.http) {}

ApiServer::~ApiServer() { stop(); }

Status ApiServer::listen(const std::string& host, int port) { return http_.listen(host, port); }

void ApiServer::start() {
  http_.start([this](const http::Request& r, http::Conn& c) { handle(r, c); });
}

void ApiServer::stop() {
  http_.stop();
  std::lock_guard<std::mutex> l(mu_);
  engine_.reset();
}

void ApiServer::set_engine(std::unique_ptr<EngineLoop> engine) {
  std::lock_guard<std::mutex> l(mu_);
  engine_ = std::move(engine);
}

void ApiServer::set_load_error(const std::string& message) {
  std::lock_guard<std::mutex> l(mu_);
  load_error_ = message;
}

std::shared_ptr<EngineLoop> ApiServer::engine() const {
  std::lock_guard<std::mutex> l(mu_);
  return engine_;
}

void ApiServer::count(const std::string& route, int status) {
  std::lock_guard<std::mutex> l(mu_);
  requests_[{route, status}]++;
}

void ApiServer::reply(http::Conn& c, const std::string& route, int status, const std::string& body,
                      const std::string& content_type) {
  count(route, status);
  std::vector<std::pair<std::string, std::string>> h;
  if (status == 401) h.emplace_back("WWW-Authenticate", "Bearer");
  if (status == 429 || status == 503) h.emplace_back("Retry-After", "1");
  c.respond(status, content_type, body, h);
}

void ApiServer::reply_error(http::Conn& c, const std::string& route, const ApiError& e) {
  reply(c, route, e.status, error_body(e));
}

bool ApiServer::authorized(const http::Request& req) const {
  if (opt_.api_keys.empty()) return true;
  const std::string a = req.header("authorization");
  if (a.size() < 7 || (a.compare(0, 7, "Bearer ") != 0 && a.compare(0, 7, "bearer ") != 0)) return false;
  const std::string key = a.substr(7);
  bool ok = false;
  for (const std::string& k : opt_.api_keys) ok |= equal_const_time(k, key);
  return ok;
}

void ApiServer::handle(const http::Request& req, http::Conn& c) {
  const std::string route = route_label(req.path);
  auto eng = engine();
  const bool is_get = req.method == "GET" || req.method == "HEAD";

  if (req.path == "/health") {
    if (!is_get) return reply_error(c, route, not_allowed("use GET /health"));
    if (eng) return reply(c, route, 200, R"({"status":"ok"})");
    std::string err;
    {
      std::lock_guard<std::mutex> l(mu_);
      err = load_error_;
    }
    return reply(c, route, 503, dump({{"status", err.empty() ? "loading" : "error"}, {"error", err}}));
  }
  if (req.path == "/metrics") {
    if (!is_get) return reply_error(c, route, not_allowed("use GET /metrics"));
    count(route, 200);
    return void(c.respond(200, "text/plain; version=0.0.4; charset=utf-8", metrics_text()));
  }
  if (req.path == "/info") {
    json j = {{"ready", bool(eng)}, {"demo", opt_.demo_model}, {"auth", !opt_.api_keys.empty()},
              {"max_images", opt_.limits.max_images}};
    if (eng) j.update({{"model", eng->model_name()}, {"device", eng->snapshot().device},
                       {"context_length", eng->context_length()}});
    return reply(c, route, 200, dump(j));
  }
  if (req.path.rfind("/v1/", 0) == 0) {
    if (!authorized(req))
      return reply_error(c, route,
                         {401,
                          req.header("authorization").empty() ? "missing API key (Authorization: Bearer KEY)"
                                                              : "invalid API key",
                          "authentication_error", "", "invalid_api_key"});
    if (req.path == "/v1/models") {
      if (!is_get) return reply_error(c, route, not_allowed("use GET /v1/models"));
      json data = json::array();
      if (eng)
        data.push_back({{"id", eng->model_name()}, {"object", "model"}, {"created", 0}, {"owned_by", "ostrakon"},
                        {"demo", opt_.demo_model}, {"max_model_len", eng->context_length()}});
      return reply(c, route, 200, dump({{"object", "list"}, {"data", data}}));
    }
    if (req.path == "/v1/chat/completions") {
      if (req.method != "POST") return reply_error(c, route, not_allowed("use POST /v1/chat/completions"));
      if (!eng) return reply_error(c, route, {503, "the model is still loading", "server_error", "", "loading"});
      return chat(req, c, eng);
    }
    return reply_error(c, route, {404, "unknown route " + req.path, "invalid_request_error", "", "not_found"});
  }
  if (is_get) {
    if (const WebAsset* a = find_web_asset(req.path)) {
      count(route, 200);
      return void(c.respond(200, a->content_type,
                            std::string_view(reinterpret_cast<const char*>(a->data), a->size),
                            {{"Cache-Control", "no-cache"}}));
    }
  }
  reply_error(c, route, {404, "unknown route " + req.path, "invalid_request_error", "", "not_found"});
}

void ApiServer::chat(const http::Request& req, http::Conn& c, const std::shared_ptr<EngineLoop>& eng) {
  const std::string route = "/v1/chat/completions";
  ChatRequest cr;
  ApiError err;
  if (!parse_chat_request(req.body, opt_.limits, cr, err)) return reply_error(c, route, err);
  if (!cr.model.empty() && cr.model != eng->model_name())
    return reply_error(c, route, {404, "model \"" + cr.model + "\" is not served here (serving \"" +
                                           eng->model_name() + "\")",
                                  "invalid_request_error", "model", "model_not_found"});
  auto prepared = eng->prepare(cr.gen);
  if (!prepared) {
    const bool too_long = prepared.message().rfind("prompt too long", 0) == 0;
    return reply_error(c, route, {400, prepared.message(), "invalid_request_error", too_long ? "messages" : "",
                                  too_long ? "context_length_exceeded" : ""});
  }
  Submitted sub = eng->submit(std::move(*prepared), cr.n);
  if (sub.code == SubmitCode::kQueueFull)
    return reply_error(c, route, {429, sub.message, "rate_limit_error", "", "queue_full"});
  if (sub.code == SubmitCode::kTooManyChoices) return reply_error(c, route, {400, sub.message, "invalid_request_error", "n", ""});
  if (sub.code != SubmitCode::kOk) return reply_error(c, route, {503, sub.message, "server_error", "", ""});

  const std::string id = new_completion_id();
  const int64_t created = int64_t(std::time(nullptr));
  const std::string model = eng->model_name();
  auto& ch = *sub.channel;
  auto gone = [&] {
    ch.cancel();
    c.keep_alive = false;
    std::lock_guard<std::mutex> l(mu_);
    disconnects_++;
  };
  // usage over the choices: the prompt once, the completions summed.
  json usage;
  auto add_usage = [&](const RequestEvent& ev) {
    if (usage.is_null()) {
      usage = usage_json(ev);
      return;
    }
    const int64_t gen = usage["completion_tokens"].get<int64_t>() + ev.completion_tokens;
    usage["completion_tokens"] = gen;
    usage["total_tokens"] = usage["prompt_tokens"].get<int64_t>() + gen;
  };
  int open = cr.n;  // choices not done yet

  if (cr.stream) {
    count(route, 200);
    if (!c.begin_chunked(200, "text/event-stream", {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}}))
      return gone();
    auto chunk = [&](int index, const json& delta, const json& finish, const json& logprobs) {
      json j = {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
                {"choices", json::array({{{"index", index}, {"delta", delta}, {"logprobs", logprobs},
                                          {"finish_reason", finish}}})}};
      if (cr.include_usage) j["usage"] = nullptr;
      return "data: " + dump(j) + "\n\n";
    };
    std::string first;
    for (int i = 0; i < cr.n; ++i) first += chunk(i, {{"role", "assistant"}, {"content", ""}}, nullptr, nullptr);
    if (!c.send_chunk(first)) return gone();
    std::vector<ToolStream> tools(size_t(cr.n), ToolStream(cr.tools));
    for (;;) {
      RequestEvent ev;
      if (!ch.pop(ev, std::chrono::milliseconds(100))) {
        if (c.peer_gone()) return gone();
        continue;
      }
      ToolStream& ts = tools[size_t(ev.index)];
      if (ev.kind == RequestEvent::Kind::kToken) {
        const std::string text = ts.add(ev.delta);
        if (text.empty() && !cr.logprobs) continue;
        json lp = nullptr;
        if (cr.logprobs)
          lp = {{"content", json::array({token_logprob_json(eng->tokenizer(), ev.token)})}};
        if (!c.send_chunk(chunk(ev.index, {{"content", text}}, nullptr, lp))) return gone();
      } else if (ev.kind == RequestEvent::Kind::kDone) {
        std::string out;
        ParsedToolCalls calls;
        json finish = ev.finish_reason;
        if (ts.finish(calls)) {
          out += chunk(ev.index, {{"tool_calls", tool_calls_json(calls.calls, true)}}, nullptr, nullptr);
          if (ev.finish_reason == "stop") finish = "tool_calls";
        } else if (!ts.rest().empty()) {
          out += chunk(ev.index, {{"content", ts.rest()}}, nullptr, nullptr);
        }
        out += chunk(ev.index, json::object(), finish, nullptr);
        add_usage(ev);
        if (--open == 0) {
          if (cr.include_usage) {
            json u = {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
                      {"choices", json::array()}, {"usage", usage}};
            out += "data: " + dump(u) + "\n\n";
          }
          out += "data: [DONE]\n\n";
        }
        if (!c.send_chunk(out)) return gone();
        if (open == 0) {
          if (!c.end_chunked()) return gone();
          return;
        }
      } else {
        ch.cancel();  // the other choices are not wanted any more
        const std::string out = "data: " + error_body({500, ev.error, "server_error", "", ""}) + "\n\ndata: [DONE]\n\n";
        c.send_chunk(out);
        c.end_chunked();
        return;
      }
    }
  }

  std::vector<std::string> texts(size_t(cr.n));
  std::vector<json> logprobs(size_t(cr.n), json::array());
  json choices = json::array();
  // Nothing is written until the end, so a client that left is noticed only by looking: also
  // while tokens keep coming, or a long answer would run to max_tokens for nobody.
  auto next_look = std::chrono::steady_clock::now();
  for (;;) {
    RequestEvent ev;
    const bool got = ch.pop(ev, std::chrono::milliseconds(100));
    if (!got || std::chrono::steady_clock::now() >= next_look) {
      if (c.peer_gone()) return gone();
      next_look = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    }
    if (!got) continue;
    const size_t i = size_t(ev.index);
    if (ev.kind == RequestEvent::Kind::kToken) {
      texts[i] += ev.delta;
      if (cr.logprobs) logprobs[i].push_back(token_logprob_json(eng->tokenizer(), ev.token));
    } else if (ev.kind == RequestEvent::Kind::kDone) {
      json message = {{"role", "assistant"}, {"content", texts[i]}};
      json finish = ev.finish_reason;
      ParsedToolCalls calls;
      if (cr.tools && parse_tool_calls(texts[i], calls)) {
        message["content"] = calls.content.empty() ? json(nullptr) : json(calls.content);
        message["tool_calls"] = tool_calls_json(calls.calls, false);
        if (ev.finish_reason == "stop") finish = "tool_calls";
      }
      choices.push_back({{"index", ev.index},
                         {"message", message},
                         {"logprobs", cr.logprobs ? json{{"content", logprobs[i]}} : json(nullptr)},
                         {"finish_reason", finish}});
      add_usage(ev);
      if (--open > 0) continue;
      std::sort(choices.begin(), choices.end(),
                [](const json& a, const json& b) { return a["index"].get<int>() < b["index"].get<int>(); });
      json j = {{"id", id},       {"object", "chat.completion"}, {"created", created},
                {"model", model}, {"choices", choices},         {"usage", usage}};
      return reply(c, route, 200, dump(j));
    } else {
      ch.cancel();
      return reply_error(c, route, {500, ev.error, "server_error", "", ""});
    }
  }
}

std::string ApiServer::metrics_text() const {
  std::ostringstream o;
  auto eng = engine();
  EngineSnapshot s = eng ? eng->snapshot() : EngineSnapshot{};
  o << "# HELP ost_ready 1 when the model is loaded and serving.\n# TYPE ost_ready gauge\nost_ready "
    << (eng ? 1 : 0) << "\n";
  if (eng)
    o << "# HELP ost_model_info The served model.\n# TYPE ost_model_info gauge\nost_model_info{model=\""
      << s.model_name << "\",device=\"" << s.device << "\",demo=\"" << (opt_.demo_model ? "true" : "false")
      << "\"} 1\n";
  {
    std::lock_guard<std::mutex> l(mu_);
    o << "# HELP ost_requests_total HTTP requests by route and status.\n# TYPE ost_requests_total counter\n";
    for (auto& [k, n] : requests_)
      o << "ost_requests_total{route=\"" << k.first << "\",status=\"" << k.second << "\"} " << n << "\n";
    o << "# HELP ost_client_disconnects_total Requests cancelled because the client went away.\n"
         "# TYPE ost_client_disconnects_total counter\nost_client_disconnects_total "
      << disconnects_ << "\n";
  }
  auto counter = [&](const char* name, const char* help, int64_t v) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n" << name << " " << v << "\n";
  };
  auto gauge = [&](const char* name, const char* help, double v) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n" << name << " " << v << "\n";
  };
  counter("ost_prompt_tokens_total", "Prompt tokens of admitted requests.", s.prompt_tokens);
  counter("ost_generation_tokens_total", "Generated tokens.", s.generated_tokens);
  o << "# HELP ost_finished_total Finished requests by reason.\n# TYPE ost_finished_total counter\n"
    << "ost_finished_total{reason=\"stop\"} " << s.finished_stop << "\n"
    << "ost_finished_total{reason=\"length\"} " << s.finished_length << "\n"
    << "ost_finished_total{reason=\"cancelled\"} " << s.finished_cancelled << "\n"
    << "ost_finished_total{reason=\"error\"} " << s.finished_error << "\n";
  gauge("ost_queue_waiting", "Requests waiting for admission.", double(s.waiting));
  gauge("ost_batch_running", "Sequences in the running batch.", double(s.running));
  gauge("ost_kv_blocks_total", "KV blocks in the pool.", double(s.kv_blocks_total));
  gauge("ost_kv_blocks_used", "KV blocks held by sequences.", double(s.kv_blocks_used));
  gauge("ost_kv_blocks_free", "KV blocks free (cached ones included).", double(s.kv_blocks_free));
  gauge("ost_kv_blocks_cached", "Free or held blocks registered in the prefix cache.", double(s.kv_blocks_cached));
  gauge("ost_kv_block_size", "Tokens per KV block.", double(s.kv_block_size));
  counter("ost_prefix_cache_query_tokens_total", "Prompt tokens looked up in the prefix cache.", s.prefix_query_tokens);
  counter("ost_prefix_cache_hit_tokens_total", "Prompt tokens found in the prefix cache.", s.prefix_hit_tokens);
  counter("ost_prefix_cache_skipped_tokens_total",
          "Prompt tokens found in the prefix cache and not computed (0 when the runner recomputes them).",
          s.prefix_skipped_tokens);
  counter("ost_prompt_tokens_computed_total", "Prompt tokens run through the model (recomputation included).",
          s.computed_prompt_tokens);
  gauge("ost_prefix_cache_hit_rate", "Hit tokens / query tokens.",
        s.prefix_query_tokens ? double(s.prefix_hit_tokens) / double(s.prefix_query_tokens) : 0.0);
  counter("ost_image_cache_queries_total", "Images looked up in the vision cache.", s.image_queries);
  counter("ost_image_cache_hits_total", "Images whose vision output was cached.", s.image_hits);
  gauge("ost_image_cache_hit_rate", "Image hits / queries.",
        s.image_queries ? double(s.image_hits) / double(s.image_queries) : 0.0);
  counter("ost_preemptions_total", "Sequences preempted (recomputed later) for lack of KV blocks.", s.preemptions);
  counter("ost_engine_steps_total", "Engine steps that ran the model.", s.steps);
  counter("ost_sampling_candidate_rows_total", "Sampled decode rows drawn from the runner's top-K candidates.",
          s.candidate_rows);
  counter("ost_sampling_fallbacks_total", "Of those, rows whose draw needed the full logits.", s.sampling_fallbacks);
  counter("ost_constrained_tokens_total", "Tokens chosen under a response_format's token mask.", s.constrained_tokens);
  o << "# HELP ost_token_mask_seconds_total Time spent computing response_format token masks.\n"
       "# TYPE ost_token_mask_seconds_total counter\nost_token_mask_seconds_total "
    << s.token_mask_s << "\n";
  histogram_text(o, "ost_time_to_first_token_seconds", "Time from submission to the first token.", s.ttft_s);
  histogram_text(o, "ost_inter_token_seconds", "Time between consecutive tokens of a request.", s.itl_s);
  histogram_text(o, "ost_e2e_request_seconds", "Time from submission to the end of a request.", s.e2e_s);
  histogram_text(o, "ost_batch_size", "Sequences per engine step.", s.batch_size);
  return o.str();
}

}  // namespace ost::server
