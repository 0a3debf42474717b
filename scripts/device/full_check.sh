#!/usr/bin/env bash
# The whole device check in one call, on one build: scripts/device/cuda_check.sh (test_cuda, bf16
# bench engine at batch 1/8/32 and 1280x960, Hugging Face transformers side by side), then
# scripts/device/serve_check.sh (`ostrakon serve` + `ostrakon bench serve` at concurrency 64 and
# 16), then the seeded 8B quantized to INT8 and INT4 (lm_head too) and FP8, `bench engine` on each.
# Every part writes into its own folder; at the end they are packed into $OUT/logs.tgz, and
# $OUT/summary.txt holds the summaries in order.
# Expects the build's bin/ (BIN=..., default build-cuda/bin) and assets/ beside the repo root.
set -u
ROOT_OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
mkdir -p "$ROOT_OUT"
export BIN
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export OST_TEST_DATA=$PWD/tests/data
here=$(dirname "$0")

OUT="$ROOT_OUT/engine" bash "$here/cuda_check.sh"
rm -rf /tmp/m8b
OUT="$ROOT_OUT/serve" REQ=${REQ:-512} REQ16=256 SEPARATE=0 bash "$here/serve_check.sh"

Q="$ROOT_OUT/quant"
mkdir -p "$Q"
S="$Q/summary.txt"
echo "== quantized ($(date +%T))" | tee -a "$S"
M=/tmp/m8b
[ -d $M ] || timeout 200 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json --quiet > /dev/null 2>&1
timeout 120 "$BIN/ostrakon" quantize --model $M --out $M-int8 --format int8 --quantize-lm-head --quiet 2>&1 | tee -a "$S"
timeout 120 "$BIN/ostrakon" quantize --model $M --out $M-fp8 --format fp8 --quiet 2>&1 | tee -a "$S"
timeout 120 "$BIN/ostrakon" quantize --model $M --out $M-int4 --format int4 --quantize-lm-head --quiet 2>&1 | tee -a "$S"
rm -rf $M
for spec in "int8 512x512 128 1" "int8 512x512 128 8" "int4 512x512 128 1" "int4 512x512 128 8" \
            "fp8 512x512 128 1" "fp8 512x512 128 8" "fp8 1280x960 32 1"; do
  set -- $spec
  echo "== bench $spec ($(date +%T))" | tee -a "$S"
  timeout 90 "$BIN/ostrakon" bench engine --model $M-$1 --image-size $2 --prompt-tokens 30 --max-tokens $3 \
    --batch $4 2>&1 | grep -vE "^\s*$" | tee -a "$S"
done
# The FP8 KV cache on the INT8 checkpoint (bf16 cache beside it above), and the pool a 1 GB
# --kv-memory gives each.
for spec in "bf16 1" "fp8 1" "bf16 32" "fp8 32"; do
  set -- $spec
  echo "== bench int8, KV cache $1, batch $2 ($(date +%T))" | tee -a "$S"
  timeout 90 "$BIN/ostrakon" bench engine --model $M-int8 --image-size 512x512 --prompt-tokens 30 --max-tokens 128 \
    --batch $2 --kv-cache-dtype $1 --kv-memory 1024 2>&1 | grep -E "kv cache|decode batch|roofline|TTFT" | tee -a "$S"
done

cat "$ROOT_OUT"/engine/summary.txt "$ROOT_OUT"/serve/summary.txt "$Q"/summary.txt > "$ROOT_OUT/all_summary.txt"
(cd "$ROOT_OUT" && tar czf logs.tgz engine serve quant && rm -rf engine serve quant && mv all_summary.txt summary.txt)
echo "== done ($(date +%T))"
