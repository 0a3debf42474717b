#include "chat/chat.h"

namespace ost {

namespace {
constexpr const char* kImage = "<|vision_start|><|image_pad|><|vision_end|>";
}

int count_images(const std::vector<ChatMessage>& messages) {
  int n = 0;
  for (auto& m : messages)
    for (auto& p : m.content) n += p.kind == ContentPart::Kind::kImage;
  return n;
}

Result<std::string> format_chat(const std::vector<ChatMessage>& messages, const ChatTemplateOptions& opt) {
  std::string out;
  int image_no = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      return make_error("message %zu: unsupported role \"%s\" (expected system, user or assistant)", i,
                        m.role.c_str());
    if (m.role == "system" && i != 0) return make_error("message %zu: a system message must come first", i);
    out += "<|im_start|>" + m.role + "\n";
    for (auto& p : m.content) {
      if (p.kind == ContentPart::Kind::kText) {
        out += p.text;
        continue;
      }
      if (m.role != "user") return make_error("message %zu: images are only allowed in user messages", i);
      ++image_no;
      if (opt.add_vision_id) out += "Picture " + std::to_string(image_no) + ": ";
      out += kImage;
    }
    out += "<|im_end|>\n";
  }
  if (opt.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace ost
