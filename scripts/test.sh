#!/usr/bin/env bash
# Set-up, build and run every CPU test (GPU tests are built and skip cleanly without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600
