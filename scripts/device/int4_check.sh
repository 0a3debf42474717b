#!/usr/bin/env bash
# One device call for INT4 (W4A16): the CUDA INT4 kernel and runner tests (TESTS, a gtest
# filter), the seeded 8B checkpoint quantized to INT4 with an INT4 lm_head, and `ostrakon bench
# engine` (512x512 image, 30-token question, 128 new tokens) at batch 1 and 8 with the default
# decode GEMV (tensor-core variants timed per shape) and with OST_INT4_GEMV=old (the scalar
# kernel only). OST_W4_LOG=1 on the first bench logs each shape's variant timings. Steps past
# BUDGET seconds are skipped. Logs go to $OUT (or ./device-out); summary.txt ends with a table
# (bench JSON: ms/step, tok/s, weights in GiB and GB). Expects BIN (default build-cuda/bin;
# ostrakon and test_cuda may be .xz) and assets/.
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
TESTS=${TESTS:-'CudaQuant.W4A16*:CudaQuant.Int4*'}
BUDGET=${BUDGET:-220}
mkdir -p "$OUT"
for b in ostrakon test_cuda; do  # binaries may travel xz-compressed
  [ -f "$BIN/$b.xz" ] && [ ! -f "$BIN/$b" ] && { xz -T4 -dc "$BIN/$b.xz" > /tmp/$b && chmod +x /tmp/$b && BINX=/tmp; }
done
BIN=${BINX:-$BIN}
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export OST_TEST_DATA=$PWD/tests/data
T0=$(date +%s)
left() { [ $(( $(date +%s) - T0 )) -lt "$BUDGET" ]; }
step() { echo "== $1 ($(( $(date +%s) - T0 ))s)" >> "$OUT/summary.txt"; }

step "device"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/summary.txt" 2>&1
if [ -n "$TESTS" ]; then
  step "test_cuda $TESTS"
  timeout 90 "$BIN/test_cuda" --gtest_filter="$TESTS" > "$OUT/test_cuda.log" 2>&1
  echo "test_cuda rc=$?" >> "$OUT/summary.txt"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|Failure|worst rel" "$OUT/test_cuda.log" | tail -20 >> "$OUT/summary.txt"
fi

M=/tmp/m8b
step "make-test-model 8B"
timeout 120 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json --quiet > "$OUT/make_model.log" 2>&1
echo "make-test-model rc=$?" >> "$OUT/summary.txt"
step "quantize int4 + lm_head"
timeout 120 "$BIN/ostrakon" quantize --model $M --out $M-int4 --format int4 --quantize-lm-head --quiet \
  >> "$OUT/summary.txt" 2>&1
echo "quantize rc=$?" >> "$OUT/summary.txt"
rm -rf $M  # page cache and disk for the quantized one
du -sb $M-int4 >> "$OUT/summary.txt" 2>&1

bench() {  # name batch env...
  left || { echo "$1 b$2: skipped (time)" >> "$OUT/summary.txt"; return; }
  local name=$1 b=$2
  shift 2
  step "bench $name batch $b $*"
  env "$@" timeout 60 "$BIN/ostrakon" bench engine --model $M-int4 --image-size 512x512 --prompt-tokens 30 \
    --max-tokens 128 --batch "$b" --json > "$OUT/bench_${name}_b$b.json" 2> "$OUT/bench_${name}_b$b.err"
  echo "rc=$?" >> "$OUT/summary.txt"
}
bench new 1 OST_W4_LOG=1
bench old 1 OST_INT4_GEMV=old
bench new 8
bench old 8 OST_INT4_GEMV=old
step "done"
cat "$OUT"/bench_new_b1.err >> "$OUT/summary.txt" 2>/dev/null
echo "---- summary" >> "$OUT/summary.txt"
python3 - "$OUT" >> "$OUT/summary.txt" 2>&1 <<'PY'
import json, sys, glob, os
print("| run | batch | ms/step | tok/s per seq | tok/s total | weights GiB | weights GB | decoder+head GiB | achieved GB/s | roofline ms |")
print("|---|---|---|---|---|---|---|---|---|---|")
for f in sorted(glob.glob(os.path.join(sys.argv[1], "bench_*.json"))):
    try:
        j = json.load(open(f))
    except Exception as e:
        print(f"| {os.path.basename(f)} | failed: {e} |")
        continue
    gib = j["weights_gib"]
    print(f"| {os.path.basename(f)[6:-5]} | {j['batch']} | {j['decode_step_ms']:.3f} | {j['decode_tokens_per_s_per_seq']:.1f} | "
          f"{j['decode_tokens_per_s_total']:.1f} | {gib:.3f} | {gib * 2**30 / 1e9:.3f} | {j['text_weights_gib']:.3f} | "
          f"{j['decode_achieved_gb_per_s']:.0f} | {j['decode_roofline_step_ms']:.3f} |")
    print("  eager split:", "; ".join(f"{k} {v:.3f}" for k, v in j.get("decode_step_breakdown_ms_eager", {}).items()))
PY
cat "$OUT/summary.txt"
