// Hopper asynchronous-copy primitives: mbarrier (shared-memory transaction barriers), TMA tile
// loads and stores (cp.async.bulk.tensor), and warpgroup register reallocation (setmaxnreg).
// sm_90a only; other targets get empty bodies (the kernels using them are never launched there).
#pragma once
#include <cstdint>

#include "wgmma_ops.cuh"

namespace veda::cuda {

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
#if VEDA_SM90A
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#endif
}
// Makes barrier initialisation visible to the async proxy (TMA completes transactions on it).
__device__ __forceinline__ void mbar_init_fence() {
#if VEDA_SM90A
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#if VEDA_SM90A
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// Arrives and announces `bytes` of TMA transactions that complete the current phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#if VEDA_SM90A
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
#endif
}
// Blocks until the phase with parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if VEDA_SM90A
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
#endif
}

// L2 cache policies for cache hints (the encodings CUTLASS uses for sm_90).
inline constexpr uint64_t kL2EvictNormal = 0x1000000000000000ull;
inline constexpr uint64_t kL2EvictFirst = 0x12F0000000000000ull;

// One TMA box of a rank-4 tensor map into shared memory; completion is counted on `bar`. The L2
// keeps the box with `l2_policy`.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const void* tensor_map, uint32_t bar,
                                            int c0, int c1, int c2, int c3, uint64_t l2_policy) {
#if VEDA_SM90A
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      ".L2::cache_hint [%0], [%1, {%2, %3, %4, %5}], [%6], %7;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar),
      "l"(l2_policy)
      : "memory");
#endif
}
// Four 8x8 matrices of 16-bit elements to shared memory, matrix k from register r[k] of every
// lane in the mma accumulator layout (lane t: row t / 4, columns 2 (t % 4) and + 1, the lower
// column in the low half); lane l gives the address of row l % 8 of matrix l / 8 (16 bytes).
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, const uint32_t (&r)[4]) {
#if VEDA_SM90A
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr),
               "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
               : "memory");
#endif
}
// One TMA box from shared memory to a rank-4 tensor map's tensor (its writes past the tensor's
// bounds dropped), in this thread's current bulk async-group; L2 keeps the lines with `l2_policy`.
// The shared memory must have been written before a fence.proxy.async and a barrier.
__device__ __forceinline__ void tma_store_4d(const void* tensor_map, uint32_t src, int c0, int c1,
                                             int c2, int c3, uint64_t l2_policy) {
#if VEDA_SM90A
  asm volatile(
      "cp.async.bulk.tensor.4d.global.shared::cta.tile.bulk_group.L2::cache_hint"
      " [%0, {%2, %3, %4, %5}], [%1], %6;\n" ::"l"(reinterpret_cast<uint64_t>(tensor_map)),
      "r"(src), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "l"(l2_policy)
      : "memory");
#endif
}
// Closes this thread's bulk async-group (the TMA stores issued since the last commit).
__device__ __forceinline__ void bulk_commit_group() {
#if VEDA_SM90A
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
// Waits until at most N of this thread's bulk async-groups still read their shared memory (their
// global writes may still be in flight: the source may be overwritten, nothing more).
template <int N>
__device__ __forceinline__ void bulk_wait_group_read() {
#if VEDA_SM90A
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
#endif
}
__device__ __forceinline__ void tma_prefetch_descriptor(const void* tensor_map) {
#if VEDA_SM90A
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(tensor_map))
               : "memory");
#endif
}
// Starts fetching `bytes` (a multiple of 16, 16-byte aligned) of global memory into L2, kept there
// with `l2_policy`.
__device__ __forceinline__ void prefetch_l2(const void* ptr, uint32_t bytes, uint64_t l2_policy) {
#if VEDA_SM90A
  asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;\n" ::"l"(ptr),
               "r"(bytes), "l"(l2_policy)
               : "memory");
#endif
}

// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads (a multiple of 32):
// sync waits for the count, arrive adds to it and goes on.
__device__ __forceinline__ void named_bar_sync(uint32_t id, uint32_t threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(uint32_t id, uint32_t threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Warpgroup register reallocation (every thread of the warpgroup executes it): the producer
// warpgroup gives registers back, the consumer warpgroups take them.
template <uint32_t N>
__device__ __forceinline__ void setmaxnreg_dec() {
#if VEDA_SM90A
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <uint32_t N>
__device__ __forceinline__ void setmaxnreg_inc() {
#if VEDA_SM90A
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

}  // namespace veda::cuda
