#!/usr/bin/env bash
# One device call: CUDA tests, the seeded 8B checkpoint, `ostrakon bench engine` on it (batch 1
# and 8: 512x512 image + 30-token question, 128 output tokens), then the same request shape
# through Hugging Face transformers. Logs go to $OUT (or ./device-out when OUT is unset).
# Expects the build's bin/ (build-cuda/bin, or BIN=...) and assets/ beside the repo root.
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
mkdir -p "$OUT"
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
CU13=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
[ -n "$CU13" ] && [ -d "$CU13" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$CU13"
export OST_TEST_DATA=$PWD/tests/data

step() { echo "== $1 ($(date +%T))" | tee -a "$OUT/summary.txt"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 | tee -a "$OUT/summary.txt"

step "test_cuda"
timeout 240 "$BIN/test_cuda" 2>&1 > "$OUT/test_cuda.log"
echo "test_cuda rc=$?" | tee -a "$OUT/summary.txt"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |rel L2|FAILED" "$OUT/test_cuda.log" | tail -30 | tee -a "$OUT/summary.txt"

step "make-test-model 8B"
M=/tmp/m8b
timeout 240 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json > "$OUT/make_model.log" 2>&1
echo "make-test-model rc=$?" | tee -a "$OUT/summary.txt"

for B in 1 8; do
  step "bench engine batch $B"
  timeout 150 "$BIN/ostrakon" bench engine --model $M --image-size 512x512 --prompt-tokens 30 \
    --max-tokens 128 --batch $B > "$OUT/bench_b$B.txt" 2>&1
  echo "bench rc=$?" | tee -a "$OUT/summary.txt"
  cat "$OUT/bench_b$B.txt" | tee -a "$OUT/summary.txt"
done

if [ "${SKIP_HF:-0}" != 1 ]; then
  step "transformers"
  PYTHONUNBUFFERED=1 timeout 200 python3 scripts/device/hf_bench.py $M --new-tokens 128 --question-tokens 30 \
    > "$OUT/hf_bench.txt" 2>&1
  echo "hf rc=$?" | tee -a "$OUT/summary.txt"
  tail -15 "$OUT/hf_bench.txt" | tee -a "$OUT/summary.txt"
fi
step "done"
