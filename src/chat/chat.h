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

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::vector<ContentPart> content;
};

struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  bool add_vision_id = false;  // "Picture N: " before each image
};

// Renders the prompt text with ONE <|image_pad|> per image (the engine expands each to the
// image's token count after tokenisation: the pad is an added token, so the ids are those of the
// expanded text). Images are numbered in order of appearance across all messages.
// Errors: unknown role, a system message that is not first, images in a system/assistant turn.
Result<std::string> format_chat(const std::vector<ChatMessage>& messages,
                                const ChatTemplateOptions& opt = {});

int count_images(const std::vector<ChatMessage>& messages);

}  // namespace ost
