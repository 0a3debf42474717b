// Structured outputs over loopback with the demo model (random weights): whatever the weights,
// a response_format answer parses and matches its schema, streamed or not, greedy or sampled,
// alone or batched with free-text requests; bad response formats answer 400.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "stream_client.h"
#include "test_server.h"

namespace ost::testing {
namespace {

using nlohmann::json;
using ojson = nlohmann::ordered_json;  // request bodies keep their key order (the schema's properties)

// Random weights almost never pick a token that closes a string (a few of 150k), so strings are
// bounded here (--json-max-string) and answers end within a few hundred tokens.
constexpr uint32_t kMaxString = 12;

TestServer& shared() {
  static TestServer* s = [] {
    server::ApiServerOptions so;
    so.limits.json_max_string = kMaxString;
    EngineLoopOptions eo;
    eo.kv_memory_mb = 64;
    eo.max_running = 4;
    return new TestServer(so, eo);
  }();
  return *s;
}

const ojson kPriceTagSchema = ojson::parse(R"({
  "type": "object",
  "properties": {
    "product": {"type": "string"},
    "price": {"type": "number"},
    "currency": {"type": "string", "enum": ["EUR", "USD", "CNY"]},
    "on_promotion": {"type": "boolean"}
  },
  "required": ["product", "price", "currency", "on_promotion"],
  "additionalProperties": false
})");

ojson price_tag_format() {
  return {{"type", "json_schema"}, {"json_schema", {{"name", "price_tag"}, {"schema", kPriceTagSchema}, {"strict", true}}}};
}

ojson request(const ojson& format, double temperature, int seed, int max_tokens = 1500) {
  const ojson messages = ojson::array({{{"role", "user"}, {"content", "Read the price tag as JSON."}}});
  return {{"messages", messages},
          {"response_format", format},
          {"temperature", temperature},
          {"seed", seed},
          {"max_tokens", max_tokens}};
}

// The answer against the price-tag schema: exactly its four properties, each of its type.
void expect_price_tag(const std::string& text) {
  const json j = json::parse(text, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << text;
  ASSERT_TRUE(j.is_object()) << text;
  EXPECT_EQ(j.size(), 4u) << text;
  EXPECT_TRUE(j.contains("product") && j["product"].is_string()) << text;
  EXPECT_TRUE(j.contains("price") && j["price"].is_number()) << text;
  EXPECT_TRUE(j.contains("currency") && (j["currency"] == "EUR" || j["currency"] == "USD" || j["currency"] == "CNY"))
      << text;
  EXPECT_TRUE(j.contains("on_promotion") && j["on_promotion"].is_boolean()) << text;
}

struct Answer {
  std::string text, finish_reason;
};

Answer complete(const ojson& body) {
  auto r = shared().post_raw(body.dump());
  EXPECT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("choices")) return {};
  return {j["choices"][0]["message"]["content"].get<std::string>(), j["choices"][0]["finish_reason"]};
}

TEST(ResponseFormat, PriceTagSchemaGreedyAndSampledStreamedAndNot) {
  for (double temperature : {0.0, 1.0})
    for (int seed : {1, 2}) {
      if (temperature == 0.0 && seed > 1) continue;
      SCOPED_TRACE("temperature " + std::to_string(temperature) + " seed " + std::to_string(seed));
      const ojson body = request(price_tag_format(), temperature, seed);
      const Answer a = complete(body);
      EXPECT_EQ(a.finish_reason, "stop");
      expect_price_tag(a.text);
      const StreamAnswer s = stream_chat(shared().port, body);
      EXPECT_EQ(s.status, 200) << s.error;
      EXPECT_TRUE(s.done);
      EXPECT_EQ(s.finish_reason, "stop");
      EXPECT_EQ(s.text, a.text);  // the same seed: the same answer, streamed or not
    }
}

TEST(ResponseFormat, JsonObject) {
  const double before = shared().metric("ost_constrained_tokens_total");
  const ojson format = {{"type", "json_object"}};
  for (int seed : {1, 2}) {
    const Answer a = complete(request(format, 1.0, seed));
    EXPECT_EQ(a.finish_reason, "stop");
    const json j = json::parse(a.text, nullptr, false);
    EXPECT_TRUE(j.is_object()) << a.text;
  }
  const StreamAnswer s = stream_chat(shared().port, request(format, 0.0, 0));
  EXPECT_EQ(s.finish_reason, "stop");
  EXPECT_TRUE(json::parse(s.text, nullptr, false).is_object()) << s.text;
  EXPECT_GE(shared().metric("ost_constrained_tokens_total"), before + 3 * 2);  // each answer: "{}" and the end token at least
  EXPECT_GT(shared().metric("ost_token_mask_seconds_total"), 0);
}

TEST(ResponseFormat, TextIsFreeAndShortAnswersEndWithLength) {
  const Answer free_text = complete(request({{"type", "text"}}, 0.0, 0, 8));
  ojson plain_body = request({{"type", "text"}}, 0.0, 0, 8);
  plain_body.erase("response_format");
  const Answer plain = complete(plain_body);
  EXPECT_EQ(free_text.text, plain.text);
  const Answer cut = complete(request(price_tag_format(), 0.0, 0, 4));
  EXPECT_EQ(cut.finish_reason, "length");
  EXPECT_EQ(cut.text.rfind("{\"p", 0), 0u) << cut.text;  // the schema's first key, cut
}

// Constrained rows batched with free sampled and greedy rows (the candidates and greedy
// shortcuts of the other rows): each answer as when it runs alone.
TEST(ResponseFormat, BatchedWithFreeRequestsGivesTheAnswersOfOneAtATime) {
  std::vector<ojson> bodies = {request(price_tag_format(), 1.0, 11), request({{"type", "json_object"}}, 0.0, 0),
                               request({{"type", "text"}}, 1.0, 5, 24), request({{"type", "text"}}, 0.0, 0, 24)};
  std::vector<Answer> alone;
  for (const ojson& b : bodies) alone.push_back(complete(b));
  std::vector<Answer> together(bodies.size());
  std::vector<std::thread> ts;
  for (size_t i = 0; i < bodies.size(); ++i) ts.emplace_back([&, i] { together[i] = complete(bodies[i]); });
  for (auto& t : ts) t.join();
  for (size_t i = 0; i < bodies.size(); ++i) {
    EXPECT_EQ(together[i].text, alone[i].text) << i;
    EXPECT_EQ(together[i].finish_reason, alone[i].finish_reason) << i;
  }
  expect_price_tag(together[0].text);
  EXPECT_TRUE(json::parse(together[1].text, nullptr, false).is_object()) << together[1].text;
}

TEST(ResponseFormat, BadFormatsAre400) {
  auto expect_400 = [&](const ojson& format, const std::string& needle, const ojson& extra = ojson::object()) {
    ojson body = request(format, 0.0, 0, 2);
    body.update(extra);
    auto r = shared().post_raw(body.dump());
    EXPECT_EQ(r.status, 400) << r.body;
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.contains("error")) << r.body;
    EXPECT_NE(j["error"]["message"].get<std::string>().find(needle), std::string::npos) << r.body;
    EXPECT_EQ(j["error"]["param"].get<std::string>().rfind("response_format", 0), 0u) << r.body;
  };
  expect_400("json", "'response_format' must be an object");
  expect_400({{"type", "xml"}}, "\"xml\" is not supported");
  expect_400({{"type", "json_schema"}}, "'schema'");
  expect_400({{"type", "json_schema"}, {"json_schema", {{"name", 3}, {"schema", ojson::object()}}}}, "name");
  expect_400({{"type", "json_schema"},
              {"json_schema",
               {{"name", "sku"},
                {"schema", {{"type", "object"}, {"properties", {{"sku", {{"type", "string"}, {"pattern", "^[0-9]+$"}}}}}}}}}},
             "unsupported JSON schema keyword 'pattern'");
  expect_400({{"type", "json_schema"}, {"json_schema", {{"name", "n"}, {"schema", {{"type", "number"}, {"minimum", 0}}}}}},
             "'minimum'");
  const ojson tools = ojson::array({{{"type", "function"}, {"function", {{"name", "f"}, {"parameters", ojson::object()}}}}});
  expect_400({{"type", "json_object"}}, "together with 'tools'", {{"tools", tools}});
  // tool_choice "none" leaves the tools out: then the format applies.
  ojson body = request({{"type", "json_object"}}, 0.0, 0);
  body["tools"] = tools;
  body["tool_choice"] = "none";
  auto r = shared().post_raw(body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(json::parse(json::parse(r.body)["choices"][0]["message"]["content"].get<std::string>(), nullptr, false)
                  .is_object());
}

// tool_choice forcing a call: the answer is one <tool_call> whose arguments follow the function's
// parameters, given back as tool_calls.
TEST(ResponseFormat, ToolChoiceForcesACall) {
  const ojson tools = ojson::parse(R"([
    {"type": "function", "function": {"name": "lookup_sku", "parameters": {"type": "object",
      "properties": {"sku": {"type": "string"}, "count": {"type": "integer"}}, "required": ["sku", "count"]}}},
    {"type": "function", "function": {"name": "report_gap", "parameters": {"type": "object",
      "properties": {"shelf": {"type": "integer"}}, "required": ["shelf"]}}}])");
  for (const ojson& choice : {ojson{{"type", "function"}, {"function", {{"name", "lookup_sku"}}}}, ojson("required")}) {
    for (double temperature : {0.0, 1.0}) {
      ojson body = request({{"type", "text"}}, temperature, 4);
      body.erase("response_format");
      body["tools"] = tools;
      body["tool_choice"] = choice;
      auto r = shared().post_raw(body.dump());
      ASSERT_EQ(r.status, 200) << r.body;
      const json c = json::parse(r.body)["choices"][0];
      EXPECT_EQ(c["finish_reason"], "tool_calls") << r.body;
      ASSERT_TRUE(c["message"]["tool_calls"].is_array() && c["message"]["tool_calls"].size() == 1) << r.body;
      const json f = c["message"]["tool_calls"][0]["function"];
      const json args = json::parse(f["arguments"].get<std::string>(), nullptr, false);
      ASSERT_TRUE(args.is_object()) << r.body;
      if (choice.is_object() || f["name"] == "lookup_sku") {
        EXPECT_EQ(f["name"], "lookup_sku");
        if (choice.is_object()) {
          EXPECT_TRUE(args["sku"].is_string() && args["count"].is_number_integer()) << r.body;
          EXPECT_EQ(args.size(), 2u) << r.body;
        }
      } else {
        EXPECT_EQ(f["name"], "report_gap") << r.body;
      }
    }
  }
  ojson body = request({{"type", "text"}}, 0.0, 0, 2);
  body.erase("response_format");
  body["tools"] = tools;
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", "nope"}}}};
  auto r = shared().post_raw(body.dump());
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("not one of 'tools'"), std::string::npos) << r.body;
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", "lookup_sku"}}}};
  body["tools"][0]["function"]["parameters"]["properties"]["sku"]["pattern"] = "^[0-9]+$";
  r = shared().post_raw(body.dump());
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("tools[0].function.parameters"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("#/properties/sku: unsupported JSON schema keyword 'pattern'"), std::string::npos) << r.body;
}

// The one-request engine (ostrakon run) writes the same constrained answer as the serving loop.
TEST(ResponseFormat, OneRequestEngineGivesTheServingLoopsAnswer) {
  const Answer served = complete(request(price_tag_format(), 0.0, 0));
  auto engine = Engine::load(demo_dir());
  ASSERT_TRUE(engine.is_ok()) << engine.message();
  GenerateRequest g;
  g.messages = {{"user", {ContentPart::make_text("Read the price tag as JSON.")}}};
  g.max_tokens = 1500;
  auto schema = grammar::compile_json_schema(kPriceTagSchema, {.max_string_length = kMaxString});
  ASSERT_TRUE(schema.is_ok());
  g.response_format = *schema;
  auto res = (*engine)->generate(g);
  ASSERT_TRUE(res.is_ok()) << res.message();
  EXPECT_EQ(res->finish_reason, "stop");
  EXPECT_EQ(res->text, served.text);
}

}  // namespace
}  // namespace ost::testing
