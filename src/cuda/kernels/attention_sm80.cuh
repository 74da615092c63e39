// Tile-skipping attention forward on mma.sync tensor cores (sm_80 and later; the fallback on
// Hopper).
//
// Algorithm (FlashAttention-2 forward): a CTA owns QB x 64 query rows of one (batch, head):
// QB = 1 for a 64-token query tile, QB = 2 for two 64-row blocks that share one key list (the two
// halves of a 128-token tile, or two neighbouring tiles in dense mode). 4 warps per 64 rows, each
// warp owns 16 query rows. The CTA walks the key tiles of its mask row in 64-key blocks:
// S = Q K^T (m16n8k16, f32 accumulators), online softmax in registers (row max and row sum
// reduced over the 4 threads of a quad, exp2 with the scale folded in), P rounded to the input
// type and O += P V. Key slots >= the block's valid count are -inf in S. Rows past a tile's valid
// count are zero-filled by cp.async (src-size 0), so whatever the padding slots hold in global
// memory never reaches the arithmetic; their output rows are written as zeros (lse -inf). A
// query block with no key block writes zeros.
//
// Data layout: q, k, v, o [B][H][padded tokens][D] with D contiguous (tile order). Shared memory:
// Q [QB*64][D], K [2][64][D], V [2][64][D]; each row is D/8 16-byte chunks, chunk c of row r
// stored at chunk (c ^ (r & 7)), so the 8 rows an ldmatrix phase reads hit 8 distinct bank groups.
// All shared-memory addresses are per-lane bases plus compile-time offsets (few integer ops).
//
// Synchronisation: cp.async double buffer. At the top of step j every thread waits for its own
// copies (wait_group 0) and the CTA barrier makes them visible; only then is block j+1 issued
// into the other stage, whose last readers (step j-1) are past the same barrier.
#pragma once
#include <cfloat>

#include "attention_common.cuh"

namespace veda::cuda {

// Per-thread cp.async plan for a [rows][D] tile: thread t copies chunk t % (D/8) of rows
// t / (D/8) + i * kRowStep. kRowStep is a multiple of 8, so every row a thread touches has the same
// (row & 7) and hence the same swizzled chunk: the shared-memory offset is base + i * constant.
template <int D, int kThreads>
struct CopyPlan {
  static constexpr int kChunks = D / 8;
  static constexpr int kRowStep = kThreads / kChunks;
  static_assert(kRowStep % 8 == 0, "row step must keep (row & 7) fixed");
  int row0, col;
  uint32_t smem_off;  // bytes
  __device__ __forceinline__ CopyPlan() {
    const int t = threadIdx.x, c = t % kChunks;
    row0 = t / kChunks;
    col = c * 8;
    smem_off = uint32_t(row0 * D + ((c ^ (row0 & 7)) << 3)) * 2u;
  }
  // Rows >= valid of their 64-row group are zero-filled (src-size 0, nothing read).
  template <int kRows, class T>
  __device__ __forceinline__ void load(uint32_t smem_base, const T* rows, int64_t rs, int valid0,
                                       int valid1) const {
    const T* src = rows + row0 * rs + col;
#pragma unroll
    for (int i = 0; i < kRows / kRowStep; ++i) {
      const int r = row0 + i * kRowStep;
      const bool ok = (r & 63) < ((r >> 6) ? valid1 : valid0);
      cp_async_16(smem_base + smem_off + uint32_t(i * kRowStep * D * 2), ok ? src : rows,
                  ok ? 16 : 0);
      src += kRowStep * rs;
    }
  }
};

template <int D, int QB, class T>
__global__ void __launch_bounds__(128 * QB, (QB == 1 ? 2 : 1))
    attention_fwd_sm80_kernel(const FwdParams p) {
  constexpr int kThreads = 128 * QB;
  constexpr int kRows = 64 * QB;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  constexpr uint32_t kStageBytes = 64 * D * 2;
  const uint32_t sQ_addr = smem_u32(smem_raw);
  const uint32_t sK_addr = sQ_addr + kRows * D * 2;    // [2][64][D]
  const uint32_t sV_addr = sK_addr + 2 * kStageBytes;  // [2][64][D]
  const CopyPlan<D, kThreads> plan;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // ldmatrix lane addresses. Every row a lane addresses has (row & 7) == (lane & 7), so the
  // swizzled chunk of logical chunk (2*kk + bit) is (2*kk) ^ (bit ^ (lane & 7)): a per-lane base
  // XORed with a compile-time constant.
  const uint32_t q_lane = sQ_addr + uint32_t((warp * 16 + (lane & 15)) * D * 2);
  const int q_cx = (lane >> 4) ^ (lane & 7);
  const uint32_t k_lane = sK_addr + uint32_t(((lane & 7) + ((lane >> 4) << 3)) * D * 2);
  const int k_cx = ((lane >> 3) & 1) ^ (lane & 7);
  const uint32_t v_lane = sV_addr + uint32_t(((lane & 7) + (((lane >> 3) & 1) << 3)) * D * 2);
  const int v_cx = (lane >> 4) ^ (lane & 7);
  const int h = blockIdx.y, b = blockIdx.z;
  const int first_qb = blockIdx.x * QB;  // first 64-row block of this CTA
  const int32_t* valid_h = p.tile_valid + int64_t(h) * p.num_tiles;

  int q_valid[2] = {0, 0};
#pragma unroll
  for (int g = 0; g < QB; ++g) {
    const int qb = first_qb + g;
    if (qb < p.num_q_blocks) q_valid[g] = query_block_valid(p, valid_h, qb);
  }
  const int my_group = warp >> 2;  // which 64-row block this warp's rows are in
  const int my_qb = first_qb + my_group;
  const int64_t q_row0 = int64_t(first_qb) * 64;  // token row of the CTA's first query row

  const T* q_bh = static_cast<const T*>(p.q) + b * p.q_bs + h * p.q_hs;
  const T* k_bh = static_cast<const T*>(p.k) + b * p.k_bs + h * p.k_hs;
  const T* v_bh = static_cast<const T*>(p.v) + b * p.v_bs + h * p.v_hs;
  T* o_bh = static_cast<T*>(p.o) + b * p.o_bs + h * p.o_hs;
  float* lse_bh = p.lse ? p.lse + (int64_t(b) * p.heads + h) * p.tokens : nullptr;

  // The key list: the mask row of the CTA's first query tile (all its rows share it).
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

  // Per-thread state: rows r0 = warp*16 + lane/4 and r0 + 8 of the CTA's rows.
  const int r_lo = (warp & 3) * 16 + (lane >> 2);  // row within the warp's 64-row group
  const bool warp_active = (warp & 3) * 16 < (my_group ? q_valid[1] : q_valid[0]);
  float acc[D / 8][4];
#pragma unroll
  for (int c = 0; c < D / 8; ++c) acc[c][0] = acc[c][1] = acc[c][2] = acc[c][3] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};

  if (j < n_steps) {
    plan.template load<kRows>(sQ_addr, q_bh + q_row0 * p.q_rs, p.q_rs, q_valid[0], q_valid[1]);
    plan.template load<64>(sK_addr, k_bh + kb.row * p.k_rs, p.k_rs, kb.valid, 0);
    plan.template load<64>(sV_addr, v_bh + kb.row * p.v_rs, p.v_rs, kb.valid, 0);
    cp_async_commit();

    uint32_t qf[D / 16][4];
    int stage = 0;
    bool first = true;
    while (j < n_steps) {
      const int cur_valid = kb.valid;
      cp_async_wait<0>();
      __syncthreads();
      if (first) {
        first = false;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          ldmatrix_x4(qf[kk], q_lane + (uint32_t((2 * kk) ^ q_cx) << 4));
        }
      }
      // Prefetch the next selected key block into the other stage.
      const int jn = next_key_step(p, row_indices, valid_h, j + 1, n_steps, kb);
      if (jn < n_steps) {
        const uint32_t next_off = (stage ^ 1) * kStageBytes;
        plan.template load<64>(sK_addr + next_off, k_bh + kb.row * p.k_rs, p.k_rs, kb.valid, 0);
        plan.template load<64>(sV_addr + next_off, v_bh + kb.row * p.v_rs, p.v_rs, kb.valid, 0);
      }
      cp_async_commit();

      const uint32_t k_stage = k_lane + stage * kStageBytes;
      const uint32_t v_stage = v_lane + stage * kStageBytes;
      // Skip the arithmetic of all-padding rows (warp) and 16-key groups past the valid keys
      // (CTA-uniform): ragged tiles are the normal case (21x30x52 in 4x4x4 tiles is 82% valid).
      if (warp_active) {
        // S = Q K^T for this warp's 16 rows x 64 keys.
        float s[8][4];
#pragma unroll
        for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
          for (int n2 = 0; n2 < 4; ++n2) {
            if (n2 * 16 < cur_valid) {
              uint32_t kf[4];
              ldmatrix_x4(kf,
                          k_stage + uint32_t(n2 * 16 * D * 2) + (uint32_t((2 * kk) ^ k_cx) << 4));
              mma_16816<T>(s[2 * n2], qf[kk], kf[0], kf[1]);
              mma_16816<T>(s[2 * n2 + 1], qf[kk], kf[2], kf[3]);
            }
          }
        }
        mask_past_valid(s, cur_valid, lane);
        // Online softmax (attention_common.cuh).
        float mx[2], neg_m[2], alpha[2];
        quad_row_max(s, mx);
#pragma unroll
        for (int i = 0; i < 2; ++i)
          alpha[i] = update_row_max(row_max[i], row_sum[i], mx[i], p.scale_log2, neg_m[i]);
        if (warp_needs_rescale(alpha)) {
#pragma unroll
          for (int c = 0; c < D / 8; ++c) {
            acc[c][0] *= alpha[0], acc[c][1] *= alpha[0];
            acc[c][2] *= alpha[1], acc[c][3] *= alpha[1];
          }
        }
        uint32_t pf[4][4];  // P as A fragments, one per 16-key k-step
        exp_pack<8, T>(s, neg_m, p.scale_log2, row_sum, pf);
        // O += P V.
#pragma unroll
        for (int t = 0; t < 4; ++t) {
          if (t * 16 < cur_valid) {
#pragma unroll
            for (int c = 0; c < D / 8; c += 2) {
              uint32_t vf[4];
              ldmatrix_x4_trans(vf, v_stage + uint32_t(t * 16 * D * 2) + (uint32_t(c ^ v_cx) << 4));
              mma_16816<T>(acc[c], pf[t], vf[0], vf[1]);
              mma_16816<T>(acc[c + 1], pf[t], vf[2], vf[3]);
            }
          }
        }
      }  // warp_active
      stage ^= 1;
      j = jn;
    }
    cp_async_wait<0>();
  }

  // Epilogue: normalise and write this warp's 16 rows (zeros for padding rows).
  if (my_qb >= p.num_q_blocks) return;
  const int my_valid = my_group ? q_valid[1] : q_valid[0];
  quad_sum(row_sum);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = r_lo + i * 8;  // row within the 64-row group
    const bool live = r < my_valid && row_sum[i] > 0.f;
    const float inv = live ? 1.f / row_sum[i] : 0.f;
    const int64_t token = int64_t(my_qb) * 64 + r;
    T* orow = o_bh + token * p.o_rs;
#pragma unroll
    for (int c = 0; c < D / 8; ++c) {
      const int col = c * 8 + (lane & 3) * 2;
      *reinterpret_cast<uint32_t*>(orow + col) =
          ElemTraits<T>::pack(acc[c][2 * i] * inv, acc[c][2 * i + 1] * inv);
    }
    if (lse_bh && (lane & 3) == 0) {
      lse_bh[token] = live ? row_max[i] * p.scale + logf(row_sum[i]) : -INFINITY;
    }
  }
}

template <int D, int QB>
constexpr int sm80_smem_bytes() {
  return (64 * QB + 4 * 64) * D * 2;
}

}  // namespace veda::cuda
