// Logits epilogue + per-row top-k tile selection (select_tiles' kTopK rule) into a TileMask row.
// The mask is that of the canonical logits (below) for both scoring precisions: the GEMM's logits
// only place the tiles their error bound can, the rest of each row's boundary is rescored.
//
// Algorithm: one 64-thread CTA (two warps) per (query tile i, head, batch) row, the row in shared
// memory: 12.5 KB at 1,440 tiles, 16 rows an SM. (One warp a row left ~18 warps an SM for a chain
// of dependent phases, 1.1 ms at wan14b-720p; 8 warps a row multiplied the per-warp fixed code by
// 8, 1.5 ms.) Full-row passes give each thread a contiguous run of tiles, so that one scan keeps
// the lists in ascending tile order.
//  1. Finish each logit v: raw GEMM score (FP16x3: times the rows' scales) + key bias (log valid /
//     prefix bias) + the estimator's distance prior, for the head's n tiles (past them nothing is
//     loaded or stored; the debug logits_out gets -inf). Each thread loads its strided raw
//     scores before using them (one load at a time left this pass latency-bound).
//     Forced tiles (prefix, self) are kept and are not candidates. A NaN or +inf logit of an
//     existing pair marks the row bad (count 0, atomicMin of the row into bad_row).
//  2. take = budget - forced (at most the candidates). A 256-bin histogram over the candidates'
//     [min, max] (a monotone value -> bin map, so rounding never breaks the order; the bins follow
//     the values, not their exponent bits, so the shared-memory atomics rarely collide) gives the
//     bin B of the take-th largest value. Forced tiles and candidates whose v + 2e maps to B or
//     above are listed in ascending order (e: the row's error bound; "maps to B or above" as a
//     compare with the smallest float that does, found once a row); tau, the take-th largest v,
//     follows from a k-th value search over the listed tiles of bin B (kth_largest_key).
//  3. Listed candidates with v - 2e > tau are in (A); those with v + 2e >= tau (U) get their
//     canonical logit r (both warps, a tile each in turn), and the need = take - |A| largest r of U
//     are chosen: the need-th largest order key, ties to the lower index.
//  4. The listed forced, A and chosen tiles are written in ascending order; unused entries -1.
// Canonical logit r_j: the f32 feature rows' dot product q_i . k_j (uncentred; the rows
// recomputed from the tile statistics, as the statistics kernel made the GEMM's) summed in double
// in a fixed order (its nonzero products only, below; lane l takes channels 4l + 128t in order,
// then a shuffle tree), plus the biases, rounded once to f32. It depends on (i, j) alone -- not
// on the precision, nor on which tiles a row rescores -- so both precisions choose the top-take
// tiles by r, ties to the lower index.
// Why e suffices: |v_j - r_j - s| <= e with s a per-row constant (q_i . c, the FP16x3 centring; 0
// for f32). If v_j - 2e > tau, every m with r_m >= r_j has v_m > tau, and fewer than take tiles
// do, so j is in; if v_j + 2e < tau, r_j - s < tau - e <= r_m - s for the take tiles m with
// v_m >= tau, so j is out. With |q| the row's feature norm, K_f the head's largest norm of the k
// rows the GEMM saw (centred for FP16x3), K_u the largest uncentred one and B_h >= |key bias| +
// |prior| (host),
//   e = err_rel |q| K_f + 2^-20 (|q| (K_f + K_u) + B_h) + 2^-100,
//   err_rel = 1.001 (P 2^-22 + 6u^2 + 2^-20),  P = W (f32) or 1.2 W (FP16x3), u = 2^-11:
//  - P 2^-22: the GEMM's f32 accumulation even if every partial sum loses two units of 2^-23 of
//    the running sum of |products| (alignment truncation and normalisation, as in the block-FMA
//    models of tensor cores; IEEE f32 with rounding needs a quarter of it); Cauchy-Schwarz bounds
//    that sum by |q| |k|. f32: W partial sums. FP16x3 sums its 3W products in the order
//    lo.hi, hi.lo (each below 2^-11 |q| |k| in total), then hi.hi: a partial sum carries the
//    whole scale only once the hi.hi products start, so W of them do, plus the additions that
//    join the partial sums of a K split (contiguous or strided slices, each summed in K order:
//    at most one per 16 columns, 3W / 16), each also carrying the small products' 2^-10, and the
//    2W small partial sums before them: W (1 + 3/16) (1 + 2^-10) + 2W 2^-10 < 1.2 W. (Summed in
//    the other order, 3W partial sums would carry the whole scale.)
//  - FP16x3 (the 6u^2 and 2^-20 inside err_rel): a row x scaled by 2^-a into [2^14, 2^15) is
//    hi + lo + d, |d| <= u^2 |x| + 2^-25 (fp16 subnormals); the GEMM sums lo.hi + hi.lo + hi.hi,
//    so the dropped lo.lo and the residues cost 6u^2 |q| |k|. 1.001 covers the f32 norms.
//  - the 2^-20 term: the f32 additions of the biases to v (2^-23 (|q| K_f + B_h)), the centring's
//    rounding (2^-24 |q| K_f), the canonical logit's double sum and its rounding to f32
//    (2^-24 (|q| K_u + B_h)), and the f32 rounding of v -+ 2e in the comparisons.
// On structured inputs a few tiles a row fall within 2e of tau.
// Layout: logits [B, H, logits_rows, logits_stride] f32, counts [B, H, T],
// indices [B, H, T, max_k].
// Shared memory per row: histogram [256] int32, values [T] f32, two lists [T] uint16, the row's
// distance prior per key tile (t, h) and w coordinate.
// The kernel is bound by its rows' latency (16 an SM, by shared memory and registers), not by
// issue: what shortens a row's chain of phases pays, fewer instructions alone hardly do.
// Sync: __syncthreads between the phases; the two k-th-value searches, the A / U split, the tie
// walk and the output run in warp 0 (their lists are short).
#pragma once
#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "cuda/kernels/selection_features.cuh"
#include "cuda/selection_launch.hpp"

namespace veda::cuda::sel {

inline constexpr int kTopkBins = 256;
inline constexpr int kTopkThreads = 64;  // one CTA a row
inline constexpr int kTopkWarps = kTopkThreads / 32;
inline constexpr int kTopkCtasPerSm = 16;  // 64 registers a thread
inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr int kTopkLoadBatch = 6;  // strided raw scores a thread loads before using them
// Tiles a warp's rescoring step: one, so that both warps share the usual one or two boundary
// tiles of a row (more a step: fewer steps for long boundaries, but registers and spills).
inline constexpr int kRescoreTiles = 1;

// The lanes below `lane` as a mask (ballot ranks).
__device__ __forceinline__ unsigned lanes_below(int lane) { return (1u << lane) - 1u; }

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

__device__ __forceinline__ float4 ld4(const float* x) {
  return __ldg(reinterpret_cast<const float4*>(x));
}
// x != 0 ? a : b, per component.
__device__ __forceinline__ float4 pick_nonzero(float4 x, float4 a, float4 b) {
  return make_float4(x.x != 0.f ? a.x : b.x, x.y != 0.f ? a.y : b.y, x.z != 0.f ? a.z : b.z,
                     x.w != 0.f ? a.w : b.w);
}
__device__ __forceinline__ float4 add4(float4 a, float4 b) {
  return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}
__device__ __forceinline__ double dot4(float4 a, float4 b, double acc) {
  acc = fma(double(a.x), double(b.x), acc);
  acc = fma(double(a.y), double(b.y), acc);
  acc = fma(double(a.z), double(b.z), acc);
  return fma(double(a.w), double(b.w), acc);
}

// Head h's statistics of q (query) or k for the rescoring: the producer's where it gives them.
__device__ __forceinline__ TileStatsView head_stats(const TopkParams& p, int h, bool query) {
  const bool given = p.given_heads && p.given_heads[h];
  return query ? (given ? p.q_given : p.q_stats) : (given ? p.k_given : p.k_stats);
}
// Statistics of 4 channels of a tile (max / min zero where the features do not read them).
struct Stats4 {
  float4 mean, hi, lo;
};
__device__ __forceinline__ Stats4 load_stats4(const TileStatsView& v, int64_t at, bool extrema) {
  const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
  return {ld4(v.mean + at), extrema ? ld4(v.max + at) : zero, extrema ? ld4(v.min + at) : zero};
}
// Their feature planes of kind kKind, as the statistics kernel computes them (kind_features).
// Finite: a non-finite feature makes every logit of its tile NaN, and such a row is reported
// before any rescoring, so the rows rescored have finite features only.
template <FeatureKind kKind>
__device__ __forceinline__ void features4(float q_scale, float4 w, const Stats4& s,
                                          float4 (&f)[4]) {
  const float mean[4] = {s.mean.x, s.mean.y, s.mean.z, s.mean.w};
  const float hi[4] = {s.hi.x, s.hi.y, s.hi.z, s.hi.w}, lo[4] = {s.lo.x, s.lo.y, s.lo.z, s.lo.w};
  float g[4][4];
  kind_features<kKind, 4, false>(q_scale, w, mean, hi, lo, g);
#pragma unroll
  for (int k = 0; k < 4; ++k) f[k] = make_float4(g[k][0], g[k][1], g[k][2], g[k][3]);
}

// Canonical logits (above) r_j for j = list[m], m < count, into s_v[j]; `finish` adds a key
// tile's terms (`key_terms`: loaded with the statistics, off the reduction's path). The CTA's
// warps take groups of kRescoreTiles in turn. The feature rows are recomputed from the tile
// statistics (the f32 values the GEMM's rows were made of). The planes (head_dim D wide) come as
// selection_cuda.cpp pairs them: one plane, q [s mean] . k [mean]; two, q [s mean+, s mean-]
// . k [a, b], where every channel d has one of mean+_d, mean-_d zero, so its two products are one,
// (q0 + q1)_d (q0_d != 0 ? a_d : b_d); four, the same and then q [s max, s min] . k [QU mean+,
// QU mean-], where k's pair has a zero in every channel. Only those nonzero products are summed
// (the zeros change no sum): a half of the work, for the same value.
template <int kPlanes, class KeyTerms, class Finish>
__device__ void rescore(const TopkParams& p, int64_t bh, int h, int i, const uint16_t* list,
                        int count, float* s_v, const KeyTerms& key_terms, const Finish& finish,
                        int warp, int lane) {
  constexpr FeatureKind kQ = query_kind_of(kPlanes), kK = key_kind_of(kPlanes);
  const int D = p.head_dim;
  const TileStatsView qv = head_stats(p, h, true), kv = head_stats(p, h, false);
  const int64_t q_at = (bh * p.max_tiles + i) * D, k_at = bh * p.max_tiles * D;
  const float4 w = kPlanes > 1 ? ld4(p.head_weights + 4 * h) : make_float4(0.f, 0.f, 0.f, 0.f);
  const float qs = p.q_feature_scale;
  for (int m0 = warp * kRescoreTiles; m0 < count; m0 += kTopkWarps * kRescoreTiles) {
    int j[kRescoreTiles];
    double acc[kRescoreTiles];
    decltype(key_terms(0)) terms[kRescoreTiles];
#pragma unroll
    for (int g = 0; g < kRescoreTiles; ++g) {
      j[g] = list[min(m0 + g, count - 1)], acc[g] = 0.0;
      terms[g] = key_terms(j[g]);
    }
    for (int d = 4 * lane; d < D; d += 128) {
      Stats4 ks[kRescoreTiles];
#pragma unroll
      for (int g = 0; g < kRescoreTiles; ++g)
        ks[g] = load_stats4(kv, k_at + int64_t(j[g]) * D + d, uses_extrema(kK));
      float4 q[4];
      features4<kQ>(qs, w, load_stats4(qv, q_at + d, uses_extrema(kQ)), q);
#pragma unroll
      for (int g = 0; g < kRescoreTiles; ++g) {
        float4 k[4];
        features4<kK>(qs, w, ks[g], k);
        if constexpr (kPlanes == 1) {
          acc[g] = dot4(q[0], k[0], acc[g]);
        } else {
          acc[g] = dot4(add4(q[0], q[1]), pick_nonzero(q[0], k[0], k[1]), acc[g]);
          if constexpr (kPlanes == 4)
            acc[g] = dot4(pick_nonzero(k[2], q[2], q[3]), add4(k[2], k[3]), acc[g]);
        }
      }
    }
#pragma unroll
    for (int g = 0; g < kRescoreTiles; ++g) {
      // Butterfly: every lane ends with the same sum (IEEE addition commutes).
      for (int off = 16; off > 0; off >>= 1) acc[g] += __shfl_xor_sync(kFullMask, acc[g], off);
      if (lane == g && m0 + g < count) s_v[j[g]] = float(finish(acc[g], terms[g]));
    }
  }
}

// The k-th largest order key of s_v[list[0..count)) (1 <= k <= count). Up to 32 keys (the usual
// case: a bin's tiles, or a row's boundary), one a lane: the key with #{greater} < k <=
// #{greater or equal}, counted against every other key by shuffles (independent steps, short
// latency). More: the largest x with #{key >= x} >= k, built bit by bit below the keys' common
// prefix; each lane keeps its first key in a register.
__device__ uint32_t kth_largest_key(const float* s_v, const uint16_t* list, int count, int k,
                                    int lane) {
  const bool has0 = lane < count;
  const uint32_t key0 = has0 ? order_key(s_v[list[lane]]) : 0u;
  if (count <= 32) {
    int greater = 0, at_least = 0;
    for (int m = 0; m < count; ++m) {
      const uint32_t other = __shfl_sync(kFullMask, key0, m);
      greater += other > key0, at_least += other >= key0;
    }
    const unsigned hit = __ballot_sync(kFullMask, has0 && greater < k && k <= at_least);
    return __shfl_sync(kFullMask, key0, __ffs(hit) - 1);
  }
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

// The smallest x of [-FLT_MAX, +inf] with bin_of(x) >= b, or NaN if there is none, for a
// bin_of that is monotone non-decreasing in x: then bin_of(y) >= b <=> y >= x for every y of
// [-FLT_MAX, +inf], and y >= x is false for -inf and NaN. Called by the whole warp; lanes 0-15
// and 16-31 may search different b. First the 16 order keys from guess - 7: if bin_of crosses b
// inside them, or they start at -FLT_MAX above it or end at +inf below it, that is the answer
// (b <= 0 and b past the last bin are such guesses). Otherwise a bitwise search counts the keys
// below b, 4 bits a step (8 steps).
template <class BinOf>
__device__ float bin_threshold(const BinOf& bin_of, int b, float guess, int lane) {
  constexpr uint32_t kMin = 0x00800000u;  // order_key(-FLT_MAX)
  constexpr uint32_t kMax = 0xff800000u;  // order_key(+inf)
  const uint32_t d = uint32_t(lane) & 15u, group = 0xffffu << (lane & 16);
  auto below = [&](uint32_t key) { return bin_of(key_value(key)) < b; };  // key in [kMin, kMax]
  const uint32_t start = min(max(order_key(guess), kMin + 7u), kMax - 8u) - 7u;
  // The keys below b are a prefix of any ascending run: c of them, c = 0..16.
  const int c = __popc(__ballot_sync(kFullMask, below(start + d)) & group);
  uint32_t key = start + uint32_t(c);  // the first key not below b when 0 < c < 16
  bool none = c == 16 && start == kMax - 15u;
  const bool known = (c > 0 && c < 16) || (c == 0 && start == kMin) || none;
  if (!__all_sync(kFullMask, known)) {
    uint32_t count = 0;  // keys from kMin below b (all 2^32 - 1 offsets: none)
#pragma unroll
    for (int s = 28; s >= 0; s -= 4) {
      // count >= count + d 2^s <=> the key at offset count + d 2^s - 1 is below b (d >= 1);
      // offsets past kMax stand for kMax. No overflow: count's bits are above s + 3.
      const uint32_t off = count + (d << s) - 1u;
      const bool t = d == 0 || below(kMin + min(off, kMax - kMin));
      count += uint32_t(__popc(__ballot_sync(kFullMask, t) & group) - 1) << s;
    }
    if (!known) key = kMin + count, none = count > kMax - kMin;
  }
  return none ? __uint_as_float(0x7fffffffu) : key_value(key);
}

// Inclusive scan of x over the CTA's threads in thread order; `total` gets the sum. The barriers
// make s_scan reusable on return.
__device__ __forceinline__ unsigned block_scan(unsigned x, unsigned* s_scan, unsigned& total) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned incl = x;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const unsigned up = __shfl_up_sync(kFullMask, incl, off);
    if (lane >= off) incl += up;
  }
  if (lane == 31) s_scan[warp] = incl;
  __syncthreads();
  total = 0;
#pragma unroll
  for (int w = 0; w < kTopkWarps; ++w) {
    const unsigned c = s_scan[w];
    incl += w < warp ? c : 0u;
    total += c;
  }
  __syncthreads();
  return incl;
}

// Lists the tiles j < n with bit 0 / bit 1 of sel(j) set, or forced (j < force_end or j ==
// force_one: list0 only), into list0 / list1, ascending. Each
// thread takes a contiguous run of tiles, so one scan ranks them all (an append per 256 tiles cost
// 5x the instructions of the rest of the kernel). sel runs once a tile: a run is at most 32 tiles,
// its bits kept in two words, and the writes walk the set bits; rows of more than 64 x 32 tiles
// go in rounds of 64 runs. The lists are visible to the CTA on return.
template <class Sel>
__device__ __forceinline__ void list_tiles(int n, int force_end, int force_one, const Sel& sel,
                                           uint16_t* list0, uint16_t* list1, int& count0,
                                           int& count1, unsigned* s_scan) {
  const int per = min(32, (n + kTopkThreads - 1) / kTopkThreads);
  for (int round = 0; round < n; round += kTopkThreads * per) {
    const int begin = min(n, round + int(threadIdx.x) * per), end = min(n, begin + per);
    // The forced tiles of the run: a prefix of it, and one bit.
    const int nf = min(end, force_end) - begin;
    unsigned bits0 = nf <= 0 ? 0u : nf >= 32 ? ~0u : (1u << nf) - 1u, bits1 = 0, bit = 1;
    if (force_one >= begin && force_one < end) bits0 |= 1u << (force_one - begin);
    for (int j = begin; j < end; ++j, bit <<= 1) {
      const unsigned m = sel(j);
      if (m & 1u) bits0 |= bit;
      if (m & 2u) bits1 |= bit;
    }
    const unsigned mine = unsigned(__popc(bits0)) | unsigned(__popc(bits1)) << 16;  // <= 32 each
    unsigned total;  // a round lists at most 64 x 32 tiles a list: 16 bits
    const unsigned before = block_scan(mine, s_scan, total) - mine;
    int at0 = count0 + int(before & 0xffffu), at1 = count1 + int(before >> 16);
    for (; bits0 != 0; bits0 &= bits0 - 1u) list0[at0++] = uint16_t(begin + __ffs(bits0) - 1);
    for (; bits1 != 0; bits1 &= bits1 - 1u) list1[at1++] = uint16_t(begin + __ffs(bits1) - 1);
    count0 += int(total & 0xffffu), count1 += int(total >> 16);
  }
  __syncthreads();
}

// Calls k(std::integral_constant<int, planes>{}) for planes 1, 2 or 4 (the feature width / D).
template <class K>
__device__ __forceinline__ void with_planes(int planes, const K& k) {
  if (planes == 1)
    k(std::integral_constant<int, 1>{});
  else if (planes == 2)
    k(std::integral_constant<int, 2>{});
  else
    k(std::integral_constant<int, 4>{});
}

// Calls k(std::true_type{}) or k(std::false_type{}): a per-row flag as a compile-time constant.
template <class K>
__device__ __forceinline__ void with_flag(bool flag, const K& k) {
  if (flag)
    k(std::true_type{});
  else
    k(std::false_type{});
}

__global__ void __launch_bounds__(kTopkThreads, kTopkCtasPerSm)
    topk_kernel(const __grid_constant__ TopkParams p) {
  extern __shared__ float s_row[];
  __shared__ unsigned s_scan[kTopkWarps];   // block_scan's per-warp sums
  __shared__ float s_red_f[2][kTopkWarps];  // per-warp max / min
  __shared__ int s_red_i[2][kTopkWarps];    // per-warp candidates / bad, later |A|, |U|
  __shared__ uint32_t s_bcast[3];           // warp 0 -> CTA: B / above, a k-th key, row const
  const int h = blockIdx.y, i = blockIdx.x;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  const int T = p.max_tiles;
  // The row: histogram [256] i32 (first: a bin's address is one LEA), values [T] f32 (j < n
  // only: no pass reads past n), list [T] u16, second list [T] u16, then the row's distance
  // prior table: entry 0 = 0 (prefix keys), then the prior by key tile (t, h) and by w
  // (key_coords holds each key tile's two entries).
  int* s_hist = reinterpret_cast<int*>(s_row);
  float* s_v = s_row + kTopkBins;
  uint16_t* s_list = reinterpret_cast<uint16_t*>(s_v + T);
  uint16_t* s_sub = s_list + T;
  float* s_prior = s_v + 2 * T;

  const int64_t bh = int64_t(blockIdx.z) * p.heads + h;
  const int64_t row = bh * T + i;
  int32_t* out = p.indices + row * p.max_k;
  float* logits_out = p.logits_out ? p.logits_out + row * T : nullptr;
  const float* raw = p.logits + (bh * p.logits_rows + i) * p.logits_stride;
  const HeadSelectInfo info = p.info[h];
  const int n = info.n, np = info.num_prefix;
  if (i >= n) {  // no such query tile: count 0
    if (logits_out)
      for (int j = tid; j < T; j += kTopkThreads) logits_out[j] = -INFINITY;
    for (int j = tid; j < p.max_k; j += kTopkThreads) out[j] = -1;
    if (tid == 0) p.counts[row] = 0;
    return;
  }

  const bool prefix_forced = p.force_prefix, self_forced = p.force_self;
  // Forced tiles: j < force_end (the prefix), j == force_one (self; -1: none).
  const int force_end = prefix_forced ? np : 0, force_one = self_forced ? i : -1;
  auto forced = [&](int j) { return j < force_end || j == force_one; };
  const bool prior = p.distance != nullptr && i >= np;
  const float* bias_h = p.key_bias ? p.key_bias + int64_t(h) * T : nullptr;
  const uint32_t* coords_h = p.key_coords + int64_t(h) * T;
  if (prior) {  // this row's prior term per key tile (t, h) and w coordinate
    const int e_t = info.prior_extent[0], e_h = info.prior_extent[1], e_w = info.prior_extent[2];
    const uint32_t qc = coords_h[i];  // the query tile's entries
    const int q_th = int(qc >> 16) - 1, q_w = int(qc & 0xffffu) - 1 - e_t * e_h;
    const int q_t = q_th / e_h, q_h = q_th % e_h;
    const float* dist = p.distance + h * kDistanceTableSize;
    if (tid == 0) s_prior[0] = 0.f;
    for (int x = tid; x < e_t * e_h; x += kTopkThreads)  // the t and h terms summed in f32
      s_prior[1 + x] = __ldg(dist + distance_bin_dev(q_t - x / e_h)) +
                       __ldg(dist + 11 + distance_bin_dev(q_h - x % e_h));
    for (int x = tid; x < e_w; x += kTopkThreads)
      s_prior[1 + e_t * e_h + x] = __ldg(dist + 22 + distance_bin_dev(q_w - x));
  }
  // The estimator's distance prior of the key tile with entries kc (0 for a prefix key tile):
  // (t + h) + w in f32.
  auto prior_of = [&](uint32_t kc) { return s_prior[kc >> 16] + s_prior[kc & 0xffffu]; };
  // v (f32 logit, or double for the canonical one) + key bias + distance prior, in one order;
  // key tile j's terms from key_terms(j).
  auto key_terms = [&](int j) {
    return make_float2(bias_h ? __ldg(bias_h + j) : 0.f,
                       __uint_as_float(prior ? __ldg(coords_h + j) : 0u));
  };
  auto finish = [&](auto v, float2 terms) {
    if (bias_h) v += terms.x;
    if (prior) v += prior_of(__float_as_uint(terms.y));
    return v;
  };

  // FP16x3 scoring: the raw scores are of the scaled rows.
  const bool split = p.q_scale != nullptr;
  const float q_scale = split ? p.q_scale[row] : 1.f;
  const float* k_scale = split ? p.k_scale + bh * T : nullptr;
  if (warp == 0) {  // debug output: add back q . c, the row's shift by the centring
    float row_const = 0.f;
    if (split && logits_out) {
      const float* c = p.center + bh * p.width;
      with_planes(p.width / p.head_dim, [&](auto planes) {
        constexpr int kPlanes = decltype(planes)::value;
        constexpr FeatureKind kQ = query_kind_of(kPlanes);
        for (int d = 4 * lane; d < p.head_dim; d += 128) {
          float4 qf[4];
          const Stats4 st = load_stats4(head_stats(p, h, true), row * p.head_dim + d,
                                        uses_extrema(kQ));
          features4<kQ>(p.q_feature_scale, make_float4(0.f, 0.f, 0.f, 0.f), st, qf);
#pragma unroll
          for (int k = 0; k < kPlanes; ++k) {
            const float4 ck = ld4(c + k * p.head_dim + d);
            row_const = fmaf(qf[k].x, ck.x, fmaf(qf[k].y, ck.y, row_const));
            row_const = fmaf(qf[k].z, ck.z, fmaf(qf[k].w, ck.w, row_const));
          }
        }
      });
      row_const = warp_sum(row_const);
    }
    if (lane == 0) s_bcast[2] = __float_as_uint(row_const);
  }
  __syncthreads();  // the prior tables, s_bcast
  const float row_const = __uint_as_float(s_bcast[2]);

  // 1. Finish the row (as `finish`), instantiated per (FP16x3, prior, key bias) so that the loop
  // over every tile of every row carries no per-tile branches on them.
  float vmax = -INFINITY, vmin = INFINITY;
  int candidates = 0;
  int bad = 0;  // a NaN or +inf logit of an existing pair (the finish loop sets 1)
  auto finish_row = [&](auto split_c, auto prior_c, auto bias_c) {
    constexpr bool kSplit = decltype(split_c)::value, kPrior = decltype(prior_c)::value,
                   kBias = decltype(bias_c)::value;
    // Tiles j >= n are neither loaded nor finished: the registers are set once, so that the
    // predicated loads need no else.
    float r[kTopkLoadBatch] = {}, ks[kTopkLoadBatch] = {}, kb[kTopkLoadBatch] = {};
    uint32_t kc[kTopkLoadBatch] = {};
    // The batch's tiles at immediate offsets from pointers that step a batch at a time (null for
    // the arrays this instantiation does not read).
    const float* raw_j = raw + tid;
    const float* ks_j = kSplit ? k_scale + tid : nullptr;
    const float* kb_j = kBias ? bias_h + tid : nullptr;
    const uint32_t* kc_j = kPrior ? coords_h + tid : nullptr;
    constexpr int kStep = kTopkThreads * kTopkLoadBatch;
    for (int j0 = tid; j0 < n; j0 += kStep) {
#pragma unroll
      for (int u = 0; u < kTopkLoadBatch; ++u) {
        if (j0 + kTopkThreads * u < n) {
          r[u] = __ldcs(raw_j + kTopkThreads * u);
          if constexpr (kSplit) ks[u] = __ldg(ks_j + kTopkThreads * u);
          if constexpr (kBias) kb[u] = __ldg(kb_j + kTopkThreads * u);
          if constexpr (kPrior) kc[u] = __ldg(kc_j + kTopkThreads * u);
        }
      }
      float vs[kTopkLoadBatch];
#pragma unroll
      for (int u = 0; u < kTopkLoadBatch; ++u) {
        const int j = j0 + kTopkThreads * u;
        if (j >= n) break;
        float v = kSplit ? r[u] * q_scale * ks[u] : r[u];
        if constexpr (kBias) v += kb[u];
        if constexpr (kPrior) v += prior_of(kc[u]);
        if (!(v < INFINITY)) bad = 1;  // NaN or +inf
        vs[u] = v;
        const bool candidate = !forced(j) && v != -INFINITY;
        s_v[j] = candidate ? v : -INFINITY;
        if (candidate) ++candidates, vmax = fmaxf(vmax, v), vmin = fminf(vmin, v);
      }
      if (logits_out) {
#pragma unroll
        for (int u = 0; u < kTopkLoadBatch; ++u)
          if (j0 + kTopkThreads * u < n) logits_out[j0 + kTopkThreads * u] = vs[u] + row_const;
      }
      raw_j += kStep;
      if constexpr (kSplit) ks_j += kStep;
      if constexpr (kBias) kb_j += kStep;
      if constexpr (kPrior) kc_j += kStep;
    }
  };
  with_flag(split, [&](auto s) {
    with_flag(prior, [&](auto pr) {
      with_flag(bias_h != nullptr, [&](auto kb) { finish_row(s, pr, kb); });
    });
  });
  // Tiles j >= n: no pair (s_v[j] is never read: every pass stops at n).
  if (logits_out)
    for (int j = n + tid; j < T; j += kTopkThreads) logits_out[j] = -INFINITY + row_const;
  // CTA reductions: max, min, candidates, bad.
  vmax = warp_max(vmax), vmin = warp_min(vmin);
  candidates = int(__reduce_add_sync(kFullMask, unsigned(candidates)));
  const bool warp_bad = __any_sync(kFullMask, bad);
  if (lane == 0) {
    s_red_f[0][warp] = vmax, s_red_f[1][warp] = vmin;
    s_red_i[0][warp] = candidates, s_red_i[1][warp] = warp_bad;
  }
  __syncthreads();  // also orders the s_v writes before any cross-thread read
  bad = 0, candidates = 0;
  for (int w = 0; w < kTopkWarps; ++w) {
    vmax = fmaxf(vmax, s_red_f[0][w]), vmin = fminf(vmin, s_red_f[1][w]);
    candidates += s_red_i[0][w], bad |= s_red_i[1][w];
  }
  if (bad) {
    if (tid == 0) {
      atomicMin(p.bad_row, static_cast<unsigned long long>(row));
      p.counts[row] = 0;
    }
    for (int j = tid; j < p.max_k; j += kTopkThreads) out[j] = -1;
    return;
  }
  const int num_forced =
      (prefix_forced ? np : 0) + ((self_forced && !(prefix_forced && i < np)) ? 1 : 0);
  const int take = min(max(0, info.budget - num_forced), candidates);

  float keep_from = INFINITY;  // listed tiles with s_v >= keep_from are chosen, as are forced ones
  int listed = 0;
  if (take == 0 || take == candidates) {
    if (take > 0) keep_from = -FLT_MAX;  // every candidate
    int none = 0;
    list_tiles(
        n, force_end, force_one, [&](int j) { return unsigned(take > 0 && s_v[j] != -INFINITY); },
        s_list, nullptr, listed, none, s_scan);
  } else {
    // The row's error bound (above).
    const float qn = p.q_norm[row];
    const float k_f = __uint_as_float(p.k_norm_filter[bh]), k_u = __uint_as_float(p.k_norm[bh]);
    float two_e =
        2.f * (p.err_rel * qn * k_f + 0x1p-20f * (qn * (k_f + k_u) + info.bias_abs) + 0x1p-100f);
    if (!(two_e <= FLT_MAX)) two_e = INFINITY;  // overflow (0 * inf: NaN): rescore every candidate

    // 2. Histogram; B = the bin of the take-th largest value, `above` = candidates above B.
    // Every tile j < n is counted, the n - candidates of them with s_v = -inf (forced, or v =
    // -inf) in bin 0 (vmin, vmax finite: inv is in [0, inf], and bin_of(-inf) = 0), which starts
    // at candidates - n: no test or branch a tile.
    for (int t = tid; t < kTopkBins; t += kTopkThreads) s_hist[t] = t == 0 ? candidates - n : 0;
    __syncthreads();
    const float inv = float(kTopkBins) / (vmax - vmin);  // inf / 0 / NaN cases stay monotone
    auto bin_of = [&](float x) {
      return int(fminf(fmaxf((x - vmin) * inv, 0.f), float(kTopkBins - 1)));
    };
    for (int j = tid; j < n; j += kTopkThreads) atomicAdd(&s_hist[bin_of(s_v[j])], 1);
    __syncthreads();
    {  // thread t: bins 255 - kBinsPerThread t downwards; counts from the top bin down
      constexpr int kBinsPerThread = kTopkBins / kTopkThreads;
      int c[kBinsPerThread], mine = 0;
#pragma unroll
      for (int e = 0; e < kBinsPerThread; ++e)
        c[e] = s_hist[kTopkBins - 1 - kBinsPerThread * tid - e], mine += c[e];
      unsigned total;
      int cum = int(block_scan(unsigned(mine), s_scan, total)) - mine;
      if (cum < take && take <= cum + mine) {
        bool found = false;
#pragma unroll
        for (int e = 0; e < kBinsPerThread; ++e) {
          if (!found && cum + c[e] >= take)
            s_bcast[0] = uint32_t(kTopkBins - 1 - kBinsPerThread * tid - e),
            s_bcast[1] = uint32_t(cum), found = true;
          cum += c[e];
        }
      }
      __syncthreads();
    }
    const int B = int(s_bcast[0]), above = int(s_bcast[1]);
    // x_b: the smallest x with bin_of(x) >= B (lanes 0-15), x_b1 with bin_of(x) >= B + 1 (lanes
    // 16-31; NaN if none), so that bin_of(y) >= B <=> y >= x_b for every y but -inf and NaN, for
    // which y >= x_b is false: the same booleans as bin_of(v + 2e) >= B for listed v, and
    // bin_of(v) == B <=> v >= x_b && !(v >= x_b1), without the per-tile bin arithmetic.
    float x_b, x_b1;
    {
      const int b = B + (lane >> 4);
      const float guess = b <= 0 ? -FLT_MAX
                          : b >= kTopkBins ? INFINITY
                                           : vmin + float(b) * ((vmax - vmin) * (1.f / kTopkBins));
      const float x = bin_threshold(bin_of, b, guess, lane);
      x_b = __shfl_sync(kFullMask, x, 0), x_b1 = __shfl_sync(kFullMask, x, 16);
    }

    // List forced tiles and the candidates that may reach tau (ascending); bin B's apart.
    // (v = -inf: v + 2e is -inf or NaN, below x_b.)
    int in_b = 0;
    list_tiles(
        n, force_end, force_one,
        [&](int j) {
          const float v = s_v[j];
          const bool reach = v + two_e >= x_b;
          return unsigned(reach) | (unsigned(reach && v >= x_b && !(v >= x_b1)) << 1);
        },
        s_list, s_sub, listed, in_b, s_scan);
    if (warp == 0) {
      const uint32_t key = kth_largest_key(s_v, s_sub, in_b, take - above, lane);
      if (lane == 0) s_bcast[0] = key;
    }
    __syncthreads();
    const float tau = key_value(s_bcast[0]);

    // 3. A -> +inf; U -> s_sub (ascending), then r; other listed candidates -> -inf. The list
    // is short (about take entries): warp 0 walks it with ballots, no CTA barriers.
    if (warp == 0) {
      int n_a = 0, n_u = 0;
      for (int m0 = 0; m0 < listed; m0 += 32) {
        const int m = m0 + lane;
        const int j = m < listed ? s_list[m] : 0;
        const float v = m < listed ? s_v[j] : -INFINITY;
        const bool in_a = v != -INFINITY && v - two_e > tau;
        const bool in_u = v != -INFINITY && !in_a && v + two_e >= tau;
        n_a += __popc(__ballot_sync(kFullMask, in_a));
        const unsigned u_mask = __ballot_sync(kFullMask, in_u);
        if (in_u) s_sub[n_u + __popc(u_mask & lanes_below(lane))] = uint16_t(j);
        n_u += __popc(u_mask);
        if (v != -INFINITY) s_v[j] = in_a ? INFINITY : in_u ? v : -INFINITY;
      }
      if (lane == 0) s_red_i[0][0] = n_a, s_red_i[1][0] = n_u;
    }
    __syncthreads();  // the s_v updates and the U list before the rescoring
    const int n_a = s_red_i[0][0], n_u = s_red_i[1][0];
    with_planes(p.width / p.head_dim, [&](auto planes) {
      rescore<decltype(planes)::value>(p, bh, h, i, s_sub, n_u, s_v, key_terms, finish, warp,
                                       lane);
    });
    __syncthreads();
    if (p.rescored && tid == 0) atomicAdd(p.rescored, static_cast<unsigned long long>(n_u));
    // need in [1, n_u]: A lies above tau, the take-th largest v, and A + U holds every v >= tau.
    if (warp == 0) {
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
          s_v[j] = key > kth || (tie && seen + __popc(mt & lanes_below(lane)) < ties) ? INFINITY
                                                                                    : -INFINITY;
        seen += __popc(mt);
      }
      __syncwarp();
    }
  }

  // 4. Ascending output from the list, by warp 0 (the lists are visible to it: a barrier or,
  // after its own tie walk, __syncwarp).
  if (warp != 0) return;
  int count = 0;
  for (int m0 = 0; m0 < listed; m0 += 32) {
    const int m = m0 + lane;
    const int j = m < listed ? s_list[m] : 0;
    const bool in = m < listed && (forced(j) || s_v[j] >= keep_from);
    const unsigned in_mask = __ballot_sync(kFullMask, in);
    const int at = count + __popc(in_mask & lanes_below(lane));
    if (in && at < p.max_k) out[at] = j;
    count += __popc(in_mask);
  }
  count = min(count, p.max_k);
  for (int j = count + lane; j < p.max_k; j += 32) out[j] = -1;
  if (lane == 0) p.counts[row] = count;
}

}  // namespace veda::cuda::sel
