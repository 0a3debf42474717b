// Engine::generate at temperature 0 without top logprobs lets the runner choose each token
// (ModelRunner::decode_batch_argmax). On the CPU runner that path must give exactly what the
// sampler path gives: the same ids, text and chosen-token log-probabilities, bit for bit.
#include <gtest/gtest.h>

#include <cstring>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "engine/engine.h"
#include "io/seeded.h"
#include "vision/image.h"

namespace ost::testing {
namespace {

TEST(EngineGreedy, RunnerArgmaxMatchesSamplerPath) {
  const std::string tok = std::string(OST_ASSETS) + "/qwen3/tokenizer.json";
  ASSERT_TRUE(file_exists(tok)) << "no " << tok << " (scripts/setup.sh fetches it)";
  TempDir dir;
  TestModelOptions o;
  o.config_dir = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";
  o.seed = 20261124;
  o.out_dir = dir.path();
  o.tokenizer = tok;
  ASSERT_TRUE(write_test_model(o).is_ok());
  EngineOptions eo;
  eo.device = "cpu";
  auto eng = Engine::load(dir.path(), eo);
  ASSERT_TRUE(eng.is_ok()) << eng.message();
  auto img = load_image_file(std::string(OST_TEST_DATA) + "/qwen3vl-tiny/images/shelf_300x200.png");
  ASSERT_TRUE(img.is_ok()) << img.message();

  GenerateRequest req;
  ChatMessage user;
  user.role = "user";
  user.content.push_back(ContentPart::make_image());
  user.content.push_back(ContentPart::make_text("What is on the shelf?"));
  req.messages.push_back(user);
  req.images.push_back(*img);
  req.max_tokens = 12;
  req.ignore_eos = true;
  req.sampling.temperature = 0.0f;

  auto fast = (*eng)->generate(req);  // runner argmax
  req.top_logprobs = 1;               // forces the sampler path
  auto slow = (*eng)->generate(req);
  ASSERT_TRUE(fast.is_ok()) << fast.message();
  ASSERT_TRUE(slow.is_ok()) << slow.message();
  ASSERT_EQ(fast->tokens.size(), slow->tokens.size());
  for (size_t i = 0; i < fast->tokens.size(); ++i) {
    EXPECT_EQ(fast->tokens[i].id, slow->tokens[i].id) << i;
    EXPECT_EQ(std::memcmp(&fast->tokens[i].logprob, &slow->tokens[i].logprob, 4), 0)
        << i << ": " << fast->tokens[i].logprob << " vs " << slow->tokens[i].logprob;
  }
  EXPECT_EQ(fast->text, slow->text);
  EXPECT_EQ(fast->finish_reason, slow->finish_reason);
}

}  // namespace
}  // namespace ost::testing
