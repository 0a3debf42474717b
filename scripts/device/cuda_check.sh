#!/usr/bin/env bash
# One device call: CUDA tests, the seeded 8B checkpoint, `ostrakon bench engine` on it (batch 1,
# 8 and 32: 512x512 JPEG + 30-token question, 128 output tokens; TTFT at 1280x960), then the
# same request shape through Hugging Face transformers (SKIP_HF=1 skips it; AB=1 adds runs with
# one switch flipped: OST_FUSED_QK=0 at each batch, OST_PDL=0). Logs go to $OUT (or ./device-out
# when OUT is unset).
# Expects the build's bin/ (build-cuda/bin, or BIN=...) and assets/ beside the repo root.
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
mkdir -p "$OUT"
TMP=$(mktemp -d)  # per-step logs; only summary.txt and test_cuda.log stay in $OUT
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
timeout 300 "$BIN/test_cuda" > "$OUT/test_cuda.log" 2>&1
echo "test_cuda rc=$?" | tee -a "$OUT/summary.txt"
if [ "${AB:-0}" = 1 ]; then  # the runner and attention tests again with the switches off
  OST_PDL=0 OST_FUSED_QK=0 timeout 120 "$BIN/test_cuda" --gtest_filter='CudaRunner*:CudaAttention*' \
    > "$TMP/test_cuda_plain.log" 2>&1
  echo "test_cuda OST_PDL=0 OST_FUSED_QK=0 rc=$?" | tee -a "$OUT/summary.txt"
  grep -E "^\[  (PASSED|FAILED) " "$TMP/test_cuda_plain.log" | tee -a "$OUT/summary.txt"
fi
grep -E "^\[  (PASSED|FAILED|SKIPPED) |rel L2|FAILED|Failure" "$OUT/test_cuda.log" | tail -80 | tee -a "$OUT/summary.txt"

step "make-test-model 8B"
M=/tmp/m8b
timeout 240 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json > "$TMP/make_model.log" 2>&1
echo "make-test-model rc=$?" | tee -a "$OUT/summary.txt"
tr "\r" "\n" < "$TMP/make_model.log" | tail -2 | tee -a "$OUT/summary.txt"

# bench NAME [VAR=VALUE ...] -- ARGS: one `ostrakon bench engine` run, appended to summary.txt.
bench() {
  local name=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  step "bench $name (${envs[*]:-default} $*)"
  env ${envs[@]+"${envs[@]}"} timeout 150 "$BIN/ostrakon" bench engine --model $M "$@" > "$TMP/bench_$name.txt" 2>&1
  echo "bench rc=$?" | tee -a "$OUT/summary.txt"
  cat "$TMP/bench_$name.txt" | tee -a "$OUT/summary.txt"
}
Q="--prompt-tokens 30"
for B in 1 8 32; do
  bench b$B -- --image-size 512x512 $Q --max-tokens 128 --batch $B
done
bench 1280x960 -- --image-size 1280x960 $Q --max-tokens 32 --batch 1
if [ "${AB:-0}" = 1 ]; then  # the same request with one switch flipped
  for B in 1 8 32; do
    bench b${B}_unfused_qk OST_FUSED_QK=0 -- --image-size 512x512 $Q --max-tokens 128 --batch $B
  done
  bench b1_no_pdl OST_PDL=0 -- --image-size 512x512 $Q --max-tokens 128 --batch 1
fi

if [ "${SKIP_HF:-0}" != 1 ]; then
  step "transformers"
  PYTHONUNBUFFERED=1 timeout 200 python3 scripts/device/hf_bench.py $M --new-tokens 128 --question-tokens 30 \
    > "$TMP/hf_bench.txt" 2>&1
  echo "hf rc=$?" | tee -a "$OUT/summary.txt"
  tail -15 "$TMP/hf_bench.txt" | tee -a "$OUT/summary.txt"
fi
step "done"
