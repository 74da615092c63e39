// The kernel translation unit: instantiates the attention kernels for (dtype, head_dim, rows per
// CTA) and launches them. Arguments were checked by attention_cuda.cpp.
#include <cudaTypedefs.h>

#include <algorithm>

#include "cuda/attention_launch.hpp"
#include "kernels/attention_sm80.cuh"
#include "kernels/attention_sm90.cuh"
#include "kernels/attention_sm90_ws.cuh"

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

// Calls launch(T{}, D, QB) with the element type, head dimension (64 | 128) and 64-row query
// blocks per CTA (2, else 1) as compile-time values: the one place runtime choices pick an
// instantiation.
template <class Launch>
cudaError_t dispatch(Elem elem, int head_dim, int qb, Launch&& launch) {
  auto with_dim = [&](auto t) -> cudaError_t {
    auto with_qb = [&](auto d) -> cudaError_t {
      return qb == 2 ? launch(t, d, std::integral_constant<int, 2>{})
                     : launch(t, d, std::integral_constant<int, 1>{});
    };
    if (head_dim == 64) return with_qb(std::integral_constant<int, 64>{});
    if (head_dim == 128) return with_qb(std::integral_constant<int, 128>{});
    return cudaErrorInvalidValue;
  };
  switch (elem) {
    case Elem::kF16:
      return with_dim(__half{});
    case Elem::kBF16:
      return with_dim(__nv_bfloat16{});
    default:
      return cudaErrorInvalidValue;
  }
}

// cuTensorMapEncodeTiled from the driver, fetched through the runtime (no libcuda link needed).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      ptr = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

// Tensor map over one of q/k/v/o [B][H][tokens][D] (strides in elements) with 64-token x 64-column
// boxes in the 128-byte swizzle the wgmma descriptors expect. False when TMA cannot describe it
// (strides not multiples of 16 bytes, misaligned base): the caller falls back.
bool encode_tile_map(CUtensorMap* map, const void* base, CUtensorMapDataType type, int head_dim,
                     const FwdParams& f, int batch, int64_t bs, int64_t hs, int64_t rs) {
  const auto encode = tensor_map_encoder();
  if (!encode) return false;
  const cuuint64_t dims[4] = {cuuint64_t(head_dim), cuuint64_t(f.tokens), cuuint64_t(f.heads),
                              cuuint64_t(batch)};
  const cuuint64_t strides[3] = {cuuint64_t(rs) * 2, cuuint64_t(hs) * 2, cuuint64_t(bs) * 2};
  const cuuint32_t box[4] = {64, 64, 1, 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  return encode(map, type, 4, const_cast<void*>(base), dims, strides, box, elem_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <int D, class T>
cudaError_t launch_sm90_ws(const FwdParams& f, int batch, int ctas, cudaStream_t stream) {
  constexpr auto type = std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                  : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  CUtensorMap tm_k{}, tm_v{}, tm_o{};
  if (!encode_tile_map(&tm_k, f.k, type, D, f, batch, f.k_bs, f.k_hs, f.k_rs) ||
      !encode_tile_map(&tm_v, f.v, type, D, f, batch, f.v_bs, f.v_hs, f.v_rs) ||
      !encode_tile_map(&tm_o, f.o, type, D, f, batch, f.o_bs, f.o_hs, f.o_rs))
    return cudaErrorNotSupported;
  constexpr int smem = WsConfig<D>::kSmemBytes;
  const auto launch = [&]<bool kOverlap>(std::bool_constant<kOverlap>) {
    constexpr auto kernel = attention_fwd_sm90_ws_kernel<D, T, kOverlap>;
    static const cudaError_t attr_err =  // once per kernel instantiation
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (attr_err != cudaSuccess) return attr_err;
    // At most 2^30 items (attention_cuda checks), so the kernel's unit indices fit an int.
    const int items = ws_item_count(f.num_q_blocks, f.heads, batch);
    if (ctas < 1) return cudaErrorInvalidValue;
    // Dense mode only: there the items are equal. Sparse items differ in length, the dynamic
    // schedule already evens out the end, and a split timed level (thirteenth session).
    const TailSplit split = f.mask_counts ? TailSplit{items, 1}
                                          : plan_tail_split(items, ctas, f.num_q_blocks);
    const int split_items = items - split.whole;
    const int part_units = split_items * split.parts;
    const int units = split.whole + part_units;
    const int grid = std::min(units, ctas);
    // One stream-ordered allocation a launch, so that launches on other streams never share it:
    // the dynamic schedule's counter, then the tail parts' fp32 rows and log-sum-exps. Without
    // stream-ordered allocation (cudaErrorNotSupported) the caller falls back to the
    // one-warpgroup kernel; the error is cleared for its launch check.
    constexpr size_t kCounterBytes = 256;
    const size_t rows = size_t(part_units) * 128;
    void* scratch = nullptr;
    cudaError_t err =
        cudaMallocAsync(&scratch, kCounterBytes + rows * (D + 1) * sizeof(float), stream);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return err;
    }
    auto* taken = static_cast<unsigned*>(scratch);
    float* part_o = reinterpret_cast<float*>(static_cast<char*>(scratch) + kCounterBytes);
    const WsTail tail{split.whole, split.parts, part_o, part_o + rows * D};
    err = cudaMemsetAsync(taken, 0, sizeof(unsigned), stream);
    if (err == cudaSuccess) {
      kernel<<<grid, WsConfig<D>::kThreads, smem, stream>>>(f, tm_k, tm_v, tm_o, units, taken,
                                                             tail);
      err = cudaGetLastError();
    }
    if (err == cudaSuccess && split_items > 0) {
      const int merge_blocks = split_items * 128 / 8;  // a warp a row, 8 warps a block
      merge_tail_parts_kernel<D, T><<<merge_blocks, 256, 0, stream>>>(f, tail, split_items);
      err = cudaGetLastError();
    }
    const cudaError_t free_err = cudaFreeAsync(scratch, stream);
    return err != cudaSuccess ? err : free_err;
  };
  // The intra-warpgroup overlap pays where a CTA's two query blocks are one 128-token tile.
  if (f.subs == 2) return launch(std::true_type{});
  return launch(std::false_type{});
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
  return dispatch(elem, head_dim, qb, [&](auto t, auto d, auto q) {
    constexpr int D = decltype(d)::value, QB = decltype(q)::value;
    return launch_kernel<attention_fwd_sm80_kernel<D, QB, decltype(t)>, QB>(
        sm80_smem_bytes<D, QB>(), f, batch, stream);
  });
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
  return dispatch(elem, head_dim, qb, [&](auto t, auto d, auto q) {
    constexpr int D = decltype(d)::value, QB = decltype(q)::value;
    return launch_kernel<attention_fwd_sm90_kernel<D, QB, decltype(t)>, QB>(
        sm90_smem_bytes<D, QB>(), f, batch, stream);
  });
}

cudaError_t launch_attention_sm90_ws(const FwdParams& f, Elem elem, int head_dim, int batch,
                                     int ctas, cudaStream_t stream) {
  return dispatch(elem, head_dim, 1, [&](auto t, auto d, auto) {
    return launch_sm90_ws<decltype(d)::value, decltype(t)>(f, batch, ctas, stream);
  });
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
