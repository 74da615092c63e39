#!/usr/bin/env python3
"""The #5 done-when yardstick on the GPU machine: one Wan2.1-14B 720p block's GEMMs with
torch.matmul (cuBLAS, bf16) plus its self- and cross-attention with F.scaled_dot_product_attention
on the cuDNN backend, timed in this run, against Veda's dense per-layer time from
`veda bench dit --json`. Done when Veda's dense layer <= 1.25 x (GEMMs + cuDNN attention).
PyTorch is a yardstick here, never part of Veda.

Usage (device): python3 scripts/dit_floor_torch.py --bench-json OUT/bench_14b.json [--json OUT]
Timing: warm-up, then the median of --runs runs, each timed with CUDA events (as the veda bench).
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from compare_torch import time_cuda  # (median, min) ms of CUDA-event timed runs after a warm-up

# wan2.1-14b-720p, batch 1: grid 21x45x80 = 75,600 video tokens, 512 text tokens.
TOKENS, TEXT, DIM, FFN, HEADS, HEAD_DIM = 75_600, 512, 5120, 13824, 40, 128


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-json", required=True, help="veda bench dit --json output (14B)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}", flush=True)
    bf = torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, device=dev, dtype=bf, generator=gen)

    # The block's linears (rows, in, out, count), as in src/cuda/dit_cuda.cpp: self-attention
    # q, k, v, out; cross-attention q and out over the video, k and v over the text; FFN.
    gemms = [("attn1 q/k/v/out", TOKENS, DIM, DIM, 4), ("attn2 q/out", TOKENS, DIM, DIM, 2),
             ("attn2 k/v (text)", TEXT, DIM, DIM, 2), ("ffn in", TOKENS, DIM, FFN, 1),
             ("ffn out", TOKENS, FFN, DIM, 1)]
    rows = {}
    gemm_ms = 0.0
    for name, m, k, n, count in gemms:
        x, w = rand(m, k), rand(n, k)  # nn.Linear weight [out, in]
        ms, _ = time_cuda(lambda: torch.matmul(x, w.t()), args.warmup, args.runs)
        tflops = 2.0 * m * k * n / ms / 1e9
        print(f"  GEMM {name}: [{m} x {k}] x [{k} x {n}] {ms:.3f} ms x {count} "
              f"({tflops:.0f} TFLOP/s)", flush=True)
        rows[name] = ms * count
        gemm_ms += ms * count
        del x, w

    q, k, v = (rand(1, HEADS, TOKENS, HEAD_DIM) for _ in range(3))
    ck, cv = rand(1, HEADS, TEXT, HEAD_DIM), rand(1, HEADS, TEXT, HEAD_DIM)
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        self_ms, _ = time_cuda(lambda: F.scaled_dot_product_attention(q, k, v), args.warmup,
                               args.runs)
        cross_ms, _ = time_cuda(lambda: F.scaled_dot_product_attention(q, ck, cv), args.warmup,
                                args.runs)
    flops_self = 4.0 * HEADS * TOKENS * TOKENS * HEAD_DIM
    print(f"  cuDNN SDPA self-attention 1x{HEADS}x{TOKENS}x{HEAD_DIM}: {self_ms:.2f} ms "
          f"({flops_self / self_ms / 1e9:.0f} TFLOP/s)")
    print(f"  cuDNN SDPA cross-attention (text {TEXT}): {cross_ms:.3f} ms")
    floor_ms = gemm_ms + self_ms + cross_ms
    print(f"floor per layer (GEMMs {gemm_ms:.2f} + self {self_ms:.2f} + cross {cross_ms:.3f}): "
          f"{floor_ms:.2f} ms")

    result = {"device": torch.cuda.get_device_name(0), "gemm_ms": rows, "gemm_total_ms": gemm_ms,
              "cudnn_self_ms": self_ms, "cudnn_cross_ms": cross_ms, "floor_ms": floor_ms}
    if not os.path.exists(args.bench_json):
        print(f"{args.bench_json} missing (did `veda bench dit` fail?): floor only")
    else:
        with open(args.bench_json) as f:
            result.update(compare(json.load(f), floor_ms, self_ms, gemm_ms))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def compare(bench, floor_ms, self_ms, gemm_ms):
    """Veda's dense per-layer time from the bench JSON against the floor; prints the ratio."""
    layers = bench["layers_run"]
    dense = bench["modes"]["dense"]
    veda_layer = dense["total_ms"] / layers
    per = {part: dense[f"{part}_ms"] / layers for part in
           ("self_attention", "cross_attention", "gemm", "other")}
    print(f"veda dense per layer ({bench['device']}, {layers} layers run; embedding and output "
          f"counted in): {veda_layer:.2f} ms = self-attention {per['self_attention']:.2f} + cross "
          f"{per['cross_attention']:.3f} + GEMMs {per['gemm']:.2f} + other {per['other']:.2f}")
    ratio = veda_layer / floor_ms
    print(f"ratio veda dense / (GEMMs + cuDNN attention) = {ratio:.3f} "
          f"({'within' if ratio <= 1.25 else 'OVER'} the 1.25x target); per part: self-attention "
          f"{per['self_attention'] / self_ms:.2f}x, GEMMs {per['gemm'] / gemm_ms:.2f}x")
    return {"veda_dense_layer_ms": veda_layer, "ratio": ratio}


if __name__ == "__main__":
    main()
