#include "eval/results.h"

#include <algorithm>
#include <cmath>

#include "core/file_util.h"
#include "eval/json_check.h"
#include "eval/scoring.h"

namespace ost::eval {

using nlohmann::json;

std::string build_prompt(const EvalItem& item) {
  std::string p = item.question;
  switch (item.format) {
    case ItemFormat::kMcq:
      for (size_t i = 0; i < item.choices.size(); ++i) p += "\n" + std::string(1, char('A' + i)) + ". " + item.choices[i];
      p += "\nAnswer with the option's letter from the given choices directly.";
      break;
    case ItemFormat::kOpen: p += "\nAnswer with a short word or phrase."; break;
    case ItemFormat::kJson:
      p += "\nAnswer with one JSON object that follows this JSON schema:\n" + item.schema.dump();
      break;
  }
  return p;
}

Scored score_answer(const EvalItem& item, const AskResult& ans) {
  Scored s;
  if (!ans.error.empty()) {
    s.outcome = "error";
    return s;
  }
  const std::string text = strip_reasoning(ans.text);
  switch (item.format) {
    case ItemFormat::kMcq: {
      ChoiceResult c = extract_choice(text, item.choices);
      if (c.index >= 0) {
        s.extracted = std::string(1, char('A' + c.index));
        s.correct = c.index == item.answer_index;
        s.outcome = s.correct ? "correct" : "wrong";
      } else {
        s.outcome = c.refusal ? "refusal" : "no_answer";
      }
      s.score = s.correct ? 1 : 0;
      break;
    }
    case ItemFormat::kOpen: {
      for (auto& ref : item.answers) {
        s.exact = s.exact || exact_match(text, ref);
        s.f1 = std::max(s.f1, token_f1(text, ref));
      }
      s.extracted = normalize_answer(text).substr(0, 200);
      s.correct = s.exact;
      s.score = s.f1;
      s.outcome = s.correct ? "correct" : "wrong";
      break;
    }
    case ItemFormat::kJson: {
      auto obj = extract_json_object(text);
      s.fields = json::array();
      if (!obj) {
        s.outcome = "invalid_json";
        break;
      }
      s.json_found = true;
      s.extracted = obj->dump();
      s.schema_errors = validate_json(item.schema, *obj);
      s.schema_valid = s.schema_errors.empty();
      if (!item.expected.is_null()) {
        auto f = field_agreement(item.expected, *obj);
        s.field_agreement = mean_field_score(f);
        for (auto& x : f) s.fields.push_back({{"path", x.path}, {"score", x.score}, {"got", x.got}});
      } else {
        s.field_agreement = s.schema_valid ? 1 : 0;
      }
      s.score = s.field_agreement;
      s.correct = s.schema_valid && s.field_agreement >= 1.0 - 1e-9;
      s.outcome = !s.schema_valid ? "invalid_json" : s.correct ? "correct" : "wrong";
      break;
    }
  }
  return s;
}

void Group::add(const ItemResult& r) {
  ++n;
  const Scored& s = r.scored;
  correct += s.correct;
  score_sum += s.score;
  refusals += s.outcome == "refusal";
  no_answer += s.outcome == "no_answer";
  errors += s.outcome == "error";
  invalid_json += s.outcome == "invalid_json";
  if (r.format == "open") {
    ++open_n;
    f1_sum += s.f1;
  }
  if (r.format == "json") {
    ++json_n;
    json_valid += s.schema_valid;
    field_sum += s.field_agreement;
  }
  if (r.blind_done && s.outcome != "error" && r.blind.outcome != "error") {
    ++blind_n;
    blind_correct += r.blind.correct;
    seen_right += s.correct;
    right_both += s.correct && r.blind.correct;
  }
}

json Group::to_json() const {
  json j = {{"items", n},          {"correct", correct},     {"accuracy", accuracy()}, {"mean_score", mean_score()},
            {"refusals", refusals}, {"no_answer", no_answer}, {"errors", errors},       {"invalid_json", invalid_json}};
  if (open_n) j["open"] = {{"items", open_n}, {"mean_f1", f1_sum / open_n}};
  if (json_n)
    j["json"] = {{"items", json_n}, {"schema_valid", json_valid}, {"validity", double(json_valid) / json_n},
                 {"mean_field_agreement", field_sum / json_n}};
  if (blind_n)
    j["visual_check"] = {{"items", blind_n},
                         {"right_with_image", seen_right},
                         {"still_right_blank", right_both},
                         {"stays_right_rate", seen_right ? double(right_both) / seen_right : 0.0},
                         {"blank_accuracy", double(blind_correct) / blind_n}};
  return j;
}

LatencyStats latency_stats(std::vector<double> v) {
  LatencyStats s;
  s.n = int(v.size());
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / double(v.size());
  auto pct = [&](double p) { return v[std::min(v.size() - 1, size_t(std::ceil(p * double(v.size()))) - 1)]; };
  s.p50 = pct(0.5);
  s.p90 = pct(0.9);
  s.p99 = pct(0.99);
  s.max = v.back();
  return s;
}

json LatencyStats::to_json() const {
  return {{"n", n}, {"mean_ms", mean}, {"p50_ms", p50}, {"p90_ms", p90}, {"p99_ms", p99}, {"max_ms", max}};
}

Aggregates aggregate(const RunResults& run) {
  Aggregates a;
  std::vector<double> ttft, total;
  int64_t requests = 0;
  for (auto& r : run.items) {
    a.overall.add(r);
    a.by_scene[r.scene].add(r);
    a.by_format[r.format].add(r);
    std::string path;
    for (auto& c : r.category) {
      path += (path.empty() ? "" : "/") + c;
      a.by_category[path].add(r);
    }
    for (const AskResult* x : {&r.answer, r.blind_done ? &r.blind_answer : nullptr}) {
      if (!x) continue;
      ++requests;
      a.prompt_tokens += x->prompt_tokens;
      a.completion_tokens += x->completion_tokens;
    }
    if (r.answer.error.empty()) {
      total.push_back(r.answer.total_ms);
      if (r.answer.ttft_ms >= 0) ttft.push_back(r.answer.ttft_ms);
    }
  }
  a.ttft = latency_stats(ttft);
  a.total = latency_stats(total);
  if (run.info.wall_s > 0) {
    a.items_per_s = double(requests) / run.info.wall_s;
    a.output_tokens_per_s = double(a.completion_tokens) / run.info.wall_s;
  }
  return a;
}

json Aggregates::to_json() const {
  json j;
  j["overall"] = overall.to_json();
  using Named = std::pair<const char*, const std::map<std::string, Group>*>;
  for (const auto& [name, m] : {Named{"by_scene", &by_scene}, Named{"by_format", &by_format},
                                Named{"by_category", &by_category}}) {
    json g = json::object();
    for (auto& [k, v] : *m) g[k] = v.to_json();
    j[name] = g;
  }
  j["latency"] = {{"ttft", ttft.to_json()}, {"total", total.to_json()}};
  j["throughput"] = {{"requests_per_s", items_per_s},
                     {"output_tokens_per_s", output_tokens_per_s},
                     {"prompt_tokens", prompt_tokens},
                     {"completion_tokens", completion_tokens}};
  return j;
}

namespace {

json answer_json(const AskResult& a) {
  json j = {{"response", a.text},
            {"finish_reason", a.finish_reason},
            {"ttft_ms", a.ttft_ms},
            {"total_ms", a.total_ms},
            {"prompt_tokens", a.prompt_tokens},
            {"completion_tokens", a.completion_tokens}};
  if (!a.error.empty()) j["error"] = a.error;
  if (a.has_timings)
    j["timings"] = {{"preprocess_ms", a.timings.preprocess_ms},
                    {"vision_ms", a.timings.vision_ms},
                    {"prefill_ms", a.timings.prefill_ms},
                    {"decode_ms", a.timings.decode_ms}};
  return j;
}

json scored_json(const Scored& s, const std::string& format) {
  json j = {{"outcome", s.outcome}, {"correct", s.correct}, {"score", s.score}, {"extracted", s.extracted}};
  if (format == "open") {
    j["f1"] = s.f1;
    j["exact"] = s.exact;
  }
  if (format == "json") {
    j["json_found"] = s.json_found;
    j["schema_valid"] = s.schema_valid;
    j["schema_errors"] = s.schema_errors;
    j["field_agreement"] = s.field_agreement;
    j["fields"] = s.fields.is_null() ? json::array() : s.fields;
  }
  return j;
}

AskResult answer_from(const json& j) {
  AskResult a;
  a.text = j.value("response", "");
  a.finish_reason = j.value("finish_reason", "");
  a.error = j.value("error", "");
  a.ttft_ms = j.value("ttft_ms", -1.0);
  a.total_ms = j.value("total_ms", 0.0);
  a.prompt_tokens = j.value("prompt_tokens", int64_t(0));
  a.completion_tokens = j.value("completion_tokens", int64_t(0));
  return a;
}

Scored scored_from(const json& j) {
  Scored s;
  s.outcome = j.value("outcome", "");
  s.correct = j.value("correct", false);
  s.score = j.value("score", 0.0);
  s.extracted = j.value("extracted", "");
  s.f1 = j.value("f1", 0.0);
  s.exact = j.value("exact", false);
  s.json_found = j.value("json_found", false);
  s.schema_valid = j.value("schema_valid", false);
  if (j.contains("schema_errors")) s.schema_errors = j["schema_errors"].get<std::vector<std::string>>();
  s.field_agreement = j.value("field_agreement", 0.0);
  if (j.contains("fields")) s.fields = j["fields"];
  return s;
}

}  // namespace

json results_to_json(const RunResults& run) {
  json j;
  const RunInfo& i = run.info;
  j["schema"] = "ostrakon-eval-results/1";
  j["run"] = {{"data", i.data},         {"target", i.target},
              {"model", i.model},       {"device", i.device},
              {"started", i.started},   {"concurrency", i.concurrency},
              {"max_tokens", i.max_tokens}, {"visual_check", i.visual_check},
              {"wall_s", i.wall_s},     {"items_in_file", i.items_in_file}};
  j["aggregates"] = aggregate(run).to_json();
  json items = json::array();
  for (auto& r : run.items) {
    json it = {{"id", r.id},         {"scene", r.scene},         {"category", r.category},
               {"format", r.format}, {"question", r.question},   {"reference", r.reference},
               {"images", r.images}};
    it.update(answer_json(r.answer));
    it.update(scored_json(r.scored, r.format));
    if (r.blind_done) {
      json b = answer_json(r.blind_answer);
      b.update(scored_json(r.blind, r.format));
      it["blank_image"] = b;
    }
    items.push_back(it);
  }
  j["items"] = items;
  json un = json::array();
  for (auto& u : run.unsupported) un.push_back({{"line", u.line}, {"id", u.id}, {"reason", u.reason}});
  j["unsupported"] = un;
  return j;
}

Result<RunResults> load_results(const std::string& path) {
  auto text = read_file(path);
  if (!text) return make_error("cannot read %s: %s", path.c_str(), text.message().c_str());
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("items") || !j["items"].is_array() || !j.contains("run"))
    return make_error("%s is not an ostrakon eval results file", path.c_str());
  RunResults run;
  try {
    const json& r = j["run"];
    run.info.data = r.value("data", "");
    run.info.target = r.value("target", "");
    run.info.model = r.value("model", "");
    run.info.device = r.value("device", "");
    run.info.started = r.value("started", "");
    run.info.concurrency = r.value("concurrency", 1);
    run.info.max_tokens = r.value("max_tokens", 0);
    run.info.visual_check = r.value("visual_check", false);
    run.info.wall_s = r.value("wall_s", 0.0);
    run.info.items_in_file = r.value("items_in_file", 0);
    for (auto& it : j["items"]) {
      ItemResult x;
      x.id = it.at("id").get<std::string>();
      x.scene = it.value("scene", "");
      x.format = it.value("format", "");
      x.question = it.value("question", "");
      x.reference = it.value("reference", "");
      if (it.contains("category")) x.category = it["category"].get<std::vector<std::string>>();
      if (it.contains("images")) x.images = it["images"].get<std::vector<std::string>>();
      x.answer = answer_from(it);
      x.scored = scored_from(it);
      if (it.contains("blank_image")) {
        x.blind_done = true;
        x.blind_answer = answer_from(it["blank_image"]);
        x.blind = scored_from(it["blank_image"]);
      }
      run.items.push_back(std::move(x));
    }
    if (j.contains("unsupported"))
      for (auto& u : j["unsupported"]) run.unsupported.push_back({u.value("line", 0), u.value("id", ""), u.value("reason", "")});
  } catch (const std::exception& e) {
    return make_error("%s: %s", path.c_str(), e.what());
  }
  return run;
}

}  // namespace ost::eval
