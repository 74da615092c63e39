// The self-attention operands' producer: RMSNorm + RoPE of q and k (and the copy of v) from the
// token-major projections into the attention's tile order, with the tile statistics the selector
// scores from, in one pass over the rows (launched from dit_kernels.cu).
//
// Algorithm: one CTA per (tile of a reference layout, batch, tensor), one thread per 16-byte chunk
// of a token row (8 channels of one head: heads * head_dim / 8 threads). The CTA walks the tile's
// valid slots in order, kTileRows tokens at a time: each thread loads its chunk of those rows
// (the next rows are prefetched into L2 meanwhile), each row's sum of squares is reduced over the
// CTA (warp shuffles, then one thread a row over the warps in order), and every thread normalises,
// rotates (the RoPE pairs 2i, 2i+1 lie in one chunk), rounds to bf16 and stores its chunk at the
// token's slot in its head's own layout (`token_slot`, so heads may have different tile shapes).
// For the heads whose layout is the reference one (`stat_heads`), the thread also keeps sum / max /
// min of the rounded values of its 8 channels in registers, over the slots in order as
// compute_tile_stats does, and writes mean (sum * (1 / valid)), max and min (where asked) at the
// end: bit for bit what the selector's statistics pass computes from the output (it too starts the
// sums at 0 and max / min at -inf / +inf, so compute_tile_stats, which starts from slot 0, can
// differ in the sign of a zero mean and in whether a NaN shows in max / min; a NaN always reaches
// the mean).
// Every tile of a layout holds a token (valid > 0). The selector then takes these statistics
// (GpuTileStatsInput) instead of reading q and k a second time.
// Layout: x token-major [B * N, H * D] bf16; dst [B, H, dst_tokens, D] bf16 at row
// token_slot[h * N + token]; statistics [B, H, stat_tiles, D] f32.
// Sync: two __syncthreads per kTileRows tokens (the row reduction); no inter-CTA communication.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/dit_launch.hpp"
#include "cuda/kernels/chunk_ops.cuh"

namespace veda::dit_cuda::kernels {

inline constexpr int kTileRows = 8;  // token rows reduced together (and loads in flight a thread)

__global__ void __launch_bounds__(kTileProducerMaxThreads)
    tile_producer_kernel(const __grid_constant__ TileProducerParams p) {
  __shared__ float partial[kTileProducerMaxThreads / 32][kTileRows];
  __shared__ float rstd_row[kTileRows];
  const TileProducerTensor& t = p.t[blockIdx.z];
  const int tile = blockIdx.x;
  const int64_t b = blockIdx.y;
  const int chunks_per_head = p.head_dim / 8, row_chunks = p.heads * chunks_per_head;
  const int c = threadIdx.x, lane = c & 31, warp = c >> 5;
  const bool live = c < row_chunks;
  const int h = live ? c / chunks_per_head : 0, d0 = (c % chunks_per_head) * 8;
  const bool stats = t.mean != nullptr && live && p.stat_heads[h] != 0;

  float sum[8], hi[8], lo[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) sum[e] = 0.f, hi[e] = -INFINITY, lo[e] = INFINITY;
  // Read per row (L1 hits) rather than held: 8 registers fewer, no spills.
  const float4* weight =
      t.weight ? reinterpret_cast<const float4*>(t.weight + h * p.head_dim + d0) : nullptr;
  const int valid = p.tile_valid[tile];
  const int32_t* slots = p.tile_slots + int64_t(tile) * p.volume;
  const uint4* xr = reinterpret_cast<const uint4*>(t.x) + b * p.tokens * row_chunks + c;
  uint4* dst =
      reinterpret_cast<uint4*>(t.dst) + (b * p.heads + h) * p.dst_tokens * chunks_per_head + d0 / 8;
  const int32_t* head_slot = p.token_slot + int64_t(h) * p.tokens;
  const int half = p.head_dim / 2;

  for (int s0 = 0; s0 < valid; s0 += kTileRows) {
    const int n = min(kTileRows, valid - s0);
    int token[kTileRows];
    uint4 raw[kTileRows];
#pragma unroll
    for (int u = 0; u < kTileRows; ++u) token[u] = __ldg(slots + s0 + min(u, n - 1));
#pragma unroll
    for (int u = 0; u < kTileRows; ++u)
      raw[u] = live ? __ldcs(xr + int64_t(token[u]) * row_chunks) : make_uint4(0, 0, 0, 0);
    // The next rows into L2 while these are used: one prefetch per 128-byte line.
    if (live && (c & 7) == 0)
      for (int u = s0 + kTileRows; u < min(valid, s0 + 2 * kTileRows); ++u)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(xr + int64_t(__ldg(slots + u)) * row_chunks));

    if (t.weight) {
      float ss[kTileRows];
#pragma unroll
      for (int u = 0; u < kTileRows; ++u) {
        float f[8];
        cuda::ChunkOps<__nv_bfloat16>::to_float(raw[u], f);
        ss[u] = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) ss[u] = fmaf(f[e], f[e], ss[u]);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ss[u] += __shfl_xor_sync(0xffffffffu, ss[u], o);
      }
      if (lane == 0)
#pragma unroll
        for (int u = 0; u < kTileRows; ++u) partial[warp][u] = ss[u];
      __syncthreads();
      if (c < kTileRows) {
        float total = 0.f;
        for (int i = 0; i < int(blockDim.x >> 5); ++i) total += partial[i][c];
        rstd_row[c] = rsqrtf(total / float(p.heads * p.head_dim) + p.eps);
      }
      __syncthreads();
    }

#pragma unroll
    for (int u = 0; u < kTileRows; ++u) {
      if (u >= n || !live) break;
      float f[8];
      cuda::ChunkOps<__nv_bfloat16>::to_float(raw[u], f);
      if (weight) {
        const float r = rstd_row[u];
        const float4 wa = __ldg(weight), wb = __ldg(weight + 1);
        const float w[8] = {wa.x, wa.y, wa.z, wa.w, wb.x, wb.y, wb.z, wb.w};
#pragma unroll
        for (int e = 0; e < 8; ++e) f[e] *= r * w[e];
      }
      if (t.rope) {
        const float4* cs =
            reinterpret_cast<const float4*>(p.rope + int64_t(token[u]) * half + d0 / 2);
        const float4 a = __ldg(cs), bcs = __ldg(cs + 1);
        const float cos_sin[8] = {a.x, a.y, a.z, a.w, bcs.x, bcs.y, bcs.z, bcs.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float x1 = f[2 * j], x2 = f[2 * j + 1], cv = cos_sin[2 * j],
                      sv = cos_sin[2 * j + 1];
          f[2 * j] = x1 * cv - x2 * sv;
          f[2 * j + 1] = x1 * sv + x2 * cv;
        }
      }
      uint32_t packed[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const __nv_bfloat162 v = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
        packed[j] = *reinterpret_cast<const uint32_t*>(&v);
      }
      const uint4 out = make_uint4(packed[0], packed[1], packed[2], packed[3]);
      dst[int64_t(__ldg(head_slot + token[u])) * chunks_per_head] = out;
      if (stats) {
        // The statistics of what the attention will read.
        cuda::ChunkOps<__nv_bfloat16>::to_float(out, f);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          sum[e] += f[e];
          hi[e] = fmaxf(hi[e], f[e]);
          lo[e] = fminf(lo[e], f[e]);
        }
      }
    }
  }
  if (!stats) return;
  const float inv = 1.0f / float(valid);
  const int64_t at = ((b * p.heads + h) * p.stat_tiles + tile) * p.head_dim + d0;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    reinterpret_cast<float4*>(t.mean + at)[i] = make_float4(
        sum[4 * i] * inv, sum[4 * i + 1] * inv, sum[4 * i + 2] * inv, sum[4 * i + 3] * inv);
    if (!t.max) continue;  // the selector reads no maxima and minima of this tensor
    reinterpret_cast<float4*>(t.max + at)[i] =
        make_float4(hi[4 * i], hi[4 * i + 1], hi[4 * i + 2], hi[4 * i + 3]);
    reinterpret_cast<float4*>(t.min + at)[i] =
        make_float4(lo[4 * i], lo[4 * i + 1], lo[4 * i + 2], lo[4 * i + 3]);
  }
}

}  // namespace veda::dit_cuda::kernels
