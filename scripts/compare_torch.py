#!/usr/bin/env python3
"""Side-by-side timings on the GPU machine: Veda's CUDA attention (through `veda bench attention
--json`) against PyTorch SDPA with the cuDNN backend (dense) and FlexAttention with the equivalent
block mask (128-token blocks, random kv blocks at the same density), in one run on one card, so
the figures are ratios measured side by side. PyTorch is a yardstick here, never part of Veda.

Usage (device): python3 scripts/compare_torch.py --veda build-gpu/veda [--presets ...] [--json OUT]
Timing: warm-up, then the median of --runs runs, each timed with CUDA events (as the veda bench).
--rounds N measures everything N times in turn (Veda, cuDNN, FlexAttention, again) and reports
each figure's median over the rounds: a single pass favours whichever runs on the card just after
an idle spell (its power-capped clock has not settled yet; up to 7% either way at wan1.3b dense).
"""
import argparse
import json
import math
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

PRESETS = {
    "wan1.3b-480p": dict(heads=12, grid=(21, 30, 52)),
    "wan14b-720p": dict(heads=40, grid=(21, 45, 80)),
}


def time_cuda(fn, warmup, runs, warmup_seconds):
    """Warm-up: at least `warmup` runs and `warmup_seconds` (as `veda bench attention`), so that
    every timed figure sees the GPU's sustained, power-capped clocks."""
    start = time.monotonic()
    i = 0
    while i < warmup or time.monotonic() - start < warmup_seconds:
        fn()
        if i + 1 >= warmup:
            torch.cuda.synchronize()
        i += 1
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    for i in range(runs):
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    ms = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    return median(ms)


def median(xs, key=None):
    """The upper middle of an even count: a measured time, as `veda bench` reports (with `key`,
    the element whose key is the median)."""
    return sorted(xs, key=key)[len(xs) // 2]


def random_block_mask(batch, heads, nblocks, density, device, seed):
    """kv_num_blocks [B,H,Q], kv_indices [B,H,Q,K]: k = clamp(round(density * n), 1, n) random
    distinct kv blocks per query block (the first k of a random permutation, sorted)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    k = max(1, min(nblocks, round(density * nblocks)))
    scores = torch.rand(batch, heads, nblocks, nblocks, generator=g)
    idx = scores.argsort(dim=-1)[..., :k].sort(dim=-1).values
    full = torch.zeros(batch, heads, nblocks, nblocks, dtype=torch.int32)
    full[..., :k] = idx.to(torch.int32)
    num = torch.full((batch, heads, nblocks), k, dtype=torch.int32)
    return num.to(device), full.to(device), k


def run_veda(veda, preset, batch, densities, args, tile):
    cmd = [veda, "bench", "attention", "--preset", preset, "--batch", str(batch), "--density",
           ",".join(str(d) for d in densities), "--runs", str(args.runs), "--warmup",
           str(args.warmup), "--warmup-seconds", str(args.warmup_seconds), "--tile", tile, "--json"]
    if args.verify:
        cmd.append("--verify")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout, out.stderr, file=sys.stderr)
        raise SystemExit(f"veda bench failed: {' '.join(cmd)}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--veda", default="build-gpu/veda")
    ap.add_argument("--presets", default="wan1.3b-480p,wan14b-720p")
    ap.add_argument("--densities", default="1.0,0.10,0.05,0.03")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--warmup-seconds", type=float, default=1.0)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument("--tiles", default="4x4x4",
                    help="comma-separated Veda tile shapes (4x4x8: 128-token 3D tiles; tokens: token "
                         "order in 128-token blocks, Flex's own layout)")
    args = ap.parse_args()
    if args.rounds < 1 or args.runs < 1:
        ap.error("--rounds and --runs must be at least 1")
    tiles = args.tiles.split(",")
    densities = [float(d) for d in args.densities.split(",")]
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    print(f"device: {name}; torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}",
          flush=True)

    flex = None
    if not args.no_flex:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False)

    results = []
    for preset in args.presets.split(","):
        cfg = PRESETS[preset]
        t, h, w = cfg["grid"]
        n = t * h * w
        B, H, D = args.batch, cfg["heads"], args.head_dim
        torch.manual_seed(0)
        # Token order, unpadded for cuDNN; FlexAttention gets N rounded up to whole 128-blocks.
        q, k, v = (torch.empty(B, H, n, D, device=dev, dtype=torch.bfloat16).uniform_(-1.5, 1.5)
                   for _ in range(3))
        flops_dense = 4.0 * B * H * n * n * D
        n_pad = math.ceil(n / 128) * 128
        nb = n_pad // 128
        if flex is not None:
            qp, kp, vp = (torch.nn.functional.pad(x, (0, 0, 0, n_pad - n)) for x in (q, k, v))
            flex_fns = {}
            for density in densities:
                if density >= 1.0:
                    flex_fns[density] = (lambda: flex(qp, kp, vp), flops_dense)  # noqa: E731
                else:
                    num, idx, kb = random_block_mask(B, H, nb, density, dev, seed=int(density * 1000))
                    bm = BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=128)
                    flex_fns[density] = (lambda bm=bm: flex(qp, kp, vp, block_mask=bm),  # noqa: E731
                                         4.0 * B * H * n_pad * kb * 128 * D)
        # Every round times everything once; each figure below is its median over the rounds.
        veda_rounds, cudnn_rounds, flex_rounds = {}, [], {}
        for rnd in range(args.rounds):
            for tile in tiles:
                for r in run_veda(args.veda, preset, B, densities, args, tile):
                    veda_rounds.setdefault((tile, round(r["density_requested"], 4)), []).append(r)
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                ms = time_cuda(lambda: F.scaled_dot_product_attention(q, k, v),
                                  args.warmup, args.runs, args.warmup_seconds)
            cudnn_rounds.append(ms)
            print(f"{preset} round {rnd + 1}: cuDNN SDPA dense {ms:.3f} ms "
                  f"({flops_dense / ms / 1e9:.1f} TFLOP/s)", flush=True)
            if flex is not None:
                for density, (fn, _) in flex_fns.items():
                    ms = time_cuda(fn, args.warmup, args.runs, args.warmup_seconds)
                    flex_rounds.setdefault(density, []).append(ms)
        cudnn_ms = median(cudnn_rounds)

        for density in densities:
            base = dict(preset=preset, device=name, batch=B, heads=H, tokens=n, head_dim=D,
                        density=density, cudnn_dense_ms=cudnn_ms, rounds=args.rounds)
            if flex is not None:
                flex_ms = median(flex_rounds[density])
                base.update(flex_ms=flex_ms, flex_tflops=flex_fns[density][1] / flex_ms / 1e9)
            for tile in tiles:
                row = dict(base, tile=tile)
                vrs = veda_rounds.get((tile, round(density, 4)))
                if vrs:
                    vr = median(vrs, key=lambda r: r["ms_median"])
                    row.update(veda_ms=vr["ms_median"], veda_tflops=vr["tflops_actual"],
                               veda_dense_eq_tflops=vr["tflops_dense_equiv"],
                               veda_density=vr["density"], veda_kernel=vr["kernel"],
                               veda_verify=",".join(sorted({r["verify"] for r in vrs})))
                    row["speedup_vs_cudnn_dense"] = cudnn_ms / row["veda_ms"]
                    if "flex_ms" in row:
                        row["speedup_vs_flex"] = row["flex_ms"] / row["veda_ms"]
                results.append(row)
                print(json.dumps(row), flush=True)
        del q, k, v
        if flex is not None:
            del qp, kp, vp
        torch.cuda.empty_cache()

    print(f"\n| preset | B | density | tile | veda ms | veda TFLOP/s | flex ms | cuDNN dense ms | "
          f"cuDNN/veda | flex/veda | verify |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['preset']} | {r['batch']} | {r['density']} | {r['tile']} | {r.get('veda_ms', float('nan')):.3f} | "
              f"{r.get('veda_tflops', float('nan')):.1f} | {r.get('flex_ms', float('nan')):.3f} | "
              f"{r['cudnn_dense_ms']:.3f} | {r.get('speedup_vs_cudnn_dense', float('nan')):.2f}x | "
              f"{r.get('speedup_vs_flex', float('nan')):.2f}x | {r.get('veda_verify', '-')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
