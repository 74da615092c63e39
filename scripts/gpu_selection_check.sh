#!/usr/bin/env bash
# Device side, GPU tile selection: build (sm_90a) test_gpu and bench_selection_gpu, run the
# selection tests (plus compute-sanitizer memcheck on two small cases), then the selection
# benchmark on wan14b-720p (with the attention ratio) and wan1.3b-480p. Logs under $OUT.
# Usage: scripts/gpu_selection_check.sh [--no-sanitize] [--no-bench]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/veda-out}; mkdir -p "$OUT"
sanitize=1; bench=1
for a in "$@"; do
  case "$a" in --no-sanitize) sanitize=0 ;; --no-bench) bench=0 ;; esac
done
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
t0=$(date +%s)
veda_configure build-gsel -DVEDA_CUDA_ARCHS=90a > "$OUT/sel_configure.log" 2>&1 \
  || { tail -30 "$OUT/sel_configure.log"; exit 1; }
cmake --build build-gsel -j16 --target test_gpu bench_selection_gpu > "$OUT/sel_build.log" 2>&1 \
  || { grep -E "error|Error" "$OUT/sel_build.log" | head -40; exit 1; }
echo "build ok ($(( $(date +%s) - t0 )) s)"
test_gpu=$(find build-gsel -name test_gpu -type f -perm -u+x | head -1)
bench_bin=$(find build-gsel -name bench_selection_gpu -type f -perm -u+x | head -1)
timeout 120 "$test_gpu" --gtest_filter='*Selection*' > "$OUT/sel_test.log" 2>&1
echo "selection tests rc=$?"
grep -E "^\s+\S.*rows|FAILED|Failure|PASSED|Expected|Which is|differ|mismatch" "$OUT/sel_test.log" | head -60
if [ $bench = 1 ]; then
  timeout 100 "$bench_bin" --preset wan14b-720p --density 0.05 --runs 30 --method stats 2>&1 | tee "$OUT/sel_bench.md"
  for m in mean estimator; do
    timeout 40 "$bench_bin" --preset wan14b-720p --density 0.05 --runs 20 --method $m --no-attention 2>&1 | grep -E "^\| (f32|tf32|bf16) \| q|^## " | tee -a "$OUT/sel_bench.md"
  done
  timeout 40 "$bench_bin" --preset wan1.3b-480p --density 0.05 --runs 30 --method stats 2>&1 | grep -vE "^$" | head -14 | tee -a "$OUT/sel_bench.md"
fi
if [ $sanitize = 1 ]; then
  timeout 60 compute-sanitizer --tool memcheck --error-exitcode 3 "$test_gpu" \
    --gtest_filter='Cases/SelectionGpuRandom.MatchesCpu/stats_f16_d64_b2:Cases/SelectionGpuRandom.MatchesCpu/estimator_noqu_vol128:SelectionGpu.NanIsReported' \
    --gtest_brief=1 > "$OUT/sel_memcheck.log" 2>&1
  echo "memcheck rc=$? ($(grep -E "ERROR SUMMARY" "$OUT/sel_memcheck.log" | tail -1))"
fi
