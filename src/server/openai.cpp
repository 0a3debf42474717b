#include "server/openai.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "core/file_util.h"

namespace ost::server {

using nlohmann::json;

std::string error_body(const ApiError& e) {
  json j = {{"error",
             {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool base64_decode(std::string_view in, std::string& out) {
  static const std::array<int8_t, 256> table = [] {
    std::array<int8_t, 256> t;
    t.fill(-1);
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[uint8_t(a[i])] = int8_t(i);
    t[uint8_t('-')] = 62;
    t[uint8_t('_')] = 63;
    return t;
  }();
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  if (in.size() % 4 == 1) return false;
  out.clear();
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = table[uint8_t(c)];
    if (v < 0) return false;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(char((acc >> bits) & 0xFF));
    }
  }
  return true;
}

namespace {
std::string random_hex24() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx%08x", (unsigned long long)rng(), unsigned(rng() & 0xffffffffu));
  return buf;
}
}  // namespace

std::string new_completion_id() { return "chatcmpl-" + random_hex24(); }
std::string new_tool_call_id() { return "call_" + random_hex24(); }

std::string ToolStream::add(const std::string& delta) {
  if (!on_) return delta;
  held_ += delta;
  if (in_call_) return {};
  static const std::string open = "<tool_call>";
  size_t cut = held_.find(open);
  in_call_ = cut != std::string::npos;
  if (!in_call_) {
    size_t keep = 0;  // the longest tail that is a proper prefix of <tool_call>
    for (size_t k = std::min(held_.size(), open.size() - 1); k > 0; --k)
      if (held_.compare(held_.size() - k, k, open, 0, k) == 0) {
        keep = k;
        break;
      }
    cut = held_.size() - keep;
  }
  while (cut > 0 && std::isspace(static_cast<unsigned char>(held_[cut - 1]))) --cut;
  std::string out = held_.substr(0, cut);
  held_.erase(0, cut);
  return out;
}

bool ToolStream::finish(ParsedToolCalls& calls) {
  if (in_call_ && parse_tool_calls(held_, calls)) return true;
  rest_ = held_;
  return false;
}

json tool_calls_json(const std::vector<ToolCall>& calls, bool stream) {
  json a = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    json c = {{"id", new_tool_call_id()},
              {"type", "function"},
              {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
    if (stream) c["index"] = int(i);
    a.push_back(std::move(c));
  }
  return a;
}

json token_logprob_json(const Tokenizer& tok, const GeneratedToken& t) {
  auto one = [&](int32_t id, float lp) {
    const std::string b = tok.token_bytes(id);
    json bytes = json::array();
    for (unsigned char c : b) bytes.push_back(int(c));
    return json{{"token", b}, {"logprob", lp}, {"bytes", bytes}};
  };
  json j = one(t.id, t.logprob);
  json top = json::array();
  for (auto& x : t.top) top.push_back(one(x.token_id, x.logprob));
  j["top_logprobs"] = top;
  return j;
}

namespace {

struct Fail {
  ApiError e;
};

[[noreturn]] void fail(const std::string& msg, const std::string& param = "", int status = 400,
                       const std::string& code = "") {
  throw Fail{{status, msg, "invalid_request_error", param, code}};
}

double get_number(const json& j, const char* key, double lo, double hi) {
  const json& v = j.at(key);
  if (!v.is_number()) fail(std::string("'") + key + "' must be a number", key);
  const double d = v.get<double>();
  if (!(d >= lo && d <= hi))
    fail(std::string("'") + key + "' must be in [" + json(lo).dump() + ", " + json(hi).dump() + "]", key);
  return d;
}

int64_t get_int(const json& j, const char* key, int64_t lo, int64_t hi) {
  const json& v = j.at(key);
  if (!v.is_number_integer()) fail(std::string("'") + key + "' must be an integer", key);
  const int64_t d = v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v.get<int64_t>();
  if (d < lo || d > hi)
    fail(std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", key);
  return d;
}

bool get_bool(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_boolean()) fail(std::string("'") + key + "' must be a boolean", key);
  return v.get<bool>();
}

bool present(const json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

Image load_image_url(const std::string& url, const RequestLimits& lim, const std::string& param, int index) {
  const std::string what = "image " + std::to_string(index);
  std::string bytes;
  if (url.rfind("data:", 0) == 0) {
    const size_t comma = url.find(',');
    if (comma == std::string::npos) fail(what + ": malformed data URL (no comma)", param);
    const std::string meta = url.substr(5, comma - 5);
    if (meta.size() < 7 || meta.compare(meta.size() - 7, 7, ";base64") != 0)
      fail(what + ": data URL must be base64-encoded (data:image/...;base64,...)", param);
    const std::string_view b64 = std::string_view(url).substr(comma + 1);
    if (b64.size() / 4 * 3 > size_t(lim.max_image_bytes) + 3)
      fail(what + ": encoded image larger than " + std::to_string(lim.max_image_bytes) + " bytes", param);
    if (!base64_decode(b64, bytes)) fail(what + ": invalid base64 data", param, 400, "invalid_base64");
  } else if (url.rfind("file://", 0) == 0) {
    if (lim.allow_file_dir.empty())
      fail(what + ": file:// URLs are disabled (start the server with --allow-file-dir DIR)", param);
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path root = fs::weakly_canonical(lim.allow_file_dir, ec);
    const fs::path p = fs::weakly_canonical(url.substr(7), ec);
    const auto rel = p.lexically_relative(root);
    if (ec || rel.empty() || *rel.begin() == ".." || rel.is_absolute())
      fail(what + ": file:// URL outside the allowed folder", param);
    auto data = read_file(p.string());
    if (!data) fail(what + ": cannot read " + p.string(), param);
    if (int64_t(data->size()) > lim.max_image_bytes)
      fail(what + ": file larger than " + std::to_string(lim.max_image_bytes) + " bytes", param);
    bytes = std::move(*data);
  } else if (url.rfind("http://", 0) == 0 || url.rfind("https://", 0) == 0) {
    fail(what + ": remote image URLs are not fetched (the server may be offline); send the image inline as "
                "a data:image/...;base64 URL",
         param, 400, "remote_url_refused");
  } else {
    fail(what + ": unsupported image URL (use a data:image/...;base64 URL)", param);
  }
  DecodeLimits dl;
  dl.max_pixels = lim.max_image_pixels;
  dl.max_bytes = lim.max_image_bytes;
  auto img = decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), dl);
  if (!img) fail(what + ": " + img.message(), param, 400, "invalid_image");
  return std::move(*img);
}

// response_format: text (default), json_object, or json_schema {name, schema, strict}; the schema
// in its own key order (properties are written in it).
std::shared_ptr<const grammar::Grammar> parse_response_format(const nlohmann::ordered_json& rf,
                                                              const RequestLimits& lim) {
  grammar::CompileOptions opt;
  if (lim.json_max_string > 0) opt.max_string_length = lim.json_max_string;
  const std::string p = "response_format";
  if (!rf.is_object() || !rf.contains("type") || !rf["type"].is_string())
    fail("'response_format' must be an object with a string 'type' (text, json_object or json_schema)", p);
  const std::string type = rf["type"].get<std::string>();
  if (type == "text") return nullptr;
  if (type == "json_object") return grammar::json_object_grammar(opt);
  if (type != "json_schema")
    fail("'response_format.type' \"" + type + "\" is not supported (text, json_object, json_schema)", p + ".type");
  const nlohmann::ordered_json& js = rf.contains("json_schema") ? rf["json_schema"] : nlohmann::ordered_json();
  if (!js.is_object() || !js.contains("schema"))
    fail("'response_format.json_schema' must be an object with a 'schema' (and a 'name')", p + ".json_schema");
  if (js.contains("name") && !js["name"].is_string())
    fail("'response_format.json_schema.name' must be a string", p + ".json_schema.name");
  if (js.contains("strict") && !js["strict"].is_boolean() && !js["strict"].is_null())
    fail("'response_format.json_schema.strict' must be a boolean", p + ".json_schema.strict");
  auto g = grammar::compile_json_schema(js["schema"], opt);
  if (!g) fail("'response_format.json_schema.schema' is not supported: " + g.message(), p + ".json_schema.schema", 400,
               "unsupported_schema");
  return *g;
}

// tool_choice "required" or a named function: the answer is one call in Qwen's form,
// <tool_call>\n{"name": NAME, "arguments": ARGS}\n</tool_call>, ARGS following the function's
// parameters schema. "required" with several tools: any of their names, arguments any object.
std::shared_ptr<const grammar::Grammar> forced_tool_call(const nlohmann::ordered_json& tools, const std::string& name,
                                                         const RequestLimits& lim) {
  using ojson = nlohmann::ordered_json;
  ojson names = ojson::array(), params = ojson{{"type", "object"}};
  std::string where;
  for (size_t k = 0; k < tools.size(); ++k) {
    const ojson& f = tools[k]["function"];
    if (name != "*" && f["name"] != name) continue;
    names.push_back(f["name"]);
    where = "tools[" + std::to_string(k) + "].function.parameters";
    if (f.contains("parameters") && !f["parameters"].is_null()) params = f["parameters"];
  }
  if (names.empty()) fail("'tool_choice' names \"" + name + "\", which is not one of 'tools'", "tool_choice");
  if (names.size() > 1) params = ojson{{"type", "object"}};
  const ojson schema = {{"type", "object"},
                        {"properties", {{"name", {{"enum", names}}}, {"arguments", params}}},
                        {"required", {"name", "arguments"}}};
  grammar::CompileOptions opt;
  if (lim.json_max_string > 0) opt.max_string_length = lim.json_max_string;
  opt.prefix = "<tool_call>\n";
  opt.suffix = "\n</tool_call>";
  auto g = grammar::compile_json_schema(schema, opt);
  if (!g) {
    const std::string m = g.message();  // "#/properties/arguments...: what" -> the tool's own path
    const std::string inner = "#/properties/arguments";
    fail("'" + where + "' is not supported for a forced call: " +
             (m.rfind(inner, 0) == 0 ? "#" + m.substr(inner.size()) : m),
         where, 400, "unsupported_schema");
  }
  return *g;
}

void parse(const json& j, const nlohmann::ordered_json& oj, const std::vector<std::string>& raw_tools,
           const RequestLimits& lim, ChatRequest& out) {
  if (!j.is_object()) fail("the request body must be a JSON object");
  if (present(j, "model")) {
    if (!j["model"].is_string()) fail("'model' must be a string", "model");
    out.model = j["model"].get<std::string>();
  }
  if (!j.contains("messages")) fail("'messages' is required", "messages");
  const json& msgs = j["messages"];
  if (!msgs.is_array() || msgs.empty()) fail("'messages' must be a non-empty array", "messages");
  GenerateRequest& g = out.gen;
  int n_images = 0;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const json& m = msgs[i];
    const std::string mp = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) fail(mp + " must be an object", mp);
    if (!m.contains("role") || !m["role"].is_string()) fail(mp + ".role must be a string", mp + ".role");
    ChatMessage cm;
    cm.role = m["role"].get<std::string>();
    if (cm.role == "developer") cm.role = "system";
    if (cm.role != "system" && cm.role != "user" && cm.role != "assistant" && cm.role != "tool")
      fail(mp + ".role \"" + cm.role + "\" is not supported (system, user, assistant, tool)", mp + ".role");
    if (present(m, "tool_calls")) {
      if (cm.role != "assistant") fail(mp + ".tool_calls is only allowed in assistant messages", mp + ".tool_calls");
      const json& tc = m["tool_calls"];
      if (!tc.is_array()) fail(mp + ".tool_calls must be an array", mp + ".tool_calls");
      for (size_t k = 0; k < tc.size(); ++k) {
        const std::string tp = mp + ".tool_calls[" + std::to_string(k) + "]";
        const json& f = tc[k].is_object() && tc[k].contains("function") ? tc[k]["function"] : json(nullptr);
        if (!f.is_object() || !f.contains("name") || !f["name"].is_string())
          fail(tp + " must be {\"type\": \"function\", \"function\": {\"name\": ..., \"arguments\": ...}}", tp);
        ToolCall call;
        call.name = f["name"].get<std::string>();
        const json args = f.contains("arguments") ? f["arguments"] : json("{}");
        if (args.is_string()) {
          call.arguments = args.get<std::string>();  // rendered verbatim, as the template does
        } else if (!args.is_object() || !python_json(args.dump(), call.arguments)) {
          fail(tp + ".function.arguments must be a JSON string or object", tp + ".function.arguments");
        }
        cm.tool_calls.push_back(std::move(call));
      }
    }
    const json c = m.contains("content") ? m["content"] : json(nullptr);
    const int n_images_before = n_images;
    if (c.is_string()) {
      cm.content.push_back(ContentPart::make_text(c.get<std::string>()));
    } else if (c.is_array()) {
      for (size_t k = 0; k < c.size(); ++k) {
        const json& part = c[k];
        const std::string pp = mp + ".content[" + std::to_string(k) + "]";
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          fail(pp + " must be an object with a string 'type'", pp);
        const std::string type = part["type"].get<std::string>();
        if (type == "text") {
          if (!part.contains("text") || !part["text"].is_string()) fail(pp + ".text must be a string", pp + ".text");
          cm.content.push_back(ContentPart::make_text(part["text"].get<std::string>()));
        } else if (type == "image_url") {
          std::string url;
          const json iu = part.contains("image_url") ? part["image_url"] : json(nullptr);
          if (iu.is_string()) url = iu.get<std::string>();
          else if (iu.is_object() && iu.contains("url") && iu["url"].is_string()) url = iu["url"].get<std::string>();
          else fail(pp + ".image_url must be an object with a string 'url'", pp + ".image_url");
          if (++n_images > lim.max_images)
            fail("too many images: at most " + std::to_string(lim.max_images) + " per request", pp, 400,
                 "too_many_images");
          ImageDetail detail = ImageDetail::kAuto;
          if (iu.is_object() && iu.contains("detail")) {
            const json& d = iu["detail"];
            if (d == "low") detail = ImageDetail::kLow;
            else if (d == "high") detail = ImageDetail::kHigh;
            else if (d != "auto")
              fail(pp + ".image_url.detail must be \"auto\", \"low\" or \"high\"", pp + ".image_url.detail");
          }
          g.images.push_back(load_image_url(url, lim, pp + ".image_url", n_images));
          g.detail.push_back(detail);
          cm.content.push_back(ContentPart::make_image());
        } else {
          fail(pp + ".type \"" + type + "\" is not supported (text, image_url)", pp + ".type");
        }
      }
      if (cm.role == "tool" && n_images_before != n_images)
        fail(mp + ": images are only allowed in user messages", mp + ".content");
    } else if (!(c.is_null() && cm.role == "assistant")) {
      fail(mp + ".content must be a string or an array of parts", mp + ".content");
    }
    g.messages.push_back(std::move(cm));
  }
  if (g.messages.back().role == "assistant")
    fail("the last message must not be from the assistant (continuation is not supported)", "messages");
  for (size_t i = 0; i < g.messages.size(); ++i)
    if (g.messages[i].role == "system" && i != 0)
      fail("a system message must come first", "messages[" + std::to_string(i) + "].role");

  // Tools: the definitions go into the prompt as given (key order kept), as the chat template's
  // tojson writes them; tool_choice "auto" (default) or "none" (no tools in the prompt).
  bool tools_on = present(j, "tools");
  if (tools_on) {
    const json& tools = j["tools"];
    if (!tools.is_array()) fail("'tools' must be an array", "tools");
    if (tools.size() > 128) fail("'tools' holds at most 128 definitions", "tools");
    for (size_t k = 0; k < tools.size(); ++k) {
      const json& t = tools[k];
      const std::string tp = "tools[" + std::to_string(k) + "]";
      if (!t.is_object() || !t.contains("type") || t["type"] != "function" || !t.contains("function") ||
          !t["function"].is_object() || !t["function"].contains("name") || !t["function"]["name"].is_string())
        fail(tp + " must be {\"type\": \"function\", \"function\": {\"name\": ...}}", tp);
    }
  }
  std::string forced;  // tool_choice: the function the answer must call ("*": any of them)
  if (present(j, "tool_choice")) {
    const json& tc = j["tool_choice"];
    const json& fn = tc.is_object() && tc.contains("function") ? tc["function"] : json();
    if (tc == "none") tools_on = false;
    else if (tc == "required") forced = "*";
    else if (tc.is_object() && tc.contains("type") && tc["type"] == "function" && fn.is_object() &&
             fn.contains("name") && fn["name"].is_string() && !fn["name"].get<std::string>().empty())
      forced = fn["name"].get<std::string>();
    else if (tc != "auto")
      fail("'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": "
           "{\"name\": ...}}",
           "tool_choice");
    if (!forced.empty() && (!tools_on || j["tools"].empty())) fail("'tool_choice' forces a call but no 'tools' are given", "tool_choice");
  }
  if (present(j, "parallel_tool_calls") && !j["parallel_tool_calls"].is_boolean())
    fail("'parallel_tool_calls' must be a boolean", "parallel_tool_calls");
  if (tools_on && !j["tools"].empty()) {
    out.tools = true;
    for (const std::string& t : raw_tools) g.tools.push_back(t);
  }
  if (present(j, "response_format")) {
    g.response_format = parse_response_format(oj["response_format"], lim);
    if (g.response_format && out.tools)
      fail("'response_format' together with 'tools' is not supported (or set 'tool_choice': \"none\")",
           "response_format");
  }
  if (!forced.empty()) g.response_format = forced_tool_call(oj["tools"], forced, lim);

  g.max_tokens = -lim.default_max_tokens;  // "as many as fit", see EngineLoop::prepare
  if (present(j, "max_completion_tokens")) g.max_tokens = int(get_int(j, "max_completion_tokens", 1, 1 << 24));
  else if (present(j, "max_tokens")) g.max_tokens = int(get_int(j, "max_tokens", 1, 1 << 24));
  if (present(j, "n")) out.n = int(get_int(j, "n", 1, kMaxChoices));
  SamplingParams& s = g.sampling;
  s.temperature = 1.0f;  // OpenAI's default
  if (present(j, "temperature")) s.temperature = float(get_number(j, "temperature", 0, 2));
  if (present(j, "top_p")) {
    s.top_p = float(get_number(j, "top_p", 0, 1));
    if (s.top_p <= 0) fail("'top_p' must be > 0", "top_p");
  }
  if (present(j, "top_k")) s.top_k = int(get_int(j, "top_k", -1, 1 << 20));
  if (s.top_k < 0) s.top_k = 0;
  if (present(j, "min_p")) s.min_p = float(get_number(j, "min_p", 0, 1));
  if (present(j, "presence_penalty")) s.presence_penalty = float(get_number(j, "presence_penalty", -2, 2));
  if (present(j, "frequency_penalty")) s.frequency_penalty = float(get_number(j, "frequency_penalty", -2, 2));
  if (present(j, "repetition_penalty")) {
    s.repetition_penalty = float(get_number(j, "repetition_penalty", 0, 100));
    if (s.repetition_penalty <= 0) fail("'repetition_penalty' must be > 0", "repetition_penalty");
  }
  // OpenAI's logit_bias: {"token id": bias in [-100, 100]}, at most 300 entries.
  if (present(j, "logit_bias")) {
    const json& lb = j["logit_bias"];
    if (!lb.is_object()) fail("'logit_bias' must be an object mapping token ids to numbers", "logit_bias");
    if (lb.size() > 300) fail("'logit_bias' has more than 300 entries", "logit_bias");
    for (const auto& [key, v] : lb.items()) {
      char* end = nullptr;
      const long long id = std::strtoll(key.c_str(), &end, 10);
      if (key.empty() || *end != '\0' || id < 0 || id > INT32_MAX || !std::isdigit(uint8_t(key[0])))
        fail("'logit_bias' keys must be token ids (\"" + key + "\" is not)", "logit_bias");
      if (!v.is_number() || !(v.get<double>() >= -100 && v.get<double>() <= 100))
        fail("'logit_bias' values must be numbers in [-100, 100]", "logit_bias");
      s.logit_bias.emplace_back(int32_t(id), float(v.get<double>()));
    }
  }
  // vLLM's per-request preprocessing bounds for Qwen-VL models: {"min_pixels", "max_pixels"}.
  if (present(j, "mm_processor_kwargs")) {
    const json& k = j["mm_processor_kwargs"];
    if (!k.is_object()) fail("'mm_processor_kwargs' must be an object", "mm_processor_kwargs");
    for (const auto& [key, v] : k.items()) {
      if (key != "min_pixels" && key != "max_pixels")
        fail("'mm_processor_kwargs." + key + "' is not supported (min_pixels, max_pixels)", "mm_processor_kwargs");
      const int64_t px = get_int(k, key.c_str(), 1, lim.max_image_pixels);
      (key == "min_pixels" ? g.min_pixels : g.max_pixels) = px;
    }
    if (g.min_pixels > 0 && g.max_pixels > 0 && g.min_pixels > g.max_pixels)
      fail("'mm_processor_kwargs.min_pixels' exceeds 'max_pixels'", "mm_processor_kwargs");
  }
  if (present(j, "seed")) {
    const json& v = j["seed"];
    if (!v.is_number_integer()) fail("'seed' must be an integer", "seed");
    s.seed = v.is_number_unsigned() ? v.get<uint64_t>() : uint64_t(v.get<int64_t>());
  } else {
    s.seed = std::random_device{}() | (uint64_t(std::random_device{}()) << 32);
  }
  if (present(j, "stop")) {
    const json& st = j["stop"];
    if (st.is_string()) {
      g.stop.push_back(st.get<std::string>());
    } else if (st.is_array()) {
      if (st.size() > 16) fail("'stop' holds at most 16 strings", "stop");
      for (auto& x : st) {
        if (!x.is_string()) fail("'stop' must be a string or an array of strings", "stop");
        g.stop.push_back(x.get<std::string>());
      }
    } else {
      fail("'stop' must be a string or an array of strings", "stop");
    }
  }
  if (present(j, "logprobs")) out.logprobs = get_bool(j, "logprobs");
  if (present(j, "top_logprobs")) {
    out.top_logprobs = int(get_int(j, "top_logprobs", 0, 20));
    if (!out.logprobs && out.top_logprobs > 0) fail("'top_logprobs' requires 'logprobs': true", "top_logprobs");
  }
  g.top_logprobs = out.top_logprobs;
  if (present(j, "stream")) out.stream = get_bool(j, "stream");
  if (present(j, "stream_options")) {
    const json& so = j["stream_options"];
    if (!so.is_object()) fail("'stream_options' must be an object", "stream_options");
    if (!out.stream) fail("'stream_options' is only allowed with 'stream': true", "stream_options");
    if (present(so, "include_usage")) {
      if (!so["include_usage"].is_boolean())
        fail("'stream_options.include_usage' must be a boolean", "stream_options.include_usage");
      out.include_usage = so["include_usage"].get<bool>();
    }
  }
}

}  // namespace

bool parse_chat_request(const std::string& body, const RequestLimits& lim, ChatRequest& out, ApiError& err) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    err = {400, "the request body is not valid JSON", "invalid_request_error", "", "invalid_json"};
    return false;
  }
  // The tool definitions and the response format's schema again, in their own key order (json
  // sorts keys); the tools as Python text.
  nlohmann::ordered_json oj;
  if (j.is_object() && (j.contains("tools") || j.contains("response_format")))
    oj = nlohmann::ordered_json::parse(body, nullptr, false);
  std::vector<std::string> raw_tools;
  if (j.is_object() && j.contains("tools") && j["tools"].is_array()) {
    for (const auto& t : oj["tools"]) {
      std::string text;
      if (python_json(t.dump(), text)) raw_tools.push_back(std::move(text));
    }
  }
  try {
    parse(j, oj, raw_tools, lim, out);
  } catch (const Fail& f) {
    err = f.e;
    return false;
  } catch (const std::exception& e) {
    err = {400, std::string("invalid request: ") + e.what(), "invalid_request_error", "", ""};
    return false;
  }
  return true;
}

}  // namespace ost::server
