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

// Tools as Qwen3-VL's chat template renders them: the tools block in the system turn after the
// system text, an assistant's calls as <tool_call> blocks, consecutive tool messages as
// <tool_response> blocks in one user turn.
TEST(Chat, ToolsCallsAndResponses) {
  const std::string tool =
      R"({"type":"function","function":{"name":"count_items","description":"Count items on a shelf","parameters":)"
      R"({"type":"object","properties":{"item":{"type":"string"},"min":{"type":"number","default":1.0}},"required":["item"]}}})";
  std::string tool_py;
  ASSERT_TRUE(python_json(tool, tool_py));
  EXPECT_EQ(tool_py,
            R"({"type": "function", "function": {"name": "count_items", "description": "Count items on a shelf", )"
            R"("parameters": {"type": "object", "properties": {"item": {"type": "string"}, "min": {"type": "number", )"
            R"("default": 1.0}}, "required": ["item"]}}})");
  ChatTemplateOptions opt;
  opt.tools = {tool_py};
  std::vector<ChatMessage> m = {
      {"system", {P::make_text("You audit shelves.")}, {}},
      {"user", {P::make_image(), P::make_text("How many cans?")}, {}},
      {"assistant", {}, {{"count_items", R"({"item": "can"})"}, {"count_items", R"({"item": "jar"})"}}},
      {"tool", {P::make_text("7")}, {}},
      {"tool", {P::make_text("2")}, {}},
      {"assistant", {P::make_text("Checking.")}, {{"count_items", R"({"item": "box"})"}}},
      {"tool", {P::make_text("0")}, {}},
  };
  auto r = format_chat(m, opt);
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ(*r,
            "<|im_start|>system\nYou audit shelves.\n\n# Tools\n\nYou may call one or more functions to assist with the "
            "user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
                tool_py +
                "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
                "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                "<args-json-object>}\n</tool_call><|im_end|>\n"
                "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many cans?<|im_end|>\n"
                "<|im_start|>assistant\n<tool_call>\n{\"name\": \"count_items\", \"arguments\": {\"item\": \"can\"}}\n"
                "</tool_call>\n<tool_call>\n{\"name\": \"count_items\", \"arguments\": {\"item\": \"jar\"}}\n"
                "</tool_call><|im_end|>\n"
                "<|im_start|>user\n<tool_response>\n7\n</tool_response>\n<tool_response>\n2\n</tool_response><|im_end|>\n"
                "<|im_start|>assistant\nChecking.\n<tool_call>\n{\"name\": \"count_items\", \"arguments\": "
                "{\"item\": \"box\"}}\n</tool_call><|im_end|>\n"
                "<|im_start|>user\n<tool_response>\n0\n</tool_response><|im_end|>\n"
                "<|im_start|>assistant\n");
  // Without a system message the tools block opens the prompt on its own.
  auto bare = format_chat({{"user", {P::make_text("Hi")}, {}}}, opt);
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->rfind("<|im_start|>system\n# Tools\n\n", 0), 0u);
  EXPECT_NE(bare->find("</tool_call><|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"), std::string::npos);
  // Calls only in assistant turns; images not in tool turns.
  EXPECT_FALSE(format_chat({{"user", {P::make_text("x")}, {{"f", "{}"}}}}));
  EXPECT_FALSE(format_chat({{"tool", {P::make_image()}, {}}}));
}

TEST(Chat, PythonJson) {
  std::string out;
  ASSERT_TRUE(python_json(R"({"b":[1,2.5,-3,true,null],"a":"é\"\n\u0001","c":{},"d":[],"e":1e-05,"f":2.0})", out));
  EXPECT_EQ(out, "{\"b\": [1, 2.5, -3, true, null], \"a\": \"é\\\"\\n\\u0001\", \"c\": {}, \"d\": [], \"e\": 1e-05, "
                 "\"f\": 2.0}");
  EXPECT_FALSE(python_json("{oops", out));
}

TEST(Chat, ParseToolCalls) {
  ParsedToolCalls p;
  ASSERT_TRUE(parse_tool_calls(
      "Let me count.\n<tool_call>\n{\"name\": \"count_items\", \"arguments\": {\"item\":\"can\",\"n\":2}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"report\", \"arguments\": \"{\\\"ok\\\": true}\"}\n</tool_call>",
      p));
  EXPECT_EQ(p.content, "Let me count.");
  ASSERT_EQ(p.calls.size(), 2u);
  EXPECT_EQ(p.calls[0].name, "count_items");
  EXPECT_EQ(p.calls[0].arguments, "{\"item\": \"can\", \"n\": 2}");
  EXPECT_EQ(p.calls[1].name, "report");
  EXPECT_EQ(p.calls[1].arguments, "{\"ok\": true}");
  ASSERT_TRUE(parse_tool_calls("<tool_call>{\"name\": \"ping\"}</tool_call>", p));
  EXPECT_EQ(p.content, "");
  EXPECT_EQ(p.calls[0].arguments, "{}");
  EXPECT_FALSE(parse_tool_calls("no calls here", p));
  EXPECT_FALSE(parse_tool_calls("<tool_call>{\"name\": \"x\"", p));                        // unterminated
  EXPECT_FALSE(parse_tool_calls("<tool_call>not json</tool_call>", p));                    // not JSON
  EXPECT_FALSE(parse_tool_calls("<tool_call>{\"arguments\": {}}</tool_call>", p));         // no name
  EXPECT_FALSE(parse_tool_calls("<tool_call>{\"name\": \"x\"}</tool_call> and more", p));  // text after
  EXPECT_FALSE(parse_tool_calls("<tool_call>{\"name\": \"x\", \"arguments\": [1]}</tool_call>", p));
}

}  // namespace
}  // namespace ost
