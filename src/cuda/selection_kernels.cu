// Kernel translation unit of the GPU tile selection: launchers for the gather/statistics and
// centre kernels (kernels/selection_gather_stats.cuh) and the top-k kernel
// (kernels/selection_topk.cuh).
#include "cuda/kernels/selection_gather_stats.cuh"
#include "cuda/kernels/selection_topk.cuh"
#include "cuda/selection_launch.hpp"

namespace veda::cuda::sel {
namespace {

// Calls f(T{}) with the element type of `elem`.
template <class F>
cudaError_t with_elem(Elem elem, F&& f) {
  switch (elem) {
    case Elem::kBF16:
      return f(__nv_bfloat16{});
    case Elem::kF16:
      return f(__half{});
    case Elem::kF32:
      return f(float{});
  }
  return cudaErrorInvalidValue;
}

// 16-byte chunks a row.
int row_chunks(const GatherStatsParams& p, Elem elem) {
  return p.head_dim * (elem == Elem::kF32 ? 4 : 2) / 16;
}

// A row's shared memory at most (sm_90 gives a CTA 227 KB; on sm_80, 163 KB, rows above that fail
// to launch with an error).
constexpr size_t kTopkSmemLimit = 220 * 1024;

}  // namespace

cudaError_t launch_gather_stats(const GatherStatsLaunch& launch, Elem elem, int batch,
                                cudaStream_t stream) {
  const GatherStatsParams& p = launch.t[0];
  const int tiles_per_cta = kStatsThreads / row_chunks(p, elem);
  const dim3 grid(unsigned((p.max_tiles + tiles_per_cta - 1) / tiles_per_cta), unsigned(p.heads),
                  unsigned(batch * launch.tensors));
  return with_elem(elem, [&](auto t) {
    gather_stats_kernel<decltype(t)><<<grid, kStatsThreads, 0, stream>>>(launch);
    return cudaGetLastError();
  });
}

cudaError_t launch_center(const GatherStatsParams& p, const HeadSelectInfo* info, float* center,
                          Elem elem, int batch, cudaStream_t stream) {
  const dim3 grid(unsigned(p.heads), unsigned(batch));
  return with_elem(elem, [&](auto t) {
    center_kernel<decltype(t)><<<grid, kStatsThreads, 0, stream>>>(p, info, center);
    return cudaGetLastError();
  });
}

size_t topk_smem_per_row(int max_tiles, int prior_entries) {
  // histogram, values f32, two uint16 lists, the row's distance prior table
  const size_t bytes = (2 * size_t(max_tiles) + kTopkBins + size_t(prior_entries)) * sizeof(float);
  return bytes <= kTopkSmemLimit && max_tiles <= 65535 ? bytes : 0;
}

cudaError_t launch_topk(const TopkParams& p, int batch, cudaStream_t stream) {
  const size_t smem = topk_smem_per_row(p.max_tiles, p.distance ? p.prior_entries : 0);
  if (smem == 0) return cudaErrorInvalidValue;
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
