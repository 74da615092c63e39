// Gather to tile order fused with tile statistics and scoring features.
//
// Algorithm: one thread per (tile, 16-byte chunk of a row). A row of D elements is C = D * elem /
// 16 chunks (a power of two <= 32), so a 256-thread CTA covers 256 / C tiles and the C lanes of a
// tile read one row's contiguous bytes together. Each thread walks its tile's valid slots in order
// (the token from the head's slot_token table, or the tile-order row itself), optionally stores the
// chunk to the tile-order copy, and keeps sum / max / min of its E = 16 / elem channels in
// registers: no shared memory, no barrier. It then writes mean / max / min (where asked: the
// top-k kernel rescores boundary tiles from them) and computes its channels of the scoring
// features (FeatureKind, weights folded in; NaN where not finite: selection_features.cuh),
// written as f32 rows for the f32 GEMM. The row norms are
// reduced over the tile's C lanes by shuffles (q: per row; k: one atomicMax of the warp's largest
// per (b, h)). For FP16x3 scoring the k features are then centred, and each row, scaled by a power
// of two, is written as fp16 hi and lo parts.
// The sums run over the slots in order, as compute_tile_stats does (means should match it bit for
// bit).
// Layout: x [B, H, rows, D]; x_tiled [B, H, max_tiles * volume, D] (padding slots written 0);
// stats [B, H, max_tiles, D] f32; features [B, H, max_tiles, width] f32 or
// [B, H, split_rows, 3 * width] fp16 (see GatherStatsParams).
// Tiles with no valid token (past the head's own tiles) get zero rows and features, and zero
// statistics where statistics are written.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>

#include "cuda/kernels/chunk_ops.cuh"
#include "cuda/kernels/selection_features.cuh"
#include "cuda/selection_launch.hpp"

namespace veda::cuda::sel {

inline constexpr int kStatsThreads = 256;

template <int E>
__device__ __forceinline__ void store_f32(float* dst, const float* v) {
#pragma unroll
  for (int i = 0; i < E / 4; ++i)
    reinterpret_cast<float4*>(dst)[i] =
        make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
}

template <int E>
__device__ __forceinline__ void store_f16(void* dst, const float* v) {
#pragma unroll
  for (int i = 0; i < E / 4; ++i) {
    const __half2 a = __floats2half2_rn(v[4 * i], v[4 * i + 1]);
    const __half2 b = __floats2half2_rn(v[4 * i + 2], v[4 * i + 3]);
    reinterpret_cast<uint2*>(dst)[i] =
        make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
  }
}

// Walks the valid slots of `tile` for this thread's chunk: sum / max / min (preset by the caller)
// when `want_stats`, and the tile-order copy (with zero padding) when p.x_tiled is set.
template <class T>
__device__ __forceinline__ void walk_tile(const GatherStatsParams& p, int64_t bh, int h, int tile,
                                          int chunk, int valid, bool want_stats, float* sum,
                                          float* mx, float* mn) {
  constexpr int E = ChunkOps<T>::kElems;
  const int C = p.head_dim / E;
  const uint4* src =
      reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + bh * p.rows * p.head_dim) + chunk;
  const int32_t* slots =
      p.slot_token ? p.slot_token + (int64_t(h) * p.max_tiles + tile) * p.volume : nullptr;
  const int64_t first = int64_t(tile) * p.volume;  // tile-order input: row of slot 0
  uint4* dst = p.x_tiled ? reinterpret_cast<uint4*>(p.x_tiled) +
                               (bh * p.max_tiles + tile) * p.volume * C + chunk
                         : nullptr;
  // kRowsInFlight rows loaded before any is used: with the tile-order store in the same loop the
  // compiler may not hoist a load above a store (they could alias), which left one load in flight.
  constexpr int kRowsInFlight = 8;
  for (int s0 = 0; s0 < valid; s0 += kRowsInFlight) {
    uint4 c[kRowsInFlight];
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u) {
      const int s = min(s0 + u, valid - 1);  // past the end: reload the last row, unused
      const int64_t r = slots ? int64_t(__ldg(slots + s)) : first + s;
      c[u] = __ldcs(src + r * C);  // read once: stream past L2
    }
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u) {
      if (s0 + u >= valid) break;
      if (dst) dst[int64_t(s0 + u) * C] = c[u];
      if (want_stats) {
        float f[E];
        ChunkOps<T>::to_float(c[u], f);
#pragma unroll
        for (int e = 0; e < E; ++e) {
          sum[e] += f[e];
          mx[e] = fmaxf(mx[e], f[e]);
          mn[e] = fminf(mn[e], f[e]);
        }
      }
    }
  }
  if (dst)
    for (int s = valid; s < p.volume; ++s) dst[int64_t(s) * C] = make_uint4(0, 0, 0, 0);
}

// Statistics of this thread's channels: mean (sum / valid as compute_tile_stats), max, min; all 0
// for an empty tile.
template <int E>
__device__ __forceinline__ void finish_stats(int valid, const float* sum, float* mean, float* hi,
                                             float* lo) {
  const float inv = valid > 0 ? 1.0f / float(valid) : 0.f;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    mean[e] = valid > 0 ? sum[e] * inv : 0.f;
    if (valid == 0) hi[e] = lo[e] = 0.f;
  }
}

// The statistics of this thread's channels: given by a producer for head h (a load; zeros for an
// empty tile; max / min only where written out or used), or walked from x (sum / max / min, then
// finish_stats; `live` false: a thread past the last tile, valid 0). `sum`, `hi`, `lo` preset.
template <class T>
__device__ __forceinline__ void tile_stats(const GatherStatsParams& p, int64_t bh, int h, int tile,
                                           int chunk, int valid, bool live, float* sum, float* mean,
                                           float* hi, float* lo) {
  constexpr int E = ChunkOps<T>::kElems;
  if (p.given_heads && p.given_heads[h]) {
    const int64_t at = (bh * p.max_tiles + tile) * p.head_dim + chunk * E;
    const bool extrema =
        valid > 0 && (uses_extrema(p.feature) || (p.stats_of_given && p.max != nullptr));
#pragma unroll
    for (int e = 0; e < E; ++e) {
      mean[e] = valid > 0 ? p.given.mean[at + e] : 0.f;
      hi[e] = extrema ? p.given.max[at + e] : 0.f;
      lo[e] = extrema ? p.given.min[at + e] : 0.f;
    }
    return;
  }
  if (live) walk_tile<T>(p, bh, h, tile, chunk, valid, true, sum, hi, lo);
  finish_stats<E>(valid, sum, mean, hi, lo);
}

template <class T>
__global__ void __launch_bounds__(kStatsThreads)
    gather_stats_kernel(const __grid_constant__ GatherStatsLaunch launch) {
  constexpr int E = ChunkOps<T>::kElems;
  const GatherStatsParams& p = launch.t[blockIdx.z % launch.tensors];
  const int h = blockIdx.y;
  const int64_t bh = int64_t(blockIdx.z / launch.tensors) * p.heads + h;
  const int D = p.head_dim, C = D / E;
  const int tile = blockIdx.x * (kStatsThreads / C) + threadIdx.x / C;
  const int chunk = threadIdx.x % C;
  // Threads past the last tile stay (valid 0) so that every lane joins the shuffles below.
  const bool live = tile < p.max_tiles;
  const int valid = live ? p.valid[int64_t(h) * p.max_tiles + tile] : 0;
  const bool want_stats = p.mean != nullptr || p.feature != FeatureKind::kNone;

  float sum[E], hi[E], lo[E], mean[E];
#pragma unroll
  for (int e = 0; e < E; ++e) sum[e] = 0.f, hi[e] = -INFINITY, lo[e] = INFINITY;
  if (!want_stats) {  // uniform: gather only
    if (live) walk_tile<T>(p, bh, h, tile, chunk, valid, false, sum, hi, lo);
    return;
  }
  // A thread past the last tile has valid 0: zero statistics, and it joins the shuffles below.
  tile_stats<T>(p, bh, h, tile, chunk, valid, live, sum, mean, hi, lo);
  const int64_t row = bh * p.max_tiles + tile;
  const int c0 = chunk * E;
  if (p.mean && live && (p.stats_of_given || !(p.given_heads && p.given_heads[h]))) {
    store_f32<E>(p.mean + row * D + c0, mean);
    if (p.max) {
      store_f32<E>(p.max + row * D + c0, hi);
      store_f32<E>(p.min + row * D + c0, lo);
    }
  }
  if (p.feature == FeatureKind::kNone) return;

  float f[4][E];
  tile_features<E>(p.feature, p.q_scale, p.head_weights, h, mean, hi, lo, f);
  const int planes = p.width / D;
  const int64_t at = row * p.width + c0;
  float sq = 0.f, sq_centred = 0.f;
  uint32_t amax = 0;  // bits of the largest |centred feature| (a NaN wins)
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (k >= planes) break;
#pragma unroll
    for (int e = 0; e < E; ++e) sq = fmaf(f[k][e], f[k][e], sq);
    if (p.features && live) store_f32<E>(p.features + at + k * D, f[k]);
    if (p.center && valid > 0) {
      const float* c = p.center + bh * p.width + k * D + c0;
#pragma unroll
      for (int e = 0; e < E; ++e) f[k][e] = nan_if_not_finite(f[k][e] - c[e]);
    }
#pragma unroll
    for (int e = 0; e < E; ++e) {
      sq_centred = fmaf(f[k][e], f[k][e], sq_centred);
      amax = max(amax, __float_as_uint(fabsf(f[k][e])));
    }
  }

  // Row norms (uncentred; centred for FP16x3 k) and the largest |value| over the C lanes.
  for (int off = C / 2; off > 0; off >>= 1) {
    sq += __shfl_xor_sync(0xffffffffu, sq, off);
    sq_centred += __shfl_xor_sync(0xffffffffu, sq_centred, off);
    amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  }
  const float norm = sqrtf(sq);
  if (p.norm && live && chunk == 0) p.norm[row] = norm;
  // Per (b, h) maxima over the bits: norms are >= 0 and a NaN (any sign) wins.
  auto head_max = [&](unsigned* dst, float v) {
    const unsigned m = __reduce_max_sync(0xffffffffu, live ? __float_as_uint(v) : 0u);
    if ((threadIdx.x & 31) == 0) atomicMax(dst + bh, m);
  };
  if (p.norm_max) head_max(p.norm_max, norm);
  if (p.norm_max_centred) head_max(p.norm_max_centred, sqrtf(sq_centred));
  if (!p.features16) return;  // uniform: f32 scoring

  // Scale the row by 2^-a so that its largest |value| lies in [2^14, 2^15): hi cannot overflow
  // fp16, and fp16's subnormals cost at most 2^-25 absolute, 2^-39 of the row's largest value
  // (a is capped so that 2^a stays a normal float).
  int ex = 0;
  frexpf(__uint_as_float(amax), &ex);  // |value| < 2^ex
  const int shift = min(15 - ex, 126);
  if (live && chunk == 0) p.row_scale[row] = ldexpf(1.f, -shift);
  if (!live) return;
  __half* dst =
      static_cast<__half*>(p.features16) + (bh * p.split_rows + tile) * 3 * p.width + c0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (k >= planes) break;
    float part_hi[E], part_lo[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float x = ldexpf(f[k][e], shift);
      part_hi[e] = __half2float(__float2half_rn(x));
      part_lo[e] = x - part_hi[e];  // exact in f32; rounded to fp16 by the store
    }
    __half* at16 = dst + k * D;  // slot 2 holds hi in both layouts
    store_f16<E>(at16 + 2 * p.width, part_hi);
    if (p.lo_slot == 1) {  // branches, not a pointer select: the parts stay in registers
      store_f16<E>(at16, part_hi);
      store_f16<E>(at16 + p.width, part_lo);
    } else {
      store_f16<E>(at16, part_lo);
      store_f16<E>(at16 + p.width, part_hi);
    }
  }
}

// Centre of the k features for FP16x3 scoring: center[b, h] = the mean of the (uncentred) features
// of S evenly spaced tiles of head h (S = 256 / C, at most the head's tiles). Any centre keeps each
// row's ranking (it moves row i by qf_i . c); one near the keys' common part keeps the centred
// features, and so the FP16x3 error bound, small. One CTA per (h, b); the S feature rows meet in
// shared memory and are summed in a fixed order, so the centre is deterministic.
template <class T>
__global__ void __launch_bounds__(kStatsThreads)
    center_kernel(const __grid_constant__ GatherStatsParams p, const HeadSelectInfo* info,
                  float* center) {
  constexpr int E = ChunkOps<T>::kElems;
  __shared__ float s_feat[4 * kStatsThreads * E];  // [S][width]: S * width = 256 * planes * E
  const int h = blockIdx.x;
  const int64_t bh = int64_t(blockIdx.y) * p.heads + h;
  const int D = p.head_dim, C = D / E, W = p.width;
  const int n = info[h].n;
  const int S = min(kStatsThreads / C, n);
  const int s = threadIdx.x / C, chunk = threadIdx.x % C;
  if (s < S) {
    const int tile = int((2 * int64_t(s) + 1) * n / (2 * S));
    const int valid = p.valid[int64_t(h) * p.max_tiles + tile];
    float sum[E], hi[E], lo[E], mean[E], f[4][E];
#pragma unroll
    for (int e = 0; e < E; ++e) sum[e] = 0.f, hi[e] = -INFINITY, lo[e] = INFINITY;
    tile_stats<T>(p, bh, h, tile, chunk, valid, true, sum, mean, hi, lo);
    tile_features<E>(p.feature, p.q_scale, p.head_weights, h, mean, hi, lo, f);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (k * D < W)
#pragma unroll
        for (int e = 0; e < E; ++e) s_feat[s * W + k * D + chunk * E + e] = f[k][e];
  }
  __syncthreads();
  for (int c = threadIdx.x; c < W; c += kStatsThreads) {
    float acc = 0.f;
    for (int t = 0; t < S; ++t) acc += s_feat[t * W + c];
    center[bh * W + c] = acc / float(S);
  }
}

}  // namespace veda::cuda::sel
