// Gather to tile order fused with tile statistics and scoring features.
//
// Algorithm: one CTA of 256 threads per (tile, head, batch). The row of D elements is cut into
// 16-byte chunks (C = D * elem / 16 chunks, a power of two); thread t owns chunk t % C of rows
// t / C, t / C + R, ... (R = 256 / C rows per pass). Each thread loads its chunk of every valid
// slot (token id from the head's slot_token table), stores it to the tile-order output and keeps
// per-channel sum / max / min in fp32. The R partial results meet in shared memory; thread c then
// reduces channel c over the R groups in order, writes mean / max / min (optional) and the
// scoring features of the tile (see FeatureKind), weights folded in.
// Layout: x [B, H, tokens, D], x_tiled [B, H, max_tiles * volume, D] (padding slots written 0),
// stats [B, H, max_tiles, D] f32, features [B, H, max_tiles, width] f32.
// Sync: one __syncthreads between the partial-statistics stores and the reduction. Tiles with no
// valid token (past the head's own tiles) get zero rows, zero statistics and zero features.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/selection_launch.hpp"

namespace veda::cuda::sel {

inline constexpr int kGatherThreads = 256;

template <class T>
struct ChunkOps;

template <>
struct ChunkOps<float> {
  static constexpr int kElems = 4;
  __device__ static void to_float(const uint4& c, float* f) {
    f[0] = __uint_as_float(c.x), f[1] = __uint_as_float(c.y);
    f[2] = __uint_as_float(c.z), f[3] = __uint_as_float(c.w);
  }
};

template <>
struct ChunkOps<__nv_bfloat16> {
  static constexpr int kElems = 8;
  __device__ static void to_float(const uint4& c, float* f) {
    const uint32_t w[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};

template <>
struct ChunkOps<__half> {
  static constexpr int kElems = 8;
  __device__ static void to_float(const uint4& c, float* f) {
    const uint32_t w[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      __half2 h2 = *reinterpret_cast<const __half2*>(&w[i]);
      float2 v = __half22float2(h2);
      f[2 * i] = v.x, f[2 * i + 1] = v.y;
    }
  }
};

template <class T>
__global__ void __launch_bounds__(kGatherThreads) gather_stats_kernel(GatherStatsParams p) {
  constexpr int E = ChunkOps<T>::kElems;
  // R * D = kGatherThreads * E floats per statistic.
  __shared__ float s_sum[kGatherThreads * E];
  __shared__ float s_max[kGatherThreads * E];
  __shared__ float s_min[kGatherThreads * E];

  const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int D = p.head_dim;
  const int chunks = D / E;                 // per row, a power of two <= kGatherThreads
  const int rows_per_pass = kGatherThreads / chunks;
  const int chunk = threadIdx.x % chunks, group = threadIdx.x / chunks;
  const int64_t bh = int64_t(b) * p.heads + h;
  const int valid = p.valid[size_t(h) * p.max_tiles + tile];
  const int32_t* slots = p.slot_token + (size_t(h) * p.max_tiles + tile) * p.volume;
  const uint4* src = reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) + bh * p.tokens * D);
  uint4* dst = p.x_tiled ? reinterpret_cast<uint4*>(static_cast<T*>(p.x_tiled) +
                                                    (bh * p.max_tiles + tile) * p.volume * D)
                         : nullptr;
  const bool want_stats = p.mean != nullptr || p.feature != FeatureKind::kNone;

  float sum[E], mx[E], mn[E];
#pragma unroll
  for (int e = 0; e < E; ++e) sum[e] = 0.f, mx[e] = -INFINITY, mn[e] = INFINITY;

#pragma unroll 4
  for (int s = group; s < p.volume; s += rows_per_pass) {
    uint4 c = make_uint4(0, 0, 0, 0);
    if (s < valid) {
      const int32_t token = slots[s];
      c = __ldg(src + int64_t(token) * chunks + chunk);
      if (want_stats) {
        float f[E];
        ChunkOps<T>::to_float(c, f);
#pragma unroll
        for (int e = 0; e < E; ++e) {
          sum[e] += f[e];
          mx[e] = fmaxf(mx[e], f[e]);
          mn[e] = fminf(mn[e], f[e]);
        }
      }
    }
    if (dst) dst[int64_t(s) * chunks + chunk] = c;
  }
  if (!want_stats) return;

#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int idx = group * D + chunk * E + e;
    s_sum[idx] = sum[e], s_max[idx] = mx[e], s_min[idx] = mn[e];
  }
  __syncthreads();

  const size_t stat_row = (size_t(bh) * p.max_tiles + tile) * D;
  float* feat = p.features ? p.features + (size_t(bh) * p.max_tiles + tile) * p.width : nullptr;
  float w_p = 0.f, w_ku = 0.f, w_kl = 0.f, w_qu = 0.f;
  if (p.head_weights) {
    w_p = p.head_weights[h * 4 + 0], w_ku = p.head_weights[h * 4 + 1];
    w_kl = p.head_weights[h * 4 + 2], w_qu = p.head_weights[h * 4 + 3];
  }
  const float qs = p.q_scale;
  for (int c = threadIdx.x; c < D; c += kGatherThreads) {
    float mean = 0.f, hi = 0.f, lo = 0.f;
    if (valid > 0) {
      float total = 0.f;
      hi = -INFINITY, lo = INFINITY;
      for (int g = 0; g < rows_per_pass; ++g) {
        total += s_sum[g * D + c];
        hi = fmaxf(hi, s_max[g * D + c]);
        lo = fminf(lo, s_min[g * D + c]);
      }
      mean = total * (1.0f / float(valid));
    }
    if (p.mean) p.mean[stat_row + c] = mean, p.max[stat_row + c] = hi, p.min[stat_row + c] = lo;
    if (!feat) continue;
    const float pos = fmaxf(mean, 0.f), neg = fminf(mean, 0.f);
    switch (p.feature) {
      case FeatureKind::kQMean:
        feat[c] = qs * mean;
        break;
      case FeatureKind::kQSplit4:
        feat[2 * D + c] = qs * hi;
        feat[3 * D + c] = qs * lo;
        [[fallthrough]];
      case FeatureKind::kQSplit:
        feat[c] = qs * pos;
        feat[D + c] = qs * neg;
        break;
      case FeatureKind::kKMean:
        feat[c] = mean;
        break;
      case FeatureKind::kKBlend4:
        feat[2 * D + c] = w_qu * pos;
        feat[3 * D + c] = w_qu * neg;
        [[fallthrough]];
      case FeatureKind::kKBlend:
        feat[c] = w_p * mean + w_ku * hi + w_kl * lo;
        feat[D + c] = w_p * mean + w_ku * lo + w_kl * hi;
        break;
      case FeatureKind::kNone:
        break;
    }
  }
}

}  // namespace veda::cuda::sel
