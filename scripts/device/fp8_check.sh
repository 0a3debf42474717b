#!/usr/bin/env bash
# One device call for FP8 (W8A8): the FP8 CUDA tests, a checkpoint in Qwen's published FP8 layout
# written by an independent writer (fp8_official_writer.py: torch + safetensors) next to
# `ostrakon quantize --format fp8` of the same tiny model, then the seeded 8B checkpoint quantized
# to FP8 and `ostrakon bench engine` FP8 vs bf16 (1280x960 TTFT with the prefill split, 512x512
# batch-1 decode). Logs go to $OUT (or ./device-out); the summary is printed last.
# Expects the binaries in $BIN (default build-cuda/bin; .xz copies are unpacked) and assets/.
. "$(dirname "$0")/setup_env.sh"

step "device"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$S" 2>&1
M=/tmp/m8b
( timeout 150 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
    --tokenizer assets/qwen3/tokenizer.json --quiet > /tmp/make_model.log 2>&1; echo "make-test-model 8B rc=$?" > /tmp/mk.rc ) &
MK=$!

step "test_cuda (FP8, INT8, GEMM, one runner case)"
timeout ${TEST_TIMEOUT:-110} "$BIN/test_cuda" --gtest_filter="${TEST_FILTER:-CudaFp8*:CudaQuant*:CudaOps.Gemm:CudaRunner.TextOnlyPrefillAndDecode}" \
  > "$OUT/test_cuda.log" 2>&1
echo "test_cuda rc=$?" >> "$S"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure|Expected|Which is|fp8 gemm|rel_l2" "$OUT/test_cuda.log" | head -40 >> "$S"

step "official FP8 layout (tiny model)"
T=/tmp/tiny
{
  "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-tiny --seed 1 --out $T \
    --tokenizer assets/qwen3/tokenizer.json --quiet
  python3 "${WRITER:-scripts/device/fp8_official_writer.py}" $T $T-official
  python3 "${WRITER:-scripts/device/fp8_official_writer.py}" $T $T-officialf32 f32
  "$BIN/ostrakon" quantize --model $T --out $T-fp8 --format fp8 --quiet
  for m in official officialf32 fp8; do
    for dev in cuda cpu; do
      echo "-- $m $dev"
      timeout 60 "$BIN/ostrakon" run --model $T-$m --device $dev --prompt "Describe the receipt in one line." \
        --max-tokens 12 --ignore-eos --logprobs 1 --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
lp = [round(t["logprob"], 4) for t in j.get("logprobs", [])] if isinstance(j.get("logprobs"), list) else j.get("logprobs")
print("tokens", j.get("token_ids", j.get("completion_ids")), "text", repr(j.get("text", ""))[:80]); print("logprobs", lp)' 2>&1 | head -c 1500
    done
  done
} > /tmp/official.log 2>&1
grep -vE "^\s*$" /tmp/official.log | tail -40 >> "$S"

wait $MK; cat /tmp/mk.rc >> "$S"
step "quantize 8B to fp8"
timeout 120 "$BIN/ostrakon" quantize --model $M --out $M-fp8 --format fp8 --quiet >> "$S" 2>&1
echo "quantize rc=$?" >> "$S"
# BENCH: "format size max-tokens [ENV=VALUE]" entries (the env entry is an A/B switch).
BENCH=${BENCH:-"fp8 1280x960 32;fp8 512x512 128;bf16 1280x960 32;bf16 512x512 128"}
IFS=';' read -ra SPECS <<< "$BENCH"
for spec in "${SPECS[@]}"; do
  set -- $spec
  model=$M; [ "$1" = fp8 ] && model=$M-fp8
  tag="$1_$2${4:+_${4//=/-}}"
  step "bench $1 $2 ${4:-}"
  env ${4:-OST_NONE=1} timeout 60 "$BIN/ostrakon" bench engine --model $model --image-size $2 --prompt-tokens 30 \
    --max-tokens $3 --batch ${5:-1} > "$OUT/bench_$tag.txt" 2>&1
  echo "bench rc=$?" >> "$S"
  grep -vE "^\s*$" "$OUT/bench_$tag.txt" | head -20 >> "$S"
done
step "done"
cat "$S"
