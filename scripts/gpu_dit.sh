#!/usr/bin/env bash
# Device side: build veda + test_gpu (sm_90a), run the CUDA DiT tests (golden tiny-wan from
# .tinywan/tinywan.tar.xz, carried), the CLI forward and `veda bench dit` for both presets.
# Usage (run tool, carry [".deps", ".tinywan"]): scripts/gpu_dit.sh [14B layers (4)] [14B runs (3)]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/veda-out}; mkdir -p "$OUT"
L14=${1:-4}
R14=${2:-3}
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader
mkdir -p /tmp/tinywan
tar xJf .tinywan/tinywan.tar.xz -C /tmp/tinywan 2>/dev/null ||
  python3 -c "import tarfile; tarfile.open('.tinywan/tinywan.tar.xz').extractall('/tmp/tinywan')"
export VEDA_TINY_WAN=/tmp/tinywan
SECONDS=0
veda_configure build-gpu -DVEDA_CUDA_ARCHS=90a > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
cmake --build build-gpu -j16 --target test_gpu veda_cli > "$OUT/build.log" 2>&1 ||
  { grep -E "error" -A3 "$OUT/build.log" | head -60; exit 1; }
echo "build ok in ${SECONDS} s"
timeout 60 ./build-gpu/tests/test_gpu --gtest_filter='WanCuda*' 2>&1 | tee "$OUT/test_dit.log"
timeout 30 ./build-gpu/veda forward --device cuda --model /tmp/tinywan \
  --input /tmp/tinywan/golden.safetensors -o /tmp/o.safetensors 2>&1 | tee "$OUT/forward.log"
echo "t=${SECONDS}s"
timeout 50 ./build-gpu/veda bench dit --preset wan2.1-1.3b-480p --random-weights \
  --json "$OUT/bench_13b.json" 2>&1 | tee "$OUT/bench_13b.log"
echo "t=${SECONDS}s"
timeout 150 ./build-gpu/veda bench dit --preset wan2.1-14b-720p --random-weights --layers "$L14" --runs "$R14" \
  --json "$OUT/bench_14b.json" 2>&1 | tee "$OUT/bench_14b.log"
echo "t=${SECONDS}s"
