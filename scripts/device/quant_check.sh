#!/usr/bin/env bash
# One device call for weight quantization: the CUDA quant tests, the seeded 8B checkpoint,
# `ostrakon quantize --format int8` on it, and `ostrakon bench engine` (batch 1) on the result.
# Logs go to $OUT (or ./device-out). Expects build-qcuda/bin (or BIN=...) and assets/.
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-qcuda/bin}
mkdir -p "$OUT"
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
CU13=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
[ -n "$CU13" ] && [ -d "$CU13" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$CU13"
export OST_TEST_DATA=$PWD/tests/data
step() { echo "== $1 ($(date +%T))" | tee -a "$OUT/summary.txt"; }

step "device"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 | tee -a "$OUT/summary.txt"
step "test_cuda (quant + runner)"
timeout 150 "$BIN/test_cuda" --gtest_filter='CudaQuant*:CudaOps.Gemm' > "$OUT/test_cuda.log" 2>&1
echo "test_cuda rc=$?" | tee -a "$OUT/summary.txt"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED|Failure|rel_l2" "$OUT/test_cuda.log" | tail -20 | tee -a "$OUT/summary.txt"

M=/tmp/m8b
step "make-test-model 8B"
timeout 200 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json --quiet > "$OUT/make_model.log" 2>&1
echo "make-test-model rc=$?" | tee -a "$OUT/summary.txt"
step "quantize int8"
timeout 200 "$BIN/ostrakon" quantize --model $M --out $M-int8 --format int8 --quiet 2>&1 | tee -a "$OUT/summary.txt"
rm -rf $M  # page cache and disk for the quantized one
for B in 1 8; do
  step "bench engine int8 batch $B"
  timeout 120 "$BIN/ostrakon" bench engine --model $M-int8 --image-size 512x512 --prompt-tokens 30 \
    --max-tokens 128 --batch $B > "$OUT/bench_int8_b$B.txt" 2>&1
  echo "bench rc=$?" | tee -a "$OUT/summary.txt"
  cat "$OUT/bench_int8_b$B.txt" | tee -a "$OUT/summary.txt"
done
step "done"
