#!/usr/bin/env bash
# Sets up, builds and runs every test (CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
cd build && ctest --output-on-failure -j2 "$@"
