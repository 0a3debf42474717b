#!/usr/bin/env bash
# One device call for the decode GEMV kernels: the CUDA tests (TESTS, a gtest filter), the seeded
# 8B checkpoint, `ostrakon quantize` to INT8 (bf16 lm_head, and INT8 lm_head with
# --quantize-lm-head) and INT4, and `ostrakon bench engine` at batch 1 and 8 on each; bf16 and
# INT8 at batch 1 also without the GLU epilogue (OST_GLU_DECODE=0) and with the full decode
# fusions (OST_FUSED_DECODE=1); W8_ROWS lists rows-per-block variants of the W8A16 kernel
# (OST_W8_ROWS) to time at batch 1 besides the per-shape timed default.
# Steps past BUDGET seconds are skipped. Logs go to $OUT (or ./device-out);
# summary.txt ends with a table. Expects BIN (default build-cuda/bin) and assets/.
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
TESTS=${TESTS:-'CudaQuant*:CudaGemv*:CudaOps.Gemm*'}
W8_ROWS=${W8_ROWS:-}
BF16=${BF16:-1}
AB=${AB:-1}        # 0: leave out the A/B runs (OST_GLU_DECODE=0, OST_FUSED_DECODE=1)
INT4_B8=${INT4_B8:-1}
BUDGET=${BUDGET:-280}
mkdir -p "$OUT"
for b in ostrakon test_cuda; do  # binaries may travel xz-compressed
  [ -f "$BIN/$b.xz" ] && [ ! -f "$BIN/$b" ] && { xz -dc "$BIN/$b.xz" > /tmp/$b && chmod +x /tmp/$b && BINX=/tmp; }
done
BIN=${BINX:-$BIN}
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export OST_TEST_DATA=$PWD/tests/data
T0=$(date +%s)
left() { [ $(( $(date +%s) - T0 )) -lt "$BUDGET" ]; }
step() { echo "== $1 ($(( $(date +%s) - T0 ))s)" >> "$OUT/summary.txt"; }
TABLE="$OUT/table.txt"
: > "$TABLE"

step "device"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/summary.txt" 2>&1
if [ -n "$TESTS" ]; then
  step "test_cuda $TESTS"
  timeout 150 "$BIN/test_cuda" --gtest_filter="$TESTS" > "$OUT/test_cuda.log" 2>&1
  echo "test_cuda rc=$?" >> "$OUT/summary.txt"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure" "$OUT/test_cuda.log" | tail -15 >> "$OUT/summary.txt"
fi

M=/tmp/m8b
step "make-test-model 8B"
timeout 150 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json --quiet > "$OUT/make_model.log" 2>&1
echo "make-test-model rc=$?" >> "$OUT/summary.txt"

bench() {  # name dir batch [env]
  left || { echo "$1 b$3: skipped (time)" >> "$TABLE"; return; }
  local f="$OUT/bench.log"
  echo "## $1 batch $3 $4" >> "$f"
  env $4 timeout 60 "$BIN/ostrakon" bench engine --model "$2" --image-size 512x512 --prompt-tokens 30 \
    --max-tokens 128 --batch "$3" > /tmp/b.txt 2>&1
  local rc=$?
  cat /tmp/b.txt >> "$f"
  echo "$1 b$3 $4 rc=$rc | $(grep -iE 'decode|weights|roofline' /tmp/b.txt | tr '\n' ' ' | tr -s ' ')" >> "$TABLE"
}
quantize() {  # out args...
  left || return 1
  local o=$1; shift
  timeout 100 "$BIN/ostrakon" quantize --model $M --out "$o" --quiet "$@" >> "$OUT/quantize.log" 2>&1
  echo "quantize $o $* rc=$?" >> "$OUT/summary.txt"
}
if [ "$BF16" = 1 ]; then
  bench bf16 $M 1 ""
  [ "$AB" = 1 ] && { bench bf16 $M 1 "OST_GLU_DECODE=0"; bench bf16 $M 1 "OST_FUSED_DECODE=1"; }
  bench bf16 $M 8 ""
fi
quantize $M-int8 --format int8 && {
  bench int8 $M-int8 1 ""
  for r in $W8_ROWS; do bench int8 $M-int8 1 "OST_W8_ROWS=$r"; done
  [ "$AB" = 1 ] && { bench int8 $M-int8 1 "OST_GLU_DECODE=0"; bench int8 $M-int8 1 "OST_FUSED_DECODE=1"; }
  bench int8 $M-int8 8 ""
}
rm -rf $M-int8
quantize $M-int8h --format int8 --quantize-lm-head && { bench int8-lmhead $M-int8h 1 ""; bench int8-lmhead $M-int8h 8 ""; }
rm -rf $M-int8h
quantize $M-int4 --format int4 && { bench int4 $M-int4 1 ""; [ "$INT4_B8" = 1 ] && bench int4 $M-int4 8 ""; }
step "done"
echo "---- summary" >> "$OUT/summary.txt"
cat "$TABLE" >> "$OUT/summary.txt"
cat "$OUT/summary.txt"
