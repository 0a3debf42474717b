// The server end to end: a real ApiServer on an ephemeral port serving the built-in demo model,
// driven by a plain-socket client (test_server.h). No timing assertions.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "server/openai.h"
#include "server/web_assets.h"
#include "test_server.h"

namespace ost::testing {
namespace {

using nlohmann::json;

TestServer& shared() {
  static TestServer* s = [] {
    server::ApiServerOptions so;
    so.limits.max_images = 2;
    so.limits.max_image_pixels = 200'000;
    so.http.limits.max_body_bytes = 4 << 20;
    so.demo_model = true;
    EngineLoopOptions eo;
    eo.kv_memory_mb = 8;     // 256 blocks of 16 tokens on the tiny model
    eo.prefill_chunk = 16;   // image prompts are prefilled in several chunks
    eo.max_running = 4;
    eo.cpu_engine_pages = true;  // prefix hits are read from engine blocks, not recomputed
    return new TestServer(so, eo);
  }();
  return *s;
}

void expect_error(const HttpResponse& r, int status, const std::string& needle = "") {
  EXPECT_EQ(r.status, status) << r.body << " (expected " << needle << ")";
  auto j = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body;
  for (const char* k : {"message", "type", "param", "code"}) EXPECT_TRUE(j["error"].contains(k)) << k;
  if (!needle.empty()) EXPECT_NE(j["error"]["message"].get<std::string>().find(needle), std::string::npos) << r.body;
}

TEST(Api, HealthModelsAndStaticPages) {
  TestServer& s = shared();
  EXPECT_EQ(http_request(s.port, "GET", "/health").status, 200);
  auto m = http_request(s.port, "GET", "/v1/models");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(json::parse(m.body)["data"][0]["id"], server::kDemoModelName);
  auto idx = http_request(s.port, "GET", "/");
  EXPECT_EQ(idx.status, 200);
  EXPECT_NE(idx.headers["content-type"].find("text/html"), std::string::npos);
  auto info = json::parse(http_request(s.port, "GET", "/info").body);
  EXPECT_TRUE(info["demo"].get<bool>());
  expect_error(http_request(s.port, "GET", "/nope"), 404);
  expect_error(http_request(s.port, "GET", "/v1/nope"), 404);
  expect_error(http_request(s.port, "GET", "/v1/chat/completions"), 405);
}

TEST(Api, HealthIs503WhileLoading) {
  server::ApiServer srv({});
  ASSERT_TRUE(srv.listen("127.0.0.1", 0).is_ok());
  srv.start();
  EXPECT_EQ(http_request(srv.port(), "GET", "/health").status, 503);
  expect_error(http_request(srv.port(), "POST", "/v1/chat/completions", R"({"messages":[]})"), 503);
  srv.stop();
}

TEST(Api, CompletionWithUsage) {
  TestServer& s = shared();
  auto r = s.post({{"model", server::kDemoModelName}, {"messages", user_text("Hello")}, {"max_tokens", 5},
                   {"seed", 3}, {"logprobs", true}, {"top_logprobs", 2}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_EQ(j["model"], server::kDemoModelName);
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 3);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"].size(), 5u);
  EXPECT_EQ(j["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 2u);
  // Same seed, same answer.
  auto r2 = s.post({{"messages", user_text("Hello")}, {"max_tokens", 5}, {"seed", 3}});
  EXPECT_EQ(json::parse(r2.body)["choices"][0]["message"]["content"], j["choices"][0]["message"]["content"]);
}

TEST(Api, GreedyMatchesTheOneRequestEngineWithChunkedImagePrefill) {
  TestServer& s = shared();
  const std::string url = png_data_url("shelf_300x200.png");
  auto r = s.post({{"messages", json::array({{{"role", "system"}, {"content", "You audit shelves."}},
                                             image_message(url, "Count the facings.")})},
                   {"max_tokens", 12},
                   {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = json::parse(r.body);
  auto engine = Engine::load(demo_dir());
  ASSERT_TRUE(engine.is_ok()) << engine.message();
  GenerateRequest g;
  g.messages = {{"system", {ContentPart::make_text("You audit shelves.")}},
                {"user", {ContentPart::make_image(), ContentPart::make_text("Count the facings.")}}};
  auto img = load_image_file(kImages + "/shelf_300x200.png");
  ASSERT_TRUE(img.is_ok());
  g.images.push_back(*img);
  g.max_tokens = 12;
  auto ref = (*engine)->generate(g);
  ASSERT_TRUE(ref.is_ok()) << ref.message();
  EXPECT_EQ(j["usage"]["prompt_tokens"].get<size_t>(), ref->prompt_ids.size());
  EXPECT_GT(ref->prompt_ids.size(), 16u * 2);  // really chunked
  EXPECT_EQ(j["choices"][0]["message"]["content"].get<std::string>(), ref->text);
  // The same request again: the prefix cache holds all of it but the last token's block, so
  // the image (all cached) is not even looked up.
  auto r2 = s.post({{"messages", json::array({{{"role", "system"}, {"content", "You audit shelves."}},
                                              image_message(url, "Count the facings.")})},
                    {"max_tokens", 2}});
  ASSERT_EQ(r2.status, 200);
  EXPECT_EQ(json::parse(r2.body)["usage"]["prompt_tokens_details"]["cached_tokens"].get<size_t>(),
            (ref->prompt_ids.size() - 1) / 16 * 16);
  // The same image after another system prompt: no prefix hit, a vision cache hit.
  const double image_hits = s.metric("ost_image_cache_hits_total");
  auto r3 = s.post({{"messages", json::array({{{"role", "system"}, {"content", "You count stock."}},
                                              image_message(url, "Count the facings.")})},
                    {"max_tokens", 2}});
  ASSERT_EQ(r3.status, 200);
  EXPECT_EQ(json::parse(r3.body)["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), 0);
  EXPECT_EQ(s.metric("ost_image_cache_hits_total"), image_hits + 1);
  EXPECT_GT(s.metric("ost_prefix_cache_hit_tokens_total"), 0);
  EXPECT_GT(s.metric("ost_prefix_cache_skipped_tokens_total"), 0);
  EXPECT_LT(s.metric("ost_prompt_tokens_computed_total"), s.metric("ost_prompt_tokens_total"));
}

TEST(Api, StreamingWithIncludeUsage) {
  TestServer& s = shared();
  auto r = s.post({{"messages", user_text("Describe the shelf")}, {"max_tokens", 6}, {"stream", true},
                   {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  std::vector<std::string> events;
  for (size_t p = 0; (p = r.body.find("data: ", p)) != std::string::npos;) {
    size_t e = r.body.find("\n\n", p);
    ASSERT_NE(e, std::string::npos);
    events.push_back(r.body.substr(p + 6, e - p - 6));
    p = e + 2;
  }
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  auto first = json::parse(events[0]);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  auto usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 6);
  auto fin = json::parse(events[events.size() - 3]);
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "length");
  for (size_t i = 0; i + 2 < events.size(); ++i) EXPECT_TRUE(json::parse(events[i])["usage"].is_null());
}

// n choices: each its own sample (choice i draws with seed + i, so choice 0 is the n = 1
// answer of the same seed), greedy choices all alike, usage counting the prompt once; streamed,
// every chunk names its choice and each choice ends with its own finish_reason.
TEST(Api, SeveralChoices) {
  TestServer& s = shared();
  const json msgs = user_text("Read the price tag");
  auto r = s.post({{"messages", msgs}, {"max_tokens", 6}, {"seed", 11}, {"n", 3}, {"logprobs", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = json::parse(r.body);
  ASSERT_EQ(j["choices"].size(), 3u);
  std::set<std::string> texts;
  for (int i = 0; i < 3; ++i) {
    const json& c = j["choices"][size_t(i)];
    EXPECT_EQ(c["index"], i);
    EXPECT_EQ(c["finish_reason"], "length");
    EXPECT_EQ(c["logprobs"]["content"].size(), 6u);
    texts.insert(c["message"]["content"].get<std::string>());
  }
  EXPECT_GT(texts.size(), 1u) << "sampled choices should differ";
  EXPECT_EQ(j["usage"]["completion_tokens"], 18);
  const int prompt = j["usage"]["prompt_tokens"].get<int>();
  EXPECT_EQ(j["usage"]["total_tokens"], prompt + 18);
  for (int i = 0; i < 3; ++i) {  // choice i is the one-choice answer of seed 11 + i
    auto one = s.post({{"messages", msgs}, {"max_tokens", 6}, {"seed", 11 + i}});
    ASSERT_EQ(one.status, 200);
    EXPECT_EQ(json::parse(one.body)["choices"][0]["message"]["content"], j["choices"][size_t(i)]["message"]["content"]);
  }

  auto g = json::parse(s.post({{"messages", msgs}, {"max_tokens", 5}, {"temperature", 0}, {"n", 2}}).body);
  ASSERT_EQ(g["choices"].size(), 2u);
  EXPECT_EQ(g["choices"][0]["message"]["content"], g["choices"][1]["message"]["content"]);

  auto st = s.post({{"messages", msgs}, {"max_tokens", 4}, {"seed", 11}, {"n", 3}, {"stream", true},
                    {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(st.status, 200);
  std::vector<std::string> streamed(3);
  std::vector<int> finishes(3, 0);
  json usage;
  bool done = false;
  for (size_t p = 0; (p = st.body.find("data: ", p)) != std::string::npos;) {
    const size_t e = st.body.find("\n\n", p);
    ASSERT_NE(e, std::string::npos);
    const std::string ev = st.body.substr(p + 6, e - p - 6);
    p = e + 2;
    if (ev == "[DONE]") {
      done = true;
      continue;
    }
    auto c = json::parse(ev);
    if (c["choices"].empty()) {
      usage = c["usage"];
      continue;
    }
    const int i = c["choices"][0]["index"].get<int>();
    ASSERT_TRUE(i >= 0 && i < 3);
    const json& d = c["choices"][0]["delta"];
    if (d.contains("content")) streamed[size_t(i)] += d["content"].get<std::string>();
    if (!c["choices"][0]["finish_reason"].is_null()) finishes[size_t(i)]++;
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(finishes, std::vector<int>({1, 1, 1}));
  EXPECT_EQ(usage["completion_tokens"], 12);
  auto ns = json::parse(s.post({{"messages", msgs}, {"max_tokens", 4}, {"seed", 11}, {"n", 3}}).body);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(streamed[size_t(i)], ns["choices"][size_t(i)]["message"]["content"]);
}

// Per-request image bounds: mm_processor_kwargs shrinks the image (fewer prompt tokens), and
// image_url.detail is checked ("low" caps at 256 vision tokens; this image has fewer anyway).
TEST(Api, ImageBoundsPerRequest) {
  TestServer& s = shared();
  const std::string url = png_data_url("shelf_300x200.png");
  auto tokens = [&](json extra, const json& detail) {
    json msg = image_message(url, "Count the facings.");
    if (!detail.is_null()) msg["content"][0]["image_url"]["detail"] = detail;
    json body = {{"messages", json::array({msg})}, {"max_tokens", 1}};
    body.update(extra);
    auto r = s.post(body);
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body)["usage"]["prompt_tokens"].get<int>();
  };
  const int full = tokens(json::object(), nullptr);
  // 300x200 -> 320x224 by default (70 merged tokens); at most 16,384 pixels -> 128x96 (12).
  const int small = tokens({{"mm_processor_kwargs", {{"min_pixels", 1024}, {"max_pixels", 16384}}}}, nullptr);
  EXPECT_EQ(full - small, 70 - 12);
  EXPECT_EQ(tokens(json::object(), "low"), full);
  EXPECT_EQ(tokens(json::object(), "high"), full);
  json bad = image_message(url, "x");
  bad["content"][0]["image_url"]["detail"] = "medium";
  expect_error(s.post({{"messages", json::array({bad})}}), 400, "detail");
  expect_error(s.post({{"messages", user_text("x")}, {"mm_processor_kwargs", {{"max_pixels", 0}}}}), 400);
  expect_error(s.post({{"messages", user_text("x")}, {"mm_processor_kwargs", {{"fps", 2}}}}), 400, "fps");
  expect_error(s.post({{"messages", user_text("x")},
                       {"mm_processor_kwargs", {{"min_pixels", 5000}, {"max_pixels", 4000}}}}),
               400, "exceeds");
}

// logit_bias: +100 on "\n" (id 198) makes every token "\n", greedy or sampled, while the
// reported log-probabilities stay the model's own (a flat random model: far below 0); -100 on
// the unbiased greedy choice moves it; bad maps are 400s.
TEST(Api, LogitBias) {
  TestServer& s = shared();
  const json msgs = user_text("List the facings");
  for (double temperature : {0.0, 1.0}) {
    auto r = s.post({{"messages", msgs}, {"max_tokens", 3}, {"temperature", temperature}, {"seed", 5},
                     {"logprobs", true}, {"logit_bias", {{"198", 100}}}});
    ASSERT_EQ(r.status, 200) << r.body;
    auto j = json::parse(r.body);
    EXPECT_EQ(j["choices"][0]["message"]["content"], "\n\n\n") << temperature;
    for (const json& t : j["choices"][0]["logprobs"]["content"]) EXPECT_LT(t["logprob"].get<double>(), -1.0);
  }
  auto plain = json::parse(s.post({{"messages", msgs}, {"max_tokens", 1}, {"temperature", 0}, {"logprobs", true}}).body);
  const std::string first = plain["choices"][0]["logprobs"]["content"][0]["token"];
  // Its id: the one that, biased down, changes the answer.
  auto tok = Tokenizer::load(std::string(OST_ASSETS) + "/qwen3/tokenizer.json");
  ASSERT_TRUE(tok.is_ok()) << tok.message();
  const auto ids = tok->encode(plain["choices"][0]["message"]["content"].get<std::string>());
  ASSERT_EQ(ids.size(), 1u) << first;
  auto down = json::parse(s.post({{"messages", msgs}, {"max_tokens", 1}, {"temperature", 0}, {"logprobs", true},
                                  {"logit_bias", {{std::to_string(ids[0]), -100}}}})
                              .body);
  EXPECT_NE(down["choices"][0]["logprobs"]["content"][0]["token"], first);
  expect_error(s.post({{"messages", msgs}, {"logit_bias", {{"abc", 1}}}}), 400, "token ids");
  expect_error(s.post({{"messages", msgs}, {"logit_bias", {{"198", 101}}}}), 400, "[-100, 100]");
  expect_error(s.post({{"messages", msgs}, {"logit_bias", {{"1000000000", 1}}}}), 400, "outside the vocabulary");
  expect_error(s.post({{"messages", msgs}, {"logit_bias", json::array()}}), 400, "logit_bias");
}

// Tools: the definitions reach the prompt (more prompt tokens), tool turns and assistant calls
// are accepted, tool_choice "none" leaves the tools out, and malformed tool fields are 400s.
// (The demo model's random weights do not call tools; parsing is tested in ToolStreamHoldsBack
// and the chat tests.)
TEST(Api, ToolsInThePrompt) {
  TestServer& s = shared();
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "count_items",
      "description": "Count the facings of an item on the shelf",
      "parameters": {"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]}}}])");
  auto plain = s.post({{"messages", user_text("How many cans?")}, {"max_tokens", 2}, {"temperature", 0}});
  auto with = s.post({{"messages", user_text("How many cans?")}, {"max_tokens", 2}, {"temperature", 0}, {"tools", tools}});
  auto none = s.post({{"messages", user_text("How many cans?")}, {"max_tokens", 2}, {"temperature", 0}, {"tools", tools},
                      {"tool_choice", "none"}});
  ASSERT_EQ(plain.status, 200) << plain.body;
  ASSERT_EQ(with.status, 200) << with.body;
  ASSERT_EQ(none.status, 200) << none.body;
  const int p0 = json::parse(plain.body)["usage"]["prompt_tokens"], p1 = json::parse(with.body)["usage"]["prompt_tokens"];
  EXPECT_GT(p1, p0 + 40);  // the tools block
  EXPECT_EQ(json::parse(none.body)["usage"]["prompt_tokens"], p0);
  const json history = json::parse(R"([
      {"role": "user", "content": "How many cans?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
          "function": {"name": "count_items", "arguments": "{\"item\": \"can\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "7"},
      {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "checked"}]}])");
  auto turn = s.post({{"messages", history}, {"max_tokens", 2}, {"tools", tools}, {"stream", true}});
  ASSERT_EQ(turn.status, 200) << turn.body;
  EXPECT_NE(turn.body.find("[DONE]"), std::string::npos);
  expect_error(s.post({{"messages", user_text("x")}, {"tools", "count"}}), 400, "tools");
  expect_error(s.post({{"messages", user_text("x")}, {"tools", json::array({{{"type", "function"}}})}}), 400, "tools[0]");
  expect_error(s.post({{"messages", user_text("x")}, {"tools", tools}, {"tool_choice", "sometimes"}}), 400, "tool_choice");
  expect_error(s.post({{"messages", user_text("x")}, {"tool_choice", "required"}}), 400, "no 'tools'");
  json bad_call = history;
  bad_call[1]["tool_calls"][0]["function"].erase("name");
  expect_error(s.post({{"messages", bad_call}}), 400, "tool_calls[0]");
  json user_call = history;
  user_call[0]["tool_calls"] = history[1]["tool_calls"];
  expect_error(s.post({{"messages", user_call}}), 400, "only allowed in assistant");
  EXPECT_EQ(http_request(s.port, "GET", "/health").status, 200);
}

TEST(Api, ToolStreamHoldsBack) {
  server::ToolStream off(false);
  EXPECT_EQ(off.add("<tool"), "<tool");
  server::ToolStream t(true);
  std::string sent = t.add("Let me count.");
  sent += t.add("\n<tool");  // may start a call: held back with the whitespace before it
  EXPECT_EQ(sent, "Let me count.");
  sent += t.add("_call>\n{\"name\": \"count_items\", \"arguments\": {\"item\": \"can\"}}\n");
  sent += t.add("</tool_call>");
  EXPECT_EQ(sent, "Let me count.");
  ParsedToolCalls calls;
  ASSERT_TRUE(t.finish(calls));
  ASSERT_EQ(calls.calls.size(), 1u);
  EXPECT_EQ(calls.calls[0].arguments, "{\"item\": \"can\"}");
  const json tc = server::tool_calls_json(calls.calls, true);
  EXPECT_EQ(tc[0]["index"], 0);
  EXPECT_EQ(tc[0]["id"].get<std::string>().rfind("call_", 0), 0u);
  EXPECT_EQ(tc[0]["function"]["name"], "count_items");
  // A tail that turns out not to be a call is sent; a broken call comes back as text.
  server::ToolStream u(true);
  std::string out = u.add("a <to");
  out += u.add("p shelf");
  EXPECT_EQ(out, "a <top shelf");
  out += u.add(" <tool_call>{broken");
  EXPECT_FALSE(u.finish(calls));
  EXPECT_EQ(out + u.rest(), "a <top shelf <tool_call>{broken");
}

TEST(Api, StopStringEndsTheAnswer) {
  TestServer& s = shared();
  auto full = json::parse(s.post({{"messages", user_text("Hi")}, {"max_tokens", 10}, {"temperature", 0}}).body);
  const std::string text = full["choices"][0]["message"]["content"];
  ASSERT_GT(text.size(), 4u);
  // One whole UTF-8 character from the middle of the answer.
  size_t a = text.size() / 2, b;
  while (a < text.size() && (uint8_t(text[a]) & 0xC0) == 0x80) ++a;
  for (b = a + 1; b < text.size() && (uint8_t(text[b]) & 0xC0) == 0x80;) ++b;
  ASSERT_LT(a, text.size());
  const std::string stop = text.substr(a, b - a);
  auto r = json::parse(s.post({{"messages", user_text("Hi")}, {"max_tokens", 10}, {"temperature", 0},
                               {"stop", json::array({stop})}}).body);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["choices"][0]["message"]["content"], text.substr(0, text.find(stop)));
}

TEST(Api, BadRequestsGetTheRightStatus) {
  TestServer& s = shared();
  expect_error(s.post_raw("{not json"), 400, "not valid JSON");
  expect_error(s.post_raw("[1,2]"), 400);
  expect_error(s.post({{"messages", "hi"}}), 400, "messages");
  expect_error(s.post({{"messages", user_text("x")}, {"temperature", "hot"}}), 400, "temperature");
  expect_error(s.post({{"messages", user_text("x")}, {"max_tokens", 1.5}}), 400, "max_tokens");
  expect_error(s.post({{"messages", user_text("x")}, {"stop", 3}}), 400, "stop");
  expect_error(s.post({{"messages", user_text("x")}, {"n", 0}}), 400);
  expect_error(s.post({{"messages", user_text("x")}, {"n", server::kMaxChoices + 1}}), 400, "n");
  expect_error(s.post({{"messages", json::array({{{"role", "robot"}, {"content", "x"}}})}}), 400, "role");
  expect_error(s.post({{"messages", json::array({image_message("data:image/png;base64,@@@@", "x")})}}), 400,
               "base64");
  expect_error(s.post({{"messages", json::array({image_message("data:image/png;base64," + base64("hello"), "x")})}}),
               400, "image 1");
  auto png = read_file(kImages + "/poster_180x260.png");
  ASSERT_TRUE(png.is_ok());
  expect_error(s.post({{"messages", json::array({image_message(
                            "data:image/png;base64," + base64(png->substr(0, png->size() / 2)), "x")})}}),
               400, "image 1");
  expect_error(s.post({{"messages", json::array({image_message("https://example.com/a.png", "x")})}}), 400,
               "not fetched");
  expect_error(s.post({{"messages", json::array({image_message("file:///etc/passwd", "x")})}}), 400, "file://");
  const std::string url = png_data_url("poster_180x260.png");
  json three = {{"role", "user"},
                {"content", json::array({{{"type", "image_url"}, {"image_url", {{"url", url}}}},
                                         {{"type", "image_url"}, {"image_url", {{"url", url}}}},
                                         {{"type", "image_url"}, {"image_url", {{"url", url}}}}})}};
  expect_error(s.post({{"messages", json::array({three})}}), 400, "too many images");
  // 600x400 = 240000 pixels > the 200000 limit of this server.
  json big = {{"role", "user"},
              {"content", json::array({{{"type", "image_url"}, {"image_url", {{"url", png_data_url("shelf_300x200.png")}}}}})}};
  // shelf is 300x200 = 60000: fine; a wide image made by repeating is not available, so lower the
  // limit with a dedicated server instead.
  server::ApiServerOptions so;
  so.limits.max_image_pixels = 50'000;
  TestServer small(so);
  expect_error(small.post({{"messages", json::array({big})}, {"max_tokens", 1}}), 400, "image 1");
  std::string long_prompt;
  for (int i = 0; i < 6000; ++i) long_prompt += " shelf";
  auto tl = s.post({{"messages", user_text(long_prompt)}, {"max_tokens", 4}});
  expect_error(tl, 400, "prompt too long");
  EXPECT_EQ(json::parse(tl.body)["error"]["code"], "context_length_exceeded");
  expect_error(s.post({{"model", "gpt-4"}, {"messages", user_text("x")}}), 404, "gpt-4");
  // 413: a body over the 4 MiB limit is refused from its Content-Length.
  int fd = connect_local(s.port);
  send_str(fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n");
  std::string buf;
  expect_error(read_response(fd, buf), 413);
  ::close(fd);
  // The server is still fine.
  EXPECT_EQ(s.post({{"messages", user_text("still there?")}, {"max_tokens", 2}}).status, 200);
}

TEST(Api, ApiKeys) {
  server::ApiServerOptions so;
  so.api_keys = {"k1", "k2"};
  TestServer s(so);
  json body = {{"messages", user_text("x")}, {"max_tokens", 1}};
  expect_error(s.post(body), 401, "missing");
  expect_error(s.post(body, "Authorization: Bearer nope\r\n"), 401, "invalid");
  EXPECT_EQ(s.post(body, "Authorization: Bearer k2\r\n").status, 200);
  expect_error(http_request(s.port, "GET", "/v1/models"), 401);
  EXPECT_EQ(http_request(s.port, "GET", "/health").status, 200);
}

TEST(Api, KeepAliveAndPipelining) {
  TestServer& s = shared();
  int fd = connect_local(s.port);
  const std::string body = json({{"messages", user_text("x")}, {"max_tokens", 1}}).dump();
  send_str(fd, make_request("GET", "/health", "", "", false) +
                   make_request("POST", "/v1/chat/completions", body, "", false));
  std::string buf;
  EXPECT_EQ(read_response(fd, buf).status, 200);
  EXPECT_EQ(read_response(fd, buf).status, 200);
  // A chunked request body.
  send_str(fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   [&] {
                     char h[16];
                     std::snprintf(h, sizeof h, "%zx", body.size());
                     return std::string(h);
                   }() + "\r\n" + body + "\r\n0\r\n\r\n");
  EXPECT_EQ(read_response(fd, buf).status, 200);
  ::close(fd);
}

TEST(Api, ConcurrentRequestsAreAllAnswered) {
  TestServer& s = shared();
  std::vector<std::thread> ts;
  std::vector<int> status(8, 0), tokens(8, 0);
  for (int i = 0; i < 8; ++i)
    ts.emplace_back([&, i] {
      auto r = s.post({{"messages", user_text("item " + std::to_string(i))}, {"max_tokens", 3 + i}, {"seed", i}});
      status[size_t(i)] = r.status;
      if (r.status == 200) tokens[size_t(i)] = json::parse(r.body)["usage"]["completion_tokens"];
    });
  for (auto& t : ts) t.join();
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(status[size_t(i)], 200);
    EXPECT_EQ(tokens[size_t(i)], 3 + i);
  }
}

TEST(Api, ClientDisconnectMidStreamCancelsAndFreesBlocks) {
  TestServer& s = shared();
  const double cancelled0 = [&] {
    auto r = http_request(s.port, "GET", "/metrics");
    size_t p = r.body.find("ost_finished_total{reason=\"cancelled\"} ");
    return std::stod(r.body.substr(p + 39));
  }();
  int fd = connect_local(s.port);
  json body = {{"messages", user_text("A long story")}, {"max_tokens", 3000}, {"stream", true}};
  send_str(fd, make_request("POST", "/v1/chat/completions", body.dump()));
  std::string got;
  char tmp[4096];
  auto events = [&] {
    size_t n = 0;
    for (size_t p = 0; (p = got.find("data: ", p)) != std::string::npos; ++p) ++n;
    return n;
  };
  while (events() < 4) {  // the role chunk and a few tokens
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    ASSERT_GT(n, 0);
    got.append(tmp, size_t(n));
  }
  EXPECT_GT(s.metric("ost_kv_blocks_used"), 0) << got;
  ::close(fd);
  EXPECT_TRUE(s.wait_for([&] { return s.metric("ost_kv_blocks_used") == 0 && s.metric("ost_batch_running") == 0; }));
  auto r = http_request(s.port, "GET", "/metrics");
  size_t p = r.body.find("ost_finished_total{reason=\"cancelled\"} ");
  EXPECT_EQ(std::stod(r.body.substr(p + 39)), cancelled0 + 1);
  EXPECT_GE(s.metric("ost_client_disconnects_total"), 1);
}

TEST(Api, FullQueueIsRefusedWith429) {
  server::ApiServerOptions so;
  EngineLoopOptions eo;
  eo.max_running = 1;
  eo.max_queue = 1;
  TestServer s(so, eo);
  auto start_stream = [&] {
    int fd = connect_local(s.port);
    json body = {{"messages", user_text("A long story")}, {"max_tokens", 20000}, {"stream", true}};
    send_str(fd, make_request("POST", "/v1/chat/completions", body.dump()));
    return fd;
  };
  int a = start_stream();
  ASSERT_TRUE(s.wait_for([&] { return s.metric("ost_batch_running") == 1; }));
  int b = start_stream();
  ASSERT_TRUE(s.wait_for([&] { return s.metric("ost_queue_waiting") == 1; }));
  expect_error(s.post({{"messages", user_text("x")}, {"max_tokens", 1}}), 429, "queue");
  // More choices than the queue can ever hold: not a reason to retry.
  expect_error(s.post({{"messages", user_text("x")}, {"max_tokens", 1}, {"n", 2}}), 400, "more than the queue holds");
  ::close(a);
  ::close(b);
  EXPECT_TRUE(s.wait_for([&] { return s.metric("ost_kv_blocks_used") == 0 && s.metric("ost_queue_waiting") == 0; }));
}

TEST(Api, MetricsExposition) {
  TestServer& s = shared();
  auto r = http_request(s.port, "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  for (const char* name :
       {"ost_requests_total{route=\"/v1/chat/completions\",status=\"200\"}", "ost_time_to_first_token_seconds_bucket",
        "ost_inter_token_seconds_count", "ost_e2e_request_seconds_sum", "ost_prompt_tokens_total",
        "ost_generation_tokens_total", "ost_queue_waiting", "ost_batch_running", "ost_kv_blocks_free",
        "ost_prefix_cache_hit_rate", "ost_image_cache_hit_rate", "ost_model_info{"})
    EXPECT_NE(r.body.find(name), std::string::npos) << name;
}

TEST(Web, EmbeddedAssetsMatchTheWebFolder) {
  const std::string web = std::string(OST_ASSETS) + "/../web";
  size_t n = 0;
  const server::WebAsset* a = server::web_assets(&n);
  size_t on_disk = 0;
  for (auto& e : std::filesystem::directory_iterator(web))
    if (e.is_regular_file()) ++on_disk;
  EXPECT_EQ(n, on_disk) << "run scripts/embed_web.py";
  for (size_t i = 0; i < n; ++i) {
    auto f = read_file(web + a[i].path);
    ASSERT_TRUE(f.is_ok()) << a[i].path;
    EXPECT_EQ(*f, std::string(reinterpret_cast<const char*>(a[i].data), a[i].size))
        << a[i].path << " is stale: run scripts/embed_web.py";
  }
}

}  // namespace
}  // namespace ost::testing
