// Logits epilogue + per-row top-k tile selection (select_tiles' kTopK rule) into a TileMask row.
// The mask is that of the canonical logits (below) for both scoring precisions: the GEMM's logits
// only place the tiles their error bound can, the rest of each row's boundary is rescored.
//
// Algorithm: one warp per (query tile i, head, batch) row, the row in the warp's shared memory.
//  1. Finish each logit v: raw GEMM score (FP16x3: times the rows' scales) + key bias (log valid /
//     prefix bias) + the estimator's distance prior; -inf past the head's tiles. Each lane loads
//     kTopkLoadBatch strided raw scores before using them (one load at a time left this pass
//     latency-bound). Forced tiles (prefix, self) are kept and are not candidates. A NaN or +inf
//     logit of an existing pair marks the row bad (count 0, atomicMin of the row into bad_row).
//  2. take = budget - forced (at most the candidates). A 256-bin histogram over the candidates'
//     [min, max] (a monotone value -> bin map, so rounding never breaks the order; the bins follow
//     the values, not their exponent bits, so the shared-memory atomics rarely collide) gives the
//     bin B of the take-th largest value. Forced tiles and candidates whose v + 2e maps to B or
//     above are listed in ascending order (e: the row's error bound); tau, the take-th largest v,
//     follows from a bitwise search over the listed tiles of bin B.
//  3. Listed candidates with v - 2e > tau are in (A); those with v + 2e >= tau (U) get their
//     canonical logit r, and the need = take - |A| largest r of U are chosen: the need-th largest
//     order key by a bitwise search, ties to the lower index.
//  4. The listed forced, A and chosen tiles are written in ascending order; unused entries -1.
// Canonical logit r_j: the f32 feature rows' dot product q_i . k_j (uncentred) summed in double in
// a fixed order (lane l takes columns 4l + 128t in order, then a shuffle tree), plus the biases,
// rounded once to f32. It depends on (i, j) alone -- not on the precision, nor on which tiles a
// row rescores -- so both precisions choose the top-take tiles by r, ties to the lower index.
// Why e suffices: |v_j - r_j - s| <= e with s a per-row constant (q_i . c, the FP16x3 centring; 0
// for f32). If v_j - 2e > tau, every m with r_m >= r_j has v_m > tau, and fewer than take tiles
// do, so j is in; if v_j + 2e < tau, r_j - s < tau - e <= r_m - s for the take tiles m with
// v_m >= tau, so j is out. With |q| the row's feature norm, K_f the head's largest norm of the k
// rows the GEMM saw (centred for FP16x3), K_u the largest uncentred one and B_h >= |key bias| +
// |prior| (host),
//   e = err_rel |q| K_f + 2^-20 (|q| (K_f + K_u) + B_h) + 2^-100,
//   err_rel = 1.001 (P 2^-22 + 6u^2 + 2^-20),  P = W products (f32) or 3W (FP16x3), u = 2^-11:
//  - P 2^-22: the GEMM's f32 accumulation even if every partial sum loses two units of 2^-23 of
//    the running sum of |products| (alignment truncation and normalisation, as in the block-FMA
//    models of tensor cores; IEEE f32 with rounding needs a quarter of it); Cauchy-Schwarz bounds
//    that sum by |q| |k|.
//  - FP16x3 (the 6u^2 and 2^-20 inside err_rel): a row x scaled by 2^-a into [2^14, 2^15) is
//    hi + lo + d, |d| <= u^2 |x| + 2^-25 (fp16 subnormals); the GEMM sums hi.hi + hi.lo + lo.hi,
//    so the dropped lo.lo and the residues cost 6u^2 |q| |k|. 1.001 covers the f32 norms.
//  - the 2^-20 term: the f32 additions of the biases to v (2^-23 (|q| K_f + B_h)), the centring's
//    rounding (2^-24 |q| K_f), the canonical logit's double sum and its rounding to f32
//    (2^-24 (|q| K_u + B_h)), and the f32 rounding of v -+ 2e in the comparisons.
// On structured inputs a few tiles a row fall within 2e of tau.
// Layout: logits [B, H, T, T] f32, counts [B, H, T], indices [B, H, T, max_k]. Shared memory per
// warp: values [T] f32, two lists [T] uint16, histogram [256] int32. Sync: __syncwarp between the
// phases of a row; one __syncthreads for the CTA's distance table (all warps share the head).
#pragma once
#include <cfloat>
#include <cstdint>

#include "cuda/selection_launch.hpp"

namespace veda::cuda::sel {

inline constexpr int kTopkBins = 256;
inline constexpr int kTopkMaxWarps = 8;
inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr int kTopkLoadBatch = 16;  // strided raw scores a lane loads before using them
inline constexpr int kRescoreTiles = 8;    // tiles a rescoring step (their loads in flight together)

// Monotone map float -> uint32 (larger float, larger key); -0 and +0 map alike (they compare
// equal on the CPU).
__device__ __forceinline__ uint32_t order_key(float v) {
  const uint32_t u = v == 0.f ? 0u : __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

__device__ __forceinline__ int distance_bin_dev(int d) {
  d = d < 0 ? -d : d;
  return d < 8 ? d : d < 16 ? 8 : d < 32 ? 9 : 10;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, off));
  return v;
}
__device__ __forceinline__ float warp_min(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fminf(v, __shfl_xor_sync(kFullMask, v, off));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}

// Appends `value` of the lanes with `pred` to list[count..] in lane order; returns the new count.
__device__ __forceinline__ int warp_append(uint16_t* list, int count, bool pred, int value,
                                           unsigned lanes_below) {
  const unsigned m = __ballot_sync(kFullMask, pred);
  if (pred) list[count + __popc(m & lanes_below)] = uint16_t(value);
  return count + __popc(m);
}

// Canonical logits (above) r_j for j = list[m], m < count, into s_v[j]; finish adds the biases.
template <class Finish>
__device__ void rescore(const TopkParams& p, int64_t bh, int i, const uint16_t* list, int count,
                        float* s_v, const Finish& finish, int lane) {
  const int w = p.width;
  const float* q = p.q_feat + (bh * p.max_tiles + i) * w;
  const float* k = p.k_feat + bh * p.max_tiles * w;
  for (int m0 = 0; m0 < count; m0 += kRescoreTiles) {
    int j[kRescoreTiles];
    double acc[kRescoreTiles];
#pragma unroll
    for (int g = 0; g < kRescoreTiles; ++g) j[g] = list[min(m0 + g, count - 1)], acc[g] = 0.0;
    for (int c = 4 * lane; c < w; c += 128) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(q + c));
#pragma unroll
      for (int g = 0; g < kRescoreTiles; ++g) {
        const float4 b = __ldg(reinterpret_cast<const float4*>(k + int64_t(j[g]) * w + c));
        acc[g] = fma(double(a.x), double(b.x), acc[g]);
        acc[g] = fma(double(a.y), double(b.y), acc[g]);
        acc[g] = fma(double(a.z), double(b.z), acc[g]);
        acc[g] = fma(double(a.w), double(b.w), acc[g]);
      }
    }
#pragma unroll
    for (int g = 0; g < kRescoreTiles; ++g) {
      // Butterfly: every lane ends with the same sum (IEEE addition commutes).
      for (int off = 16; off > 0; off >>= 1) acc[g] += __shfl_xor_sync(kFullMask, acc[g], off);
      if (lane == g && m0 + g < count) s_v[j[g]] = float(finish(acc[g], j[g]));
    }
  }
}

// The k-th largest order key of s_v[list[0..count)) (1 <= k <= count): the largest x with
// #{key >= x} >= k, built bit by bit below the keys' common prefix. Each lane keeps its first key
// in a register (lists are short).
__device__ uint32_t kth_largest_key(const float* s_v, const uint16_t* list, int count, int k,
                                    int lane) {
  const bool has0 = lane < count;
  const uint32_t key0 = has0 ? order_key(s_v[list[lane]]) : 0u;
  uint32_t lo = has0 ? key0 : ~0u, hi = key0;
  for (int m = lane + 32; m < count; m += 32) {
    const uint32_t key = order_key(s_v[list[m]]);
    lo = min(lo, key), hi = max(hi, key);
  }
  lo = __reduce_min_sync(kFullMask, lo), hi = __reduce_max_sync(kFullMask, hi);
  if (lo == hi) return hi;
  const int top = 31 - __clz(lo ^ hi);
  uint32_t x = hi & ~((2u << top) - 1u);  // top == 31: 2u << 31 == 0, so x = 0
  for (int bit = top; bit >= 0; --bit) {
    const uint32_t trial = x | (1u << bit);
    unsigned c = has0 && key0 >= trial;
    for (int m = lane + 32; m < count; m += 32) c += order_key(s_v[list[m]]) >= trial;
    if (int(__reduce_add_sync(kFullMask, c)) >= k) x = trial;
  }
  return x;
}

__global__ void __launch_bounds__(kTopkMaxWarps * 32) topk_kernel(const __grid_constant__ TopkParams p) {
  extern __shared__ float s_rows[];
  __shared__ float s_dist[kDistanceTableSize];
  const int h = blockIdx.y;
  if (p.distance && threadIdx.x < kDistanceTableSize)
    s_dist[threadIdx.x] = p.distance[h * kDistanceTableSize + threadIdx.x];
  __syncthreads();

  const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
  const int T = p.max_tiles;
  const int i = blockIdx.x * warps + threadIdx.x / 32;
  if (i >= T) return;
  // The warp's row: values [T] f32, list [T] u16, second list [T] u16, histogram [256] i32.
  float* s_v = s_rows + size_t(threadIdx.x / 32) * (2 * size_t(T) + kTopkBins);
  uint16_t* s_list = reinterpret_cast<uint16_t*>(s_v + T);
  uint16_t* s_sub = s_list + T;
  int* s_hist = reinterpret_cast<int*>(s_v + 2 * T);
  const unsigned lanes_below = (1u << lane) - 1u;

  const int64_t bh = int64_t(blockIdx.z) * p.heads + h;
  const int64_t row = bh * T + i;
  int32_t* out = p.indices + row * p.max_k;
  float* logits_out = p.logits_out ? p.logits_out + row * T : nullptr;
  const HeadSelectInfo info = p.info[h];
  const int n = info.n, np = info.num_prefix;
  if (i >= n) {  // no such query tile: count 0
    if (logits_out)
      for (int j = lane; j < T; j += 32) logits_out[j] = -INFINITY;
    for (int j = lane; j < p.max_k; j += 32) out[j] = -1;
    if (lane == 0) p.counts[row] = 0;
    return;
  }

  const bool prefix_forced = p.force_prefix, self_forced = p.force_self;
  auto forced = [&](int j) { return (prefix_forced && j < np) || (self_forced && j == i); };
  const bool prior = p.distance != nullptr && i >= np;
  const uint32_t qc = prior ? p.key_coords[int64_t(h) * T + i] : 0u;
  // v (f32 logit, or double for the canonical one) + key bias + distance prior, in one order.
  auto finish = [&](auto v, int j) {
    if (p.key_bias) v += __ldg(p.key_bias + int64_t(h) * T + j);
    if (prior && j >= np) {
      const uint32_t kc = __ldg(p.key_coords + int64_t(h) * T + j);
      v += s_dist[distance_bin_dev(int(qc >> 22) - int(kc >> 22))] +
           s_dist[11 + distance_bin_dev(int((qc >> 11) & 2047u) - int((kc >> 11) & 2047u))] +
           s_dist[22 + distance_bin_dev(int(qc & 2047u) - int(kc & 2047u))];
    }
    return v;
  };

  // FP16x3 scoring: the raw scores are of the scaled rows.
  const bool split = p.q_scale != nullptr;
  const float q_scale = split ? p.q_scale[row] : 1.f;
  const float* k_scale = split ? p.k_scale + bh * T : nullptr;
  float row_const = 0.f;
  if (split && logits_out) {  // debug output: add back q . c, the row's shift by the centring
    const float* q = p.q_feat + row * p.width;
    const float* c = p.center + bh * p.width;
    for (int d = lane; d < p.width; d += 32) row_const = fmaf(q[d], c[d], row_const);
    row_const = warp_sum(row_const);
  }

  // 1. Finish the row.
  const float* raw = p.logits + row * T;
  float vmax = -INFINITY, vmin = INFINITY;
  int candidates = 0;
  bool bad = false;
  for (int j0 = lane; j0 < T; j0 += 32 * kTopkLoadBatch) {
    float r[kTopkLoadBatch], ks[kTopkLoadBatch];
#pragma unroll
    for (int u = 0; u < kTopkLoadBatch; ++u) {
      const int j = j0 + 32 * u;
      r[u] = j < n ? __ldcs(raw + j) : 0.f;
      ks[u] = split && j < n ? __ldg(k_scale + j) : 1.f;
    }
#pragma unroll
    for (int u = 0; u < kTopkLoadBatch; ++u) {
      const int j = j0 + 32 * u;
      if (j >= T) break;
      float v = -INFINITY;
      if (j < n) {
        v = finish(split ? r[u] * q_scale * ks[u] : r[u], j);
        bad |= !(v < INFINITY);  // NaN or +inf
      }
      if (logits_out) logits_out[j] = v + row_const;
      const bool candidate = j < n && !forced(j) && v != -INFINITY;
      s_v[j] = candidate ? v : -INFINITY;
      if (candidate) ++candidates, vmax = fmaxf(vmax, v), vmin = fminf(vmin, v);
    }
  }
  if (__any_sync(kFullMask, bad)) {
    if (lane == 0) {
      atomicMin(p.bad_row, static_cast<unsigned long long>(row));
      p.counts[row] = 0;
    }
    for (int j = lane; j < p.max_k; j += 32) out[j] = -1;
    return;
  }
  candidates = int(__reduce_add_sync(kFullMask, unsigned(candidates)));
  const int num_forced =
      (prefix_forced ? np : 0) + ((self_forced && !(prefix_forced && i < np)) ? 1 : 0);
  const int take = min(max(0, info.budget - num_forced), candidates);

  float keep_from = INFINITY;  // listed tiles with s_v >= keep_from are chosen, as are forced ones
  int listed = 0;
  if (take == 0 || take == candidates) {
    if (take > 0) keep_from = -FLT_MAX;  // every candidate
    for (int j0 = 0; j0 < n; j0 += 32) {
      const int j = j0 + lane;
      listed = warp_append(s_list, listed, j < n && (forced(j) || (take > 0 && s_v[j] != -INFINITY)),
                           j, lanes_below);
    }
  } else {
    vmax = warp_max(vmax), vmin = warp_min(vmin);
    // The row's error bound (above).
    const float qn = p.q_norm[row];
    const float k_f = __uint_as_float(p.k_norm_filter[bh]), k_u = __uint_as_float(p.k_norm[bh]);
    float two_e =
        2.f * (p.err_rel * qn * k_f + 0x1p-20f * (qn * (k_f + k_u) + info.bias_abs) + 0x1p-100f);
    if (!(two_e <= FLT_MAX)) two_e = INFINITY;  // overflow (0 * inf: NaN): rescore every candidate

    // 2. Histogram; B = the bin of the take-th largest value, `above` = candidates above B.
    for (int t = lane; t < kTopkBins; t += 32) s_hist[t] = 0;
    __syncwarp();
    const float inv = float(kTopkBins) / (vmax - vmin);  // inf / 0 / NaN cases stay monotone
    auto bin_of = [&](float x) {
      return int(fminf(fmaxf((x - vmin) * inv, 0.f), float(kTopkBins - 1)));
    };
    for (int j = lane; j < n; j += 32) {
      const float v = s_v[j];
      if (v != -INFINITY) atomicAdd(&s_hist[bin_of(v)], 1);
    }
    __syncwarp();
    static_assert(kTopkBins == 32 * 8);
    int c8[8], lane_sum = 0;  // lane l: bins 255 - 8l down to 248 - 8l
#pragma unroll
    for (int e = 0; e < 8; ++e) c8[e] = s_hist[kTopkBins - 1 - 8 * lane - e], lane_sum += c8[e];
    int incl = lane_sum;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const int up = __shfl_up_sync(kFullMask, incl, off);
      if (lane >= off) incl += up;
    }
    int my_bin = -1, my_above = 0;
    if (incl - lane_sum < take && take <= incl) {
      int cum = incl - lane_sum;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        if (my_bin < 0 && cum + c8[e] >= take) my_bin = kTopkBins - 1 - 8 * lane - e, my_above = cum;
        cum += c8[e];
      }
    }
    const int holder = __ffs(__ballot_sync(kFullMask, my_bin >= 0)) - 1;
    const int B = __shfl_sync(kFullMask, my_bin, holder);
    const int above = __shfl_sync(kFullMask, my_above, holder);
    // Values <= x_lo map below B (checked), so most tiles skip the bin arithmetic.
    float x_lo = -INFINITY;
    if (B > 0) {
      const float t = vmin + float(B - 1) / inv;
      if (bin_of(t) < B) x_lo = t;
    }

    // List forced tiles and the candidates that may reach tau (ascending); bin B's apart.
    int in_b = 0;
    for (int j0 = 0; j0 < n; j0 += 32) {
      const int j = j0 + lane;
      const float v = j < n ? s_v[j] : -INFINITY, hi = v + two_e;
      const bool reach = v != -INFINITY && hi > x_lo && bin_of(hi) >= B;
      listed = warp_append(s_list, listed, reach || (j < n && forced(j)), j, lanes_below);
      in_b = warp_append(s_sub, in_b, reach && bin_of(v) == B, j, lanes_below);
    }
    __syncwarp();
    const float tau = key_value(kth_largest_key(s_v, s_sub, in_b, take - above, lane));

    // 3. A -> +inf; U -> s_sub (ascending), then r; other listed candidates -> -inf.
    int n_a = 0, n_u = 0;
    for (int m0 = 0; m0 < listed; m0 += 32) {
      const int m = m0 + lane;
      const int j = m < listed ? s_list[m] : 0;
      const float v = m < listed ? s_v[j] : -INFINITY;
      const bool in_a = v != -INFINITY && v - two_e > tau;
      const bool in_u = v != -INFINITY && !in_a && v + two_e >= tau;
      n_a += __popc(__ballot_sync(kFullMask, in_a));
      n_u = warp_append(s_sub, n_u, in_u, j, lanes_below);
      if (v != -INFINITY) s_v[j] = in_a ? INFINITY : in_u ? v : -INFINITY;
    }
    __syncwarp();
    rescore(p, bh, i, s_sub, n_u, s_v, finish, lane);
    __syncwarp();
    if (p.rescored && lane == 0) atomicAdd(p.rescored, static_cast<unsigned long long>(n_u));
    // need in [1, n_u]: A lies above tau, the take-th largest v, and A + U holds every v >= tau.
    const int need = take - n_a;
    const uint32_t kth = kth_largest_key(s_v, s_sub, n_u, need, lane);
    unsigned greater = 0;
    for (int m = lane; m < n_u; m += 32) greater += order_key(s_v[s_sub[m]]) > kth;
    const int ties = need - int(__reduce_add_sync(kFullMask, greater));
    int seen = 0;
    for (int m0 = 0; m0 < n_u; m0 += 32) {
      const int m = m0 + lane;
      const int j = m < n_u ? s_sub[m] : 0;
      const uint32_t key = m < n_u ? order_key(s_v[j]) : 0u;
      const bool tie = m < n_u && key == kth;
      const unsigned mt = __ballot_sync(kFullMask, tie);
      if (m < n_u)
        s_v[j] = key > kth || (tie && seen + __popc(mt & lanes_below) < ties) ? INFINITY : -INFINITY;
      seen += __popc(mt);
    }
  }
  __syncwarp();

  // 4. Ascending output from the list.
  int count = 0;
  for (int m0 = 0; m0 < listed; m0 += 32) {
    const int m = m0 + lane;
    const int j = m < listed ? s_list[m] : 0;
    const bool in = m < listed && (forced(j) || s_v[j] >= keep_from);
    const unsigned mask = __ballot_sync(kFullMask, in);
    const int at = count + __popc(mask & lanes_below);
    if (in && at < p.max_k) out[at] = j;
    count += __popc(mask);
  }
  count = min(count, p.max_k);
  for (int j = count + lane; j < p.max_k; j += 32) out[j] = -1;
  if (lane == 0) p.counts[row] = count;
}

}  // namespace veda::cuda::sel
