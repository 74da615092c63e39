#!/usr/bin/env bash
# Device side: compute-sanitizer memcheck and racecheck on small GPU test shapes (both kernels).
set -uo pipefail
cd "$(dirname "$0")/.."
filter=${1:-"Shapes/AttentionGpu.MatchesReference/g16x16x28_d64_bf16_b1_dens5_empty:Shapes/AttentionGpu.MatchesReference/g16x16x28_d128_f16_b2_dens100:AttentionGpuLayouts.AllRowsEmpty:AttentionGpuLayouts.Volume128WithPrefix"}
for tool in memcheck racecheck; do
  compute-sanitizer --tool $tool --error-exitcode 3 ./build-gpu/tests/test_gpu --gtest_filter="$filter" --gtest_brief=1 > "${OUT:-/tmp}/sanitize_$tool.log" 2>&1
  echo "compute-sanitizer $tool rc=$? ($(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "${OUT:-/tmp}/sanitize_$tool.log" | tail -1))"
done
