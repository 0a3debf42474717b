// The scheduler with skip_cached_compute (a runner on engine pages) on the real BlockManager:
// where the first chunk after a prefix hit starts, a fully cached prompt, table growth between
// steps, preemption and re-admission with a hit on the sequence's own blocks, and that no chunk
// ever writes a block it shares or that is in the prefix cache.
#include <gtest/gtest.h>

#include "engine/scheduler.h"

namespace ost {
namespace {

constexpr int kBs = 4;

SchedSeq make_seq(uint64_t id, std::vector<uint64_t> keys) {
  SchedSeq s;
  s.id = id;
  s.keys = std::move(keys);
  s.num_prompt = s.num_tokens();
  return s;
}

std::vector<uint64_t> range_keys(uint64_t from, int n) {
  std::vector<uint64_t> k;
  for (int i = 0; i < n; ++i) k.push_back(from + uint64_t(i));
  return k;
}

// Runs `steps` steps, checking that every chunk writes only its own blocks; appends one sampled
// key per sampling chunk.
void step_all(Scheduler& sched, BlockManager& bm, int steps) {
  for (int i = 0; i < steps; ++i) {
    StepPlan p = sched.schedule();
    for (const ScheduledChunk& c : p.chunks) EXPECT_TRUE(bm.writable(c.seq->table, c.start, c.start + c.count));
    sched.complete(p);
    for (const ScheduledChunk& c : p.chunks)
      if (c.samples()) c.seq->keys.push_back(900 + uint64_t(c.seq->num_tokens()));
  }
}

SchedulerOptions paged_options() {
  SchedulerOptions so;
  so.max_running = 4;
  so.step_tokens = 64;
  so.prefill_chunk = 6;
  so.skip_cached_compute = true;
  return so;
}

TEST(PrefixSched, FirstChunkStartsAfterTheHit) {
  BlockManager bm(32, kBs);
  Scheduler sched(bm, paged_options());
  SchedSeq a = make_seq(1, range_keys(10, 14));
  sched.add(&a);
  step_all(sched, bm, 3);  // 6 + 6 + 2 prompt tokens, then a sampled token
  ASSERT_EQ(a.num_computed, 14);
  sched.finish(&a);
  // B shares 13 leading keys with A: 3 whole blocks (12 tokens) are hits.
  std::vector<uint64_t> kb = range_keys(10, 13);
  kb.push_back(77);
  kb.push_back(78);
  SchedSeq b = make_seq(2, kb);
  sched.add(&b);
  StepPlan p = sched.schedule();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].start, 12);
  EXPECT_EQ(p.chunks[0].count, 3);
  EXPECT_EQ(b.cached_tokens, 12);
  EXPECT_TRUE(bm.writable(b.table, 12, 15));
  EXPECT_FALSE(bm.writable(b.table, 8, 12));  // a cached block: read-only
  sched.complete(p);
  EXPECT_EQ(sched.counters().prefix_skipped_tokens, 12);
  EXPECT_EQ(sched.counters().computed_prompt_tokens, 14 + 3);
  sched.finish(&b);
}

TEST(PrefixSched, FullyCachedPromptComputesItsLastBlock) {
  BlockManager bm(32, kBs);
  Scheduler sched(bm, paged_options());
  SchedSeq a = make_seq(1, range_keys(10, 12));  // 3 whole blocks
  sched.add(&a);
  step_all(sched, bm, 2);
  sched.finish(&a);
  SchedSeq b = make_seq(2, range_keys(10, 12));
  sched.add(&b);
  StepPlan p = sched.schedule();
  ASSERT_EQ(p.chunks.size(), 1u);
  // At most (n - 1) / bs blocks are hits, so the last token's block is computed (its logits).
  EXPECT_EQ(p.chunks[0].start, 8);
  EXPECT_EQ(p.chunks[0].count, 4);
  EXPECT_TRUE(p.chunks[0].samples());
  EXPECT_TRUE(bm.writable(b.table, 8, 12));
  sched.complete(p);
  sched.finish(&b);
}

TEST(PrefixSched, TableGrowsBetweenSteps) {
  BlockManager bm(32, kBs);
  Scheduler sched(bm, paged_options());
  SchedSeq a = make_seq(1, range_keys(10, 5));
  sched.add(&a);
  std::vector<size_t> sizes;
  for (int i = 0; i < 8; ++i) {
    step_all(sched, bm, 1);
    sizes.push_back(a.table.blocks.size());
  }
  // 5 prompt tokens (2 blocks), then one more token per step: a block every 4 tokens.
  EXPECT_EQ(sizes, (std::vector<size_t>{2, 2, 2, 2, 3, 3, 3, 3}));
  EXPECT_EQ(a.num_computed, 12);
  sched.finish(&a);
  EXPECT_EQ(bm.num_used(), 0);
}

TEST(PrefixSched, PreemptedSequenceHitsItsOwnBlocks) {
  BlockManager bm(6, kBs);  // 24 tokens
  SchedulerOptions so = paged_options();
  so.prefill_chunk = 16;
  Scheduler sched(bm, so);
  SchedSeq a = make_seq(1, range_keys(10, 9)), b = make_seq(2, range_keys(200, 9));
  sched.add(&a);
  sched.add(&b);
  int64_t preempted_at = -1;
  for (int i = 0; i < 40 && preempted_at < 0; ++i) {
    StepPlan p = sched.schedule();
    for (const ScheduledChunk& c : p.chunks) EXPECT_TRUE(bm.writable(c.seq->table, c.start, c.start + c.count));
    if (!p.preempted.empty()) {
      ASSERT_EQ(p.preempted[0], &b);  // the newest gives way
      preempted_at = b.num_tokens();
    }
    sched.complete(p);
    for (const ScheduledChunk& c : p.chunks)
      if (c.samples()) c.seq->keys.push_back(900 + uint64_t(c.seq->num_tokens()));
  }
  ASSERT_GT(preempted_at, 0);
  EXPECT_EQ(b.num_computed, 0);
  EXPECT_TRUE(b.table.blocks.empty());
  sched.finish(&a);  // room again: B comes back and finds its full blocks in the cache
  StepPlan p = sched.schedule();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].seq, &b);
  // Its leading full blocks, unless the preemptor took them since (the tail is evicted first).
  EXPECT_GT(p.chunks[0].start, 0);
  EXPECT_LE(p.chunks[0].start, (preempted_at - 1) / kBs * kBs);
  EXPECT_EQ(p.chunks[0].start % kBs, 0);
  EXPECT_TRUE(bm.writable(b.table, p.chunks[0].start, p.chunks[0].start + p.chunks[0].count));
  EXPECT_EQ(b.cached_tokens, 0);  // counted at the first admission only
  sched.complete(p);
  sched.finish(&b);
  EXPECT_EQ(bm.num_used(), 0);
}

}  // namespace
}  // namespace ost
