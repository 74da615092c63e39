// Shared pieces of the attention kernels: the device-side parameter block, element-type traits
// (f16 / bf16 mma spellings and packing) and small PTX wrappers (ldmatrix, cp.async, mma.sync).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/attention_launch.hpp"

namespace veda::cuda {

template <class T>
struct ElemTraits;
template <>
struct ElemTraits<__half> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <>
struct ElemTraits<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy; src_bytes 0 zero-fills the destination without reading.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// 2^x with the SFU's approximation (relative error ~2^-22; -inf -> +0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Online softmax over groups of four scores in the mma accumulator layout, shared by the mma.sync
// and wgmma kernels: group g holds two columns of row 0 (elements 0, 1) and of row 1 (2, 3), and
// the four lanes of a quad hold the rest of the two rows.

// One 64-key block's scores (8 groups) past its `valid` keys -> -inf.
__device__ __forceinline__ void mask_past_valid(float (&s)[8][4], int valid, int lane) {
  if (valid >= 64) return;
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = n * 8 + (lane & 3) * 2 + (e & 1);
      if (col >= valid) s[n][e] = -INFINITY;
    }
}

// Sums this thread's two row values over its quad (every lane gets the row totals).
__device__ __forceinline__ void quad_sum(float (&v)[2]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    v[i] += __shfl_xor_sync(0xffffffffu, v[i], 1);
    v[i] += __shfl_xor_sync(0xffffffffu, v[i], 2);
  }
}

// This thread's two row maxima over its groups and its quad. Four partial maxima a row keep the
// chain of dependent max instructions a quarter as long (it sits between S and the exponentials).
template <int G>
__device__ __forceinline__ void quad_row_max(const float (&s)[G][4], float (&mx)[2]) {
  constexpr int kParts = G % 4 == 0 ? 4 : 1;
  float part[2][kParts];
#pragma unroll
  for (int q = 0; q < kParts; ++q) part[0][q] = part[1][q] = -INFINITY;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    part[0][g % kParts] = fmaxf(part[0][g % kParts], fmaxf(s[g][0], s[g][1]));
    part[1][g % kParts] = fmaxf(part[1][g % kParts], fmaxf(s[g][2], s[g][3]));
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = part[i][0];
#pragma unroll
    for (int q = 1; q < kParts; ++q) mx[i] = fmaxf(mx[i], part[i][q]);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
  }
}

// FlashAttention-4's conditional rescaling: a row's running max moves only when a block's max
// exceeds it by more than 2^kStaleMaxLog2 in exp2 units, so most steps keep alpha = 1 and skip the
// O rescale. Probabilities stay <= 2^8 (exact in fp16 / bf16 P, summed in f32), and O, the row sum
// and the lse all use the same max, so the result is unchanged. Returns alpha, the factor for O
// (the row sum is rescaled here); neg_m = -max * scale_log2, the exp2 offset of the block.
inline constexpr float kStaleMaxLog2 = 8.f;
__device__ __forceinline__ float update_row_max(float& row_max, float& row_sum, float mx,
                                                float scale_log2, float& neg_m) {
  float alpha = 1.f;
  // Also true for the first finite max (row_max = -inf: alpha = 0); a row with no finite score
  // yet (NaN difference) keeps -inf.
  if ((mx - row_max) * scale_log2 > kStaleMaxLog2) {
    alpha = fast_exp2((row_max - mx) * scale_log2);
    row_max = mx;
    row_sum *= alpha;
  }
  neg_m = row_max == -INFINITY ? 0.f : -row_max * scale_log2;
  return alpha;
}

// Whether any lane of the warp must rescale its O rows (warp-uniform: the rescale is skipped as a
// whole).
__device__ __forceinline__ bool warp_needs_rescale(const float (&alpha)[2]) {
  return __any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f);
}

// P = exp2(s * scale_log2 + neg_m) packed as mma A fragments (groups 2k and 2k + 1 fill pf[k]),
// added to the row sums.
// Two partial sums a row halve the chain of dependent additions.
template <int G, class T>
__device__ __forceinline__ void exp_pack(const float (&s)[G][4], const float (&neg_m)[2],
                                         float scale_log2, float (&row_sum)[2],
                                         uint32_t (&pf)[G / 2][4]) {
  float odd[2] = {0.f, 0.f};
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float p0 = fast_exp2(fmaf(s[g][0], scale_log2, neg_m[0]));
    const float p1 = fast_exp2(fmaf(s[g][1], scale_log2, neg_m[0]));
    const float p2 = fast_exp2(fmaf(s[g][2], scale_log2, neg_m[1]));
    const float p3 = fast_exp2(fmaf(s[g][3], scale_log2, neg_m[1]));
    float(&sum)[2] = g % 2 ? odd : row_sum;
    sum[0] += p0 + p1;
    sum[1] += p2 + p3;
    pf[g >> 1][(g & 1) * 2 + 0] = ElemTraits<T>::pack(p0, p1);
    pf[g >> 1][(g & 1) * 2 + 1] = ElemTraits<T>::pack(p2, p3);
  }
  row_sum[0] += odd[0];
  row_sum[1] += odd[1];
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// D = A * B + D, m16n8k16, f32 accumulators.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Valid tokens (0..64) of 64-row block `sub` of a tile that holds `tile_valid` tokens.
__device__ __forceinline__ int block_valid(int tile_valid, int sub) {
  return min(max(tile_valid - sub * 64, 0), 64);
}
// Valid tokens of 64-row query block `qb` of a head whose tile_valid row is `valid_h`.
__device__ __forceinline__ int query_block_valid(const FwdParams& p, const int32_t* valid_h,
                                                 int qb) {
  return block_valid(__ldg(valid_h + qb / p.subs), qb % p.subs);
}

// The key block (64 keys) that step `j` of a mask row visits: j / subs-th listed tile, its
// (j % subs)-th 64-key half. Returns the valid keys in it (0 = nothing to do).
struct KeyBlock {
  int64_t row;  // first token row of the block in the (b, h) slice
  int valid;
};
__device__ __forceinline__ KeyBlock key_block_at(const FwdParams& p, const int32_t* row_indices,
                                                 const int32_t* valid_h, int j) {
  const int list_pos = p.subs == 1 ? j : j >> 1;
  const int sub = p.subs == 1 ? 0 : (j & 1);
  const int tile = row_indices ? __ldg(row_indices + list_pos) : list_pos;
  const int valid = block_valid(__ldg(valid_h + tile), sub);
  return {int64_t(tile) * p.tile_size + sub * 64, valid};
}

// First step >= j whose key block has valid keys (n if none).
__device__ __forceinline__ int next_key_step(const FwdParams& p, const int32_t* row_indices,
                                             const int32_t* valid_h, int j, int n, KeyBlock& kb) {
  for (; j < n; ++j) {
    kb = key_block_at(p, row_indices, valid_h, j);
    if (kb.valid > 0) break;
  }
  return j;
}

}  // namespace veda::cuda
