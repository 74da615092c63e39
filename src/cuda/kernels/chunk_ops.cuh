// A 16-byte chunk of a row as f32 values (f32, bf16 or fp16 elements), for kernels that read rows
// 16 bytes a thread: the selection's statistics pass and the DiT's q/k/v producer.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace veda::cuda {

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
      const float2 v = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      f[2 * i] = v.x, f[2 * i + 1] = v.y;
    }
  }
};

}  // namespace veda::cuda
