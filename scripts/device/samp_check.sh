#!/usr/bin/env bash
# One device call for sampled serving: the candidate CUDA tests (CudaTopk*), the seeded 8B
# checkpoint, then `ostrakon serve --device cuda` with `ostrakon bench serve` against it
# (512x512 JPEG + 30-token question, 128 output tokens, EOS ignored, concurrency 64):
#   greedy           temperature 0 (the runner's argmax; the reference speed)
#   sampled          temperature 0.7, top-p 0.95, seeded: top-K candidates on the device
#   sampled_topk     temperature 0.7, top-k 50
#   sampled_host     the same as `sampled` with OST_LOOP_HOST_SAMPLING=1 (full logits to the host)
# and the server's candidate-row and fallback counters after each. Logs go to $OUT (or
# ./device-out); the table comes last.
# Expects the build's bin/ (build-cuda/bin, or BIN=...) and assets/ beside the repo root.
# REQ: requests per bench run (default 192); HOST_REQ: for sampled_host (default 64).
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
REQ=${REQ:-192}
HOST_REQ=${HOST_REQ:-64}
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

step "test_cuda (candidates, sampling)"
timeout 180 "$BIN/test_cuda" --gtest_filter='CudaTopk*:CudaSampling*' > "$OUT/test_cuda.log" 2>&1
echo "test_cuda rc=$?" | tee -a "$S"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure" "$OUT/test_cuda.log" | tail -20 | tee -a "$S"

step "make-test-model 8B"
M=/tmp/m8b
timeout 200 "$BIN/ostrakon" make-test-model --config tests/data/qwen3vl-8b --seed 1 --out $M \
  --tokenizer assets/qwen3/tokenizer.json --quiet > "$TMP/make_model.log" 2>&1
echo "make-test-model rc=$?" | tee -a "$S"

PORT=8094
SRV=
start_server() {  # ENV...: the server with these environment settings
  step "serve ($*)"
  env "$@" "$BIN/ostrakon" serve --model $M --device cuda --port $PORT --max-concurrency 64 \
    --kv-memory 12000 > "$TMP/serve.log" 2>&1 &
  SRV=$!
  for i in $(seq 1 240); do
    if curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1; then break; fi
    sleep 0.5
  done
}
stop_server() {
  kill $SRV 2>/dev/null
  wait $SRV 2>/dev/null
  SRV=
}
ROWS=()
bench() {  # NAME LIMIT_S REQUESTS ARGS...
  local name=$1 lim=$2 n=$3
  shift 3
  local before=$(curl -s "http://127.0.0.1:$PORT/metrics" | grep -E "^ost_sampling_(candidate_rows|fallbacks)_total" | awk '{print $2}' | tr '\n' ' ')
  step "bench $name: --requests $n $*"
  timeout "$lim" "$BIN/ostrakon" bench serve --url "http://127.0.0.1:$PORT" --concurrency 64 --requests $n \
    --image-size 512x512 --prompt-tokens 30 --max-tokens 128 --ignore-eos --no-progress "$@" \
    > "$OUT/bench_$name.txt" 2>&1
  echo "bench rc=$?" | tee -a "$S"
  cat "$OUT/bench_$name.txt" >> "$S"
  local after=$(curl -s "http://127.0.0.1:$PORT/metrics" | grep -E "^ost_sampling_(candidate_rows|fallbacks)_total" | awk '{print $2}' | tr '\n' ' ')
  echo "candidate rows, fallbacks: before $before after $after" | tee -a "$S"
  local f="$OUT/bench_$name.txt"
  ROWS+=("$(printf '%-14s %5s %8s %9s %9s %9s %9s  %s' "$name" \
    "$(grep -m1 'Successful requests' "$f" | grep -oE '[0-9]+ / [0-9]+' | tr -d ' ')" \
    "$(grep -m1 'Request throughput' "$f" | awk '{print $NF}')" \
    "$(grep -m1 '^ttft_ms' "$f" | awk '{print $5}')" "$(grep -m1 '^ttft_ms' "$f" | awk '{print $9}')" \
    "$(grep -m1 '^tpot_ms' "$f" | awk '{print $5}')" \
    "$(grep -m1 'Output token throughput' "$f" | awk '{print $NF}')" "$after")")
}

start_server OST_DEFAULTS=1
bench greedy 120 "$REQ"
bench sampled 150 "$REQ" --temperature 0.7 --top-p 0.95
bench sampled_topk 150 "$REQ" --temperature 0.7 --top-k 50
stop_server
start_server OST_LOOP_HOST_SAMPLING=1
bench sampled_host 200 "$HOST_REQ" --temperature 0.7 --top-p 0.95
stop_server

step "summary (concurrency 64; ms; TTFT p50/p99, TPOT p50; candidate rows and fallbacks so far)"
{
  printf '%-14s %5s %8s %9s %9s %9s %9s  %s\n' run done req/s ttft_p50 ttft_p99 tpot_p50 out_tok/s "rows fallbacks"
  for r in "${ROWS[@]}"; do echo "$r"; done
} | tee -a "$S"
