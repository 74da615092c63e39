#!/usr/bin/env bash
# Device side: build veda + test_gpu (sm_90a), run the CUDA DiT tests (golden tiny-wan from
# .tinywan/tinywan.tar.xz, carried; the generation tests compare against the CPU), the CLI forward,
# `veda bench dit` for both presets, `veda generate --device cuda` on the tiny model (dense, veda
# with its profile at 0.05/0.1/0.2, PSNR/SSIM vs dense) and the #5 done-when yardstick: 14B dense
# per layer vs cuBLAS GEMMs + cuDNN SDPA through PyTorch (scripts/dit_floor_torch.py).
# Usage (run tool, carry [".deps", ".tinywan"]): scripts/gpu_dit.sh [14B layers (4)] [14B runs (3)]
# Budgeted for about 8 minutes on an H100 (not yet timed there); every step has a timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/veda-out}; mkdir -p "$OUT"
L14=${1:-4}
R14=${2:-3}
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader
mkdir -p /tmp/tinywan
tar xJf .tinywan/tinywan.tar.xz -C /tmp/tinywan 2>/dev/null ||
  python3 -c "import tarfile; tarfile.open('.tinywan/tinywan.tar.xz').extractall('/tmp/tinywan')"
export VEDA_TINY_WAN=/tmp/tinywan
SECONDS=0
veda_configure build-gpu -DVEDA_CUDA_ARCHS=90a > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
cmake --build build-gpu -j16 --target test_gpu veda_cli > "$OUT/build.log" 2>&1 ||
  { grep -E "error" -A3 "$OUT/build.log" | head -60; exit 1; }
echo "build ok in ${SECONDS} s"
timeout 180 ./build-gpu/tests/test_gpu --gtest_filter='WanCuda*' 2>&1 | tee "$OUT/test_dit.log"
timeout 30 ./build-gpu/veda forward --device cuda --model /tmp/tinywan \
  --input /tmp/tinywan/golden.safetensors -o /tmp/o.safetensors 2>&1 | tee "$OUT/forward.log"
echo "t=${SECONDS}s"
timeout 50 ./build-gpu/veda bench dit --preset wan2.1-1.3b-480p --random-weights \
  --json "$OUT/bench_13b.json" 2>&1 | tee "$OUT/bench_13b.log"
echo "t=${SECONDS}s"
timeout 150 ./build-gpu/veda bench dit --preset wan2.1-14b-720p --random-weights --layers "$L14" --runs "$R14" \
  --json "$OUT/bench_14b.json" 2>&1 | tee "$OUT/bench_14b.log"
echo "t=${SECONDS}s"

# Generation on the GPU: the tiny model at the size of docs/dit.md's quality table (prompt 1,
# seed 7, 16 frames 64x112, 20 UniPC steps, shift 3, guidance 1). Wall times from the CLI.
GEN="$OUT/gen"; mkdir -p "$GEN"
gen() {  # gen NAME [extra args...]
  local name=$1; shift
  timeout 90 ./build-gpu/veda generate --device cuda --model /tmp/tinywan --prompt-index 1 \
    --seed 7 --steps 20 --guidance 1 --frames 16 --height 64 --width 112 -o "$GEN/$name" "$@" \
    > "$GEN/$name.log" 2>&1
  echo "generate $name: rc=$?"
  grep -E "^(generate|total|time|veda attention|vs )|rror" "$GEN/$name.log"
}
gen dense --attention dense
for d in 0.05 0.1 0.2; do
  gen "veda_$d" --attention veda --density "$d" --profile data/profiles/tiny-wan-d0.05.json \
    --compare-to "$GEN/dense"
done
# Keep the outputs small: GIF, frames 0/5/10/15, generation.json.
for dir in "$GEN"/*/; do
  rm -f "$dir/video.safetensors"
  find "$dir/frames" -name 'frame_*.png' ! -name 'frame_000[05].png' ! -name 'frame_001[05].png' \
    -delete 2>/dev/null
done
echo "t=${SECONDS}s"

# #5 done-when: dense 14B forward within 1.25x of (GEMMs + cuDNN attention), same shapes, this run.
export PYTHONUNBUFFERED=1
timeout 180 python3 scripts/dit_floor_torch.py --bench-json "$OUT/bench_14b.json" \
  --json "$OUT/dit_floor.json" 2>&1 | tee "$OUT/dit_floor.log"
echo "t=${SECONDS}s"
