// The summary of a serving benchmark: JSON (the source of truth), a console table and an
// HTML page with inline SVG charts drawn from that JSON.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "eval/serve_bench.h"
#include "eval/svg.h"

namespace ost::eval {

using nlohmann::json;

namespace {

const char* kColors[] = {"#2b6cb0", "#dd6b20", "#38a169", "#805ad5"};

double round3(double v) { return std::round(v * 1000) / 1000; }

json stats_json(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  json j = {{"count", v.size()}};
  if (v.empty()) return j;
  j["mean"] = round3(sum / double(v.size()));
  j["min"] = round3(v.front());
  j["p50"] = round3(percentile(v, 0.50));
  j["p90"] = round3(percentile(v, 0.90));
  j["p99"] = round3(percentile(v, 0.99));
  j["max"] = round3(v.back());
  return j;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

double num(const json& j, const char* k, double def = 0) {
  return j.contains(k) && j[k].is_number() ? j[k].get<double>() : def;
}

// A "nice" step (1, 2, 2.5, 5 x 10^k) at least `raw`.
double nice_step(double raw) {
  if (raw <= 0) return 1;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

std::vector<double> column(const json& requests, const char* key, bool only_ok = true) {
  std::vector<double> v;
  for (const json& r : requests) {
    if (only_ok && !r.value("error_kind", std::string()).empty()) continue;
    const double x = num(r, key, -1);
    if (x >= 0) v.push_back(x);
  }
  return v;
}

std::vector<double> all_itl(const json& requests) {
  std::vector<double> v;
  for (const json& r : requests)
    if (r.value("error_kind", std::string()).empty() && r.contains("itl_ms"))
      for (const json& x : r["itl_ms"]) v.push_back(x.get<double>());
  return v;
}

// Empirical CDFs of one or more latency series (ms) on a shared axis.
std::string svg_cdf(const std::vector<std::vector<double>>& series, const std::vector<std::string>& names) {
  double hi = 0;
  for (auto& s : series)
    for (double x : s) hi = std::max(hi, x);
  if (hi <= 0) return "<p class=\"note\">No latencies recorded.</p>";
  const int w = 660, h = 220, left = 44, top = 24, bottom = 32, plot_w = w - left - 32,
            plot_h = h - top - bottom;
  const double step = nice_step(hi / 6);
  const double xmax = step * std::ceil(hi / step);
  auto X = [&](double v) { return left + v / xmax * plot_w; };
  auto Y = [&](double q) { return top + (1 - q) * plot_h; };
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(w) + "\" height=\"" +
                  std::to_string(h) + "\" role=\"img\" font-family=\"sans-serif\" font-size=\"11\">";
  for (double q : {0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0}) {
    s += "<line x1=\"" + std::to_string(left) + "\" y1=\"" + fmt("%.1f", Y(q)) + "\" x2=\"" +
         std::to_string(left + plot_w) + "\" y2=\"" + fmt("%.1f", Y(q)) + "\" stroke=\"#e2e8f0\"/>";
    if (q != 0.99)
      s += "<text x=\"" + std::to_string(left - 4) + "\" y=\"" + fmt("%.1f", Y(q) + 4) +
           "\" text-anchor=\"end\" fill=\"#555\">" + fmt("%.2g", q) + "</text>";
  }
  for (double v = 0; v <= xmax + step / 2; v += step)
    s += "<text x=\"" + fmt("%.1f", X(v)) + "\" y=\"" + std::to_string(h - 16) +
         "\" text-anchor=\"middle\" fill=\"#555\">" + fmt("%g", v) + "</text>";
  s += "<text x=\"" + std::to_string(left + plot_w / 2) + "\" y=\"" + std::to_string(h - 2) +
       "\" text-anchor=\"middle\" fill=\"#555\">milliseconds (height: fraction at or below)</text>";
  for (size_t k = 0; k < series.size(); ++k) {
    std::vector<double> v = series[k];
    std::sort(v.begin(), v.end());
    if (k < names.size()) {
      const int x = left + int(k) * 160;
      s += "<rect x=\"" + std::to_string(x) + "\" y=\"4\" width=\"12\" height=\"12\" fill=\"" +
           kColors[k % 4] + "\"/><text x=\"" + std::to_string(x + 16) + "\" y=\"14\">" +
           html_escape(names[k]) + "</text>";
    }
    if (v.empty()) continue;
    // A step curve; long series are drawn at 400 quantiles.
    std::string pts = fmt("%.1f", X(v.front())) + "," + fmt("%.1f", Y(0));
    const size_t n = v.size(), m = std::min<size_t>(n, 400);
    for (size_t i = 0; i < m; ++i) {
      const size_t idx = m == n ? i : (i * (n - 1)) / (m - 1);
      const double x = X(v[idx]);
      pts += " " + fmt("%.1f", x) + "," + fmt("%.1f", Y(double(idx) / double(n)));
      pts += " " + fmt("%.1f", x) + "," + fmt("%.1f", Y(double(idx + 1) / double(n)));
    }
    s += "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" + std::string(kColors[k % 4]) +
         "\" points=\"" + pts + "\"/>";
  }
  return s + "</svg>";
}

// Output tokens/s per time bucket (bars) and requests in flight (line, right axis).
std::string svg_timeline(const json& timeline, double bucket_s) {
  if (!timeline.is_array() || timeline.empty()) return "<p class=\"note\">No timeline.</p>";
  double tok_hi = 1, fl_hi = 1;
  for (const json& b : timeline) {
    tok_hi = std::max(tok_hi, num(b, "output_tokens_per_s"));
    fl_hi = std::max(fl_hi, num(b, "in_flight"));
  }
  const double tstep = nice_step(tok_hi / 4), tmax = tstep * std::ceil(tok_hi / tstep);
  const double fmax = std::ceil(fl_hi * 1.1);
  const int w = 640, h = 220, left = 52, right = 40, top = 24, bottom = 32;
  const int plot_w = w - left - right, plot_h = h - top - bottom;
  const double bw = double(plot_w) / double(timeline.size());
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(w) + "\" height=\"" +
                  std::to_string(h) + "\" role=\"img\" font-family=\"sans-serif\" font-size=\"11\">";
  s += "<rect x=\"" + std::to_string(left) + "\" y=\"4\" width=\"12\" height=\"12\" fill=\"" + kColors[0] +
       "\" fill-opacity=\"0.6\"/><text x=\"" + std::to_string(left + 16) +
       "\" y=\"14\">output tokens/s</text><rect x=\"" + std::to_string(left + 160) +
       "\" y=\"9\" width=\"12\" height=\"2\" fill=\"" + kColors[1] + "\"/><text x=\"" +
       std::to_string(left + 176) + "\" y=\"14\">requests in flight (right axis)</text>";
  for (double v = 0; v <= tmax + tstep / 2; v += tstep) {
    const double y = top + (1 - v / tmax) * plot_h;
    s += "<line x1=\"" + std::to_string(left) + "\" y1=\"" + fmt("%.1f", y) + "\" x2=\"" +
         std::to_string(left + plot_w) + "\" y2=\"" + fmt("%.1f", y) + "\" stroke=\"#e2e8f0\"/><text x=\"" +
         std::to_string(left - 4) + "\" y=\"" + fmt("%.1f", y + 4) + "\" text-anchor=\"end\" fill=\"#555\">" +
         fmt("%g", v) + "</text>";
  }
  s += "<text x=\"" + std::to_string(w - right + 4) + "\" y=\"" + std::to_string(top + 4) +
       "\" fill=\"#555\">" + fmt("%g", fmax) + "</text><text x=\"" + std::to_string(w - right + 4) +
       "\" y=\"" + std::to_string(top + plot_h + 4) + "\" fill=\"#555\">0</text>";
  std::string line;
  for (size_t i = 0; i < timeline.size(); ++i) {
    const json& b = timeline[i];
    const double th = num(b, "output_tokens_per_s") / tmax * plot_h;
    s += "<rect x=\"" + fmt("%.1f", left + double(i) * bw + 0.5) + "\" y=\"" +
         fmt("%.1f", top + plot_h - th) + "\" width=\"" + fmt("%.1f", std::max(0.5, bw - 1)) +
         "\" height=\"" + fmt("%.1f", th) + "\" fill=\"" + kColors[0] + "\" fill-opacity=\"0.6\"><title>" +
         fmt("%.1f s: ", num(b, "t_s")) + fmt("%.0f tokens/s, ", num(b, "output_tokens_per_s")) +
         fmt("%.0f in flight", num(b, "in_flight")) + "</title></rect>";
    line += fmt(" %.1f,", left + (double(i) + 0.5) * bw) +
            fmt("%.1f", top + (1 - num(b, "in_flight") / fmax) * plot_h);
  }
  s += "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" + std::string(kColors[1]) + "\" points=\"" +
       line + "\"/>";
  for (size_t i = 0; i <= timeline.size(); i += std::max<size_t>(1, timeline.size() / 6))
    s += "<text x=\"" + fmt("%.1f", left + double(i) * bw) + "\" y=\"" + std::to_string(h - 16) +
         "\" text-anchor=\"middle\" fill=\"#555\">" + fmt("%g", round3(double(i) * bucket_s)) + "</text>";
  s += "<text x=\"" + std::to_string(left + plot_w / 2) + "\" y=\"" + std::to_string(h - 2) +
       "\" text-anchor=\"middle\" fill=\"#555\">seconds since the first request</text>";
  return s + "</svg>";
}

}  // namespace

json serve_bench_json(const ServeBenchResult& r) {
  const ServeBenchOptions& o = r.options;
  json cfg = {{"url", o.url},
              {"target", r.target},
              {"model", r.model},
              {"mode", o.rate > 0 ? "poisson" : "concurrency"},
              {"rate", o.rate > 0 ? json(o.rate) : json(nullptr)},
              {"concurrency", o.concurrency > 0 ? json(o.concurrency) : json(nullptr)},
              {"requests", o.requests},
              {"images_per_request", o.images_per_request},
              {"prompt_tokens", o.prompt_tokens},
              {"max_tokens", o.max_tokens},
              {"ignore_eos", o.ignore_eos},
              {"slo_ttft_ms", o.slo_ttft_ms > 0 ? json(o.slo_ttft_ms) : json(nullptr)},
              {"slo_tpot_ms", o.slo_tpot_ms > 0 ? json(o.slo_tpot_ms) : json(nullptr)},
              {"seed", o.seed},
              {"timeout_s", o.timeout_s}};
  if (!o.images_dir.empty())
    cfg["images"] = {{"dir", o.images_dir}};
  else if (o.image_width > 0 && o.images_per_request > 0)
    cfg["images"] = {{"synthetic", true},
                     {"width", o.image_width},
                     {"height", o.image_height},
                     {"format", o.image_format}};
  else
    cfg["images"] = nullptr;

  json requests = json::array();
  int completed = 0, good = 0;
  int64_t prompt_total = 0, completion_total = 0;
  bool usage_everywhere = true;
  std::map<std::string, std::pair<int, std::string>> errors;  // kind -> (count, first message)
  for (const RequestRecord& q : r.records) {
    json itl = json::array();
    for (double x : q.itl_ms) itl.push_back(round3(x));
    requests.push_back({{"index", q.index},
                        {"scheduled_s", round3(q.scheduled_s)},
                        {"start_s", round3(q.start_s)},
                        {"status", q.status},
                        {"error_kind", q.error_kind},
                        {"error", q.error},
                        {"ttft_ms", q.ttft_ms >= 0 ? json(round3(q.ttft_ms)) : json(nullptr)},
                        {"tpot_ms", q.tpot_ms >= 0 ? json(round3(q.tpot_ms)) : json(nullptr)},
                        {"e2e_ms", round3(q.e2e_ms)},
                        {"prompt_tokens", q.prompt_tokens},
                        {"completion_tokens", q.completion_tokens},
                        {"itl_ms", std::move(itl)}});
    if (!q.ok()) {
      auto& e = errors[q.error_kind];
      if (e.first++ == 0) e.second = q.error;
      continue;
    }
    ++completed;
    prompt_total += q.prompt_tokens;
    completion_total += q.completion_tokens;
    usage_everywhere &= q.usage_reported;
    // A request with no content delta is judged by its end-to-end time.
    const double ttft = q.ttft_ms >= 0 ? q.ttft_ms : q.e2e_ms;
    const bool ttft_ok = o.slo_ttft_ms <= 0 || ttft <= o.slo_ttft_ms;
    const bool tpot_ok = o.slo_tpot_ms <= 0 || q.tpot_ms < 0 || q.tpot_ms <= o.slo_tpot_ms;
    good += ttft_ok && tpot_ok;
  }
  const double dur = std::max(r.duration_s, 1e-9);
  json err = json::object();
  for (auto& [k, v] : errors) err[k] = {{"count", v.first}, {"example", v.second}};
  const int n = int(r.records.size());
  json summary = {{"requests", n},
                  {"completed", completed},
                  {"failed", n - completed},
                  {"duration_s", round3(r.duration_s)},
                  {"request_throughput", round3(completed / dur)},
                  {"output_token_throughput", round3(double(completion_total) / dur)},
                  {"total_token_throughput", round3(double(prompt_total + completion_total) / dur)},
                  {"prompt_tokens_total", prompt_total},
                  {"completion_tokens_total", completion_total},
                  {"mean_prompt_tokens", completed ? round3(double(prompt_total) / completed) : 0.0},
                  {"mean_completion_tokens", completed ? round3(double(completion_total) / completed) : 0.0},
                  {"usage_reported", usage_everywhere},
                  {"good_requests", good},
                  {"goodput", round3(good / dur)},
                  {"slo_attainment", n ? round3(double(good) / n) : 0.0},
                  {"max_in_flight", r.max_in_flight},
                  {"request_bytes_total", r.request_bytes},
                  {"prepare_s", round3(r.prepare_s)},
                  {"errors", err}};

  // The run in time buckets: tokens spread over a request's content chunks.
  const double bucket = nice_step(std::max(r.duration_s, 0.01) / 40);
  const size_t nb = size_t(std::ceil(std::max(r.duration_s, 1e-9) / bucket));
  std::vector<double> tokens(nb, 0), finished(nb, 0), flight(nb, 0);
  auto slot = [&](double t) { return std::min(nb - 1, size_t(std::max(0.0, t) / bucket)); };
  for (const RequestRecord& q : r.records) {
    const double end = q.start_s + q.e2e_ms / 1000;
    for (size_t b = 0; b < nb; ++b) {
      const double mid = (double(b) + 0.5) * bucket;
      flight[b] += q.start_s <= mid && mid < end;
    }
    if (!q.ok()) continue;
    finished[slot(end)] += 1;
    if (q.ttft_ms < 0 || q.completion_tokens <= 0) continue;
    const double per_chunk = double(q.completion_tokens) / double(q.itl_ms.size() + 1);
    double t = q.start_s + q.ttft_ms / 1000;
    tokens[slot(t)] += per_chunk;
    for (double g : q.itl_ms) tokens[slot(t += g / 1000)] += per_chunk;
  }
  json timeline = json::array();
  for (size_t b = 0; b < nb; ++b)
    timeline.push_back({{"t_s", round3(double(b) * bucket)},
                        {"output_tokens_per_s", round3(tokens[b] / bucket)},
                        {"completed_per_s", round3(finished[b] / bucket)},
                        {"in_flight", int64_t(flight[b])}});

  std::vector<double> ttft, tpot, e2e, itl;
  for (const RequestRecord& q : r.records) {
    if (!q.ok()) continue;
    if (q.ttft_ms >= 0) ttft.push_back(q.ttft_ms);
    if (q.tpot_ms >= 0) tpot.push_back(q.tpot_ms);
    e2e.push_back(q.e2e_ms);
    itl.insert(itl.end(), q.itl_ms.begin(), q.itl_ms.end());
  }
  return {{"tool", "ostrakon bench serve"},
          {"format", 1},
          {"started_at", r.started_at},
          {"config", cfg},
          {"warnings", r.warnings},
          {"summary", summary},
          {"ttft_ms", stats_json(ttft)},
          {"tpot_ms", stats_json(tpot)},
          {"itl_ms", stats_json(itl)},
          {"e2e_ms", stats_json(e2e)},
          {"timeline_bucket_s", bucket},
          {"timeline", timeline},
          {"requests", requests}};
}

std::string serve_bench_text(const json& j) {
  const json& s = j["summary"];
  std::string o;
  auto line = [&](const std::string& k, const std::string& v) {
    char b[160];
    std::snprintf(b, sizeof b, "%-36s %s\n", k.c_str(), v.c_str());
    o += b;
  };
  o += "============ Serving benchmark ============\n";
  line("Target:", j["config"]["target"].get<std::string>());
  line("Model:", j["config"]["model"].get<std::string>().empty() ? "(not sent)"
                                                                 : j["config"]["model"].get<std::string>());
  line("Successful requests:",
       std::to_string(s["completed"].get<int>()) + " / " + std::to_string(s["requests"].get<int>()));
  for (auto& [k, v] : s["errors"].items())
    line("  failed (" + k + "):",
         std::to_string(v["count"].get<int>()) + "  e.g. " + v["example"].get<std::string>().substr(0, 80));
  line("Duration (s):", fmt("%.2f", num(s, "duration_s")));
  line("Max requests in flight:", std::to_string(s["max_in_flight"].get<int>()));
  line("Request throughput (req/s):", fmt("%.2f", num(s, "request_throughput")));
  line("Output token throughput (tok/s):", fmt("%.1f", num(s, "output_token_throughput")));
  line("Total token throughput (tok/s):", fmt("%.1f", num(s, "total_token_throughput")));
  line("Mean prompt / completion tokens:",
       fmt("%.1f", num(s, "mean_prompt_tokens")) + " / " + fmt("%.1f", num(s, "mean_completion_tokens")));
  if (!j["config"]["slo_ttft_ms"].is_null() || !j["config"]["slo_tpot_ms"].is_null())
    line("Goodput (req/s within the SLOs):",
         fmt("%.2f", num(s, "goodput")) + fmt("  (%.1f%% of requests)", 100 * num(s, "slo_attainment")));
  for (const char* k : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"}) {
    const json& m = j[k];
    if (m.value("count", 0) == 0) continue;
    char b[200];
    std::snprintf(b, sizeof b, "%-8s mean %9.2f  p50 %9.2f  p90 %9.2f  p99 %9.2f  max %9.2f\n", k,
                  num(m, "mean"), num(m, "p50"), num(m, "p90"), num(m, "p99"), num(m, "max"));
    o += b;
  }
  for (const json& w : j["warnings"]) o += "warning: " + w.get<std::string>() + "\n";
  return o;
}

std::string serve_bench_html(const json& j) {
  const json& s = j["summary"];
  const json& c = j["config"];
  std::string h =
      "<!doctype html><html><head><meta charset=\"utf-8\"><title>Serving benchmark</title><style>";
  h += report_css();
  h += "</style></head><body><h1>Serving benchmark</h1><p class=\"meta\">" +
       html_escape(c["target"].get<std::string>()) + " · model " +
       html_escape(c["model"].get<std::string>().empty() ? "(not sent)" : c["model"].get<std::string>()) +
       " · " + html_escape(j["started_at"].get<std::string>()) + "</p>";
  for (const json& w : j["warnings"]) h += "<p class=\"warn\">" + html_escape(w.get<std::string>()) + "</p>";
  auto card = [&](const std::string& v, const std::string& k, const char* cls = "") {
    h += "<div class=\"card\"><div class=\"v " + std::string(cls) + "\">" + html_escape(v) +
         "</div><div class=\"k\">" + html_escape(k) + "</div></div>";
  };
  h += "<div class=\"cards\">";
  const int failed = s["failed"].get<int>();
  card(std::to_string(s["completed"].get<int>()) + "/" + std::to_string(s["requests"].get<int>()),
       "requests completed", failed ? "bad" : "good");
  card(fmt("%.2f", num(s, "request_throughput")), "requests/s");
  card(fmt("%.1f", num(s, "output_token_throughput")), "output tokens/s");
  if (!c["slo_ttft_ms"].is_null() || !c["slo_tpot_ms"].is_null())
    card(fmt("%.2f", num(s, "goodput")) + fmt(" (%.0f%%)", 100 * num(s, "slo_attainment")),
         "goodput, requests/s in SLO");
  if (j["ttft_ms"].value("count", 0)) card(fmt("%.0f ms", num(j["ttft_ms"], "p50")), "TTFT p50");
  if (j["tpot_ms"].value("count", 0)) card(fmt("%.1f ms", num(j["tpot_ms"], "p50")), "TPOT p50");
  h += "</div>";

  h += "<h2>Latency</h2><table><tr><th>ms</th><th>count</th><th>mean</th><th>p50</th><th>p90</th><th>p99</"
       "th><th>min</th>"
       "<th>max</th></tr>";
  const std::pair<const char*, const char*> metrics[] = {{"ttft_ms", "time to first token"},
                                                         {"tpot_ms", "time per output token"},
                                                         {"itl_ms", "inter-token latency"},
                                                         {"e2e_ms", "end to end"}};
  for (auto& [k, label] : metrics) {
    const json& m = j[k];
    h += "<tr><td>" + std::string(label) + "</td><td class=\"num\">" + std::to_string(m.value("count", 0)) +
         "</td>";
    for (const char* f : {"mean", "p50", "p90", "p99", "min", "max"})
      h += "<td class=\"num\">" + (m.contains(f) ? fmt("%.2f", num(m, f)) : std::string("–")) + "</td>";
    h += "</tr>";
  }
  h += "</table>";
  const json& reqs = j["requests"];
  h += "<h2>Latency distribution (CDF)</h2>";
  h += svg_cdf({column(reqs, "ttft_ms"), column(reqs, "e2e_ms")}, {"time to first token", "end to end"});
  h += svg_cdf({column(reqs, "tpot_ms"), all_itl(reqs)}, {"time per output token", "inter-token latency"});
  h += "<h2>Latency histogram</h2>";
  h += svg_latency_histogram({column(reqs, "ttft_ms"), column(reqs, "e2e_ms")},
                             {"time to first token", "end to end"});
  h += "<h2>Throughput over time</h2>";
  h += svg_timeline(j["timeline"], num(j, "timeline_bucket_s", 1));

  h += "<h2>Errors</h2>";
  if (s["errors"].empty()) {
    h += "<p class=\"note\">None.</p>";
  } else {
    h += "<table><tr><th>kind</th><th>count</th><th>example</th></tr>";
    for (auto& [k, v] : s["errors"].items())
      h += "<tr><td>" + html_escape(k) + "</td><td class=\"num\">" + std::to_string(v["count"].get<int>()) +
           "</td><td>" + html_escape(v["example"].get<std::string>()) + "</td></tr>";
    h += "</table>";
  }
  h += "<h2>Configuration</h2><table>";
  for (auto& [k, v] : c.items())
    h += "<tr><th>" + html_escape(k) + "</th><td>" +
         html_escape(v.is_string() ? v.get<std::string>() : v.dump()) + "</td></tr>";
  h += "<tr><th>totals</th><td>" +
       html_escape(std::to_string(s["prompt_tokens_total"].get<int64_t>()) + " prompt and " +
                   std::to_string(s["completion_tokens_total"].get<int64_t>()) + " completion tokens; " +
                   fmt("%.1f MB of requests, prepared in ", num(s, "request_bytes_total") / 1e6) +
                   fmt("%.2f s", num(s, "prepare_s"))) +
       "</td></tr></table>";
  h += "<p class=\"note\">Times are measured by the client from sending a request: TTFT to the first "
       "non-empty "
       "content delta, TPOT = (end to end − TTFT) / (completion tokens − 1), inter-token latency between "
       "content chunks. Goodput counts completed requests within every given SLO.</p></body></html>\n";
  return h;
}

}  // namespace ost::eval
