#!/usr/bin/env bash
# One device call for the serving path: the sampling and runner CUDA tests, the seeded 8B
# checkpoint, then `ostrakon serve --device cuda` with `ostrakon bench serve` against it
# (512x512 JPEG + 30-token question, 128 greedy output tokens, EOS ignored) at concurrency 64
# and 16 with the defaults; then at concurrency 64 with mixed steps off (OST_MIXED_STEP=0), and,
# when BASE_BIN names an older build's ostrakon, that build at concurrency 64 and 16 (fewer
# requests). GPU memory is read while each server is up. Logs go to $OUT (or ./device-out); the
# table comes last.
# Expects the build's bin/ (build-cuda/bin, or BIN=...) and assets/ beside the repo root.
# REQ, BASE_REQ: requests per bench run (default 256 and 128); REQ16: at concurrency 16 (default
# REQ); SEPARATE=0 skips the run with mixed steps off; SAMPLED=0 the sampled run (temperature
# 0.7, top-k 20, top-p 0.8: Qwen's settings) at concurrency 64.
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
REQ=${REQ:-256}
BASE_REQ=${BASE_REQ:-128}
BASE_BIN=${BASE_BIN:-}
mkdir -p "$OUT"
TMP=$(mktemp -d)
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export OST_TEST_DATA=$PWD/tests/data
S="$OUT/summary.txt"
step() { echo "== $1 ($(date +%T))" | tee -a "$S"; }

step "device"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | tee -a "$S"

step "test_cuda (sampling, runner)"
timeout 120 "$BIN/test_cuda" --gtest_filter='CudaSampling*:CudaRunner*:CudaOps.EmbeddingScatterArgmax' \
  > "$OUT/test_cuda.log" 2>&1
echo "test_cuda rc=$?" | tee -a "$S"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure" "$OUT/test_cuda.log" | tail -20 | tee -a "$S"

step "make-test-model 8B"
M=/tmp/m8b
timeout 200 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json --quiet > "$TMP/make_model.log" 2>&1
echo "make-test-model rc=$?" | tee -a "$S"

PORT=8093
SRV=
start_server() {  # BINARY ENV...: the server with these environment settings
  local bin=$1; shift
  step "serve $bin ($*)"
  env "$@" "$bin" serve --model $M --device cuda --port $PORT --max-concurrency 64 \
    --kv-memory 12000 > "$TMP/serve_$#.log" 2>&1 &
  SRV=$!
  local t0=$(date +%s.%N)
  for i in $(seq 1 240); do
    if curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1; then break; fi
    sleep 0.5
  done
  echo "ready after $(python3 -c "import time; print(round(time.time() - $t0, 1))") s: $(curl -s "http://127.0.0.1:$PORT/health" | head -c 200)" | tee -a "$S"
}
stop_server() {
  nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader 2>&1 | sed 's/^/GPU memory used, total: /' | tee -a "$S"
  curl -s "http://127.0.0.1:$PORT/metrics" | grep -E "^ost_(steps|batch_size|prompt_tokens|generated_tokens)" | head -12 >> "$S"
  kill $SRV 2>/dev/null
  wait $SRV 2>/dev/null
  SRV=
}
ROWS=()
bench() {  # NAME LIMIT_S CONC REQUESTS [bench serve ARGS...]
  local name=$1 lim=$2 c=$3 n=$4
  shift 4
  step "bench $name: --concurrency $c --requests $n $*"
  timeout "$lim" "$BIN/ostrakon" bench serve --url "http://127.0.0.1:$PORT" --concurrency $c --requests $n \
    --image-size 512x512 --prompt-tokens 30 --max-tokens 128 --ignore-eos --no-progress "$@" \
    > "$OUT/bench_$name.txt" 2>&1
  echo "bench rc=$?" | tee -a "$S"
  cat "$OUT/bench_$name.txt" >> "$S"
  local f="$OUT/bench_$name.txt"
  ROWS+=("$(printf '%-14s %4s %5s %8s %9s %9s %9s %9s %9s' "$name" "$c" \
    "$(grep -m1 'Successful requests' "$f" | grep -oE '[0-9]+ / [0-9]+' | tr -d ' ')" \
    "$(grep -m1 'Request throughput' "$f" | awk '{print $NF}')" \
    "$(grep -m1 '^ttft_ms' "$f" | awk '{print $5}')" "$(grep -m1 '^ttft_ms' "$f" | awk '{print $7}')" \
    "$(grep -m1 '^ttft_ms' "$f" | awk '{print $9}')" "$(grep -m1 '^tpot_ms' "$f" | awk '{print $5}')" \
    "$(grep -m1 'Output token throughput' "$f" | awk '{print $NF}')")")
}

start_server "$BIN/ostrakon" OST_DEFAULTS=1
bench mixed_c64 100 64 "$REQ"
bench mixed_c16 80 16 "${REQ16:-$REQ}"
if [ "${SAMPLED:-1}" = 1 ]; then  # sampled requests: top-K candidates come back, not logits
  bench sampled_c64 100 64 "$REQ" --temperature 0.7 --top-k 20 --top-p 0.8
  curl -s "http://127.0.0.1:$PORT/metrics" | grep -E "^ost_sampling" >> "$S"
fi
stop_server
if [ "${SEPARATE:-1}" = 1 ]; then
  start_server "$BIN/ostrakon" OST_MIXED_STEP=0
  bench separate_c64 70 64 "$REQ"
  stop_server
fi
if [ -n "$BASE_BIN" ]; then
  start_server "$BASE_BIN"
  bench base_c64 60 64 "$BASE_REQ"
  bench base_c16 40 16 "$((BASE_REQ / 2))"
  stop_server
fi

step "summary (ms; TTFT and TPOT p50/p90/p99 and p50 from the client)"
{
  printf '%-14s %4s %5s %8s %9s %9s %9s %9s %9s\n' run conc done req/s ttft_p50 ttft_p90 ttft_p99 tpot_p50 out_tok/s
  for r in "${ROWS[@]}"; do echo "$r"; done
} | tee -a "$S"
