#include "chat/chat.h"

#include <cstring>

#include <nlohmann/json.hpp>

namespace ost {

namespace {
constexpr const char* kImage = "<|vision_start|><|image_pad|><|vision_end|>";
constexpr const char* kToolsHead =
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
constexpr const char* kToolsTail =
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call><|im_end|>\n";
constexpr const char* kCallOpen = "<tool_call>";
constexpr const char* kCallClose = "</tool_call>";

// The text parts of a message (images are refused by the caller where they do not belong).
std::string text_of(const ChatMessage& m) {
  std::string t;
  for (auto& p : m.content)
    if (p.kind == ContentPart::Kind::kText) t += p.text;
  return t;
}

bool has_image(const ChatMessage& m) {
  for (auto& p : m.content)
    if (p.kind == ContentPart::Kind::kImage) return true;
  return false;
}

void write_python(const nlohmann::ordered_json& v, std::string& out) {
  switch (v.type()) {
    case nlohmann::ordered_json::value_t::object: {
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ", ";
        first = false;
        out += nlohmann::ordered_json(it.key()).dump(-1, ' ', false);
        out += ": ";
        write_python(it.value(), out);
      }
      out += '}';
      break;
    }
    case nlohmann::ordered_json::value_t::array: {
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ", ";
        write_python(v[i], out);
      }
      out += ']';
      break;
    }
    case nlohmann::ordered_json::value_t::number_float: {
      const double d = v.get<double>();
      if (d == double(int64_t(d)) && d > -1e16 && d < 1e16) {
        out += std::to_string(int64_t(d)) + ".0";  // Python writes 1.0 where JSON libraries write 1
        break;
      }
      out += v.dump();
      break;
    }
    default:
      out += v.dump(-1, ' ', false);  // strings: UTF-8 kept, control characters escaped
  }
}

void skip_space(const std::string& s, size_t& i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i;
}
}  // namespace

int count_images(const std::vector<ChatMessage>& messages) {
  int n = 0;
  for (auto& m : messages)
    for (auto& p : m.content) n += p.kind == ContentPart::Kind::kImage;
  return n;
}

bool python_json(const std::string& v, std::string& out) {
  const auto j = nlohmann::ordered_json::parse(v, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return false;
  out.clear();
  write_python(j, out);
  return true;
}

Result<std::string> format_chat(const std::vector<ChatMessage>& messages, const ChatTemplateOptions& opt) {
  std::string out;
  int image_no = 0;
  size_t i = 0;
  if (!opt.tools.empty()) {
    out += "<|im_start|>system\n";
    if (!messages.empty() && messages[0].role == "system") {
      if (has_image(messages[0])) return make_error("message 0: images are only allowed in user messages");
      out += text_of(messages[0]) + "\n\n";
      i = 1;
    }
    out += kToolsHead;
    for (const std::string& t : opt.tools) out += "\n" + t;
    out += kToolsTail;
  }
  for (; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool")
      return make_error("message %zu: unsupported role \"%s\" (expected system, user, assistant or tool)", i,
                        m.role.c_str());
    if (m.role == "system" && i != 0) return make_error("message %zu: a system message must come first", i);
    if (!m.tool_calls.empty() && m.role != "assistant")
      return make_error("message %zu: only assistant messages carry tool calls", i);
    if (m.role == "tool") {
      if (has_image(m)) return make_error("message %zu: images are only allowed in user messages", i);
      if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + text_of(m) + "\n</tool_response>";
      if (i + 1 == messages.size() || messages[i + 1].role != "tool") out += "<|im_end|>\n";
      continue;
    }
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
    for (size_t k = 0; k < m.tool_calls.size(); ++k) {
      if (k > 0 || !text_of(m).empty()) out += "\n";
      out += std::string(kCallOpen) + "\n{\"name\": \"" + m.tool_calls[k].name + "\", \"arguments\": " +
             m.tool_calls[k].arguments + "}\n" + kCallClose;
    }
    out += "<|im_end|>\n";
  }
  if (opt.add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

bool parse_tool_calls(const std::string& text, ParsedToolCalls& out) {
  const size_t first = text.find(kCallOpen);
  if (first == std::string::npos) return false;
  ParsedToolCalls r;
  r.content = text.substr(0, first);
  while (!r.content.empty() && std::string(" \n\t\r").find(r.content.back()) != std::string::npos)
    r.content.pop_back();
  size_t i = first;
  for (;;) {
    skip_space(text, i);
    if (i == text.size()) break;
    if (text.compare(i, std::strlen(kCallOpen), kCallOpen) != 0) return false;  // text after a call
    i += std::strlen(kCallOpen);
    const size_t end = text.find(kCallClose, i);
    if (end == std::string::npos) return false;
    const auto j = nlohmann::ordered_json::parse(text.substr(i, end - i), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("name") || !j["name"].is_string()) return false;
    ToolCall c;
    c.name = j["name"].get<std::string>();
    nlohmann::ordered_json args = j.contains("arguments") ? j["arguments"] : nlohmann::ordered_json::object();
    if (args.is_string()) {  // arguments given as JSON text
      auto inner = nlohmann::ordered_json::parse(args.get<std::string>(), nullptr, false);
      if (inner.is_discarded()) return false;
      args = std::move(inner);
    }
    if (!args.is_object()) return false;
    write_python(args, c.arguments);
    r.calls.push_back(std::move(c));
    i = end + std::strlen(kCallClose);
  }
  out = std::move(r);
  return true;
}

}  // namespace ost
