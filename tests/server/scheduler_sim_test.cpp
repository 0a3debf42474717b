// The block manager and scheduler without a model: hundreds of steps over tiny block pools,
// with shared prefixes, preemption by recompute and cancellations.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>

#include "engine/block_manager.h"
#include "engine/scheduler.h"

namespace ost {
namespace {

std::vector<uint64_t> keys_of(std::initializer_list<int> ids) { return {ids.begin(), ids.end()}; }

TEST(BlockManager, GrowReleaseAndPrefixReuse) {
  BlockManager bm(8, 4);
  BlockTable a;
  const auto keys = keys_of({1, 2, 3, 4, 5, 6, 7, 8, 9});
  ASSERT_TRUE(bm.grow(a, 9));
  EXPECT_EQ(a.blocks.size(), 3u);
  EXPECT_EQ(bm.num_free(), 5);
  bm.commit(a, keys, 9);  // two full blocks hashed
  EXPECT_EQ(bm.num_cached(), 2);
  // A second sequence with the same first 8 tokens shares both blocks.
  BlockTable b;
  EXPECT_EQ(bm.acquire_prefix(b, keys_of({1, 2, 3, 4, 5, 6, 7, 8, 42, 43}), 2), 2);
  EXPECT_EQ(b.blocks[0], a.blocks[0]);
  EXPECT_EQ(bm.ref_count(a.blocks[0]), 2);
  // A different second block only shares the first.
  BlockTable c;
  EXPECT_EQ(bm.acquire_prefix(c, keys_of({1, 2, 3, 4, 9, 9, 9, 9, 1}), 8), 1);
  EXPECT_TRUE(bm.check_invariants({&a, &b, &c}));
  bm.release(a);
  bm.release(b);
  bm.release(c);
  EXPECT_EQ(bm.num_free(), 8);
  EXPECT_EQ(bm.num_cached(), 2);  // still reusable after release
  BlockTable d;
  EXPECT_EQ(bm.acquire_prefix(d, keys, 2), 2);
  bm.release(d);
  // Taking every block evicts the cached ones.
  BlockTable e;
  ASSERT_TRUE(bm.grow(e, 32));
  EXPECT_EQ(bm.num_cached(), 0);
  EXPECT_FALSE(bm.grow(e, 33));  // all or nothing
  EXPECT_EQ(e.blocks.size(), 8u);
  bm.release(e);
  EXPECT_TRUE(bm.check_invariants({}));
}

TEST(BlockManager, ChainedHashesDependOnThePrefix) {
  auto h1 = block_hashes(keys_of({1, 2, 3, 4, 5, 6, 7, 8}), 4);
  auto h2 = block_hashes(keys_of({9, 2, 3, 4, 5, 6, 7, 8}), 4);
  ASSERT_EQ(h1.size(), 2u);
  EXPECT_NE(h1[1], h2[1]);  // same second block, different prefix
  EXPECT_EQ(block_hashes(keys_of({1, 2, 3}), 4).size(), 0u);
}

// The fake model: the token after position p of sequence s.
uint64_t fake_token(uint64_t seq, int64_t pos) { return (seq * 7919 + uint64_t(pos) * 104729) % 50 + 1; }

struct SimResult {
  int64_t steps = 0, preemptions = 0, prefix_hits = 0, finished = 0, cancelled = 0;
  std::map<uint64_t, std::vector<uint64_t>> outputs;
};

SimResult simulate(uint32_t seed, int num_blocks, int block_size, bool skip_cached, int n_seqs) {
  std::mt19937 rng(seed);
  BlockManager bm(num_blocks, block_size);
  SchedulerOptions so;
  so.max_running = 5;
  so.step_tokens = 24;
  so.prefill_chunk = 10;
  so.skip_cached_compute = skip_cached;
  Scheduler sched(bm, so);
  // Three "system prompts" shared by many requests, as with store presets.
  std::vector<std::vector<uint64_t>> prefixes;
  for (int p = 0; p < 3; ++p) {
    std::vector<uint64_t> v;
    for (int i = 0; i < 12 + 4 * p; ++i) v.push_back(uint64_t(100 + p * 50 + i));
    prefixes.push_back(v);
  }
  std::vector<std::unique_ptr<SchedSeq>> seqs;
  std::map<SchedSeq*, int> max_new;
  SimResult res;
  int next_arrival = 0;
  const int64_t max_seq_tokens = int64_t(num_blocks) * block_size;
  for (int step = 0; step < 5000; ++step) {
    // Arrivals: up to two per step.
    for (int a = 0; a < 2 && next_arrival < n_seqs; ++a, ++next_arrival) {
      auto s = std::make_unique<SchedSeq>();
      s->id = uint64_t(next_arrival + 1);
      s->keys = prefixes[rng() % 3];
      const int tail = int(rng() % 9);
      for (int i = 0; i < tail; ++i) s->keys.push_back(uint64_t(1000 + rng() % 1000));
      s->num_prompt = s->num_tokens();
      int mn = 1 + int(rng() % 20);
      mn = int(std::min<int64_t>(mn, max_seq_tokens - s->num_prompt));  // fits the pool alone
      max_new[s.get()] = mn;
      sched.add(s.get());
      seqs.push_back(std::move(s));
    }
    // Random cancellations (about 3% of live sequences per step).
    for (auto& s : seqs)
      if (s->state != SchedSeq::State::kFinished && rng() % 100 < 1) {
        sched.finish(s.get());
        res.cancelled++;
      }
    StepPlan plan = sched.schedule();
    for (SchedSeq* p : plan.preempted) EXPECT_EQ(p->num_computed, 0);
    // Each sequence appears once and its blocks cover what it computes.
    std::map<SchedSeq*, int> seen;
    for (auto& c : plan.chunks) {
      EXPECT_EQ(++seen[c.seq], 1);
      EXPECT_GE(int64_t(c.seq->table.blocks.size()) * block_size, c.start + c.count);
      EXPECT_EQ(c.start, c.seq->num_computed);
      // With skipped hits, never a shared or cached block (the runner writes what it computes).
      if (skip_cached) EXPECT_TRUE(bm.writable(c.seq->table, c.start, c.start + c.count));
    }
    EXPECT_LE(plan.num_tokens(), so.step_tokens);
    EXPECT_LE(sched.num_running(), size_t(so.max_running));
    sched.complete(plan);
    for (auto& c : plan.chunks) {
      if (!c.samples()) continue;
      SchedSeq* s = c.seq;
      s->keys.push_back(fake_token(s->id, s->num_tokens()));
      if (s->num_tokens() - s->num_prompt >= max_new[s]) {
        res.outputs[s->id] = std::vector<uint64_t>(s->keys.begin() + s->num_prompt, s->keys.end());
        sched.finish(s);
        res.finished++;
      }
    }
    std::vector<const BlockTable*> live;
    for (auto& s : seqs)
      if (s->state != SchedSeq::State::kFinished) live.push_back(&s->table);
    EXPECT_TRUE(bm.check_invariants(live)) << "step " << step;
    res.steps = step + 1;
    if (next_arrival == n_seqs && sched.num_running() == 0 && sched.num_waiting() == 0) break;
  }
  EXPECT_EQ(bm.num_used(), 0);
  res.preemptions = sched.counters().preemptions;
  res.prefix_hits = sched.counters().prefix_hit_tokens;
  // Every finished sequence produced exactly the tokens of an uninterrupted run.
  for (auto& [id, out] : res.outputs)
    for (size_t i = 0; i < out.size(); ++i) {
      auto s = std::find_if(seqs.begin(), seqs.end(), [&](auto& x) { return x->id == id; });
      EXPECT_EQ(out[i], fake_token(id, (*s)->num_prompt + int64_t(i)));
    }
  return res;
}

TEST(SchedulerSim, TinyPoolPreemptsAndReusesPrefixes) {
  for (bool skip : {true, false}) {
    SimResult r = simulate(1234, /*num_blocks=*/14, /*block_size=*/4, skip, 120);
    EXPECT_EQ(r.finished + r.cancelled, 120) << "skip " << skip;
    EXPECT_GT(r.steps, 100);
    EXPECT_GT(r.preemptions, 0);
    EXPECT_GT(r.prefix_hits, 0);
  }
}

TEST(SchedulerSim, ManySeedsAndPoolSizes) {
  for (uint32_t seed = 1; seed <= 12; ++seed)
    for (int blocks : {9, 16, 40}) {
      SimResult r = simulate(seed, blocks, 4, seed % 2 == 0, 60);
      EXPECT_EQ(r.finished + r.cancelled, 60) << "seed " << seed << " blocks " << blocks;
    }
}

TEST(SchedulerSim, Deterministic) {
  SimResult a = simulate(77, 12, 4, true, 80), b = simulate(77, 12, 4, true, 80);
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.preemptions, b.preemptions);
  EXPECT_EQ(a.outputs, b.outputs);
}

TEST(SchedulerSim, ChunkedPrefillRespectsTheBudget) {
  BlockManager bm(64, 4);
  SchedulerOptions so;
  so.max_running = 4;
  so.step_tokens = 8;
  so.prefill_chunk = 5;
  Scheduler sched(bm, so);
  SchedSeq s;
  s.id = 1;
  for (int i = 0; i < 23; ++i) s.keys.push_back(uint64_t(i + 1));
  s.num_prompt = 23;
  sched.add(&s);
  std::vector<int64_t> chunks;
  for (int step = 0; step < 10 && s.num_computed < 23; ++step) {
    StepPlan p = sched.schedule();
    ASSERT_EQ(p.chunks.size(), 1u);
    chunks.push_back(p.chunks[0].count);
    sched.complete(p);
  }
  EXPECT_EQ(chunks, (std::vector<int64_t>{5, 5, 5, 5, 3}));
  sched.finish(&s);
  EXPECT_EQ(bm.num_used(), 0);
}

}  // namespace
}  // namespace ost
