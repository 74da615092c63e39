// Launchers of the DiT forward's kernels (kernels/dit_elementwise.cuh, dit_cross_attention.cuh).
// Grid sizes: one CTA per row for row reductions, grid-stride loops capped at 64 CTAs per SM-ish
// (8192) for flat kernels. Each launcher returns cudaGetLastError().
#include <algorithm>

#include "cuda/dit_launch.hpp"
#include "cuda/kernels/dit_cross_attention.cuh"
#include "cuda/kernels/dit_elementwise.cuh"
#include "cuda/kernels/dit_tile_producer.cuh"

namespace veda::dit_cuda {
namespace {

constexpr int kFlatThreads = 256;
unsigned flat_blocks(int64_t n) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((n + kFlatThreads - 1) / kFlatThreads, 8192)));
}
using bf16 = __nv_bfloat16;

}  // namespace

cudaError_t layer_norm(const float* x, void* y, int64_t rows, int dim, float eps,
                       int64_t rows_per_sample, const float* shift, const float* scale,
                       int64_t mod_stride, const float* weight, const float* bias,
                       cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  const size_t smem = size_t(dim + 33) * sizeof(float);
  kernels::layer_norm_kernel<<<unsigned(rows), kernels::kRowThreads, smem, stream>>>(
      x, static_cast<bf16*>(y), dim, eps, rows_per_sample, shift, scale, mod_stride, weight, bias);
  return cudaGetLastError();
}

cudaError_t rms_rope(const void* x, void* dst, int64_t batch, int64_t tokens, int heads,
                     int head_dim, bool normalize, float eps, const float* weight,
                     const float2* rope, bool head_major, cudaStream_t stream) {
  if (batch * tokens <= 0) return cudaSuccess;
  const size_t smem = size_t(heads * head_dim + 33) * sizeof(float);
  kernels::rms_rope_kernel<<<unsigned(batch * tokens), kernels::kRowThreads, smem, stream>>>(
      static_cast<const bf16*>(x), static_cast<bf16*>(dst), tokens, heads, head_dim, normalize,
      eps, weight, rope, head_major);
  return cudaGetLastError();
}

cudaError_t tile_producer(const TileProducerParams& p, int64_t batch, cudaStream_t stream) {
  if (p.heads <= 0 || p.head_dim <= 0 || p.head_dim % 8 != 0 || p.tensors < 1 || p.tensors > 3 ||
      batch > 65535 || int64_t(p.heads) * (p.head_dim / 8) > kTileProducerMaxThreads ||
      !p.token_slot || !p.tile_slots || !p.tile_valid)
    return cudaErrorInvalidValue;
  for (int i = 0; i < p.tensors; ++i) {
    const TileProducerTensor& t = p.t[i];
    const bool stats = t.mean || t.max || t.min;  // max and min: both or neither, with a mean
    if (!t.x || !t.dst || (t.rope && !p.rope) || (!t.max != !t.min) ||
        (stats && (!t.mean || !p.stat_heads || p.stat_tiles < p.tiles)))
      return cudaErrorInvalidValue;
  }
  if (batch <= 0 || p.tiles <= 0) return cudaSuccess;
  const int row_chunks = p.heads * (p.head_dim / 8);
  const dim3 grid(unsigned(p.tiles), unsigned(batch), unsigned(p.tensors));
  kernels::tile_producer_kernel<<<grid, (row_chunks + 31) / 32 * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t heads_to_rows(const void* src, void* y, int64_t batch, int64_t tokens, int heads,
                          int head_dim, const int32_t* token_slot, int64_t src_tokens,
                          cudaStream_t stream) {
  const int64_t n = batch * tokens * heads * (head_dim / 8);
  kernels::heads_to_rows_kernel<<<flat_blocks(n), kFlatThreads, 0, stream>>>(
      static_cast<const uint4*>(src), static_cast<uint4*>(y), batch, tokens, heads, head_dim,
      token_slot, src_tokens);
  return cudaGetLastError();
}

cudaError_t gated_residual(float* hidden, const void* y, int64_t rows, int dim,
                           int64_t rows_per_sample, const float* gate, int64_t gate_stride,
                           cudaStream_t stream) {
  kernels::gated_residual_kernel<<<flat_blocks(rows * dim / 2), kFlatThreads, 0, stream>>>(
      hidden, static_cast<const bf16*>(y), rows, dim, rows_per_sample, gate, gate_stride);
  return cudaGetLastError();
}

cudaError_t gelu_tanh(void* x, int64_t n, cudaStream_t stream) {
  kernels::gelu_tanh_kernel<<<flat_blocks(n / 2), kFlatThreads, 0, stream>>>(
      static_cast<__nv_bfloat162*>(x), n / 2);
  return cudaGetLastError();
}

cudaError_t silu_to_bf16(const float* x, void* y, int64_t n, cudaStream_t stream) {
  kernels::silu_to_bf16_kernel<<<flat_blocks(n), kFlatThreads, 0, stream>>>(x, static_cast<bf16*>(y), n);
  return cudaGetLastError();
}

cudaError_t f32_to_bf16(const float* x, void* y, int64_t n, cudaStream_t stream) {
  kernels::f32_to_bf16_kernel<<<flat_blocks(n), kFlatThreads, 0, stream>>>(x, static_cast<bf16*>(y), n);
  return cudaGetLastError();
}

cudaError_t add_table(const float* table, const float* x, float* out, int64_t batch, int64_t n,
                      int64_t x_stride, int64_t x_period, cudaStream_t stream) {
  kernels::add_table_kernel<<<flat_blocks(batch * n), kFlatThreads, 0, stream>>>(
      table, x, out, batch, n, x_stride, x_period);
  return cudaGetLastError();
}

cudaError_t patchify(const float* x, void* patches, int batch, int channels, int frames,
                     int height, int width, int pt, int ph, int pw, cudaStream_t stream) {
  const int64_t n = int64_t(batch) * channels * frames * height * width;
  kernels::patchify_kernel<<<flat_blocks(n), kFlatThreads, 0, stream>>>(
      x, static_cast<bf16*>(patches), batch, channels, frames, height, width, pt, ph, pw);
  return cudaGetLastError();
}

cudaError_t unpatchify(const float* proj, float* out, int batch, int channels, int frames,
                       int height, int width, int pt, int ph, int pw, cudaStream_t stream) {
  const int64_t n = int64_t(batch) * channels * frames * height * width;
  kernels::unpatchify_kernel<<<flat_blocks(n), kFlatThreads, 0, stream>>>(
      proj, out, batch, channels, frames, height, width, pt, ph, pw);
  return cudaGetLastError();
}

cudaError_t cross_attention(const void* q, const void* k, const void* v, void* out, int64_t batch,
                            int64_t q_tokens, int64_t k_tokens, int heads, int head_dim,
                            float scale, int64_t out_batch_rows, cudaStream_t stream) {
  const int64_t warps = batch * q_tokens * heads;
  const int threads = 256;
  const int64_t blocks = (warps * 32 + threads - 1) / threads;
  kernels::cross_attention_kernel<<<unsigned(blocks), threads, 0, stream>>>(
      static_cast<const bf16*>(q), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
      static_cast<bf16*>(out), batch, q_tokens, k_tokens, heads, head_dim, scale, out_batch_rows);
  return cudaGetLastError();
}

}  // namespace veda::dit_cuda
