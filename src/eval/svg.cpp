#include "eval/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace ost::eval {

namespace {

const char* kColors[] = {"#2b6cb0", "#dd6b20", "#38a169", "#805ad5"};

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string svg_bars(const std::vector<BarRow>& rows, const std::vector<std::string>& series, double max) {
  const int label_w = 260, bar_w = 380, bar_h = 14, gap = 8, ns = int(std::max<size_t>(1, series.size()));
  const int row_h = ns * bar_h + gap, legend_h = series.size() > 1 ? 22 : 0;
  const int h = legend_h + int(rows.size()) * row_h + 24, w = label_w + bar_w + 70;
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(w) + "\" height=\"" +
                  std::to_string(h) + "\" role=\"img\" font-family=\"sans-serif\" font-size=\"12\">";
  if (series.size() > 1)
    for (size_t k = 0; k < series.size(); ++k) {
      const int x = label_w + int(k) * 160;
      s += "<rect x=\"" + std::to_string(x) + "\" y=\"4\" width=\"12\" height=\"12\" fill=\"" + kColors[k % 4] + "\"/>";
      s += "<text x=\"" + std::to_string(x + 16) + "\" y=\"14\">" + html_escape(series[k]) + "</text>";
    }
  for (int g = 0; g <= 4; ++g) {  // grid at 0, 25, 50, 75, 100 %
    const int x = label_w + bar_w * g / 4;
    s += "<line x1=\"" + std::to_string(x) + "\" y1=\"" + std::to_string(legend_h) + "\" x2=\"" + std::to_string(x) +
         "\" y2=\"" + std::to_string(h - 18) + "\" stroke=\"#ddd\"/>";
    s += "<text x=\"" + std::to_string(x) + "\" y=\"" + std::to_string(h - 4) + "\" text-anchor=\"middle\" fill=\"#666\">" +
         std::to_string(25 * g) + "%</text>";
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const int y = legend_h + int(i) * row_h;
    std::string label = std::string(size_t(rows[i].indent) * 3, ' ') + rows[i].label;
    s += "<text x=\"" + std::to_string(label_w - 6) + "\" y=\"" + std::to_string(y + ns * bar_h / 2 + 4) +
         "\" text-anchor=\"end\" xml:space=\"preserve\"" + (rows[i].indent == 0 ? " font-weight=\"bold\"" : "") + ">" +
         html_escape(label) + "</text>";
    for (size_t k = 0; k < rows[i].values.size(); ++k) {
      const double v = std::clamp(rows[i].values[k] / max, 0.0, 1.0);
      const int by = y + int(k) * bar_h;
      s += "<rect x=\"" + std::to_string(label_w) + "\" y=\"" + std::to_string(by + 1) + "\" width=\"" +
           fmt("%.1f", v * bar_w) + "\" height=\"" + std::to_string(bar_h - 2) + "\" fill=\"" + kColors[k % 4] + "\"/>";
      s += "<text x=\"" + fmt("%.1f", label_w + v * bar_w + 4) + "\" y=\"" + std::to_string(by + bar_h - 3) + "\">" +
           fmt("%.0f%%", 100 * v) + "</text>";
    }
  }
  return s + "</svg>";
}

std::string svg_latency_histogram(const std::vector<std::vector<double>>& series_ms, const std::vector<std::string>& names) {
  double hi = 0;
  for (auto& v : series_ms)
    for (double x : v) hi = std::max(hi, x);
  if (hi <= 0) return "<p class=\"note\">No latencies recorded.</p>";
  const int bins = 24, w = 640, h = 200, left = 40, bottom = 30, plot_w = w - left - 10, plot_h = h - bottom - 24;
  // A round bin width so the axis reads well.
  double step = hi / bins;
  const double mag = std::pow(10.0, std::floor(std::log10(step)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= step) {
      step = m * mag;
      break;
    }
  std::vector<std::vector<int>> counts(series_ms.size(), std::vector<int>(bins, 0));
  int peak = 1;
  for (size_t k = 0; k < series_ms.size(); ++k)
    for (double x : series_ms[k]) {
      int b = std::min(bins - 1, int(x / step));
      peak = std::max(peak, ++counts[k][size_t(b)]);
    }
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(w) + "\" height=\"" +
                  std::to_string(h) + "\" role=\"img\" font-family=\"sans-serif\" font-size=\"11\">";
  for (size_t k = 0; k < names.size(); ++k) {
    const int x = left + int(k) * 200;
    s += "<rect x=\"" + std::to_string(x) + "\" y=\"4\" width=\"12\" height=\"12\" fill=\"" + kColors[k % 4] +
         "\" fill-opacity=\"0.7\"/><text x=\"" + std::to_string(x + 16) + "\" y=\"14\">" + html_escape(names[k]) + "</text>";
  }
  const double bw = double(plot_w) / bins;
  for (size_t k = 0; k < counts.size(); ++k)
    for (int b = 0; b < bins; ++b) {
      if (!counts[k][size_t(b)]) continue;
      const double bh = double(counts[k][size_t(b)]) / peak * plot_h;
      s += "<rect x=\"" + fmt("%.1f", left + b * bw + 1) + "\" y=\"" + fmt("%.1f", 24 + plot_h - bh) + "\" width=\"" +
           fmt("%.1f", bw - 2) + "\" height=\"" + fmt("%.1f", bh) + "\" fill=\"" + kColors[k % 4] +
           "\" fill-opacity=\"0.6\"><title>" + fmt("%.0f", b * step) + "-" + fmt("%.0f ms: ", (b + 1) * step) +
           std::to_string(counts[k][size_t(b)]) + "</title></rect>";
    }
  s += "<line x1=\"" + std::to_string(left) + "\" y1=\"" + std::to_string(24 + plot_h) + "\" x2=\"" +
       std::to_string(left + plot_w) + "\" y2=\"" + std::to_string(24 + plot_h) + "\" stroke=\"#333\"/>";
  for (int b = 0; b <= bins; b += 4)
    s += "<text x=\"" + fmt("%.1f", left + b * bw) + "\" y=\"" + std::to_string(h - 14) +
         "\" text-anchor=\"middle\" fill=\"#555\">" + fmt("%.0f", b * step) + "</text>";
  s += "<text x=\"" + std::to_string(left + plot_w / 2) + "\" y=\"" + std::to_string(h - 2) +
       "\" text-anchor=\"middle\" fill=\"#555\">milliseconds (bar height: number of items)</text>";
  return s + "</svg>";
}

const char* report_css() {
  return "body{font-family:-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;margin:24px auto;padding:0 16px;"
         "color:#1a202c;line-height:1.45}h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;"
         "border-bottom:1px solid #e2e8f0;padding-bottom:4px}table{border-collapse:collapse;margin:8px 0;font-size:13px}"
         "th,td{border:1px solid #e2e8f0;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f7fafc}"
         "td.num{text-align:right;font-variant-numeric:tabular-nums}.meta{color:#4a5568;font-size:13px}"
         ".note{color:#4a5568;font-size:13px}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}"
         ".card{border:1px solid #e2e8f0;border-radius:6px;padding:10px 14px;min-width:120px}"
         ".card .v{font-size:22px;font-weight:600}.card .k{font-size:12px;color:#4a5568}"
         ".good{color:#276749}.bad{color:#c53030}.warn{background:#fffaf0;border:1px solid #f6ad55;padding:8px 12px;"
         "border-radius:6px;font-size:13px}code{font-size:12px;background:#f7fafc;padding:1px 3px}";
}

}  // namespace ost::eval
