#!/usr/bin/env bash
# Device side: every GPU check in one call (one machine start): the attention kernel
# (scripts/gpu_kernel.sh --compare: tests, sanitizers, benchmarks, cuDNN/FlexAttention side by side),
# the DiT runtime (scripts/gpu_dit.sh: CUDA tests, forward, bench dit, generate --device cuda,
# the 14B GEMM + cuDNN yardstick) and the GPU selection (scripts/gpu_selection_check.sh).
# Each part's logs come back as one archive in $OUT. About 8 minutes on an H100.
# Usage (run tool, carry [".deps", ".tinywan"]): scripts/gpu_all.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/veda-out}; mkdir -p "$OUT"
SECONDS=0
echo "== attention kernel"
OUT="$OUT" bash scripts/gpu_kernel.sh --compare --no-variants 2>&1 |
  grep -vE "^\s*$|^ws \| 1   \| 12" | tail -40
echo "== DiT runtime (t=${SECONDS}s)"
rm -rf /tmp/veda-dit && mkdir -p /tmp/veda-dit
OUT=/tmp/veda-dit bash scripts/gpu_dit.sh 2>&1 |
  grep -E "PASSED|FAILED|rel L2|relative L2|^\| (dense|veda)|end-to-end|^generate|PSNR|psnr|SSIM|total|ratio|floor|rc=" | head -40
tar czf "$OUT/dit.tar.gz" -C /tmp/veda-dit .
echo "== GPU selection (t=${SECONDS}s)"
rm -rf /tmp/veda-sel && mkdir -p /tmp/veda-sel
OUT=/tmp/veda-sel bash scripts/gpu_selection_check.sh 2>&1 | sed -n '/## Selection check summary/,$p'
tar czf "$OUT/sel.tar.gz" -C /tmp/veda-sel .
echo "total ${SECONDS}s"
