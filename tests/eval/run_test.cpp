// End to end: the built-in pack on the tiny demo model in this process, the reports it writes,
// --compare of two runs, a run against `ostrakon serve`'s ApiServer on an ephemeral port, and
// the command line. Answers of the random-weight model are noise: only structure and counts
// are checked. Small max_tokens keep the whole file to a few seconds.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "eval/backend.h"
#include "eval/dataset.h"
#include "eval/report.h"
#include "eval/runner.h"
#include "server/api_server.h"
#include "server/model_setup.h"
#include "vision/image.h"

namespace ost::eval {
namespace {

using nlohmann::json;

const std::string kPack = std::string(OST_ASSETS) + "/../data/scenarios/store_pack.jsonl";

testing::TempDir& scratch() {
  static testing::TempDir dir;
  return dir;
}

std::string demo_dir() {
  static std::string path = [] {
    auto d = server::ensure_demo_model(scratch() / "demo", std::string(OST_ASSETS) + "/qwen3/tokenizer.json");
    EXPECT_TRUE(d.is_ok()) << d.message();
    return d ? *d : std::string();
  }();
  return path;
}

json read_json(const std::string& path) {
  auto t = read_file(path);
  EXPECT_TRUE(t.is_ok()) << path;
  return t ? json::parse(*t, nullptr, false) : json();
}

// The in-process run of the whole pack, shared by the tests below: batched (EngineLoop, as
// --model with --concurrency 2), which reuses vision outputs of the images items share.
const RunResults& pack_run() {
  static RunResults run = [] {
    auto d = load_dataset(kPack);
    EXPECT_TRUE(d.is_ok());
    auto be = make_engine_backend(demo_dir(), "cpu", 2);
    EXPECT_TRUE(be.is_ok()) << be.message();
    RunOptions ro;
    ro.max_tokens = 3;
    ro.concurrency = 2;
    ro.progress = false;
    return run_eval(*d, **be, ro);
  }();
  return run;
}

Dataset pack_subset(size_t n) {
  auto d = load_dataset(kPack);
  EXPECT_TRUE(d.is_ok());
  Dataset s = *d;
  // Every format, a few of each.
  std::vector<EvalItem> keep;
  std::map<ItemFormat, size_t> per;
  for (auto& it : d->items)
    if (per[it.format]++ < n) keep.push_back(it);
  s.items = keep;
  return s;
}

TEST(EvalRun, PackInProcessWritesReports) {
  const RunResults& run = pack_run();
  auto d = load_dataset(kPack);
  ASSERT_TRUE(d.is_ok());
  const size_t n = d->items.size();
  ASSERT_EQ(run.items.size(), n);
  const std::string out = scratch() / "run-a";
  ASSERT_TRUE(write_run_report(run, out).is_ok());

  json j = read_json(out + "/results.json");
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["schema"], "ostrakon-eval-results/1");
  EXPECT_EQ(j["items"].size(), n);
  EXPECT_EQ(j["run"]["items_in_file"], n + 1);
  ASSERT_EQ(j["unsupported"].size(), 1u);
  EXPECT_EQ(j["unsupported"][0]["id"], "kitchen-video-01");
  const json& agg = j["aggregates"];
  EXPECT_EQ(agg["overall"]["items"], n);
  EXPECT_EQ(agg["overall"]["errors"], 0) << j["items"][0].dump();
  int scene_sum = 0, format_sum = 0;
  for (auto& [k, g] : agg["by_scene"].items()) scene_sum += g["items"].get<int>();
  for (auto& [k, g] : agg["by_format"].items()) format_sum += g["items"].get<int>();
  EXPECT_EQ(scene_sum, int(n));
  EXPECT_EQ(format_sum, int(n));
  EXPECT_EQ(agg["by_scene"].size(), 3u);
  for (const char* f : {"mcq", "open", "json"}) EXPECT_TRUE(agg["by_format"].contains(f)) << f;
  EXPECT_TRUE(agg["by_format"]["json"].contains("json"));
  EXPECT_TRUE(agg["by_format"]["open"].contains("open"));
  for (const char* c : {"ShopInterior", "ShopInterior/Shelf", "ShopInterior/Shelf/OutOfStock", "Kitchen/Hygiene/Checklist",
                        "ShopFront/Signage"})
    EXPECT_TRUE(agg["by_category"].contains(c)) << c;
  EXPECT_EQ(agg["by_category"]["ShopInterior"]["items"], agg["by_scene"]["ShopInterior"]["items"]);
  EXPECT_EQ(agg["overall"]["visual_check"]["items"], n);
  EXPECT_EQ(agg["latency"]["total"]["n"], n);
  EXPECT_GT(agg["throughput"]["completion_tokens"].get<int>(), 0);

  const std::set<std::string> outcomes = {"correct", "wrong", "refusal", "no_answer", "invalid_json"};
  for (auto& it : j["items"]) {
    EXPECT_TRUE(outcomes.count(it["outcome"].get<std::string>())) << it.dump();
    EXPECT_LE(it["completion_tokens"].get<int>(), 3);
    EXPECT_GT(it["prompt_tokens"].get<int>(), 0);
    EXPECT_GE(it["ttft_ms"].get<double>(), 0);
    EXPECT_GE(it["total_ms"].get<double>(), it["ttft_ms"].get<double>());
    ASSERT_TRUE(it.contains("blank_image")) << it["id"];
    EXPECT_EQ(it["blank_image"]["outcome"] == "error", false);
    if (it["format"] == "json") EXPECT_TRUE(it.contains("schema_valid"));
  }

  auto md = read_file(out + "/report.md");
  ASSERT_TRUE(md.is_ok());
  for (const char* s : {"# Store-scenario evaluation", "## By scene", "## By category", "## By answer format",
                        "## Visual necessity", "## Latency and throughput", "kitchen-video-01", "| ShopInterior/Shelf/OutOfStock |"})
    EXPECT_NE(md->find(s), std::string::npos) << s;
  auto html = read_file(out + "/report.html");
  ASSERT_TRUE(html.is_ok());
  EXPECT_EQ(html->rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html->find("<style>"), std::string::npos);
  EXPECT_GE(std::count_if(html->begin(), html->end(), [](char) { return true; }), 1000);
  size_t svgs = 0;
  for (size_t p = html->find("<svg"); p != std::string::npos; p = html->find("<svg", p + 1)) ++svgs;
  EXPECT_GE(svgs, 2u);  // accuracy per category, latency distribution
  // Self-contained: no scripts, no external stylesheets or images.
  EXPECT_EQ(html->find("<script"), std::string::npos);
  EXPECT_EQ(html->find("<link"), std::string::npos);
  EXPECT_EQ(html->find("src="), std::string::npos);
}

TEST(EvalRun, SingleRequestEngineRecordsStageTimings) {
  auto be = make_engine_backend(demo_dir(), "cpu", 1);
  ASSERT_TRUE(be.is_ok()) << be.message();
  EXPECT_EQ((*be)->target(), "in-process (cpu)");
  Dataset d = pack_subset(1);
  RunOptions ro;
  ro.max_tokens = 2;
  ro.progress = false;
  ro.visual_check = false;  // covered by the batched run; this path is the slow one on CPU
  RunResults run = run_eval(d, **be, ro);
  ASSERT_EQ(run.items.size(), 3u);
  for (auto& r : run.items) {
    EXPECT_EQ(r.answer.error, "") << r.id;
    EXPECT_TRUE(r.answer.has_timings);
    EXPECT_GT(r.answer.timings.vision_ms, 0);
    EXPECT_FALSE(r.blind_done);
  }
  EXPECT_TRUE(results_to_json(run)["items"][0].contains("timings"));
}

TEST(EvalRun, ResultsRoundTrip) {
  const std::string out = scratch() / "run-rt";
  ASSERT_TRUE(write_run_report(pack_run(), out).is_ok());
  auto back = load_results(out + "/results.json");
  ASSERT_TRUE(back.is_ok()) << back.message();
  EXPECT_EQ(back->items.size(), pack_run().items.size());
  EXPECT_EQ(results_to_json(*back)["aggregates"], results_to_json(pack_run())["aggregates"]);
  EXPECT_FALSE(load_results(kPack).is_ok());
}

TEST(EvalCompare, ChangedItemsAndDeltas) {
  RunResults a = pack_run();
  RunResults b = a;
  ASSERT_GE(a.items.size(), 5u);
  // B: item 0 flips to right, item 1 to a different wrong answer, item 2 missing, one new item.
  b.items[0].scored.correct = !a.items[0].scored.correct;
  b.items[0].scored.extracted = a.items[0].scored.extracted + "x";
  b.items[1].scored.extracted = a.items[1].scored.extracted + "y";
  b.items[1].scored.correct = a.items[1].scored.correct;
  const std::string gone = b.items[2].id;
  b.items.erase(b.items.begin() + 2);
  b.items.push_back(a.items[3]);
  b.items.back().id = "only-in-b";
  json c = compare_json(a, b);
  EXPECT_EQ(c["items_compared"], a.items.size() - 1);
  EXPECT_EQ(c["only_in_a"], json::array({gone}));
  EXPECT_EQ(c["only_in_b"], json::array({"only-in-b"}));
  EXPECT_EQ(c["agreement"]["answer_changed"], 2);
  EXPECT_EQ(c["changed"][0]["id"], a.items[0].id);
  EXPECT_EQ(c["changed"][1]["id"], a.items[1].id);
  const auto& ag = c["agreement"];
  EXPECT_EQ(ag["both_right"].get<int>() + ag["only_a_right"].get<int>() + ag["only_b_right"].get<int>() +
                ag["both_wrong"].get<int>(),
            c["items_compared"].get<int>());
  EXPECT_EQ(ag["only_a_right"].get<int>() + ag["only_b_right"].get<int>(), 1);
  EXPECT_TRUE(c["by_category"].contains("Kitchen/Plating"));
  EXPECT_TRUE(c["by_format"].contains("mcq"));

  const std::string out = scratch() / "cmp";
  ASSERT_TRUE(write_compare_report(a, b, out).is_ok());
  auto md = read_file(out + "/report.md");
  ASSERT_TRUE(md.is_ok());
  for (const char* s : {"comparison", "## By category", "## Items whose answer changed", a.items[1].id.c_str()})
    EXPECT_NE(md->find(s), std::string::npos) << s;
  auto html = read_file(out + "/report.html");
  ASSERT_TRUE(html.is_ok());
  EXPECT_NE(html->find("<svg"), std::string::npos);
  EXPECT_TRUE(read_json(out + "/compare.json").is_object());
}

struct TestServer {
  std::unique_ptr<server::ApiServer> srv;
  int port = 0;
  explicit TestServer(std::vector<std::string> keys = {}) {
    server::ApiServerOptions so;
    so.api_keys = std::move(keys);
    so.http.header_timeout_ms = 5000;
    srv = std::make_unique<server::ApiServer>(so);
    EXPECT_TRUE(srv->listen("127.0.0.1", 0).is_ok());
    port = srv->port();
    srv->start();
    EngineLoopOptions eo;
    eo.max_running = 4;
    auto e = server::load_engine_loop(demo_dir(), "cpu", server::kDemoModelName, eo);
    EXPECT_TRUE(e.is_ok()) << e.message();
    if (e) srv->set_engine(std::move(*e));
  }
  ~TestServer() { srv->stop(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
};

TEST(EvalUrl, AgainstOurServer) {
  TestServer ts;
  auto be = make_http_backend(ts.url(), "", "");
  ASSERT_TRUE(be.is_ok()) << be.message();
  EXPECT_EQ((*be)->model_name(), server::kDemoModelName);
  EXPECT_EQ((*be)->target(), ts.url() + "/v1/chat/completions");
  Dataset d = pack_subset(3);
  RunOptions ro;
  ro.max_tokens = 3;
  ro.concurrency = 3;
  ro.progress = false;
  RunResults run = run_eval(d, **be, ro);
  ASSERT_EQ(run.items.size(), d.items.size());
  for (auto& r : run.items) {
    EXPECT_EQ(r.answer.error, "") << r.id;
    EXPECT_GE(r.answer.ttft_ms, 0) << r.id;
    EXPECT_GE(r.answer.total_ms, r.answer.ttft_ms);
    EXPECT_GT(r.answer.prompt_tokens, 0);
    EXPECT_GT(r.answer.completion_tokens, 0);
    EXPECT_LE(r.answer.completion_tokens, 3);
    EXPECT_TRUE(r.blind_done);
    EXPECT_EQ(r.blind_answer.error, "") << r.id;
  }
  // Greedy answers over HTTP match the in-process ones item by item (same model and prompt).
  std::map<std::string, std::string> local;
  for (auto& r : pack_run().items) local[r.id] = r.answer.text;
  for (auto& r : run.items) EXPECT_EQ(r.answer.text, local[r.id]) << r.id;
  // And the two runs compare.
  json c = compare_json(pack_run(), run);
  EXPECT_EQ(c["items_compared"], run.items.size());
  EXPECT_EQ(c["agreement"]["answer_changed"], 0);

  // Other base URL spellings reach the same route.
  for (const std::string& u : {ts.url() + "/v1", ts.url() + "/v1/chat/completions/"}) {
    auto b2 = make_http_backend(u, "", "");
    ASSERT_TRUE(b2.is_ok()) << u;
    EXPECT_EQ((*b2)->target(), ts.url() + "/v1/chat/completions");
  }
}

TEST(EvalUrl, ApiKeyAndFailures) {
  TestServer ts({"secret"});
  auto no_key = make_http_backend(ts.url(), "", "");
  ASSERT_FALSE(no_key.is_ok());
  EXPECT_NE(no_key.message().find("--api-key"), std::string::npos);
  Dataset d = pack_subset(1);
  RunOptions ro;
  ro.max_tokens = 2;
  ro.progress = false;
  ro.visual_check = false;
  auto with_key = make_http_backend(ts.url(), "secret", "");
  ASSERT_TRUE(with_key.is_ok()) << with_key.message();
  RunResults ok = run_eval(d, **with_key, ro);
  for (auto& r : ok.items) EXPECT_EQ(r.answer.error, "") << r.id;
  // A wrong key named up front (model given, so no discovery): every item is an error, counted.
  auto bad = make_http_backend(ts.url(), "wrong", "m");
  ASSERT_TRUE(bad.is_ok());
  RunResults failed = run_eval(d, **bad, ro);
  Aggregates a = aggregate(failed);
  EXPECT_EQ(a.overall.errors, a.overall.n);
  EXPECT_NE(failed.items[0].answer.error.find("HTTP 401"), std::string::npos) << failed.items[0].answer.error;
  EXPECT_NE(run_report_markdown(failed).find("requests failed"), std::string::npos);
  EXPECT_FALSE(make_http_backend("https://example.com", "", "").is_ok());
}

TEST(EvalBackend, BlankImagesAndEncoders) {
  const std::string png = encode_png_gray(300, 70000 / 300, 128);
  auto img = decode_image(reinterpret_cast<const uint8_t*>(png.data()), png.size());
  ASSERT_TRUE(img.is_ok()) << img.message();
  EXPECT_EQ(img->width, 300);
  EXPECT_EQ(img->height, 233);
  for (size_t i = 0; i < img->rgb.size(); i += 997) ASSERT_EQ(img->rgb[i], 128);
  EXPECT_EQ(base64_encode("store"), "c3RvcmU=");
  EXPECT_EQ(base64_encode("ab"), "YWI=");
  auto shelf = load_eval_image(std::string(OST_ASSETS) + "/../data/scenarios/images/shelf_01.png");
  ASSERT_TRUE(shelf.is_ok()) << shelf.message();
  EXPECT_EQ(shelf->mime, "image/png");
  EvalImage blank = blank_like(*shelf);
  EXPECT_EQ(blank.decoded.width, shelf->decoded.width);
  EXPECT_EQ(blank.decoded.height, shelf->decoded.height);
}

// The command line (skipped when the binary is not built).
int run_cli(const std::string& args, std::string* err = nullptr) {
  const std::string errf = scratch() / "cli.err";
  int rc = std::system((std::string(OST_BIN) + " " + args + " >/dev/null 2>" + errf).c_str());
  if (err) *err = read_file(errf) ? *read_file(errf) : "";
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(EvalCli, ErrorsAndCompare) {
  ASSERT_TRUE(file_exists(OST_BIN)) << "no ostrakon binary at " << OST_BIN;
  const std::string bad = scratch() / "bad.jsonl";
  ASSERT_TRUE(write_file(bad, "{\"id\": \"x\"}\n\n[1]\n").is_ok());
  std::string err;
  EXPECT_EQ(run_cli("eval --data " + bad + " --model " + demo_dir(), &err), 2);
  EXPECT_NE(err.find("line 1 (x): missing \"scene\""), std::string::npos) << err;
  EXPECT_NE(err.find("line 3: the line is not a JSON object"), std::string::npos) << err;
  EXPECT_EQ(run_cli("eval --data " + kPack), 2);                            // neither --model nor --url
  EXPECT_EQ(run_cli("eval --data " + kPack + " --model a --url b"), 2);     // both
  EXPECT_EQ(run_cli("eval --compare onlyone.json"), 2);
  const std::string a = scratch() / "cli-a";
  ASSERT_TRUE(write_run_report(pack_run(), a).is_ok());
  const std::string out = scratch() / "cli-cmp";
  EXPECT_EQ(run_cli("eval --compare " + a + "/results.json " + a + "/results.json --report " + out, &err), 0) << err;
  EXPECT_TRUE(file_exists(out + "/report.html"));
  EXPECT_TRUE(file_exists(out + "/compare.json"));
}

}  // namespace
}  // namespace ost::eval
