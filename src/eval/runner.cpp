#include "eval/runner.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <thread>

namespace ost::eval {

namespace {

using Clock = std::chrono::steady_clock;

std::string now_iso() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

class Progress {
 public:
  Progress(int total, bool on) : total_(total), on_(on && total > 0), tty_(::isatty(2)), t0_(Clock::now()) {}
  void tick(bool correct) {
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
    correct_ += correct;
    if (!on_) return;
    const int pct = done_ * 100 / total_;
    if (!tty_ && pct / 10 == last_pct_ / 10 && done_ != total_) return;
    last_pct_ = pct;
    const double s = std::chrono::duration<double>(Clock::now() - t0_).count();
    const double rate = s > 0 ? done_ / s : 0;
    const double eta = rate > 0 ? (total_ - done_) / rate : 0;
    const int width = 30, fill = done_ * width / total_;
    std::string bar(size_t(fill), '#');
    bar.append(size_t(width - fill), '.');
    std::fprintf(stderr, "%s[%s] %d/%d items  acc %.2f  %.2f items/s  eta %.0fs%s", tty_ ? "\r" : "", bar.c_str(),
                 done_, total_, double(correct_) / done_, rate, eta, tty_ ? "\x1b[K" : "\n");
    if (tty_ && done_ == total_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  std::mutex mu_;
  int total_, done_ = 0, correct_ = 0, last_pct_ = -10;
  bool on_, tty_;
  Clock::time_point t0_;
};

void run_item(const EvalItem& item, Backend& backend, const RunOptions& opt, ItemResult& r) {
  r.id = item.id;
  r.scene = item.scene;
  r.category = item.category;
  r.format = format_name(item.format);
  r.question = item.question;
  r.reference = item.reference();
  r.images = item.images;
  std::vector<EvalImage> images;
  for (auto& path : item.images) {
    auto im = load_eval_image(path);
    if (!im) {
      r.answer.error = im.message();
      r.scored = score_answer(item, r.answer);
      return;
    }
    images.push_back(std::move(*im));
  }
  std::vector<const EvalImage*> ptrs;
  for (auto& im : images) ptrs.push_back(&im);
  const std::string prompt = build_prompt(item);
  r.answer = backend.ask(prompt, ptrs, opt.max_tokens);
  r.scored = score_answer(item, r.answer);
  if (!opt.visual_check || images.empty()) return;
  std::vector<EvalImage> blanks;
  for (auto& im : images) blanks.push_back(blank_like(im));
  ptrs.clear();
  for (auto& im : blanks) ptrs.push_back(&im);
  r.blind_done = true;
  r.blind_answer = backend.ask(prompt, ptrs, opt.max_tokens);
  r.blind = score_answer(item, r.blind_answer);
}

}  // namespace

RunResults run_eval(const Dataset& data, Backend& backend, const RunOptions& opt) {
  RunResults run;
  run.info.data = data.path;
  run.info.target = backend.target();
  run.info.model = backend.model_name();
  run.info.started = now_iso();
  run.info.concurrency = opt.concurrency;
  run.info.max_tokens = opt.max_tokens;
  run.info.visual_check = opt.visual_check;
  run.info.items_in_file = int(data.items.size() + data.unsupported.size());
  run.unsupported = data.unsupported;
  run.items.resize(data.items.size());

  Progress progress(int(data.items.size()), opt.progress);
  std::atomic<size_t> next{0};
  const auto t0 = Clock::now();
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < data.items.size();) {
      run_item(data.items[i], backend, opt, run.items[i]);
      progress.tick(run.items[i].scored.correct);
    }
  };
  const int n = std::max(1, std::min<int>(opt.concurrency, int(data.items.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  run.info.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  return run;
}

}  // namespace ost::eval
