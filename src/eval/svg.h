// Inline SVG charts for the HTML reports (no scripts, no external files).
#pragma once
#include <string>
#include <vector>

namespace ost::eval {

std::string html_escape(const std::string& s);

struct BarRow {
  std::string label;
  std::vector<double> values;  // one per series, in [0, max]
  int indent = 0;              // category level, for nested labels
};

// Horizontal grouped bars, values shown as percentages of `max`.
std::string svg_bars(const std::vector<BarRow>& rows, const std::vector<std::string>& series, double max = 1.0);

// Histogram of latencies (ms) with p50 / p90 marks; one or two series overlaid.
std::string svg_latency_histogram(const std::vector<std::vector<double>>& series_ms,
                                  const std::vector<std::string>& names);

// The shared stylesheet of the reports.
const char* report_css();

}  // namespace ost::eval
