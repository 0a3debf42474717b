// Runs a dataset against a backend: items spread over worker threads, each answer scored as it
// arrives, the blank-image re-ask of the visual-necessity check, a progress bar on stderr.
#pragma once
#include <string>

#include "eval/backend.h"
#include "eval/dataset.h"
#include "eval/results.h"

namespace ost::eval {

struct RunOptions {
  int concurrency = 1;
  int max_tokens = 512;
  bool visual_check = true;
  bool progress = true;  // the bar on stderr
};

RunResults run_eval(const Dataset& data, Backend& backend, const RunOptions& opt);

}  // namespace ost::eval
