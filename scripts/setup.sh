#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Veda. Idempotent.
set -euo pipefail
packages=(build-essential cmake pkg-config libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev
          libfmt-dev libopenblas-dev libstb-dev)
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
echo "setup: all build dependencies present"
