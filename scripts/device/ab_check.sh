#!/usr/bin/env bash
# A/B runs in one device call: test_cuda (TEST_FILTER), the seeded 8B checkpoint quantized to the
# formats that BENCH names, then `ostrakon bench engine` for each BENCH entry
# "format size max-tokens batch [ENV=VALUE ...]" (format: bf16, int8, int4, fp8; int8 and int4
# with the lm_head quantized too), entries separated by ';'. Logs go to $OUT (or ./device-out);
# the summary is printed last. Expects the binaries in $BIN (default build-cuda/bin; .xz copies
# are unpacked) and assets/.
. "$(dirname "$0")/setup_env.sh"
BENCH=${BENCH:-"bf16 512x512 128 1"}

step "device"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$S" 2>&1
M=/tmp/m8b
(
  timeout 150 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
    --tokenizer assets/qwen3/tokenizer.json --quiet > /tmp/make_model.log 2>&1
  echo "make-test-model 8B rc=$?"
  for f in int8 int4 fp8; do
    case "$BENCH" in *"$f "*) ;; *) continue ;; esac
    lm=""; [ $f != fp8 ] && lm=--quantize-lm-head
    timeout 150 "$BIN/ostrakon" quantize --model $M --out $M-$f --format $f $lm --quiet 2>&1
  done
) > /tmp/models.log 2>&1 &
MK=$!

if [ -n "${TEST_FILTER:-}" ]; then
  step "test_cuda $TEST_FILTER"
  timeout ${TEST_TIMEOUT:-150} "$BIN/test_cuda" --gtest_filter="$TEST_FILTER" > "$OUT/test_cuda.log" 2>&1
  echo "test_cuda rc=$?" >> "$S"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure|Expected|Which is" "$OUT/test_cuda.log" | head -40 >> "$S"
fi

wait $MK
cat /tmp/models.log >> "$S"
IFS=';' read -ra SPECS <<< "$BENCH"
for spec in "${SPECS[@]}"; do
  set -- $spec
  model=$M; [ "$1" != bf16 ] && model=$M-$1
  fmt=$1 size=$2 toks=$3 batch=$4
  shift 4
  step "bench $fmt $size batch $batch $*"
  env "$@" OST_NONE=1 timeout 90 "$BIN/ostrakon" bench engine --model $model --image-size $size --prompt-tokens 30 \
    --max-tokens $toks --batch $batch >> "$OUT/bench.log" 2>&1
  echo "bench rc=$?" >> "$S"
  tail -n 12 "$OUT/bench.log" | grep -E "weights on GPU|TTFT|decode batch|roofline" >> "$S"
done
step "done"
cat "$S"
