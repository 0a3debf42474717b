// Serving under load on the CPU with the demo model, over loopback: many concurrent streams give
// the answers of one request at a time, cancelled requests give their KV blocks back, bad input
// never hurts the server, /metrics is valid Prometheus text, and memory stays flat over a soak.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "prometheus_text.h"
#include "stream_client.h"
#include "test_server.h"

namespace ost::testing {
namespace {

using nlohmann::json;

// The value of a metric line that starts with `series` ("name" or "name{labels}").
double metric_value(const std::string& text, const std::string& series) {
  size_t p = text.find("\n" + series + " ");
  return p == std::string::npos ? -1 : std::stod(text.substr(p + series.size() + 2));
}

int64_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * int64_t(::sysconf(_SC_PAGESIZE));
}

TEST(Serving, SixtyFourConcurrentStreamsGiveTheOneAtATimeAnswers) {
  server::ApiServerOptions so;
  EngineLoopOptions eo;
  eo.max_running = 64;
  eo.kv_memory_mb = 32;
  eo.prefill_chunk = 64;  // image prompts are prefilled over several steps, between decodes
  TestServer s(so, eo);
  const char* images[] = {"shelf_300x200.png", "poster_180x260.png"};
  const std::string urls[] = {png_data_url(images[0]), png_data_url(images[1])};
  constexpr int kN = 64;
  auto prompt = [](int i) {
    std::string t = "Shelf " + std::to_string(i) + ": what is on it?";
    for (int k = 0; k < i % 7; ++k) t += " Look closely.";
    return t;
  };
  auto body = [&](int i) {
    json messages =
        i % 4 == 0 ? json::array({image_message(urls[(i / 4) % 2], prompt(i))}) : user_text(prompt(i));
    return json{{"messages", messages}, {"max_tokens", 4 + i % 5}, {"temperature", 0}};
  };
  std::vector<StreamAnswer> got(kN);
  std::vector<std::thread> ts;
  for (int i = 0; i < kN; ++i) ts.emplace_back([&, i] { got[size_t(i)] = stream_chat(s.port, body(i)); });
  for (auto& t : ts) t.join();

  auto engine = Engine::load(demo_dir());
  ASSERT_TRUE(engine.is_ok()) << engine.message();
  for (int i = 0; i < kN; ++i) {
    const StreamAnswer& a = got[size_t(i)];
    ASSERT_EQ(a.status, 200) << i << " " << a.error;
    EXPECT_TRUE(a.done) << i;
    EXPECT_TRUE(a.error.empty()) << a.error;
    GenerateRequest g;
    if (i % 4 == 0) {
      g.messages = {{"user", {ContentPart::make_image(), ContentPart::make_text(prompt(i))}}};
      auto img = load_image_file(kImages + "/" + images[(i / 4) % 2]);
      ASSERT_TRUE(img.is_ok());
      g.images.push_back(*img);
    } else {
      g.messages = {{"user", {ContentPart::make_text(prompt(i))}}};
    }
    g.max_tokens = 4 + i % 5;
    g.sampling.temperature = 0;
    auto ref = (*engine)->generate(g);
    ASSERT_TRUE(ref.is_ok()) << ref.message();
    EXPECT_EQ(a.text, ref->text) << "request " << i;
    EXPECT_EQ(a.completion_tokens, int64_t(ref->tokens.size())) << i;
    EXPECT_EQ(a.prompt_tokens, int64_t(ref->prompt_ids.size())) << i;
    EXPECT_EQ(a.finish_reason, ref->finish_reason) << i;
  }
  // Every request finished and gave its blocks back; they really ran together: some engine
  // steps held more than one sequence.
  std::string m;
  EXPECT_TRUE(s.wait_for([&] {
    m = http_request(s.port, "GET", "/metrics").body;
    return metric_value(m, "ost_kv_blocks_used") == 0 &&
           metric_value(m, "ost_finished_total{reason=\"length\"}") +
                   metric_value(m, "ost_finished_total{reason=\"stop\"}") ==
               kN;
  })) << m;
  EXPECT_LT(metric_value(m, "ost_batch_size_bucket{le=\"1\"}"), metric_value(m, "ost_batch_size_count"));
}

TEST(Serving, CancelledRequestsReturnTheirBlocksWhereverTheyAre) {
  server::ApiServerOptions so;
  EngineLoopOptions eo;
  eo.max_running = 2;
  eo.kv_memory_mb = 32;  // 16384 tokens: room for two long answers
  TestServer s(so, eo);
  auto open = [&](bool stream) {
    int fd = connect_local(s.port);
    json body = {
        {"messages", user_text("A long story about shelves")}, {"max_tokens", 8000}, {"stream", stream}};
    send_str(fd, make_request("POST", "/v1/chat/completions", body.dump()));
    return fd;
  };
  const std::string m0 = http_request(s.port, "GET", "/metrics").body;
  // Two running (one streamed, one not), three waiting in the queue (streamed or not).
  std::vector<int> fds = {open(true), open(false)};
  ASSERT_TRUE(s.wait_for([&] { return s.metric("ost_batch_running") == 2; }));
  for (bool stream : {true, false, true}) fds.push_back(open(stream));
  ASSERT_TRUE(s.wait_for([&] { return s.metric("ost_queue_waiting") == 3; }));
  // The streamed running one is producing tokens.
  std::string got;
  char tmp[4096];
  while (got.find("data: ", got.find("data: ") + 1) == std::string::npos) {
    ssize_t n = ::recv(fds[0], tmp, sizeof tmp, 0);
    ASSERT_GT(n, 0);
    got.append(tmp, size_t(n));
  }
  EXPECT_GT(s.metric("ost_kv_blocks_used"), 0);
  for (int fd : fds) ::close(fd);
  EXPECT_TRUE(s.wait_for([&] {
    return s.metric("ost_kv_blocks_used") == 0 && s.metric("ost_batch_running") == 0 &&
           s.metric("ost_queue_waiting") == 0;
  }));
  const std::string m1 = http_request(s.port, "GET", "/metrics").body;
  const std::string cancelled = "ost_finished_total{reason=\"cancelled\"}";
  EXPECT_EQ(metric_value(m1, cancelled) - metric_value(m0, cancelled), 5);
  EXPECT_EQ(
      metric_value(m1, "ost_client_disconnects_total") - metric_value(m0, "ost_client_disconnects_total"), 5);
  // The freed blocks serve the next request.
  auto a = stream_chat(s.port, {{"messages", user_text("still there?")}, {"max_tokens", 3}});
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.completion_tokens, 3);
  EXPECT_TRUE(s.wait_for([&] { return s.metric("ost_kv_blocks_used") == 0; }));
}

// Raw bytes on a fresh connection; the status of the answer (-1: the server closed without one).
int raw_status(int port, const std::string& bytes, bool half_close = false) {
  int fd = connect_local(port);
  if (fd < 0) return -2;
  send_str(fd, bytes);
  if (half_close) ::shutdown(fd, SHUT_WR);
  std::string buf;
  HttpResponse r = read_response(fd, buf);
  ::close(fd);
  return r.status;
}

TEST(Serving, BadInputsAnswerTheirStatusAndLeaveTheServerHealthy) {
  server::ApiServerOptions so;
  so.http.limits.max_body_bytes = 1 << 20;
  so.limits.max_images = 1;
  EngineLoopOptions eo;
  eo.kv_memory_mb = 8;  // 4096 tokens of context
  TestServer s(so, eo);
  auto post = [](const std::string& body, const std::string& extra = "") {
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  };
  auto chat = [&](json extra) {
    json b = {{"messages", user_text("x")}, {"max_tokens", 2}};
    b.update(extra);
    return post(b.dump());
  };
  auto image = [&](const std::string& url) {
    return post(json({{"messages", json::array({image_message(url, "x")})}, {"max_tokens", 2}}).dump());
  };
  std::string nested;
  for (int i = 0; i < 100000; ++i) nested += '[';
  std::string long_prompt;
  for (int i = 0; i < 5000; ++i) long_prompt += " shelf";
  const std::string png = png_data_url("poster_180x260.png");
  struct Case {
    const char* what;
    std::string bytes;
    int status;
    bool half_close = false;
  };
  const std::vector<Case> cases = {
      {"not HTTP", "GARBAGE\r\n\r\n", 400},
      {"a TLS client hello", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11) + "\r\n\r\n",
       400},
      {"HTTP/2.0", "GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505},
      {"no Host", "GET /health HTTP/1.1\r\n\r\n", 400},
      {"a long target", "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
      {"a huge header", "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(40000, 'b') + "\r\n\r\n",
       431},
      {"a header without a colon", "GET /health HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400},
      {"gzip transfer coding",
       "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"Content-Length and chunked",
       "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: "
       "chunked\r\n\r\n",
       400},
      {"a bad Content-Length", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
       400},
      {"a bad chunk size",
       "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"a body over the limit",
       "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413},
      {"a truncated body",
       "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"messa", -1, true},
      {"a truncated head", "POST /v1/chat/completions HTTP/1.1\r\nHost:", -1, true},
      {"not JSON", post("{not json"), 400},
      {"invalid UTF-8", post("{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"), 400},
      {"100000 nested arrays", post(nested), 400},
      {"a JSON array", post("[]"), 400},
      {"no messages", post("{}"), 400},
      {"empty messages", chat({{"messages", json::array()}}), 400},
      {"a message without content", chat({{"messages", json::array({{{"role", "user"}}})}}), 400},
      {"an unknown role", chat({{"messages", json::array({{{"role", "robot"}, {"content", "x"}}})}}), 400},
      {"an unknown content part",
       chat({{"messages",
              json::array({{{"role", "user"}, {"content", json::array({{{"type", "audio"}}})}}})}}),
       400},
      {"max_tokens 0", chat({{"max_tokens", 0}}), 400},
      {"max_tokens -1", chat({{"max_tokens", -1}}), 400},
      {"max_tokens as text", chat({{"max_tokens", "10"}}), 400},
      {"temperature -1", chat({{"temperature", -1}}), 400},
      {"top_p 2", chat({{"top_p", 2}}), 400},
      {"n 0", chat({{"n", 0}}), 400},
      {"n 17", chat({{"n", 17}}), 400},
      {"stream as text", chat({{"stream", "yes"}}), 400},
      {"bad base64", image("data:image/png;base64,!!!!"), 400},
      {"not an image", image("data:image/png;base64," + base64("hello, world")), 400},
      {"a truncated PNG", image(png.substr(0, png.size() / 2)), 400},
      {"an SVG", image("data:image/svg+xml;base64," + base64("<svg xmlns='http://www.w3.org/2000/svg'/>")),
       400},
      {"a remote URL", image("http://127.0.0.1:1/x.png"), 400},
      {"a file URL", image("file:///etc/passwd"), 400},
      {"two images over a limit of one",
       post(json({{"messages",
                   json::array({{{"role", "user"},
                                 {"content",
                                  json::array({{{"type", "image_url"}, {"image_url", {{"url", png}}}},
                                               {{"type", "image_url"}, {"image_url", {{"url", png}}}}})}}})}})
                .dump()),
       400},
      {"a prompt over the context", chat({{"messages", user_text(long_prompt)}}), 400},
      {"an unknown model", chat({{"model", "gpt-4o"}}), 404},
      {"GET on chat", "GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", 405},
      {"an unknown route", "GET /v1/embeddings HTTP/1.1\r\nHost: x\r\n\r\n", 404},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(raw_status(s.port, c.bytes, c.half_close), c.status) << c.what;
    ASSERT_EQ(http_request(s.port, "GET", "/health").status, 200) << "after " << c.what;
  }
  // A good request still works, streamed and not, and nothing holds KV blocks.
  auto a = stream_chat(s.port, {{"messages", user_text("a good one")}, {"max_tokens", 3}});
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.completion_tokens, 3);
  auto r = s.post({{"messages", json::array({image_message(png, "and this one")})}, {"max_tokens", 3}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["usage"]["completion_tokens"], 3);
  EXPECT_TRUE(
      s.wait_for([&] { return s.metric("ost_kv_blocks_used") == 0 && s.metric("ost_batch_running") == 0; }));
}

TEST(Serving, MetricsAreValidPrometheusText) {
  server::ApiServerOptions so;
  so.demo_model = true;
  TestServer s(so);
  // Some traffic first so every histogram and labelled counter has samples.
  EXPECT_EQ(stream_chat(s.port, {{"messages", user_text("one")}, {"max_tokens", 3}}).status, 200);
  EXPECT_EQ(s.post({{"messages", json::array({image_message(png_data_url("shelf_300x200.png"), "two")})},
                    {"max_tokens", 2}})
                .status,
            200);
  EXPECT_EQ(s.post_raw("{").status, 400);
  EXPECT_EQ(http_request(s.port, "GET", "/nope").status, 404);
  // The engine records a request's statistics just after its last event.
  EXPECT_TRUE(s.wait_for([&] { return s.metric("ost_e2e_request_seconds_count") == 2; }));
  auto r = http_request(s.port, "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-type"].rfind("text/plain; version=0.0.4", 0), 0u) << r.headers["content-type"];
  PromParse p = parse_prometheus_text(r.body);
  for (const std::string& e : p.errors) ADD_FAILURE() << e;
  EXPECT_TRUE(p.errors.empty()) << r.body;
  // Every family is typed and documented, and the histograms are the ones the server promises.
  for (auto& [name, f] : p.families) {
    EXPECT_NE(f.type, "untyped") << name;
    EXPECT_FALSE(f.help.empty()) << name;
    EXPECT_FALSE(f.samples.empty()) << name;
    if (f.type == "counter")
      EXPECT_EQ(name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0, true) << name;
  }
  for (const char* h : {"ost_time_to_first_token_seconds", "ost_inter_token_seconds",
                        "ost_e2e_request_seconds", "ost_batch_size"}) {
    ASSERT_TRUE(p.families.count(h)) << h;
    EXPECT_EQ(p.families[h].type, "histogram") << h;
  }
  EXPECT_EQ(metric_value(r.body, "ost_e2e_request_seconds_count"), 2);
  EXPECT_EQ(metric_value(r.body, "ost_requests_total{route=\"/v1/chat/completions\",status=\"400\"}"), 1);
  EXPECT_EQ(metric_value(r.body, "ost_requests_total{route=\"other\",status=\"404\"}"), 1);

  // The parser itself refuses what it should.
  for (
      const char* bad : {
          "m 1",                           // no final newline
          "m{a=\"1\"} 1\nm{a=\"1\"} 2\n",  // duplicate series
          "m 1\nn 1\nm{a=\"2\"} 1\n",      // a split family
          "m{a=1} 1\n",                    // unquoted label value
          "m{__a=\"1\"} 1\n",              // reserved label name
          "m one\n",                       // bad value
          "1m 1\n",                        // bad name
          "# TYPE m counter\nm -1\n",      // negative counter
          "m 1\n# TYPE m gauge\n",         // TYPE after samples
          "# TYPE m histogram\nm_bucket{le=\"1\"} 2\nm_bucket{le=\"2\"} 1\nm_bucket{le=\"+Inf\"} 2\n"
          "m_sum 1\nm_count 2\n",  // decreasing buckets
          "# TYPE m histogram\nm_bucket{le=\"1\"} 1\nm_bucket{le=\"+Inf\"} 2\nm_sum 1\nm_count 3\n",  // +Inf
                                                                                                      // !=
                                                                                                      // count
          "# TYPE m histogram\nm_bucket{le=\"1\"} 1\nm_sum 1\nm_count 1\n",  // no +Inf
      })
    EXPECT_FALSE(parse_prometheus_text(bad).errors.empty()) << bad;
  EXPECT_TRUE(parse_prometheus_text(
                  "# a comment\n# HELP m x \\\\ y\n# TYPE m gauge\nm{a=\"q\\\"\\n\",} -1.5e-3 12\n\n")
                  .errors.empty());
}

TEST(Serving, SoakKeepsMemoryFlat) {
  server::ApiServerOptions so;
  EngineLoopOptions eo;
  eo.max_running = 8;
  eo.kv_memory_mb = 16;
  TestServer s(so, eo);
  const std::string urls[] = {png_data_url("shelf_300x200.png"), png_data_url("poster_180x260.png")};
  constexpr int kRequests = 256, kThreads = 8;
  std::atomic<int> next{0}, ok{0}, refused{0};
  std::atomic<int> failures{0};
  std::mutex mu;
  std::vector<int64_t> rss(4, 0);
  std::vector<int> done_in_quarter(4, 0);
  auto one = [&](int i) {
    // Unique text each time (new prefix-cache entries); images from a small set (cache hits).
    const std::string text = "Soak request " + std::to_string(i) + (i % 3 ? " about the shelf" : "");
    json messages = i % 5 == 0 ? json::array({image_message(urls[i % 2], text)}) : user_text(text);
    json body = {
        {"messages", messages}, {"max_tokens", 2 + i % 3}, {"temperature", i % 2 ? 0.7 : 0.0}, {"seed", i}};
    switch (i % 8) {
      case 0: {  // a bad request
        if (s.post_raw("{\"messages\": 3}").status == 400)
          ++refused;
        else
          ++failures;
        return;
      }
      case 1: {  // a client that leaves after the first event
        int fd = connect_local(s.port);
        body["stream"] = true;
        body["max_tokens"] = 64;
        send_str(fd, make_request("POST", "/v1/chat/completions", body.dump()));
        char tmp[512];
        (void)::recv(fd, tmp, sizeof tmp, 0);
        ::close(fd);
        return;
      }
      case 2:
      case 3:
      case 4: {
        auto a = stream_chat(s.port, body);
        if (a.status == 200 && a.done)
          ++ok;
        else
          ++failures;
        return;
      }
      default: {
        auto r = s.post(body);
        if (r.status == 200)
          ++ok;
        else
          ++failures;
      }
    }
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&] {
      for (int i; (i = next.fetch_add(1)) < kRequests;) {
        one(i);
        std::lock_guard<std::mutex> l(mu);
        const int q = i * 4 / kRequests;
        // The RSS when the last request of a quarter finishes.
        if (++done_in_quarter[size_t(q)] == kRequests / 4) rss[size_t(q)] = rss_bytes();
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(refused.load(), kRequests / 8);
  EXPECT_EQ(ok.load(), kRequests * 6 / 8);
  EXPECT_TRUE(
      s.wait_for([&] { return s.metric("ost_kv_blocks_used") == 0 && s.metric("ost_batch_running") == 0; }));
  // Caches and allocator arenas fill during the first half; after that the footprint holds
  // (2048 requests: 223 MB at 512, 229 MB at 2048). 20 MB over 128 requests would be 160 kB
  // each, the size of a decoded fixture image.
  const double mb = 1 << 20;
  std::printf("soak RSS by quarter: %.1f %.1f %.1f %.1f MB\n", rss[0] / mb, rss[1] / mb, rss[2] / mb,
              rss[3] / mb);
  EXPECT_LT(rss[3], rss[1] + (20 << 20))
      << "RSS grew from " << rss[1] / mb << " MB to " << rss[3] / mb << " MB";
}

}  // namespace
}  // namespace ost::testing
