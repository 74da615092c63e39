// Logits epilogue + per-row top-k tile selection (select_tiles' kTopK rule) into a TileMask row.
//
// Algorithm: one CTA of 256 threads per (query tile i, head, batch). The row of raw GEMM scores
// is finished in shared memory (key bias such as log(valid) / prefix bias, the estimator's
// distance prior, -inf past the head's tiles) and optionally written back. Forced tiles (prefix,
// self) are always kept; of the other finite tiles ("candidates") the budget's remaining `take`
// are chosen with the order "higher logit first, then lower index": an exact 4-pass MSB radix
// select over order-preserving 32-bit keys (8 bits a pass, a 256-bin shared histogram, warp 0
// finds the bin holding the take-th largest) yields the take-th key T and how many keys equal to
// T are still needed; those are the lowest-index ones. A pass stops early when the whole bin is
// taken. The chosen set is then written in ascending index order: each thread owns a contiguous
// index range, and two block-wide exclusive scans give its rank among equal keys and its output
// offset. Unused entries of the row get -1.
// Layout: logits [B, H, T, T] f32, counts [B, H, T], indices [B, H, T, max_k].
// Sync: __syncthreads between the row fill, each histogram pass and each scan. A NaN or +inf
// logit of an existing pair marks the row bad (count 0, atomicMin into bad_row).
#pragma once
#include <cub/block/block_scan.cuh>

#include <cstdint>

#include "cuda/selection_launch.hpp"

namespace veda::cuda::sel {

inline constexpr int kTopkThreads = 256;

// Monotone map float -> uint32 (larger float, larger key); -0 and +0 map alike (they compare
// equal on the CPU).
__device__ __forceinline__ uint32_t order_key(float v) {
  uint32_t u = v == 0.f ? 0u : __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ int distance_bin_dev(int d) {
  d = d < 0 ? -d : d;
  return d < 8 ? d : d < 16 ? 8 : d < 32 ? 9 : 10;
}

__global__ void __launch_bounds__(kTopkThreads) topk_kernel(TopkParams p) {
  extern __shared__ float s_vals[];  // [T]
  __shared__ int s_hist[256];
  __shared__ float s_dist[kDistanceTableSize];
  __shared__ int s_candidates, s_bad, s_remaining, s_done;
  __shared__ uint32_t s_prefix, s_mask;
  using Scan = cub::BlockScan<int, kTopkThreads>;
  __shared__ typename Scan::TempStorage s_scan;

  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int T = p.max_tiles, tid = threadIdx.x;
  const size_t row = (size_t(b) * p.heads + h) * T + i;
  float* logits = p.logits + row * T;
  int32_t* out = p.indices + row * size_t(p.max_k);
  const HeadSelectInfo info = p.info[h];
  const int n = info.n, np = info.num_prefix;

  if (i >= n) {  // no such query tile: count 0, logits -inf
    if (p.write_back)
      for (int j = tid; j < T; j += kTopkThreads) logits[j] = -INFINITY;
    for (int j = tid; j < p.max_k; j += kTopkThreads) out[j] = -1;
    if (tid == 0) p.counts[row] = 0;
    return;
  }
  if (tid == 0) s_candidates = 0, s_bad = 0;
  if (p.distance && tid < kDistanceTableSize) s_dist[tid] = p.distance[h * kDistanceTableSize + tid];
  __syncthreads();

  const bool self_forced = p.force_self, prefix_forced = p.force_prefix;
  auto forced = [&](int j) { return (prefix_forced && j < np) || (self_forced && j == i); };

  int qt = -1, qh = 0, qw = 0;
  if (p.distance && i >= np) {
    const int v = i - np;
    qt = v / (info.tiles_h * info.tiles_w), qh = (v / info.tiles_w) % info.tiles_h,
    qw = v % info.tiles_w;
  }
  int local_candidates = 0;
  bool bad = false;
  for (int j = tid; j < T; j += kTopkThreads) {
    float v = -INFINITY;
    if (j < n) {
      v = logits[j];
      if (p.key_bias) v += p.key_bias[size_t(h) * T + j];
      if (qt >= 0 && j >= np) {
        const int u = j - np;
        const int kt = u / (info.tiles_h * info.tiles_w), kh = (u / info.tiles_w) % info.tiles_h,
                  kw = u % info.tiles_w;
        v += s_dist[distance_bin_dev(qt - kt)] + s_dist[11 + distance_bin_dev(qh - kh)] +
             s_dist[22 + distance_bin_dev(qw - kw)];
      }
      if (isnan(v) || v == INFINITY) bad = true;
      if (!forced(j) && v != -INFINITY) ++local_candidates;
    }
    s_vals[j] = v;
    if (p.write_back) logits[j] = v;
  }
  if (bad) s_bad = 1;
  if (local_candidates) atomicAdd(&s_candidates, local_candidates);
  __syncthreads();
  if (s_bad) {
    if (tid == 0) {
      atomicMin(p.bad_row, static_cast<unsigned long long>(row));
      p.counts[row] = 0;
    }
    for (int j = tid; j < p.max_k; j += kTopkThreads) out[j] = -1;
    return;
  }

  const int num_forced =
      (prefix_forced ? np : 0) + ((self_forced && !(prefix_forced && i < np)) ? 1 : 0);
  const int candidates = s_candidates;
  const int take = min(max(0, info.budget - num_forced), candidates);
  auto is_candidate = [&](int j) { return !forced(j) && s_vals[j] != -INFINITY; };

  // Radix select: afterwards candidates with (key & mask) > prefix are in, and of those with
  // (key & mask) == prefix the `remaining` lowest-index ones.
  uint32_t prefix = 0, mask = 0;
  int remaining = take;
  if (take > 0 && take < candidates) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      s_hist[tid] = 0;  // kTopkThreads == 256 bins
      __syncthreads();
      for (int j = tid; j < n; j += kTopkThreads) {
        if (!is_candidate(j)) continue;
        const uint32_t key = order_key(s_vals[j]);
        if ((key & mask) == prefix) atomicAdd(&s_hist[(key >> shift) & 255u], 1);
      }
      __syncthreads();
      if (tid < 32) {
        const int lane = tid;
        int c8[8], lane_sum = 0;
#pragma unroll
        for (int e = 0; e < 8; ++e) c8[e] = s_hist[255 - 8 * lane - e], lane_sum += c8[e];
        int incl = lane_sum;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
          const int up = __shfl_up_sync(0xffffffffu, incl, off);
          if (lane >= off) incl += up;
        }
        const int excl = incl - lane_sum;
        if (excl < remaining && remaining <= incl) {
          int cum = excl;
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            if (cum + c8[e] >= remaining) {
              const uint32_t bin = uint32_t(255 - 8 * lane - e);
              s_prefix = prefix | (bin << shift);
              s_mask = mask | (0xffu << shift);
              s_remaining = remaining - cum;
              s_done = c8[e] == remaining - cum;
              break;
            }
            cum += c8[e];
          }
        }
      }
      __syncthreads();
      prefix = s_prefix, mask = s_mask, remaining = s_remaining;
      const bool done = s_done;
      __syncthreads();
      if (done) break;
    }
  }

  // Ascending output: contiguous index range per thread, ranks from block scans.
  const int per = (n + kTopkThreads - 1) / kTopkThreads;
  const int j0 = min(n, tid * per), j1 = min(n, j0 + per);
  int local_equal = 0;
  for (int j = j0; j < j1; ++j)
    if (is_candidate(j) && (order_key(s_vals[j]) & mask) == prefix) ++local_equal;
  int equal_rank = 0;
  Scan(s_scan).ExclusiveSum(local_equal, equal_rank);
  __syncthreads();
  auto chosen = [&](int j, int& rank) {
    if (forced(j)) return true;
    if (!is_candidate(j)) return false;
    const uint32_t k = order_key(s_vals[j]) & mask;
    if (k > prefix) return true;
    if (k == prefix) return rank++ < remaining;
    return false;
  };
  int local_chosen = 0;
  {
    int rank = equal_rank;
    for (int j = j0; j < j1; ++j) local_chosen += chosen(j, rank) ? 1 : 0;
  }
  int offset = 0, total = 0;
  Scan(s_scan).ExclusiveSum(local_chosen, offset, total);
  {
    int rank = equal_rank;
    for (int j = j0; j < j1; ++j)
      if (chosen(j, rank) && offset < p.max_k) out[offset++] = j;
  }
  for (int j = total + tid; j < p.max_k; j += kTopkThreads) out[j] = -1;
  if (tid == 0) p.counts[row] = min(total, p.max_k);
}

}  // namespace veda::cuda::sel
