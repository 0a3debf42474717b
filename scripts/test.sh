#!/usr/bin/env bash
# Sets up, builds and runs every test (CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
(cd build && ctest --output-on-failure -j2 "$@")
# The web UI in headless Chromium: upload a photo, pick a preset, get a streamed answer.
(cd scripts/ui_test && npm install --no-audit --no-fund --silent)
node scripts/ui_test/ui_test.mjs build/bin/ostrakon
# The official openai npm client (v6) against the server, streaming included.
(cd scripts/openai_client_test && npm install --no-audit --no-fund --silent)
node scripts/openai_client_test/openai_client_test.mjs build/bin/ostrakon
