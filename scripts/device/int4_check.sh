#!/usr/bin/env bash
# One device call for the W4A16 (INT4) kernels: the CUDA tests (TESTS, a gtest filter), the
# seeded 8B checkpoint, `ostrakon quantize --format int4` (with --quantize-lm-head unless
# LM_HEAD=0), then `ostrakon bench engine` at batch 1 and 8 (and batch 1 per W4_ROWS variant).
# Steps past BUDGET seconds are skipped. Logs go to $OUT (or ./device-out); summary.txt ends
# with a table. Expects BIN (default build-cuda/bin) and assets/.
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
TESTS=${TESTS:-'CudaQuant*:CudaRunner*'}
LM_HEAD=${LM_HEAD:-1}
W4_ROWS=${W4_ROWS:-}  # rows-per-block variants (OST_W4_ROWS) to time at batch 1 besides the default
BUDGET=${BUDGET:-200}
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
  timeout 90 "$BIN/test_cuda" --gtest_filter="$TESTS" > "$OUT/test_cuda.log" 2>&1
  echo "test_cuda rc=$?" >> "$OUT/summary.txt"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure|^\[       OK" "$OUT/test_cuda.log" | tail -30 >> "$OUT/summary.txt"
fi

M=/tmp/m8b
step "make-test-model 8B"
timeout 100 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json --quiet > "$OUT/make_model.log" 2>&1
echo "make-test-model rc=$?" >> "$OUT/summary.txt"

bench() {  # name dir batch [env]
  left || { echo "$1 b$3: skipped (time)" >> "$TABLE"; return; }
  local f="$OUT/bench.log"
  echo "## $1 batch $3 $4" >> "$f"
  env $4 timeout 50 "$BIN/ostrakon" bench engine --model "$2" --image-size 512x512 --prompt-tokens 30 \
    --max-tokens 128 --batch "$3" > /tmp/b.txt 2>&1
  local rc=$?
  cat /tmp/b.txt >> "$f"
  echo "$1 b$3 $4 rc=$rc | $(grep -iE 'decode|weights|roofline' /tmp/b.txt | tr '\n' ' ' | tr -s ' ')" >> "$TABLE"
}
Q=$M-int4
ARGS="--format int4"
[ "$LM_HEAD" = 1 ] && ARGS="$ARGS --quantize-lm-head"
step "quantize $ARGS"
timeout 100 "$BIN/ostrakon" quantize --model $M --out $Q --quiet $ARGS > "$OUT/quantize.log" 2>&1
echo "quantize $Q $ARGS rc=$?" >> "$OUT/summary.txt"
cat "$OUT/quantize.log" >> "$OUT/summary.txt"
du -sb $Q/*.safetensors 2>/dev/null | awk '{s += $1} END {printf "int4 checkpoint safetensors: %d bytes = %.3f GB = %.3f GiB\n", s, s / 1e9, s / 2^30}' >> "$OUT/summary.txt"
rm -rf $M
step "bench"
bench int4 $Q 1 ""
bench int4 $Q 8 ""
for r in $W4_ROWS; do bench int4 $Q 1 "OST_W4_ROWS=$r"; done
step "done"
echo "---- summary" >> "$OUT/summary.txt"
cat "$TABLE" >> "$OUT/summary.txt"
cat "$OUT/summary.txt"
