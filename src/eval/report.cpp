#include "eval/report.h"

#include <algorithm>
#include <filesystem>

#include "core/file_util.h"
#include "eval/report_doc.h"
#include "eval/svg.h"

namespace ost::eval {

namespace {

std::string describe_run(const RunInfo& i) {
  std::string s = "Model: " + (i.model.empty() ? std::string("(unnamed)") : i.model) + " · Target: " + i.target;
  if (!i.device.empty()) s += " · Device: " + i.device;
  s += " · Data: " + i.data + " · Started: " + i.started + " · max tokens " + std::to_string(i.max_tokens) +
       " · concurrency " + std::to_string(i.concurrency) + " · wall time " + num(i.wall_s, 1) + " s";
  return s;
}

std::string format_metric(const std::string& format, const Group& g) {
  if (format == "mcq") return "refusals " + std::to_string(g.refusals) + ", no option read " + std::to_string(g.no_answer);
  if (format == "open" && g.open_n) return "exact match " + pct(g.accuracy()) + ", mean token F1 " + num(g.f1_sum / g.open_n, 3);
  if (format == "json" && g.json_n)
    return "schema-valid " + pct(double(g.json_valid) / g.json_n) + ", mean field agreement " + pct(g.field_sum / g.json_n);
  return "";
}

std::vector<std::string> group_row(const std::string& name, const Group& g) {
  return {name, std::to_string(g.n), pct(g.accuracy()), num(g.mean_score(), 3)};
}

void visual_section(ReportDoc& d, const Aggregates& a) {
  d.heading("Visual necessity (blank-image check)");
  d.note("Every item with images is asked again with blank gray images of the same sizes. "
         "\"Stays right\" is the share of the items answered right with the photo that are still answered right "
         "without it: a high value means those questions can be answered without looking (guessable options, "
         "knowledge or wording), so they say little about the model's eyes.");
  Table t{{"Group", "Items", "Right with photo", "Still right with blank", "Stays right", "Accuracy with blank"},
          {}, {false, true, true, true, true, true}};
  auto row = [&](const std::string& name, const Group& g) {
    if (!g.blind_n) return;
    t.rows.push_back({name, std::to_string(g.blind_n), std::to_string(g.seen_right), std::to_string(g.right_both),
                      g.seen_right ? pct(double(g.right_both) / g.seen_right) : "-", pct(double(g.blind_correct) / g.blind_n)});
  };
  row("All", a.overall);
  for (auto& [k, g] : a.by_scene) row("Scene " + k, g);
  for (auto& [k, g] : a.by_format) row("Format " + k, g);
  if (t.rows.empty()) d.note("Not run (--no-visual-check, or no item has images).");
  else d.table(t);
}

ReportDoc build_run_doc(const RunResults& run, bool html) {
  const Aggregates a = aggregate(run);
  ReportDoc d("Store-scenario evaluation");
  d.para(describe_run(run.info));
  const Group& o = a.overall;
  if (html) {
    auto card = [](const std::string& v, const std::string& k) {
      return "<div class=\"card\"><div class=\"v\">" + html_escape(v) + "</div><div class=\"k\">" + html_escape(k) + "</div></div>";
    };
    d.html("<div class=\"cards\">" + card(pct(o.accuracy()), "accuracy (" + std::to_string(o.n) + " items)") +
           card(num(o.mean_score(), 3), "mean score (partial credit)") +
           card(a.ttft.n ? num(a.ttft.p50, 0) + " ms" : "-", "time to first token, median") +
           card(a.total.n ? num(a.total.p50, 0) + " ms" : "-", "answer time, median") +
           card(num(a.items_per_s, 2) + "/s", "requests per second") + "</div>");
  }
  if (o.errors) d.warn(std::to_string(o.errors) + " of " + std::to_string(o.n) + " requests failed; they count as wrong (see the item list).");
  if (!run.unsupported.empty())
    d.warn(std::to_string(run.unsupported.size()) + " item(s) of the file were not run: the engine cannot take them (listed below).");

  d.heading("Summary");
  d.table({{"Items", "Accuracy", "Mean score", "Refusals", "No option read", "Invalid JSON", "Errors", "Unsupported"},
           {{std::to_string(o.n), pct(o.accuracy()), num(o.mean_score(), 3), std::to_string(o.refusals),
             std::to_string(o.no_answer), std::to_string(o.invalid_json), std::to_string(o.errors),
             std::to_string(run.unsupported.size())}},
           {true, true, true, true, true, true, true, true}});
  d.note("Accuracy: mcq by the chosen option, open answers by normalized exact match, JSON answers when valid "
         "against the schema and every expected field agrees. Mean score gives partial credit (token F1, share "
         "of agreeing fields).");

  d.heading("By scene");
  Table scenes{{"Scene", "Items", "Accuracy", "Mean score"}, {}, {false, true, true, true}};
  for (auto& [k, g] : a.by_scene) scenes.rows.push_back(group_row(k, g));
  d.table(scenes);

  d.heading("By category");
  std::vector<BarRow> bars;
  Table cats{{"Category", "Items", "Accuracy", "Mean score"}, {}, {false, true, true, true}};
  for (auto& [k, g] : a.by_category) {
    int level = int(std::count(k.begin(), k.end(), '/'));
    std::string leaf = k.substr(k.rfind('/') == std::string::npos ? 0 : k.rfind('/') + 1);
    cats.rows.push_back(group_row(std::string(size_t(level) * 4, ' ') + (level ? "└ " : "") + leaf, g));
    cats.rows.back()[0] = html ? cats.rows.back()[0] : k;
    bars.push_back({leaf, {g.accuracy()}, level});
  }
  if (html) d.html(svg_bars(bars, {"accuracy"}));
  d.table(cats);

  d.heading("By answer format");
  Table fm{{"Format", "Items", "Accuracy", "Mean score", "Details"}, {}, {false, true, true, true, false}};
  for (auto& [k, g] : a.by_format) {
    auto r = group_row(k, g);
    r.push_back(format_metric(k, g));
    fm.rows.push_back(r);
  }
  d.table(fm);

  visual_section(d, a);

  d.heading("Latency and throughput");
  Table lat{{"Measure", "n", "mean", "p50", "p90", "p99", "max"}, {}, {false, true, true, true, true, true, true}};
  for (auto& [name, s] : {std::pair{"Time to first token (ms)", a.ttft}, std::pair{"Answer time (ms)", a.total}})
    lat.rows.push_back({name, std::to_string(s.n), num(s.mean, 0), num(s.p50, 0), num(s.p90, 0), num(s.p99, 0), num(s.max, 0)});
  d.table(lat);
  d.para("Throughput: " + num(a.items_per_s, 2) + " requests/s, " + num(a.output_tokens_per_s, 1) +
         " output tokens/s over the whole run (" + std::to_string(a.prompt_tokens) + " prompt and " +
         std::to_string(a.completion_tokens) + " output tokens, blank-image re-asks included).");
  if (html) {
    std::vector<double> ttft, total;
    for (auto& r : run.items)
      if (r.answer.error.empty()) {
        total.push_back(r.answer.total_ms);
        if (r.answer.ttft_ms >= 0) ttft.push_back(r.answer.ttft_ms);
      }
    d.html(svg_latency_histogram({ttft, total}, {"time to first token", "answer time"}));
  }

  if (!run.unsupported.empty()) {
    d.heading("Unsupported items (not run)");
    Table u{{"Line", "Id", "Reason"}, {}, {true, false, false}};
    for (auto& x : run.unsupported) u.rows.push_back({std::to_string(x.line), x.id, x.reason});
    d.table(u);
  }

  d.heading("Items not answered right");
  Table w{{"Id", "Category", "Outcome", "Reference", "Answer"}, {}, {}};
  size_t shown = 0, total_wrong = 0;
  for (auto& r : run.items) {
    if (r.scored.correct) continue;
    ++total_wrong;
    if (shown >= 50) continue;
    ++shown;
    std::string cat;
    for (auto& c : r.category) cat += (cat.empty() ? "" : "/") + c;
    std::string ans = r.answer.error.empty() ? shorten(r.answer.text, 90) : "error: " + shorten(r.answer.error, 90);
    w.rows.push_back({r.id, cat, r.scored.outcome, shorten(r.reference, 60), ans});
  }
  if (w.rows.empty()) d.note("None.");
  else d.table(w);
  if (total_wrong > shown) d.note("... and " + std::to_string(total_wrong - shown) + " more (results.json lists every item).");
  return d;
}

}  // namespace

std::string run_report_markdown(const RunResults& run) { return build_run_doc(run, false).markdown(); }
std::string run_report_html(const RunResults& run) { return build_run_doc(run, true).html_page(); }

Status write_run_report(const RunResults& run, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error("cannot create %s: %s", dir.c_str(), ec.message().c_str());
  OST_TRY(write_file(dir + "/results.json",
                     results_to_json(run).dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
  OST_TRY(write_file(dir + "/report.md", run_report_markdown(run)));
  OST_TRY(write_file(dir + "/report.html", run_report_html(run)));
  return Status::ok();
}

}  // namespace ost::eval
