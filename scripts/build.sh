#!/usr/bin/env bash
# Configures and builds Veda into build/ (CUDA sources too when nvcc is found: the system's, or
# the one scripts/setup.sh put in .cuda/ on a machine without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=()
if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ] && [ -x .cuda/toolkit/bin/nvcc ]; then
  cuda=(-DCMAKE_CUDA_COMPILER="$PWD/.cuda/toolkit/bin/nvcc")
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${cuda[@]}" "$@" >/dev/null
cmake --build build -j"$(nproc)"
