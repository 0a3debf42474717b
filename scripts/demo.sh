#!/usr/bin/env bash
# Sets up, builds, makes the built-in demo model (the seeded tiny Qwen3-VL of the test
# fixtures: random weights, so its answers are noise) and answers one question about a photo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
DEMO=build/demo-model
if [ ! -f "$DEMO/model.safetensors" ]; then
  build/bin/ostrakon make-test-model --config tests/data/qwen3vl-tiny --seed 20261124 \
    --out "$DEMO" --tokenizer assets/qwen3/tokenizer.json
fi
build/bin/ostrakon run --model "$DEMO" --image tests/data/qwen3vl-tiny/images/shelf_300x200.png \
  --prompt "请详细描述这张图片中的商品陈列情况。" --max-tokens 24 "$@"
