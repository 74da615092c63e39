#!/usr/bin/env bash
# Device side: configure and build test_gpu and veda for sm_90a only (to save time there; CI and
# the dev machine build 90a;80) against the packages in .deps/. Logs go to $OUT when set. The
# kernel iteration script (scripts/gpu_kernel.sh) starts with it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/veda-out}; mkdir -p "$OUT"
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
veda_configure build-gpu -DVEDA_CUDA_ARCHS=90a > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
cmake --build build-gpu -j16 --target test_gpu veda_cli > "$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }
echo "build ok"
