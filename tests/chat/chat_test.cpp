#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "chat/chat.h"
#include "core/file_util.h"

namespace ost {
namespace {

using P = ContentPart;

// The fixture prompts, byte for byte.
TEST(Chat, FixturePrompts) {
  auto g = nlohmann::json::parse(*read_file(std::string(OST_TEST_DATA) + "/qwen3vl-tiny/golden.json"));
  auto& cases = g["cases"];
  auto one = format_chat({{"user", {P::make_image(), P::make_text("请详细描述这张图片中的商品陈列情况。")}}});
  ASSERT_TRUE(one);
  EXPECT_EQ(*one, cases["one_image_zh"]["prompt_text"].get<std::string>());
  auto text = format_chat({{"user", {P::make_text("List three ways to reduce food waste in a restaurant kitchen.")}}});
  EXPECT_EQ(*text, cases["text_only_en"]["prompt_text"].get<std::string>());
  auto two = format_chat({{"user", {P::make_image(), P::make_image(),
                                    P::make_text("Compare the two pictures: which one is a promotion poster?")}}});
  EXPECT_EQ(*two, cases["two_images"]["prompt_text"].get<std::string>());
}

TEST(Chat, SystemAssistantTurnsAndOrder) {
  std::vector<ChatMessage> m = {
      {"system", {P::make_text("You audit shelves.")}},
      {"user", {P::make_text("Before "), P::make_image(), P::make_text(" after")}},
      {"assistant", {P::make_text("Two facings.")}},
      {"user", {P::make_image(), P::make_text("And here?")}},
  };
  auto r = format_chat(m);
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ(*r,
            "<|im_start|>system\nYou audit shelves.<|im_end|>\n"
            "<|im_start|>user\nBefore <|vision_start|><|image_pad|><|vision_end|> after<|im_end|>\n"
            "<|im_start|>assistant\nTwo facings.<|im_end|>\n"
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>And here?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(count_images(m), 2);
  ChatTemplateOptions no_gen;
  no_gen.add_generation_prompt = false;
  no_gen.add_vision_id = true;
  auto v = format_chat({{"user", {P::make_image(), P::make_image()}}}, no_gen);
  EXPECT_EQ(*v,
            "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>"
            "Picture 2: <|vision_start|><|image_pad|><|vision_end|><|im_end|>\n");
}

TEST(Chat, Errors) {
  EXPECT_FALSE(format_chat({{"robot", {P::make_text("x")}}}));
  EXPECT_FALSE(format_chat({{"user", {P::make_text("x")}}, {"system", {P::make_text("y")}}}));
  EXPECT_FALSE(format_chat({{"assistant", {P::make_image()}}}));
}

}  // namespace
}  // namespace ost
