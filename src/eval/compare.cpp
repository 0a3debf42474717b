// --compare: two results files side by side (bf16 vs int8, ours vs a peer).
#include <algorithm>
#include <filesystem>
#include <tuple>
#include <map>

#include "core/file_util.h"
#include "eval/report.h"
#include "eval/report_doc.h"
#include "eval/svg.h"

namespace ost::eval {

using nlohmann::json;

namespace {

struct Pair {
  const ItemResult* a = nullptr;
  const ItemResult* b = nullptr;
};

struct Matched {
  std::vector<Pair> both;  // in A's order
  std::vector<std::string> only_a, only_b;
  int both_right = 0, only_a_right = 0, only_b_right = 0, both_wrong = 0;
  std::vector<Pair> changed;
};

std::string answer_shown(const ItemResult& r) {
  if (!r.answer.error.empty()) return "error: " + r.answer.error;
  if (r.format == "mcq") return r.scored.extracted.empty() ? "(" + r.scored.outcome + ") " + r.answer.text : r.scored.extracted;
  return r.answer.text;
}

Matched match(const RunResults& a, const RunResults& b) {
  Matched m;
  std::map<std::string, const ItemResult*> bi;
  for (auto& r : b.items) bi[r.id] = &r;
  std::map<std::string, bool> in_a;
  for (auto& r : a.items) {
    in_a[r.id] = true;
    auto it = bi.find(r.id);
    if (it == bi.end()) {
      m.only_a.push_back(r.id);
      continue;
    }
    Pair p{&r, it->second};
    m.both.push_back(p);
    const bool ra = r.scored.correct, rb = p.b->scored.correct;
    m.both_right += ra && rb;
    m.only_a_right += ra && !rb;
    m.only_b_right += !ra && rb;
    m.both_wrong += !ra && !rb;
    const bool same_answer = r.format == "mcq" || r.format == "json"
                                 ? r.scored.extracted == p.b->scored.extracted && r.scored.outcome == p.b->scored.outcome
                                 : r.scored.extracted == p.b->scored.extracted;
    if (!same_answer || ra != rb) m.changed.push_back(p);
  }
  for (auto& r : b.items)
    if (!in_a.count(r.id)) m.only_b.push_back(r.id);
  return m;
}

// Aggregates over the shared items only, so the deltas compare like with like.
std::pair<Aggregates, Aggregates> shared_aggregates(const RunResults& a, const RunResults& b, const Matched& m) {
  RunResults sa, sb;
  sa.info = a.info;
  sb.info = b.info;
  for (auto& p : m.both) {
    sa.items.push_back(*p.a);
    sb.items.push_back(*p.b);
  }
  return {aggregate(sa), aggregate(sb)};
}

std::string run_label(const RunInfo& i) {
  std::string m = i.model.empty() ? i.target : std::filesystem::path(i.model).filename().string();
  if (m.empty()) m = i.model;
  return m + " @ " + i.target;
}

ReportDoc build_doc(const RunResults& a, const RunResults& b, bool html) {
  const Matched m = match(a, b);
  auto [ga, gb] = shared_aggregates(a, b, m);
  // Latency and throughput are properties of each whole run.
  const Aggregates fa = aggregate(a), fb = aggregate(b);
  ReportDoc d("Store-scenario evaluation: comparison");
  d.para("A: " + run_label(a.info) + " (" + a.info.data + ", " + a.info.started + ")");
  d.para("B: " + run_label(b.info) + " (" + b.info.data + ", " + b.info.started + ")");
  if (!m.only_a.empty() || !m.only_b.empty())
    d.warn(std::to_string(m.both.size()) + " items are in both runs; " + std::to_string(m.only_a.size()) +
           " only in A and " + std::to_string(m.only_b.size()) + " only in B are left out of the deltas.");

  d.heading("Summary");
  Table s{{"Measure", "A", "B", "B - A"}, {}, {false, true, true, true}};
  s.rows.push_back({"Items compared", std::to_string(ga.overall.n), std::to_string(gb.overall.n), ""});
  s.rows.push_back({"Accuracy", pct(ga.overall.accuracy()), pct(gb.overall.accuracy()),
                    signed_pct(gb.overall.accuracy() - ga.overall.accuracy())});
  s.rows.push_back({"Mean score", num(ga.overall.mean_score(), 3), num(gb.overall.mean_score(), 3),
                    num(gb.overall.mean_score() - ga.overall.mean_score(), 3)});
  for (auto& [name, x, y] : {std::tuple{"Refusals", ga.overall.refusals, gb.overall.refusals},
                             std::tuple{"Invalid JSON", ga.overall.invalid_json, gb.overall.invalid_json},
                             std::tuple{"Errors", ga.overall.errors, gb.overall.errors}})
    s.rows.push_back({name, std::to_string(x), std::to_string(y), std::to_string(y - x)});
  s.rows.push_back({"Time to first token p50 (ms)", num(fa.ttft.p50, 0), num(fb.ttft.p50, 0), num(fb.ttft.p50 - fa.ttft.p50, 0)});
  s.rows.push_back({"Answer time p50 (ms)", num(fa.total.p50, 0), num(fb.total.p50, 0), num(fb.total.p50 - fa.total.p50, 0)});
  s.rows.push_back({"Output tokens/s", num(fa.output_tokens_per_s, 1), num(fb.output_tokens_per_s, 1),
                    num(fb.output_tokens_per_s - fa.output_tokens_per_s, 1)});
  d.table(s);
  d.table({{"Both right", "Only A right", "Only B right", "Both wrong", "Answer changed"},
           {{std::to_string(m.both_right), std::to_string(m.only_a_right), std::to_string(m.only_b_right),
             std::to_string(m.both_wrong), std::to_string(m.changed.size())}},
           {true, true, true, true, true}});

  auto group_table = [&](const std::string& title, const std::map<std::string, Group>& x,
                         const std::map<std::string, Group>& y, bool chart) {
    d.heading(title);
    Table t{{"Group", "Items", "A accuracy", "B accuracy", "Delta", "A score", "B score"}, {}, {false, true, true, true, true, true, true}};
    std::vector<BarRow> bars;
    for (auto& [k, g] : x) {
      auto it = y.find(k);
      const Group h = it == y.end() ? Group{} : it->second;
      const int level = int(std::count(k.begin(), k.end(), '/'));
      const std::string leaf = k.substr(k.rfind('/') == std::string::npos ? 0 : k.rfind('/') + 1);
      t.rows.push_back({k, std::to_string(g.n), pct(g.accuracy()), pct(h.accuracy()), signed_pct(h.accuracy() - g.accuracy()),
                        num(g.mean_score(), 3), num(h.mean_score(), 3)});
      bars.push_back({leaf, {g.accuracy(), h.accuracy()}, level});
    }
    if (html && chart) d.html(svg_bars(bars, {"A", "B"}));
    d.table(t);
  };
  group_table("By answer format", ga.by_format, gb.by_format, true);
  group_table("By scene", ga.by_scene, gb.by_scene, false);
  group_table("By category", ga.by_category, gb.by_category, true);

  if (html) {
    d.heading("Latency");
    std::vector<double> la, lb;
    for (auto& r : a.items)
      if (r.answer.error.empty()) la.push_back(r.answer.total_ms);
    for (auto& r : b.items)
      if (r.answer.error.empty()) lb.push_back(r.answer.total_ms);
    d.html(svg_latency_histogram({la, lb}, {"A answer time", "B answer time"}));
  }

  d.heading("Items whose answer changed");
  Table c{{"Id", "Reference", "A", "B", "A right", "B right"}, {}, {}};
  size_t shown = 0;
  for (auto& p : m.changed) {
    if (shown++ >= 100) break;
    c.rows.push_back({p.a->id, shorten(p.a->reference, 50), shorten(answer_shown(*p.a), 70), shorten(answer_shown(*p.b), 70),
                      p.a->scored.correct ? "yes" : "no", p.b->scored.correct ? "yes" : "no"});
  }
  if (c.rows.empty()) d.note("None: both runs gave the same answers.");
  else d.table(c);
  if (m.changed.size() > 100) d.note("... and " + std::to_string(m.changed.size() - 100) + " more (compare.json lists them all).");
  return d;
}

}  // namespace

json compare_json(const RunResults& a, const RunResults& b) {
  const Matched m = match(a, b);
  auto [ga, gb] = shared_aggregates(a, b, m);
  json j;
  j["schema"] = "ostrakon-eval-compare/1";
  j["a"] = {{"model", a.info.model}, {"target", a.info.target}, {"data", a.info.data}, {"started", a.info.started}};
  j["b"] = {{"model", b.info.model}, {"target", b.info.target}, {"data", b.info.data}, {"started", b.info.started}};
  j["items_compared"] = m.both.size();
  j["only_in_a"] = m.only_a;
  j["only_in_b"] = m.only_b;
  j["agreement"] = {{"both_right", m.both_right}, {"only_a_right", m.only_a_right}, {"only_b_right", m.only_b_right},
                    {"both_wrong", m.both_wrong}, {"answer_changed", m.changed.size()}};
  auto deltas = [](const std::map<std::string, Group>& x, const std::map<std::string, Group>& y) {
    json o = json::object();
    for (auto& [k, g] : x) {
      auto it = y.find(k);
      const Group h = it == y.end() ? Group{} : it->second;
      o[k] = {{"items", g.n}, {"accuracy_a", g.accuracy()}, {"accuracy_b", h.accuracy()},
              {"delta", h.accuracy() - g.accuracy()}, {"score_a", g.mean_score()}, {"score_b", h.mean_score()}};
    }
    return o;
  };
  j["overall"] = deltas({{"all", ga.overall}}, {{"all", gb.overall}})["all"];
  j["by_format"] = deltas(ga.by_format, gb.by_format);
  j["by_scene"] = deltas(ga.by_scene, gb.by_scene);
  j["by_category"] = deltas(ga.by_category, gb.by_category);
  json ch = json::array();
  for (auto& p : m.changed)
    ch.push_back({{"id", p.a->id},
                  {"reference", p.a->reference},
                  {"a", {{"response", p.a->answer.text}, {"extracted", p.a->scored.extracted}, {"outcome", p.a->scored.outcome}, {"correct", p.a->scored.correct}}},
                  {"b", {{"response", p.b->answer.text}, {"extracted", p.b->scored.extracted}, {"outcome", p.b->scored.outcome}, {"correct", p.b->scored.correct}}}});
  j["changed"] = ch;
  return j;
}

std::string compare_markdown(const RunResults& a, const RunResults& b) { return build_doc(a, b, false).markdown(); }
std::string compare_html(const RunResults& a, const RunResults& b) { return build_doc(a, b, true).html_page(); }

Status write_compare_report(const RunResults& a, const RunResults& b, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error("cannot create %s: %s", dir.c_str(), ec.message().c_str());
  OST_TRY(write_file(dir + "/compare.json",
                     compare_json(a, b).dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
  OST_TRY(write_file(dir + "/report.md", compare_markdown(a, b)));
  OST_TRY(write_file(dir + "/report.html", compare_html(a, b)));
  return Status::ok();
}

}  // namespace ost::eval
