// Launchers of the DiT forward's elementwise and cross-attention kernels (dit_kernels.cu), for
// the host code in dit_cuda.cpp. bf16 buffers are passed as void*; every launcher returns the
// launch's cudaError_t (cudaGetLastError after the launch).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace veda::dit_cuda {

// y (bf16) = LayerNorm(x) over `dim` (f32 statistics), then per sample s = row / rows_per_sample:
//   shift && scale : y * (1 + scale[s]) + shift[s]   (vectors `mod_stride` floats apart per sample)
//   weight && bias : y * weight + bias
//   neither        : y
cudaError_t layer_norm(const float* x, void* y, int64_t rows, int dim, float eps,
                       int64_t rows_per_sample, const float* shift, const float* scale,
                       int64_t mod_stride, const float* weight, const float* bias,
                       cudaStream_t stream);

// Rows of a token-major bf16 [batch * tokens, heads * head_dim] tensor: optional RMSNorm over the
// full width (times `weight`), optional Wan 3D RoPE (`rope`: [tokens][head_dim/2] (cos, sin)),
// written to `dst` token-major like the input (it may be the input itself), or head-major
// [batch, heads, tokens, head_dim].
cudaError_t rms_rope(const void* x, void* dst, int64_t batch, int64_t tokens, int heads,
                     int head_dim, bool normalize, float eps, const float* weight,
                     const float2* rope, bool head_major, cudaStream_t stream);

// The self-attention operands in tile order with the selector's tile statistics
// (kernels/dit_tile_producer.cuh): per tensor, optional RMSNorm over the full width (times
// `weight`) and optional RoPE, written to dst [batch, heads, dst_tokens, head_dim] at row
// token_slot[h * tokens + token]; with `mean` set, the statistics of the heads marked in
// `stat_heads` over the tiles of the reference layout (`tile_slots`, `tile_valid`), as the
// selector's statistics pass computes them from dst. heads * head_dim / 8 <=
// kTileProducerMaxThreads.
inline constexpr int kTileProducerMaxThreads = 640;  // Wan2.1-14B: 40 heads x 128

struct TileProducerTensor {
  const void* x;          // [batch * tokens, heads * head_dim] bf16
  void* dst;              // [batch, heads, dst_tokens, head_dim] bf16
  const float* weight;    // [heads * head_dim] RMSNorm weight, or null: no RMSNorm
  bool rope;              // rotate with TileProducerParams::rope
  // [batch, heads, stat_tiles, head_dim] f32 each, or null: no statistics; max and min are
  // both set or both null (the mean only).
  float* mean = nullptr;
  float* max = nullptr;
  float* min = nullptr;
};

struct TileProducerParams {
  TileProducerTensor t[3];
  int tensors;                // 1 to 3 (grid z)
  int64_t tokens, dst_tokens;
  int heads, head_dim;
  float eps;
  const float2* rope;         // [tokens][head_dim / 2] (cos, sin)
  const int32_t* token_slot;  // [heads][tokens]
  const int32_t* tile_slots;  // [tiles][volume]: the reference layout's slot -> token
  const int32_t* tile_valid;  // [tiles]
  int tiles, volume;
  int64_t stat_tiles;         // statistics rows per (b, h): at least `tiles`
  const uint8_t* stat_heads;  // [heads]: 1 where the head's layout is the reference one
};

// cudaErrorInvalidValue for head_dim not a positive multiple of 8, a row of more than
// kTileProducerMaxThreads chunks, batch > 65535, a missing table or buffer, or statistics with
// stat_tiles < tiles.
cudaError_t tile_producer(const TileProducerParams& p, int64_t batch, cudaStream_t stream);

// Head-major tile order [batch, heads, src_tokens, head_dim] -> token-major rows:
//   y[(b * tokens + token) * width + h * head_dim + d] = src[b, h, token_slot[h * tokens + token], d]
cudaError_t heads_to_rows(const void* src, void* y, int64_t batch, int64_t tokens, int heads,
                          int head_dim, const int32_t* token_slot, int64_t src_tokens,
                          cudaStream_t stream);

// hidden (f32 [rows, dim]) += y (bf16) * gate[s] (s = row / rows_per_sample), or += y (gate null).
cudaError_t gated_residual(float* hidden, const void* y, int64_t rows, int dim,
                           int64_t rows_per_sample, const float* gate, int64_t gate_stride,
                           cudaStream_t stream);

// In place on n bf16 values: x * 0.5 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
cudaError_t gelu_tanh(void* x, int64_t n, cudaStream_t stream);

// y (bf16) = SiLU(x) (f32), n values.
cudaError_t silu_to_bf16(const float* x, void* y, int64_t n, cudaStream_t stream);

// f32 -> bf16, n values.
cudaError_t f32_to_bf16(const float* x, void* y, int64_t n, cudaStream_t stream);

// out[b * n + i] = table[i] + x[b * x_stride + i % x_period]   for b < batch, i < n (f32).
cudaError_t add_table(const float* table, const float* x, float* out, int64_t batch, int64_t n,
                      int64_t x_stride, int64_t x_period, cudaStream_t stream);

// x f32 [B, C, F, H, W] -> patches bf16 [B * F' * H' * W', C * pt * ph * pw] (Conv3d order).
cudaError_t patchify(const float* x, void* patches, int batch, int channels, int frames,
                     int height, int width, int pt, int ph, int pw, cudaStream_t stream);
// proj f32 [B * F' * H' * W', pt * ph * pw * C] -> out f32 [B, C, F, H, W].
cudaError_t unpatchify(const float* proj, float* out, int batch, int channels, int frames,
                       int height, int width, int pt, int ph, int pw, cudaStream_t stream);

// Dense attention of token-major q over k, v (all bf16, row width heads * head_dim, head_dim a
// multiple of 32 up to 256): out[b * out_batch_rows + n] for query row n of batch b. One warp per
// (query row, head), online softmax in f32.
cudaError_t cross_attention(const void* q, const void* k, const void* v, void* out, int64_t batch,
                            int64_t q_tokens, int64_t k_tokens, int heads, int head_dim,
                            float scale, int64_t out_batch_rows, cudaStream_t stream);

}  // namespace veda::dit_cuda
