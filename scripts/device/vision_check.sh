#!/usr/bin/env bash
# One device call for the vision tower: test_cuda (all, then the attention and runner tests on
# the 16-row kernel, OST_VISION_ATTN=fa2), the seeded 8B checkpoint, and `ostrakon bench engine`
# at 1280x960 and 512x512 (TTFT split and the eager vision profile) with the A/B switches
# (OST_VISION_ATTN, OST_VISION_ATTN_WARPS, OST_VISION_GELU, OST_VISION_ROPE, OST_JPEG_THREADS).
# Logs go to $OUT (or ./device-out); summary.txt ends with one line per bench run.
# Expects BIN (default build-cuda/bin) with ostrakon and test_cuda, and assets/ in the repo root.
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
mkdir -p "$OUT"
TMP=$(mktemp -d)
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export OST_TEST_DATA=$PWD/tests/data
S=$OUT/summary.txt
step() { echo "== $1 ($(date +%T))" | tee -a "$S"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$S"
M=/tmp/m8b  # made while the tests run
(timeout 150 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json --quiet > "$TMP/mk.log" 2>&1; echo "rc=$?" >> "$TMP/mk.log") &
MK=$!
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  step "test_cuda"
  timeout 150 "$BIN/test_cuda" > "$OUT/test_cuda.log" 2>&1
  echo "test_cuda rc=$?" | tee -a "$S"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED|Failure|vision attention|flash dense" "$OUT/test_cuda.log" | tail -40 | tee -a "$S"
  OST_VISION_ATTN=fa2 timeout 120 "$BIN/test_cuda" --gtest_filter='CudaAttention.FlashDense*:CudaRunner.Image*:CudaRunner.Vision*' \
    > "$TMP/t_fa2.log" 2>&1
  echo "test_cuda OST_VISION_ATTN=fa2 rc=$?" | tee -a "$S"
  grep -E "^\[  (PASSED|FAILED) " "$TMP/t_fa2.log" | tee -a "$S"
fi


wait $MK
step "make-test-model 8B: $(tail -1 "$TMP/mk.log")"
LINES=()
bench() {  # bench NAME SIZE [VAR=VALUE ...]
  local name=$1 size=$2; shift 2
  step "bench $name ($* $size)"
  env "$@" timeout 100 "$BIN/ostrakon" bench engine --model $M --image-size $size --prompt-tokens 30 \
    --max-tokens 32 --batch 1 > "$TMP/b_$name.txt" 2>&1
  echo "rc=$?" | tee -a "$S"
  grep -E "TTFT|ttft|vision split|prompt " "$TMP/b_$name.txt" | tee -a "$S"
  LINES+=("$name: $(grep -E 'TTFT|ttft' "$TMP/b_$name.txt" | head -1)")
  LINES+=("$name: $(grep -E 'vision split' "$TMP/b_$name.txt" | head -1)")
}
bench big_new 1280x960 X=1
bench big_jpeg1 1280x960 OST_JPEG_THREADS=1
bench big_all_old 1280x960 OST_VISION_GELU=kernel OST_VISION_ATTN=fa2 OST_VISION_ROPE=pair OST_JPEG_THREADS=1
bench big_new_again 1280x960 X=1
bench big_w2 1280x960 OST_VISION_ATTN_WARPS=2
bench small_new 512x512 X=1
bench small_all_old 512x512 OST_VISION_GELU=kernel OST_VISION_ATTN=fa2 OST_VISION_ROPE=pair OST_JPEG_THREADS=1
bench small_new_again 512x512 X=1
${EXTRA_BENCH:-true}
step "summary"
printf '%s\n' "${LINES[@]}" | tee -a "$S"
