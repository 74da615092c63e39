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
