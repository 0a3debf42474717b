// Who runs this step: continuous batching over the paged KV accounting.
//
// Each step first serves the running sequences in admission order (one token for those
// decoding, the next prefill chunk for those still prefilling), then admits waiting ones FIFO
// while the token budget, the batch size and the free blocks allow. When a running sequence
// needs a block and none is free, the most recently admitted running sequence is preempted:
// its blocks are released and it goes back to the front of the queue to be recomputed
// (prompt + the tokens generated so far) when blocks free up. Nothing fails for lack of KV
// memory as long as a single sequence fits the pool (the server refuses those that do not).
//
// Pure host code, no model: the engine loop executes the plan; tests simulate it.
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include "engine/block_manager.h"

namespace ost {

struct SchedSeq {
  uint64_t id = 0;
  std::vector<uint64_t> keys;  // one per token: prompt, then generated (see BlockManager)
  int64_t num_prompt = 0;
  int64_t num_computed = 0;    // tokens whose KV is written
  BlockTable table;
  enum class State { kNew, kWaiting, kRunning, kFinished } state = State::kNew;
  int preemptions = 0;
  // Prompt tokens found in the prefix cache at the first admission and not computed (0 when the
  // runner recomputes them).
  int64_t cached_tokens = 0;
  bool first_admission = true;

  int64_t num_tokens() const { return int64_t(keys.size()); }
  int64_t uncomputed() const { return num_tokens() - num_computed; }
};

struct SchedulerOptions {
  int max_running = 16;           // sequences in one batch
  int64_t step_tokens = 2048;     // token budget of one step (decodes count one each)
  int64_t prefill_chunk = 512;    // most prefill tokens of one sequence in one step
  // true: tokens found in the prefix cache are not computed again (a runner that reads KV
  // through block tables). false: the blocks are shared in the accounting but the runner,
  // which keeps a contiguous cache per sequence, computes them again.
  bool skip_cached_compute = true;
};

struct ScheduledChunk {
  SchedSeq* seq;
  int64_t start;  // first token to compute
  int64_t count;
  bool samples() const { return start + count == seq->num_tokens(); }  // logits give a new token
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;  // running sequences first, then newly admitted
  std::vector<SchedSeq*> preempted;    // their computed state is gone: drop it
  bool empty() const { return chunks.empty(); }
  int64_t num_tokens() const {
    int64_t n = 0;
    for (auto& c : chunks) n += c.count;
    return n;
  }
};

struct SchedulerCounters {
  // Over first admissions: prompt tokens looked up, found in the prefix cache, and of those not
  // computed (all of them with skip_cached_compute, else none).
  int64_t prefix_query_tokens = 0, prefix_hit_tokens = 0, prefix_skipped_tokens = 0;
  // Prompt tokens run through the model (recomputation after preemption included).
  int64_t computed_prompt_tokens = 0;
  int64_t preemptions = 0;
};

class Scheduler {
 public:
  Scheduler(BlockManager& blocks, const SchedulerOptions& opt);

  void add(SchedSeq* s);  // to the back of the queue
  StepPlan schedule();
  // After the runner executed `plan`: advances num_computed and fills the prefix cache. The
  // caller then appends the keys of sampled tokens.
  void complete(const StepPlan& plan);
  // Finished or cancelled: releases its blocks at once, whatever its state.
  void finish(SchedSeq* s);

  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return running_.size(); }
  const std::deque<SchedSeq*>& running() const { return running_; }
  const std::deque<SchedSeq*>& waiting() const { return waiting_; }
  const SchedulerCounters& counters() const { return counters_; }
  BlockManager& blocks() { return blocks_; }

 private:
  void preempt(SchedSeq* s, StepPlan& plan);
  bool admit(SchedSeq* s, int64_t& budget, StepPlan& plan);

  BlockManager& blocks_;
  SchedulerOptions opt_;
  std::deque<SchedSeq*> waiting_;
  std::deque<SchedSeq*> running_;  // admission order
  SchedulerCounters counters_;
};

}  // namespace ost
