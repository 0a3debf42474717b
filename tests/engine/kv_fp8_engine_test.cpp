// --kv-cache-dtype fp8 through the engine on the CPU runner: the runner reports the fp8 bytes
// per token (codes + one f32 scale per token and kv head), the serving loop sizes its block
// pool from --kv-memory with them, and a request is served end to end with the fp8 cache.
#include <gtest/gtest.h>

#include <chrono>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "engine/engine.h"
#include "engine/engine_loop.h"
#include "io/seeded.h"

namespace ost::testing {
namespace {

TEST(KvFp8Engine, PoolSizeAndServing) {
  const std::string tok = std::string(OST_ASSETS) + "/qwen3/tokenizer.json";
  ASSERT_TRUE(file_exists(tok)) << "no " << tok << " (scripts/setup.sh fetches it)";
  TempDir dir;
  TestModelOptions o;
  o.config_dir = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";
  o.seed = 20261124;
  o.out_dir = dir.path();
  o.tokenizer = tok;
  ASSERT_TRUE(write_test_model(o).is_ok());
  quant::QuantConfig q8;
  q8.kv_cache = quant::KvDType::FP8;
  auto r32 = load_cpu_runner(dir.path());
  auto r8 = load_cpu_runner(dir.path(), q8);
  ASSERT_TRUE(r32.is_ok() && r8.is_ok());
  const TextConfig& t = (*r8)->config().text;
  const int64_t vecs = int64_t(t.num_layers) * 2 * t.num_kv_heads;
  EXPECT_EQ((*r32)->kv_bytes_per_token(), vecs * t.head_dim * 4);
  EXPECT_EQ((*r8)->kv_bytes_per_token(), vecs * (t.head_dim + 4));
  EXPECT_EQ(kv_pool_blocks(1, 1024, 16), 64);
  EXPECT_EQ(kv_pool_blocks(1, 1024, 16, 800), 50);   // a runner pool of 800 tokens bounds it
  EXPECT_EQ(kv_pool_blocks(1, 1024, 16, 4096), 64);  // a larger one does not
  EXPECT_EQ((*r32)->kv_pool_tokens(), 0);            // the CPU runner has no fixed pool

  EngineLoopOptions lo;
  lo.kv_memory_mb = 2;
  lo.max_running = 2;
  auto tk32 = Tokenizer::load(tok), tk8 = Tokenizer::load(tok);
  ASSERT_TRUE(tk32.is_ok() && tk8.is_ok());
  auto loop32 = EngineLoop::start(std::move(*r32), std::move(*tk32), "tiny", lo);
  auto loop8 = EngineLoop::start(std::move(*r8), std::move(*tk8), "tiny", lo);
  ASSERT_TRUE(loop32.is_ok()) << loop32.message();
  ASSERT_TRUE(loop8.is_ok()) << loop8.message();
  EXPECT_EQ((*loop8)->kv_capacity_tokens(), kv_pool_blocks(2, vecs * (t.head_dim + 4), 16) * 16);
  EXPECT_EQ((*loop32)->kv_capacity_tokens(), kv_pool_blocks(2, vecs * t.head_dim * 4, 16) * 16);
  EXPECT_GT((*loop8)->kv_capacity_tokens(), 3 * (*loop32)->kv_capacity_tokens());  // 4·hd vs hd + 4 bytes

  GenerateRequest req;
  req.messages.push_back({"user", {ContentPart::make_text("Which shelf holds the rice?")}});
  req.max_tokens = 10;
  req.ignore_eos = true;
  auto prep = (*loop8)->prepare(req);
  ASSERT_TRUE(prep.is_ok()) << prep.message();
  Submitted sub = (*loop8)->submit(std::move(*prep));
  ASSERT_EQ(sub.code, SubmitCode::kOk);
  int tokens = 0;
  RequestEvent e;
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(60));
    if (!sub.channel->pop(e, std::chrono::milliseconds(100))) continue;
    ASSERT_NE(e.kind, RequestEvent::Kind::kError) << e.error;
    if (e.kind == RequestEvent::Kind::kDone) break;
    ++tokens;
  }
  EXPECT_EQ(tokens, 10);
  EXPECT_EQ(e.completion_tokens, 10);
  EXPECT_EQ(e.finish_reason, "length");
}

}  // namespace
}  // namespace ost::testing
