// The kernel translation unit: instantiates the attention kernels for (dtype, head_dim, rows per
// CTA) and launches them. Arguments were checked by attention_cuda.cpp.
#include <algorithm>

#include "cuda/attention_launch.hpp"
#include "kernels/attention_sm80.cuh"
#include "kernels/attention_sm90.cuh"

namespace veda::cuda {
namespace {

// Raises the kernel's dynamic shared-memory limit once (per instantiation), then launches a
// (query blocks / QB, heads, batch) grid of 128 * QB threads.
template <auto Kernel, int QB>
cudaError_t launch_kernel(int smem, const FwdParams& f, int batch, cudaStream_t stream) {
  static const cudaError_t attr_err =
      cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (attr_err != cudaSuccess) return attr_err;
  dim3 grid((f.num_q_blocks + QB - 1) / QB, f.heads, batch);
  Kernel<<<grid, 128 * QB, smem, stream>>>(f);
  return cudaGetLastError();
}

template <int D, int QB, class T>
cudaError_t launch_sm80(const FwdParams& f, int batch, cudaStream_t stream) {
  return launch_kernel<attention_fwd_sm80_kernel<D, QB, T>, QB>(sm80_smem_bytes<D, QB>(), f, batch,
                                                                stream);
}

template <class T>
cudaError_t launch_sm80_t(const FwdParams& f, int head_dim, int qb, int batch,
                          cudaStream_t stream) {
  if (head_dim == 64)
    return qb == 2 ? launch_sm80<64, 2, T>(f, batch, stream)
                   : launch_sm80<64, 1, T>(f, batch, stream);
  if (head_dim == 128)
    return qb == 2 ? launch_sm80<128, 2, T>(f, batch, stream)
                   : launch_sm80<128, 1, T>(f, batch, stream);
  return cudaErrorInvalidValue;
}

template <int D, int QB, class T>
cudaError_t launch_sm90(const FwdParams& f, int batch, cudaStream_t stream) {
  return launch_kernel<attention_fwd_sm90_kernel<D, QB, T>, QB>(sm90_smem_bytes<D, QB>(), f, batch,
                                                                stream);
}

template <class T>
cudaError_t launch_sm90_t(const FwdParams& f, int head_dim, int qb, int batch,
                          cudaStream_t stream) {
  if (head_dim == 64)
    return qb == 2 ? launch_sm90<64, 2, T>(f, batch, stream)
                   : launch_sm90<64, 1, T>(f, batch, stream);
  if (head_dim == 128)
    return qb == 2 ? launch_sm90<128, 2, T>(f, batch, stream)
                   : launch_sm90<128, 1, T>(f, batch, stream);
  return cudaErrorInvalidValue;
}

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}
template <class T>
__global__ void fill_uniform_kernel(T* dst, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const uint64_t r = mix64(seed * 0x9e3779b97f4a7c15ull + i);
    const float x = lo + (hi - lo) * (float(r >> 40) * (1.f / 16777216.f));
    if constexpr (std::is_same_v<T, float>)
      dst[i] = x;
    else if constexpr (std::is_same_v<T, __half>)
      dst[i] = __float2half_rn(x);
    else
      dst[i] = __float2bfloat16_rn(x);
  }
}
template <class T>
cudaError_t launch_fill(void* dst, size_t n, uint64_t seed, float lo, float hi) {
  if (n == 0) return cudaSuccess;
  const int threads = 256;
  const size_t blocks = std::min<size_t>((n + threads - 1) / threads, 65536);
  fill_uniform_kernel<T><<<unsigned(blocks), threads>>>(static_cast<T*>(dst), n, seed, lo, hi);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_attention_sm80(const FwdParams& f, Elem elem, int head_dim, int qb, int batch,
                                  cudaStream_t stream) {
  switch (elem) {
    case Elem::kF16:
      return launch_sm80_t<__half>(f, head_dim, qb, batch, stream);
    case Elem::kBF16:
      return launch_sm80_t<__nv_bfloat16>(f, head_dim, qb, batch, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

bool sm90_kernel_available() {
  // The wgmma kernel is real only in sm_90a machine code; a build without that target (or a
  // non-Hopper device running JIT-compiled PTX) must use the mma.sync kernel.
  static const bool available = [] {
    cudaFuncAttributes attr{};
    if (cudaFuncGetAttributes(&attr, attention_fwd_sm90_kernel<128, 1, __nv_bfloat16>) !=
        cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return attr.binaryVersion == 90;
  }();
  return available;
}

cudaError_t launch_attention_sm90(const FwdParams& f, Elem elem, int head_dim, int qb, int batch,
                                  cudaStream_t stream) {
  switch (elem) {
    case Elem::kF16:
      return launch_sm90_t<__half>(f, head_dim, qb, batch, stream);
    case Elem::kBF16:
      return launch_sm90_t<__nv_bfloat16>(f, head_dim, qb, batch, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_fill_uniform(void* dst, Elem elem, size_t n, uint64_t seed, float lo, float hi) {
  switch (elem) {
    case Elem::kF32:
      return launch_fill<float>(dst, n, seed, lo, hi);
    case Elem::kF16:
      return launch_fill<__half>(dst, n, seed, lo, hi);
    case Elem::kBF16:
      return launch_fill<__nv_bfloat16>(dst, n, seed, lo, hi);
  }
  return cudaErrorInvalidValue;
}

}  // namespace veda::cuda
