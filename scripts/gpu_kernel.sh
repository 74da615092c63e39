#!/usr/bin/env bash
# Device side: one call for a kernel iteration. Build (sm_90a), the attention GPU tests,
# sanitizers on small shapes, then `veda bench attention` for each kernel variant side by side
# (default = warp-specialised; sm90 = the one-warpgroup kernel), 64- and
# 128-token tiles, optionally an ncu profile and the PyTorch yardstick (scripts/compare_torch.py:
# cuDNN dense + FlexAttention in the same run). All logs end up in $OUT/logs.tar.gz.
# --base REV also builds git revision REV and times it against the working tree in the same call
# (token order twice, alternating, then 64- and 128-token tiles): every ratio from one card.
# Usage: scripts/gpu_kernel.sh [--quick] [--ncu] [--compare] [--no-variants] [--base REV]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/veda-out}; mkdir -p "$OUT"
LOG=/tmp/veda-logs; rm -rf "$LOG"; mkdir -p "$LOG"
quick=0; ncu=0; compare=0; variants=1; base_rev=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;; --ncu) ncu=1 ;; --compare) compare=1 ;; --no-variants) variants=0 ;;
    --base) base_rev=$2; shift ;;
  esac
  shift
done
if [ -n "$base_rev" ]; then  # built in the background while the tests run
  rm -rf /tmp/veda-base && mkdir -p /tmp/veda-base && git archive "$base_rev" | tar -x -C /tmp/veda-base || exit 1
fi
finish() { tar czf "$OUT/logs.tar.gz" -C "$LOG" . ; echo "total ${SECONDS}s"; }
trap finish EXIT
SECONDS=0
OUT=$LOG bash scripts/gpu_check.sh || exit 1
# ptxas reports wgmma serialization (C7511, C7512, C7520: "Potential Performance Loss") only with -v:
# a silent 30% loss when it appears.
nvcc -std=c++20 -O3 -DNDEBUG --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -Iinclude -Isrc \
  -c src/cuda/attention_kernels.cu -o /tmp/ak.o -Xptxas -v 2>&1 | grep -c "Potential Performance Loss" | xargs echo "ptxas wgmma serialization warnings (C7511/C7512/C7520):"
echo "built at ${SECONDS}s"
if [ -n "$base_rev" ]; then
  ( source scripts/gpu_env.sh; _veda_root=/tmp/veda-base
    veda_configure /tmp/veda-base/b -DVEDA_CUDA_ARCHS=90a && nice cmake --build /tmp/veda-base/b -j8 --target veda_cli
  ) > "$LOG/base_build.log" 2>&1 &
  base_pid=$!
fi
filter='Shapes/AttentionGpu.*:AttentionGpuLayouts.*:AttentionGpuErrors.*'
[ $quick = 1 ] && filter='Shapes/AttentionGpu.*d128_bf16*:Shapes/AttentionGpu.*g16x16x28*:AttentionGpuLayouts.*'
timeout 330 ./build-gpu/tests/test_gpu --gtest_filter="$filter" > "$LOG/test.log" 2>&1
echo "attention tests rc=$? at ${SECONDS}s: $(grep -cE '^\[       OK' "$LOG/test.log") ok, $(grep -cE '^\[  FAILED' "$LOG/test.log") failed"
grep -E "^\[  FAILED|Failure|Expected|timeout" "$LOG/test.log" | head -12
OUT=$LOG timeout 480 bash scripts/gpu_sanitize.sh \
  "Shapes/AttentionGpu.MatchesReference/g16x16x28_d64_bf16_b1_dens5_empty:AttentionGpuLayouts.AllRowsEmpty:AttentionGpuLayouts.PerHeadShapes"
grep -m1 -A12 "Race reported\|Error:" "$LOG/sanitize_racecheck.log" | head -14
echo "sanitizers done at ${SECONDS}s"
bench() {  # name, env..., then bench args after --
  local name=$1; shift; local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  timeout 120 env "${envs[@]}" ./build-gpu/veda bench attention "$@" 2>&1 | grep -v "^verify" | grep "^| [0-9]" | sed "s/^/$name /" | tee -a "$LOG/bench.log"
}
kernels=("ws VEDA_ATTN_KERNEL=default")
[ $variants = 1 ] && kernels+=("sm90 VEDA_ATTN_KERNEL=sm90")
for kv in "${kernels[@]}"; do
  set -- $kv
  bench $1 $2 -- --preset wan14b-720p --density 1.0,0.1,0.05,0.03 --runs 10 --verify
  [ $1 = sm90 ] && continue
  bench $1 $2 -- --preset wan1.3b-480p --density 1.0,0.05 --runs 10 --verify
  bench $1 $2 -- --preset wan14b-720p --tile 4x4x8 --density 1.0,0.05,0.03 --runs 10 --verify
  bench $1 $2 -- --preset wan14b-720p --tile tokens --density 1.0,0.05 --runs 10 --verify
  # 60 tokens in 64 slots: tiles 21x45x80 with no ragged edge (docs/perf-notes.md, next steps).
  bench $1 $2 -- --preset wan14b-720p --tile 3x5x4 --density 1.0,0.05,0.03 --runs 10 --verify
  bench $1 $2 -- --preset wan1.3b-480p --tile tokens --density 1.0 --runs 10 --verify
  bench $1 $2 -- --preset wan1.3b-480p --mask select --density 0.05 --runs 10
  bench $1 $2 -- --preset wan14b-720p --batch 2 --density 0.05 --runs 10
done
echo "bench done at ${SECONDS}s"
if [ -n "$base_rev" ]; then
  wait $base_pid || { echo "base build failed"; tail -5 "$LOG/base_build.log"; }
  base_bin=/tmp/veda-base/b/veda
  versus() {  # label, bench args: base and working tree back to back
    for v in base new; do
      bin=./build-gpu/veda; [ $v = base ] && bin=$base_bin
      timeout 120 $bin bench attention "${@:2}" --runs 10 2>&1 | grep "^| [0-9]" | sed "s/^/$v $1 /" | tee -a "$LOG/versus.log"
    done
  }
  for round in 1 2; do versus "tokens$round" --preset wan14b-720p --tile tokens --density 1.0,0.05,0.03; done
  versus 13b --preset wan1.3b-480p --tile tokens --density 1.0,0.05
  versus 4x4x4 --preset wan14b-720p --tile 4x4x4 --density 0.05
  versus 3x5x4 --preset wan14b-720p --tile 3x5x4 --density 0.05
  versus 4x4x8 --preset wan14b-720p --tile 4x4x8 --density 1.0,0.05
  echo "base $base_rev vs working tree done at ${SECONDS}s"
fi
if [ $ncu = 1 ]; then
  for t in 4x4x4 4x4x8; do
    timeout 150 ncu --launch-skip 2 --launch-count 1 -k regex:attention_fwd \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section ComputeWorkloadAnalysis \
      ./build-gpu/veda bench attention --preset wan14b-720p --tile $t --density 0.05 --warmup 2 --runs 1 > "$LOG/ncu_$t.txt" 2>&1
    echo "ncu $t rc=$?"; grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Hit|L1/TEX Hit|DRAM Throughput|L2 Cache Throughput|Issue Slots Busy|No Eligible|Executed Ipc" "$LOG/ncu_$t.txt" | head -14
  done
fi
if [ $compare = 1 ]; then
  export PYTHONUNBUFFERED=1
  timeout 330 python3 scripts/compare_torch.py --veda build-gpu/veda --tiles 4x4x4,4x4x8,3x5x4,tokens --runs 10 --json "$LOG/compare.json" 2>&1 | tee "$LOG/compare.log" | grep -v '^{'
fi
