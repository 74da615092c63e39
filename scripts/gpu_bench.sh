#!/usr/bin/env bash
# Device side: build, GPU tests, then the side-by-side comparison (veda vs cuDNN SDPA vs
# FlexAttention, scripts/compare_torch.py) and the B=2 scaling check. Logs under $OUT.
# Usage: scripts/gpu_bench.sh [--no-tests] [--no-flex]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/veda-out}; mkdir -p "$OUT"
tests=1; flex=""
for a in "$@"; do
  case "$a" in --no-tests) tests=0 ;; --no-flex) flex="--no-flex" ;; esac
done
bash scripts/gpu_check.sh || exit 1
if [ $tests = 1 ]; then
  ./build-gpu/tests/test_gpu --gtest_brief=1 > "$OUT/test.log" 2>&1; echo "test_gpu rc=$?"
  grep -E "PASSED|FAILED|Failure" "$OUT/test.log" | head -20
  grep -q "FAILED" "$OUT/test.log" && { grep -E "FAIL" "$OUT/test.log" | head -20; exit 1; }
  bash scripts/gpu_sanitize.sh
fi
export PYTHONUNBUFFERED=1
python3 scripts/compare_torch.py --veda build-gpu/veda --verify $flex --json "$OUT/compare.json" 2>&1 | tee "$OUT/compare.log" | grep -v '^{'
for b in 1 2; do
  ./build-gpu/veda bench attention --preset wan14b-720p --batch $b --density 1.0,0.05,0.03 --runs 20
done 2>&1 | tee "$OUT/batch.log"
./build-gpu/veda bench attention --preset wan1.3b-480p --mask select --density 0.1,0.05,0.03 --verify 2>&1 | tee "$OUT/select.log" | grep -v "^verify"
# 128-token tiles (4x4x8): two 64-row blocks share each key list, half the K/V bytes per FLOP.
./build-gpu/veda bench attention --preset wan14b-720p --tile 4x4x8 --density 0.05,0.03 --runs 10 2>&1 | tee "$OUT/tile128.log"
# The mma.sync kernel on the same card (set VEDA_BENCH_SM80=1).
if [ "${VEDA_BENCH_SM80:-0}" = 1 ]; then
  VEDA_ATTN_KERNEL=sm80 ./build-gpu/veda bench attention --preset wan14b-720p --runs 10 2>&1 | tee "$OUT/sm80.log"
fi
./build-gpu/veda bench attention --preset wan1.3b-480p --head-dim 64 --density 1.0,0.05 --runs 10 --verify 2>&1 | grep -v "^verify" | tee "$OUT/d64.log"
