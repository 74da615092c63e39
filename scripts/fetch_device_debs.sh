#!/usr/bin/env bash
# Runs HERE (a machine with apt): downloads the Debian packages the build needs into .deps/ so
# that they can travel to the device machine (run tool, carry: [".deps"]), which has no network.
# The device side unpacks them with scripts/gpu_env.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$root/.deps"
cd "$root/.deps"
pkgs=(nlohmann-json3-dev libfmt-dev libfmt9 libcli11-dev libgtest-dev
      libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libopenblas0 libgfortran5 libquadmath0
      libstb-dev libstb0)
apt-get download "${pkgs[@]}"
ls -la "$root/.deps"
