#!/usr/bin/env bash
# One device call for the FP8 KV cache (--kv-cache-dtype fp8): the CUDA tests of the fp8 cache
# (KV write kernel, decode and paged prefill attention, the runner against the CPU runner) and
# the bf16 attention/runner tests beside them, the seeded 8B checkpoint, then `ostrakon bench
# engine` with the bf16 and the fp8 cache at batch 1 and 32 (512x512 JPEG + 30-token question,
# 128 output tokens) with the KV blocks and sequences a --kv-memory of 1024 MB holds. A summary
# table is printed last. Logs go to $OUT (or ./device-out when OUT is unset).
# Expects the build's bin/ (build-cuda/bin, or BIN=...) and assets/ beside the repo root.
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
mkdir -p "$OUT"
TMP=$(mktemp -d)
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
CU13=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
[ -n "$CU13" ] && [ -d "$CU13" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$CU13"
export OST_TEST_DATA=$PWD/tests/data
step() { echo "== $1 ($(date +%T))" | tee -a "$OUT/summary.txt"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 | tee -a "$OUT/summary.txt"

step "test_cuda (fp8 KV + the bf16 attention, KV write and runner tests)"
timeout 240 "$BIN/test_cuda" --gtest_filter='CudaKvFp8*:CudaOps.QkNormRopeKvWrite:CudaAttention.*:CudaRunner.*' \
  > "$OUT/test_cuda.log" 2>&1
echo "test_cuda rc=$?" | tee -a "$OUT/summary.txt"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |fp8|FAILED|Failure" "$OUT/test_cuda.log" | tail -80 | tee -a "$OUT/summary.txt"

step "make-test-model 8B"
M=/tmp/m8b
timeout 240 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json --quiet > "$TMP/make_model.log" 2>&1
echo "make-test-model rc=$?" | tee -a "$OUT/summary.txt"

step "run --kv-cache-dtype fp8 (greedy, 16 tokens) and bf16"
for DT in bf16 fp8; do
  timeout 120 "$BIN/ostrakon" run --model $M --device cuda --kv-cache-dtype $DT --prompt "What is on the shelf?" \
    --max-tokens 16 --ignore-eos --json > "$TMP/run_$DT.json" 2>&1
  echo "run $DT rc=$? ids: $(grep -o '"token_id":[0-9]*' "$TMP/run_$DT.json" | cut -d: -f2 | tr '\n' ' ')" \
    | tee -a "$OUT/summary.txt"
done

for DT in bf16 fp8; do
  for B in 1 32; do
    step "bench engine kv $DT batch $B"
    timeout 150 "$BIN/ostrakon" bench engine --model $M --image-size 512x512 --prompt-tokens 30 --max-tokens 128 \
      --batch $B --kv-cache-dtype $DT --kv-memory 1024 > "$TMP/bench_${DT}_b$B.txt" 2>&1
    echo "bench rc=$?" | tee -a "$OUT/summary.txt"
    cat "$TMP/bench_${DT}_b$B.txt" | tee -a "$OUT/bench.txt" >> "$OUT/summary.txt"
  done
done

step "summary"
{
  echo "kv    batch  ms/step  tok/s total  bytes/token  blocks@1024MB  seqs@1024MB  device pool tokens"
  for DT in bf16 fp8; do
    for B in 1 32; do
      f="$TMP/bench_${DT}_b$B.txt"
      awk -v dt=$DT -v b=$B '
        /^decode batch/ { ms = $4; tot = $(NF-2) }
        /^kv cache/ { gsub(",", ""); bpt = $4; for (i = 1; i <= NF; ++i) { if ($i == "blocks") blk = $(i-1);
                      if ($i == "sequences") seq = $(i-1); if ($i == "pool") pool = $(i+1) } }
        END { printf "%-5s %5d  %7s  %11s  %11s  %13s  %11s  %s\n", dt, b, ms, tot, bpt, blk, seq, pool }' "$f"
    done
  done
} | tee -a "$OUT/summary.txt"
rm -rf "$TMP"
