// Tile-skipping attention forward on Hopper warpgroup MMA (sm_90a: wgmma.mma_async).
//
// Algorithm: as the mma.sync kernel (FlashAttention-2 order, online softmax in registers), but
// each 64-row query block is one warpgroup (4 warps, warp w owns rows 16w..16w+15) and the two
// products are warpgroup MMAs: S[64xN] = Q K^T with Q as register A fragments (loaded once,
// straight from global memory) and K read K-major from shared memory; then O[64xD] += P V with
// P from registers (the f32 accumulator layout of S, rounded to the input type, is the A-fragment
// layout) and V read N-major from shared memory (transposed operand; past a ragged block's valid
// keys P is zero and the rows zero-filled). QB warpgroups per CTA
// share one key list (QB = 2: the halves of a 128-token tile, or neighbouring tiles in dense
// mode), so each K/V block is loaded once for 128 query rows.
//
// Data layout: q, k, v, o [B][H][padded tokens][D], D contiguous. Shared memory (1024-byte
// aligned): K and V [2 stages][D/64][64 rows][64]: column blocks of 64 elements (128-byte rows),
// 16-byte chunk c of row r stored at chunk c ^ (r & 7): the canonical 128-byte-swizzle layout
// that wgmma descriptors name (stride 1024 bytes per 8 rows; for the transposed V operand, 8192
// bytes between 64-column blocks). 64 KB per CTA at D = 128, so 3 one-warpgroup CTAs fit an SM.
//
// Synchronisation: cp.async double buffer as in the mma.sync kernel (zero-filled padding rows).
// cp.async writes through the generic proxy and wgmma reads through the async proxy, so every
// thread fences (fence.proxy.async.shared::cta) after its copies land and before the CTA
// barrier. Each wgmma batch is committed and waited for (wait_group 0) before its accumulators
// are read; the stage a prefetch overwrites was last read by wgmmas that completed before the
// barrier. Overlap comes from 3 CTAs per SM (one's softmax under another's MMAs). The default
// Hopper kernel is the warp-specialised one (attention_sm90_ws.cuh, TMA + mbarriers), which
// shares this file's per-block pieces; this one is its fallback and comparison baseline.
#pragma once
#include <type_traits>

#include "attention_common.cuh"
#include "wgmma_ops.cuh"

namespace veda::cuda {

template <int D, int kThreads>
struct CopyPlan90 {
  static constexpr int kChunks = D / 8;
  static constexpr int kRowStep = kThreads / kChunks;
  static_assert(kRowStep % 8 == 0, "row step must keep (row & 7) fixed");
  int row0, col;
  uint32_t smem_off;
  // t: the thread's index among the kThreads that copy.
  __device__ __forceinline__ explicit CopyPlan90(int t) {
    const int c = t % kChunks;
    row0 = t / kChunks;
    col = c * 8;
    smem_off = uint32_t((c >> 3) * 8192 + row0 * 128 + (((c & 7) ^ (row0 & 7)) << 4));
  }
  // kRows rows (a multiple of 64: 64-row groups are D*128 bytes apart), rows >= valid zero-filled.
  template <int kRows, class T>
  __device__ __forceinline__ void load(uint32_t smem_base, const T* rows, int64_t rs, int valid0,
                                       int valid1) const {
    const T* src = rows + row0 * rs + col;
#pragma unroll
    for (int i = 0; i < kRows / kRowStep; ++i) {
      const int r = row0 + i * kRowStep;
      const bool ok = (r & 63) < ((r >> 6) ? valid1 : valid0);
      const uint32_t off = uint32_t((r >> 6) * D * 128 + (r & 63) * 128) - uint32_t(row0 * 128);
      cp_async_16(smem_base + smem_off + off, ok ? src : rows, ok ? 16 : 0);
      src += kRowStep * rs;
    }
  }
};

// The descriptors of a 64-row tile in the layout above at shared address `tile`: as S's K-major
// operand (K, or Q in shared memory), and as P V's transposed operand (V: 8192 bytes between its
// 64-column blocks).
__device__ __forceinline__ uint64_t k_tile_desc(uint32_t tile) {
  return smem_desc_128b(tile, 16, 1024);
}
__device__ __forceinline__ uint64_t v_tile_desc(uint32_t tile) {
  return smem_desc_128b(tile, 8192, 1024);
}

// S for N keys (the kernels use N = 64 here): this warpgroup's 64 rows x N keys (D/16 k-steps),
// Q as register A fragments, K's tile descriptor `k_desc`. k-step kk (columns 16kk..16kk+15) of
// a K-major tile in the layout above starts (kk / 4) 64-column blocks and (kk % 4) 32-byte chunks
// into it; the column blocks of K lie kKChunk bytes apart (8192 in this file's layout; the
// warp-specialised kernel keeps its stages' column blocks together, see there).
template <int kKChunk>
__device__ __forceinline__ uint32_t k_step_offset(int kk) {
  return (kk >> 2) * kKChunk + (kk & 3) * 32;
}
template <int D, class T, int N, int kKChunk>
__device__ __forceinline__ void s_gemm(float (&s)[N / 2], const uint32_t (&q)[D / 16][4],
                                       uint64_t k_desc) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmma_rs_s<N, T>(s, q[kk], desc_advance(k_desc, k_step_offset<kKChunk>(kk)), kk > 0 ? 1 : 0);
}

// S with Q in shared memory (same layout as a K tile, `q_desc`), N = 64 or 128 keys. N = 128
// needs the two 64-key blocks' K rows 8192 bytes apart in each column block (one operand of 16
// 8-row groups, 1024 bytes each).
template <int D, class T, int N, int kKChunk>
__device__ __forceinline__ void s_gemm(float (&s)[N / 2], uint64_t q_desc, uint64_t k_desc) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmma_ss_s<N, T>(s, desc_advance(q_desc, k_step_offset<8192>(kk)),
                     desc_advance(k_desc, k_step_offset<kKChunk>(kk)), kk > 0 ? 1 : 0);
}

// Q rows of one 64-row block straight from global memory into wgmma A fragments: warp w of the
// warpgroup holds rows 16w + lane/4 and + 8, columns 16*kk + 2*(lane & 3) + {0, 1} and + 8.
// Rows past `valid` stay zero.
template <int D, class T>
__device__ __forceinline__ void load_q_fragments(uint32_t (&qf)[D / 16][4], const T* q_block,
                                                 int64_t rs, int valid, int warp_in_group,
                                                 int lane) {
  const int r0 = warp_in_group * 16 + (lane >> 2);
  const T* q0 = q_block + r0 * rs + (lane & 3) * 2;
  const T* q1 = q0 + 8 * rs;
  const bool ok0 = r0 < valid, ok1 = r0 + 8 < valid;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    qf[kk][0] = ok0 ? __ldg(reinterpret_cast<const uint32_t*>(q0 + kk * 16)) : 0u;
    qf[kk][1] = ok1 ? __ldg(reinterpret_cast<const uint32_t*>(q1 + kk * 16)) : 0u;
    qf[kk][2] = ok0 ? __ldg(reinterpret_cast<const uint32_t*>(q0 + kk * 16 + 8)) : 0u;
    qf[kk][3] = ok1 ? __ldg(reinterpret_cast<const uint32_t*>(q1 + kk * 16 + 8)) : 0u;
  }
}

// The online softmax for one step of NB 64-key blocks (NB = 1 or 2: 64 or 128 keys; valid[b] of
// block b real) of this warpgroup's 64 query rows, in pieces:
//   issue_s         S = Q K^T, one 64x64 accumulator per block (K a 128B-swizzled shared-memory
//                   tile, named by its descriptor: k_tile_desc), one commit group;
//   softmax_blocks  mask each block past its valid keys, the row max over the NB * 64 columns
//                   (kept while a new one is within 2^8: update_row_max), P = exp(S - max) packed
//                   as the next A operand, row sums, and the factor alpha by which O must be
//                   rescaled before P V is added;
//   rescale         O *= alpha, skipped by a warp whose alphas are all 1;
//   issue_pv        O += P V over the NB V tiles (transposed shared-memory operand: v_tile_desc),
//                   one commit group.
// S always spans 64 keys per block: an N = 16 form for the ragged edge blocks of <= 16 keys, in
// either a shared or its own accumulator, made ptxas serialize every wgmma of the kernel (C7511).
// Q: register A fragments (uint32_t[D / 16][4]) or a shared-memory descriptor (uint64_t), as the
// s_gemm overloads take it. kPair (Q in shared memory, NB = 2, the blocks' K rows adjacent as
// s_gemm's N = 128 form needs): one m64n128k16 chain instead of two m64n64k16 ones, which
// reads Q from shared memory once, not twice: at N = 64 an S with both operands in shared memory
// reads 128 bytes a clock (2 KB of Q and 2 KB of K per 32-cycle wgmma), all of the SM's
// shared-memory bandwidth, with the TMA writes and P V's reads of V competing for it; at N =
// 128, 96.
template <int D, class T, int NB, int kKChunk = 8192, bool kPair = false, class Q>
__device__ __forceinline__ void issue_s(float (&s)[NB][32], const Q& q,
                                        const uint64_t (&k_desc)[NB]) {
#pragma unroll
  for (int b = 0; b < NB; ++b) fence_operands(s[b]);
  wgmma_fence();
  if constexpr (kPair) {
    static_assert(NB == 2 && std::is_same_v<Q, uint64_t>, "a pair: two blocks, Q in shared memory");
    s_gemm<D, T, 128, kKChunk>(reinterpret_cast<float(&)[64]>(s), q, k_desc[0]);
  } else {
#pragma unroll
    for (int b = 0; b < NB; ++b) s_gemm<D, T, 64, kKChunk>(s[b], q, k_desc[b]);
  }
  wgmma_commit();
}

template <int NB, class T>
__device__ __forceinline__ void softmax_blocks(float (&s)[NB][32], float (&row_max)[2],
                                               float (&row_sum)[2], uint32_t (&pf)[NB][4][4],
                                               float (&alpha)[2], const int (&valid)[NB],
                                               float scale_log2, int lane) {
  // The blocks' scores as groups of four (attention_common.cuh): block b's columns 8n.. are group
  // 8b + n, and its k-steps t are P fragments 4b + t.
  auto& blocks = reinterpret_cast<float(&)[NB][8][4]>(s);
#pragma unroll
  for (int b = 0; b < NB; ++b) mask_past_valid(blocks[b], valid[b], lane);
  auto& groups = reinterpret_cast<float(&)[NB * 8][4]>(s);
  float mx[2], neg_m[2];
  quad_row_max(groups, mx);
#pragma unroll
  for (int i = 0; i < 2; ++i)
    alpha[i] = update_row_max(row_max[i], row_sum[i], mx[i], scale_log2, neg_m[i]);
  exp_pack<NB * 8, T>(groups, neg_m, scale_log2, row_sum,
                      reinterpret_cast<uint32_t(&)[NB * 4][4]>(pf));
}

template <int D>
__device__ __forceinline__ void rescale(float (&acc)[D / 2], const float (&alpha)[2]) {
#pragma unroll
  for (int c = 0; c < D / 8; ++c) {
    acc[c * 4 + 0] *= alpha[0];
    acc[c * 4 + 1] *= alpha[0];
    acc[c * 4 + 2] *= alpha[1];
    acc[c * 4 + 3] *= alpha[1];
  }
}

template <int D, class T, int NB>
__device__ __forceinline__ void issue_pv(float (&acc)[D / 2], uint32_t (&pf)[NB][4][4],
                                         const uint64_t (&v_desc)[NB]) {
  fence_operands(acc);
#pragma unroll
  for (int b = 0; b < NB; ++b) fence_operands(pf[b]);
  wgmma_fence();
  // Every k-step, also past a ragged block's valid keys: P is zero there and the V rows are
  // finite (zero-filled by the one-warpgroup kernel's copies, finite padding by contract for TMA),
  // so they add nothing. A skip (a branch per k-step, or a whole-block branch) made ptxas add an
  // empty wgmma and an arrive to every step.
#pragma unroll
  for (int b = 0; b < NB; ++b) {
#pragma unroll
    for (int t = 0; t < 4; ++t) wgmma_rs_tb<D, T>(acc, pf[b][t], desc_advance(v_desc[b], t * 2048));
  }
  wgmma_commit();
}

// The pieces in order, each product waited for: one step start to finish. S lives only within
// the step (the first wgmma of each block overwrites it: scale_d = 0).
template <int D, class T, int NB>
__device__ __forceinline__ void attend_key_blocks(float (&acc)[D / 2], float (&row_max)[2],
                                                  float (&row_sum)[2],
                                                  const uint32_t (&q)[D / 16][4],
                                                  const uint32_t (&k_tile)[NB],
                                                  const uint32_t (&v_tile)[NB],
                                                  const int (&valid)[NB], float scale_log2,
                                                  int lane) {
  float s[NB][32];
  uint64_t k_desc[NB], v_desc[NB];
#pragma unroll
  for (int b = 0; b < NB; ++b) {
    k_desc[b] = k_tile_desc(k_tile[b]);
    v_desc[b] = v_tile_desc(v_tile[b]);
  }
  issue_s<D, T, NB>(s, q, k_desc);
  wgmma_wait<0>();
#pragma unroll
  for (int b = 0; b < NB; ++b) fence_operands(s[b]);
  uint32_t pf[NB][4][4];
  float alpha[2];
  softmax_blocks<NB, T>(s, row_max, row_sum, pf, alpha, valid, scale_log2, lane);
  if (warp_needs_rescale(alpha)) rescale<D>(acc, alpha);
  issue_pv<D, T, NB>(acc, pf, v_desc);
  wgmma_wait<0>();
  fence_operands(acc);
}

// The scales that normalise this thread's two output rows, r_lo and r_lo + 8 of the warpgroup's
// 64 (1 / row sum; 0 for rows past `valid` and rows that saw no key), once the quad's row sums
// are added up; their log-sum-exps (-inf for those rows) go to lse_block when it is given.
__device__ __forceinline__ void finish_rows(float (&inv)[2], float* lse_block,
                                            const float (&row_max)[2], float (&row_sum)[2],
                                            int valid, float scale, int warp_in_group, int lane) {
  const int r_lo = warp_in_group * 16 + (lane >> 2);
  quad_sum(row_sum);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = r_lo + i * 8;
    const bool live = r < valid && row_sum[i] > 0.f;
    inv[i] = live ? 1.f / row_sum[i] : 0.f;
    if (lse_block && (lane & 3) == 0)
      lse_block[r] = live ? row_max[i] * scale + logf(row_sum[i]) : -INFINITY;
  }
}

// Normalises and writes this warpgroup's 64 output rows (rows past `valid` and rows that saw no
// key are zero; their lse is -inf).
template <int D, class T>
__device__ __forceinline__ void store_rows(T* o_block, int64_t rs, float* lse_block,
                                           const float (&acc)[D / 2], const float (&row_max)[2],
                                           float (&row_sum)[2], int valid, float scale,
                                           int warp_in_group, int lane) {
  float inv[2];
  finish_rows(inv, lse_block, row_max, row_sum, valid, scale, warp_in_group, lane);
  const int r_lo = warp_in_group * 16 + (lane >> 2);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    T* orow = o_block + (r_lo + i * 8) * rs;
#pragma unroll
    for (int c = 0; c < D / 8; ++c) {
      const int col = c * 8 + (lane & 3) * 2;
      const float lo = acc[c * 4 + 2 * i] * inv[i], hi = acc[c * 4 + 2 * i + 1] * inv[i];
      // Streaming stores (evict first): O is not read again, so it should not push K / V
      // out of L2. fp32 rows: the warp-specialised kernel's partial outputs.
      if constexpr (std::is_same_v<T, float>) {
        __stcs(reinterpret_cast<float2*>(orow + col), make_float2(lo, hi));
      } else {
        __stcs(reinterpret_cast<unsigned*>(orow + col), ElemTraits<T>::pack(lo, hi));
      }
    }
  }
}

// CTAs per SM for one warpgroup per CTA (64 KB of shared memory each): 3 caps registers at 168.
#ifndef VEDA_SM90_CTAS
#define VEDA_SM90_CTAS 3
#endif
inline constexpr int kSm90CtasPerSm = VEDA_SM90_CTAS;

template <int D, int QB, class T>
__global__ void __launch_bounds__(128 * QB, (QB == 1 ? kSm90CtasPerSm : 1))
    attention_fwd_sm90_kernel(const FwdParams p) {
  constexpr int kThreads = 128 * QB;
  constexpr uint32_t kTileBytes = 64 * D * 2;  // one 64-row tile
  extern __shared__ __align__(128) unsigned char smem_raw90[];
  const uint32_t base = (smem_u32(smem_raw90) + 1023u) & ~1023u;
  const uint32_t sK = base;                 // [2][tile]
  const uint32_t sV = sK + 2 * kTileBytes;  // [2][tile]
  const CopyPlan90<D, kThreads> plan(threadIdx.x);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int group = warp >> 2;  // warpgroup = 64-row block of this CTA
  const int h = blockIdx.y, b = blockIdx.z;
  const int first_qb = blockIdx.x * QB;
  const int32_t* valid_h = p.tile_valid + int64_t(h) * p.num_tiles;

  int q_valid[2] = {0, 0};
#pragma unroll
  for (int g = 0; g < QB; ++g) {
    const int qb = first_qb + g;
    if (qb < p.num_q_blocks) q_valid[g] = query_block_valid(p, valid_h, qb);
  }
  const int my_qb = first_qb + group;

  const T* q_bh = static_cast<const T*>(p.q) + b * p.q_bs + h * p.q_hs;
  const T* k_bh = static_cast<const T*>(p.k) + b * p.k_bs + h * p.k_hs;
  const T* v_bh = static_cast<const T*>(p.v) + b * p.v_bs + h * p.v_hs;
  T* o_bh = static_cast<T*>(p.o) + b * p.o_bs + h * p.o_hs;
  float* lse_bh = p.lse ? p.lse + (int64_t(b) * p.heads + h) * p.tokens : nullptr;

  const int q_tile = first_qb / p.subs;
  const int32_t* row_indices = nullptr;
  int count = p.num_tiles;
  if (p.mask_counts) {
    const int64_t r = (int64_t(b) * p.heads + h) * p.num_tiles + q_tile;
    count = __ldg(p.mask_counts + r);
    row_indices = p.mask_indices + r * p.max_k;
  }
  const int n_steps = count * p.subs;
  KeyBlock kb{0, 0};
  int j = (q_valid[0] + q_valid[1] > 0) ? next_key_step(p, row_indices, valid_h, 0, n_steps, kb)
                                        : n_steps;

  float acc[D / 2];  // O: [D/8 column groups][4]
#pragma unroll
  for (int i = 0; i < D / 2; ++i) acc[i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};

  if (j < n_steps) {
    plan.template load<64>(sK, k_bh + kb.row * p.k_rs, p.k_rs, kb.valid, 0);
    plan.template load<64>(sV, v_bh + kb.row * p.v_rs, p.v_rs, kb.valid, 0);
    cp_async_commit();

    // Q straight from global memory (once per CTA, overlapping the first K/V copies).
    uint32_t qf[D / 16][4];
    load_q_fragments<D, T>(qf, q_bh + int64_t(my_qb) * 64 * p.q_rs, p.q_rs,
                           group ? q_valid[1] : q_valid[0], warp & 3, lane);
    int stage = 0;
    while (j < n_steps) {
      const int cur_valid = kb.valid;
      cp_async_wait<0>();
      fence_proxy_async_smem();
      __syncthreads();
      const int jn = next_key_step(p, row_indices, valid_h, j + 1, n_steps, kb);
      if (jn < n_steps) {
        const uint32_t off = (stage ^ 1) * kTileBytes;
        plan.template load<64>(sK + off, k_bh + kb.row * p.k_rs, p.k_rs, kb.valid, 0);
        plan.template load<64>(sV + off, v_bh + kb.row * p.v_rs, p.v_rs, kb.valid, 0);
      }
      cp_async_commit();

      attend_key_blocks<D, T, 1>(acc, row_max, row_sum, qf, {sK + stage * kTileBytes},
                                 {sV + stage * kTileBytes}, {cur_valid}, p.scale_log2, lane);
      stage ^= 1;
      j = jn;
    }
    cp_async_wait<0>();
  }

  if (my_qb >= p.num_q_blocks) return;
  const int64_t token0 = int64_t(my_qb) * 64;
  store_rows<D, T>(o_bh + token0 * p.o_rs, p.o_rs, lse_bh ? lse_bh + token0 : nullptr, acc,
                   row_max, row_sum, group ? q_valid[1] : q_valid[0], p.scale, warp & 3, lane);
}

template <int D, int QB>
constexpr int sm90_smem_bytes() {
  return 4 * 64 * D * 2 + 1024;  // K and V, 2 stages each, + alignment slack
}

}  // namespace veda::cuda
