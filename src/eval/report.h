// The written results of a run (results.json, report.md, report.html) and of a comparison of
// two runs (compare.json, report.md, report.html).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "core/status.h"
#include "eval/results.h"

namespace ost::eval {

std::string run_report_markdown(const RunResults& run);
std::string run_report_html(const RunResults& run);
Status write_run_report(const RunResults& run, const std::string& dir);

// Items matched by id. "changed": the extracted answer or its correctness differs.
nlohmann::json compare_json(const RunResults& a, const RunResults& b);
std::string compare_markdown(const RunResults& a, const RunResults& b);
std::string compare_html(const RunResults& a, const RunResults& b);
Status write_compare_report(const RunResults& a, const RunResults& b, const std::string& dir);

}  // namespace ost::eval
