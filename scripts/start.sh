#!/usr/bin/env bash
# Sets up, builds and starts the server with the web UI on http://localhost:8080 (override with
# --port/--host). Without --model it serves the built-in demo model (random weights: noise);
# pass --model DIR for a real Qwen3-VL checkpoint such as Ostrakon-VL-8B.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec build/bin/ostrakon serve --host 0.0.0.0 --port 8080 "$@"
