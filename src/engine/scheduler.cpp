#include "engine/scheduler.h"

#include <algorithm>

#include "core/status.h"

namespace ost {

Scheduler::Scheduler(BlockManager& blocks, const SchedulerOptions& opt) : blocks_(blocks), opt_(opt) {
  OST_CHECK(opt_.max_running > 0 && opt_.step_tokens >= opt_.max_running && opt_.prefill_chunk > 0);
}

void Scheduler::add(SchedSeq* s) {
  s->state = SchedSeq::State::kWaiting;
  waiting_.push_back(s);
}

void Scheduler::preempt(SchedSeq* s, StepPlan& plan) {
  blocks_.release(s->table);
  s->num_computed = 0;
  s->state = SchedSeq::State::kWaiting;
  s->preemptions++;
  counters_.preemptions++;
  running_.erase(std::find(running_.begin(), running_.end(), s));
  waiting_.push_front(s);
  plan.preempted.push_back(s);
  // A chunk already planned for it this step is void.
  plan.chunks.erase(std::remove_if(plan.chunks.begin(), plan.chunks.end(),
                                   [s](const ScheduledChunk& c) { return c.seq == s; }),
                    plan.chunks.end());
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int64_t budget = opt_.step_tokens;

  // Running sequences, oldest first; the newest gives way when blocks run out.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    SchedSeq* s = running_[i];
    const int64_t count = std::min({s->uncomputed(), budget, opt_.prefill_chunk});
    if (count <= 0) {  // nothing to compute (should not happen: every running seq has a next token)
      ++i;
      continue;
    }
    bool placed = false;
    while (!placed) {
      if (blocks_.grow(s->table, s->num_computed + count)) {
        plan.chunks.push_back({s, s->num_computed, count});
        budget -= count;
        placed = true;
      } else {
        SchedSeq* victim = running_.back();
        preempt(victim, plan);
        if (victim == s) break;
      }
    }
    if (placed) ++i;
  }

  // Admit waiting sequences FIFO (a preempted one is at the front), but not in a step that
  // had to preempt: blocks are short, and re-admitting the victim at once would only thrash.
  while (plan.preempted.empty() && !waiting_.empty() && budget > 0 && int(running_.size()) < opt_.max_running) {
    SchedSeq* s = waiting_.front();
    if (!admit(s, budget, plan)) break;
    waiting_.pop_front();
    running_.push_back(s);
    s->state = SchedSeq::State::kRunning;
  }
  return plan;
}

bool Scheduler::admit(SchedSeq* s, int64_t& budget, StepPlan& plan) {
  // Leave at least one token to compute: its logits give the next token.
  const int max_hit = int((s->num_tokens() - 1) / blocks_.block_size());
  const int hit = blocks_.acquire_prefix(s->table, s->keys, max_hit);
  const int64_t hit_tokens = int64_t(hit) * blocks_.block_size();
  s->num_computed = opt_.skip_cached_compute ? hit_tokens : 0;
  const int64_t count = std::min({s->uncomputed(), budget, opt_.prefill_chunk});
  if (!blocks_.grow(s->table, s->num_computed + count)) {
    blocks_.release(s->table);
    s->num_computed = 0;
    return false;
  }
  if (s->first_admission) {
    const int64_t hit_prompt = std::min(hit_tokens, s->num_prompt);
    s->cached_tokens = opt_.skip_cached_compute ? hit_prompt : 0;
    counters_.prefix_query_tokens += s->num_prompt;
    counters_.prefix_hit_tokens += hit_prompt;
    counters_.prefix_skipped_tokens += s->cached_tokens;
    s->first_admission = false;
  }
  plan.chunks.push_back({s, s->num_computed, count});
  budget -= count;
  return true;
}

void Scheduler::complete(const StepPlan& plan) {
  for (const ScheduledChunk& c : plan.chunks) {
    OST_CHECK(c.start == c.seq->num_computed);
    counters_.computed_prompt_tokens += std::max<int64_t>(0, std::min(c.start + c.count, c.seq->num_prompt) - c.start);
    c.seq->num_computed += c.count;
    blocks_.commit(c.seq->table, c.seq->keys, c.seq->num_computed);
  }
}

void Scheduler::finish(SchedSeq* s) {
  blocks_.release(s->table);
  if (auto it = std::find(running_.begin(), running_.end(), s); it != running_.end()) running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), s); it != waiting_.end()) waiting_.erase(it);
  s->state = SchedSeq::State::kFinished;
}

}  // namespace ost
