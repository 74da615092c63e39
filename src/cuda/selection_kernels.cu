// Kernel translation unit of the GPU tile selection: launchers for the gather/statistics kernel
// (kernels/selection_gather_stats.cuh) and the top-k kernel (kernels/selection_topk.cuh).
#include "cuda/kernels/selection_gather_stats.cuh"
#include "cuda/kernels/selection_topk.cuh"
#include "cuda/selection_launch.hpp"

namespace veda::cuda::sel {

cudaError_t launch_gather_stats(const GatherStatsParams& p, Elem elem, int batch,
                                cudaStream_t stream) {
  const dim3 grid(unsigned(p.max_tiles), unsigned(p.heads), unsigned(batch));
  switch (elem) {
    case Elem::kBF16:
      gather_stats_kernel<__nv_bfloat16><<<grid, kGatherThreads, 0, stream>>>(p);
      break;
    case Elem::kF16:
      gather_stats_kernel<__half><<<grid, kGatherThreads, 0, stream>>>(p);
      break;
    case Elem::kF32:
      gather_stats_kernel<float><<<grid, kGatherThreads, 0, stream>>>(p);
      break;
  }
  return cudaGetLastError();
}

cudaError_t launch_topk(const TopkParams& p, int batch, cudaStream_t stream) {
  const size_t smem = sizeof(float) * size_t(p.max_tiles);
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(unsigned(p.max_tiles), unsigned(p.heads), unsigned(batch));
  topk_kernel<<<grid, kTopkThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace veda::cuda::sel
