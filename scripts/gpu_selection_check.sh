#!/usr/bin/env bash
# Device side, GPU tile selection: build (sm_90a) test_gpu and bench_selection_gpu, run the
# selection tests, compute-sanitizer memcheck on three small cases (boundary rescoring in both
# precisions; q features far beyond fp16's range), then bench_selection_gpu (both scoring precisions,
# three input paths each) on wan14b-720p (methods stats with the attention ratio, mean,
# estimator) and wan1.3b-480p (stats). Logs under $OUT; a short table last. About 3-5 minutes.
# Usage: scripts/gpu_selection_check.sh [--no-sanitize] [--no-bench]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/veda-out}; mkdir -p "$OUT"
sanitize=1; bench=1
for a in "$@"; do
  case "$a" in --no-sanitize) sanitize=0 ;; --no-bench) bench=0 ;; esac
done
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader \
  | tee "$OUT/sel_device.txt"
t0=$(date +%s)
veda_configure build-gsel -DVEDA_CUDA_ARCHS=90a > "$OUT/sel_configure.log" 2>&1 \
  || { tail -30 "$OUT/sel_configure.log"; exit 1; }
cmake --build build-gsel -j16 --target test_gpu bench_selection_gpu > "$OUT/sel_build.log" 2>&1 \
  || { grep -E "error|Error" "$OUT/sel_build.log" | head -40; exit 1; }
echo "build ok ($(( $(date +%s) - t0 )) s)"
test_gpu=$(find build-gsel -name test_gpu -type f -perm -u+x | head -1)
bench_bin=$(find build-gsel -name bench_selection_gpu -type f -perm -u+x | head -1)

timeout 150 "$test_gpu" --gtest_filter='*Selection*' > "$OUT/sel_test.log" 2>&1
test_rc=$?
echo "selection tests rc=$test_rc"
grep -E "^\s+\S.*rows|FAILED|Failure|Expected|Which is|differ|mismatch" "$OUT/sel_test.log" | head -80

memcheck="skipped"
if [ $sanitize = 1 ]; then
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 "$test_gpu" \
    --gtest_filter='Cases/SelectionGpuRandom.MatchesCpu/stats_f16_d64_b2_f16x3:Cases/SelectionGpuRandom.MatchesCpu/estimator_f16_head0_huge_f16x3:Cases/SelectionGpuRandom.MatchesCpu/estimator_noqu_vol128_f32' \
    --gtest_brief=1 > "$OUT/sel_memcheck.log" 2>&1
  memcheck="rc=$? ($(grep -E "ERROR SUMMARY" "$OUT/sel_memcheck.log" | tail -1))"
  echo "memcheck $memcheck"
fi

if [ $bench = 1 ]; then
  : > "$OUT/sel_bench.md"
  run_bench() {  # preset method [extra args]
    local log="$OUT/sel_bench_$1_$2.md"
    timeout 60 "$bench_bin" --preset "$1" --density 0.05 --method "$2" "${@:3}" > "$log" 2>&1
    echo "bench $1 $2 rc=$?"
    cat "$log" >> "$OUT/sel_bench.md"
  }
  run_bench wan14b-720p stats --runs 30
  run_bench wan14b-720p mean --runs 20 --no-attention
  run_bench wan14b-720p estimator --runs 20 --no-attention
  run_bench wan1.3b-480p stats --runs 30
  grep -vE "^summary" "$OUT/sel_bench_wan14b-720p_stats.md"
fi

echo
echo "## Selection check summary ($(head -1 "$OUT/sel_device.txt" | cut -d, -f1))"
echo
echo "tests: rc=$test_rc, $(grep -cE '^\[       OK \]' "$OUT/sel_test.log") ok, $(grep -cE '^\[  FAILED  \]' "$OUT/sel_test.log") failed lines; memcheck: $memcheck"
if [ $bench = 1 ]; then
  echo
  echo "| preset | method | scoring | total ms: tokens + tile copies | tokens, stats only | tile-order input | attention ms |"
  echo "|---|---|---|---|---|---|---|"
  grep -h "^summary" "$OUT"/sel_bench_*.md | sed -E 's/^summary \| //; s/copies |stats-only |tile-order |attention | ms//g; s/^/| /; s/$/ |/'
  for f in "$OUT"/sel_bench_*.md; do  # per run: tiles rescored a row, mask agreement
    echo "$(basename "$f" .md): rescored a row:" \
      "$(grep -h "scoring rescored .* tiles a row" "$f" | sed -E 's/ scoring rescored ([0-9.]+) .*/ \1/' | tr '\n' ' ');" \
      "$(grep -h "masks identical on" "$f")"
  done
fi
