// Qwen3-VL chat formatting (ChatML), as the model's chat template renders it.
#pragma once
#include <string>
#include <vector>

#include "core/status.h"

namespace ost {

struct ContentPart {
  enum class Kind { kText, kImage };
  Kind kind = Kind::kText;
  std::string text;  // kText only
  static ContentPart make_text(std::string t) { return {Kind::kText, std::move(t)}; }
  static ContentPart make_image() { return {Kind::kImage, {}}; }
};

// A function call the assistant made (OpenAI's tool_calls[i].function).
struct ToolCall {
  std::string name;
  std::string arguments;  // JSON text, rendered verbatim
};

struct ChatMessage {
  std::string role;  // system | user | assistant | tool
  std::vector<ContentPart> content;
  std::vector<ToolCall> tool_calls;  // assistant only
};

struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  bool add_vision_id = false;  // "Picture N: " before each image
  // Tool (function) definitions, each already serialised as the template's `tojson` does
  // (tool_json); when present the system turn lists them and says how to call them.
  std::vector<std::string> tools;
};

// Renders the prompt text with ONE <|image_pad|> per image (the engine expands each to the
// image's token count after tokenisation: the pad is an added token, so the ids are those of the
// expanded text). Images are numbered in order of appearance across all messages.
// Tools follow Qwen3-VL's template: the tools block in the system turn (after the system
// message's text), an assistant turn's tool calls as <tool_call> blocks after its text, and
// consecutive tool messages as <tool_response> blocks in one user turn.
// Errors: unknown role, a system message that is not first, images outside user turns, tool
// calls outside assistant turns.
Result<std::string> format_chat(const std::vector<ChatMessage>& messages,
                                const ChatTemplateOptions& opt = {});

// JSON text as Python's json.dumps(v, ensure_ascii=False) writes it (", " and ": " separators,
// keys in the given order): what the chat template's `tojson` renders. v is JSON text; false if
// it does not parse.
bool python_json(const std::string& v, std::string& out);

// The tool calls at the end of a generated answer: text, then one or more
// <tool_call>{"name": ..., "arguments": {...}}</tool_call> blocks (whitespace between them). On
// success, content is the text before the first block with trailing whitespace removed and each
// call's arguments are python_json text. false (nothing parsed) when the answer has no block or a
// block is not such an object.
struct ParsedToolCalls {
  std::string content;
  std::vector<ToolCall> calls;
};
bool parse_tool_calls(const std::string& text, ParsedToolCalls& out);

int count_images(const std::vector<ChatMessage>& messages);

}  // namespace ost
