#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Veda. Idempotent.
# The CUDA sources are compiled even without a GPU: when no nvcc is installed, NVIDIA's CUDA 13.0
# compiler, runtime and cuBLAS wheels (PyPI) go into .cuda/ and scripts/build.sh points CMake there.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(build-essential cmake pkg-config libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev
          libfmt-dev libopenblas-dev libstb-dev)
system_nvcc() { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }
system_nvcc || packages+=(python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! system_nvcc && [ ! -x .cuda/toolkit/bin/nvcc ]; then
  echo "setup: no nvcc on this machine; installing the CUDA 13.0 compiler wheels into .cuda/"
  python3 -m venv .cuda/venv
  # Every component pinned to one release: nvcc refuses PTX from a newer cicc.
  .cuda/venv/bin/pip install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-cublas==13.0.2.14
  toolkit="$(.cuda/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"
  for lib in cudart cublas cublasLt; do  # the wheels ship only the versioned names
    ln -sf "lib$lib.so.13" "$toolkit/lib/lib$lib.so"
  done
  ln -sfn "$toolkit" .cuda/toolkit
fi
echo "setup: all build dependencies present"
