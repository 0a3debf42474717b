#!/usr/bin/env bash
# Reference outputs of HF transformers for the extra cases (tests/data/hf-extra/cases.json), on a
# machine with torch + transformers. Carry the built binary's folder (BIN, default build-dev/bin)
# and assets/. Writes $OUT/hf_golden.json and a log.
set -euo pipefail
BIN=${BIN:-build-dev/bin}/ostrakon
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/models "$OUT"
python3 -c "import torch, transformers, PIL; print('torch', torch.__version__, 'transformers', transformers.__version__)"
for spec in "tests/data/hf-extra/cfg_a 7" "tests/data/hf-extra/cfg_b 123" "tests/data/qwen3vl-tiny 20261124"; do
  set -- $spec
  "$BIN" make-test-model --quiet --config "$1" --seed "$2" --out "/tmp/models/$(basename "$1")-$2" \
    --tokenizer assets/qwen3/tokenizer.json
done
OMP_NUM_THREADS=8 PYTHONUNBUFFERED=1 python3 scripts/reference/hf_reference.py \
  --cases tests/data/hf-extra/cases.json --models /tmp/models --out "$OUT/hf_golden.json"
