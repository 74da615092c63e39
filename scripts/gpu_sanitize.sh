#!/usr/bin/env bash
# Device side: compute-sanitizer memcheck and synccheck on small GPU test shapes (every kernel),
# racecheck on the smallest two (the 384-thread warp-specialised kernel makes racecheck slow: a
# 128-token-tile case alone ran past 100 s).
# Usage: scripts/gpu_sanitize.sh [gtest filter for memcheck/synccheck] [filter for racecheck]
set -uo pipefail
cd "$(dirname "$0")/.."
filter=${1:-"Shapes/AttentionGpu.MatchesReference/g16x16x28_d64_bf16_b1_dens5_empty:Shapes/AttentionGpu.MatchesReference/g16x16x28_d128_f16_b2_dens100:AttentionGpuLayouts.AllRowsEmpty:AttentionGpuLayouts.Volume128WithPrefix"}
race_filter=${2:-"Shapes/AttentionGpu.MatchesReference/g16x16x28_d64_bf16_b1_dens5_empty:AttentionGpuLayouts.AllRowsEmpty"}
for tool in memcheck synccheck racecheck; do
  f=$filter; [ $tool = racecheck ] && f=$race_filter
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 3 ./build-gpu/tests/test_gpu --gtest_filter="$f" --gtest_brief=1 > "${OUT:-/tmp}/sanitize_$tool.log" 2>&1
  echo "compute-sanitizer $tool rc=$? ($(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "${OUT:-/tmp}/sanitize_$tool.log" | tail -1))"
done
