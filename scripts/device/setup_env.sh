# Sourced by the device scripts: $OUT (default ./device-out) and $BIN (default build-cuda/bin, .xz
# copies unpacked), the CUDA libraries on LD_LIBRARY_PATH, the test data, and step() writing a
# timestamped heading into $S = $OUT/summary.txt.
set -u
OUT=${OUT:-$PWD/device-out}
BIN=${BIN:-build-cuda/bin}
mkdir -p "$OUT"
for f in "$BIN"/*.xz; do [ -e "$f" ] && xz -dkf "$f"; done
chmod +x "$BIN/ostrakon" "$BIN/test_cuda" 2>/dev/null
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export OST_TEST_DATA=$PWD/tests/data
S=$OUT/summary.txt
step() { echo "== $1 ($(date +%T))" >> "$S"; }
