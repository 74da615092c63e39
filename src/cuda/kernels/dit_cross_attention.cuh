// Dense cross-attention of video tokens over text tokens, for text too short or ragged for the
// tile attention kernel (the tiny model's 16 tokens). The forward uses attention_cuda instead
// when the text length is a multiple of 64 (Wan's 512).
//
// Algorithm: one warp per (query row, head); lane l holds elements l, l+32, ... of the head's
// q row and output accumulator (head_dim / 32 each, f32). Keys are visited in order: the dot
// product is a warp-shuffle sum, then the online-softmax update (running max m, sum l) rescales
// the accumulator; the output is acc / l. k and v rows are read straight from global memory
// (text is short and stays in L2).
// Layout: q [B * Nq, H * D], k, v [B * Nk, H * D] token-major bf16; out row (b * out_batch_rows + n).
// Sync: none beyond warp shuffles; warps are independent.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace veda::dit_cuda::kernels {

constexpr int kCrossMaxPerLane = 8;  // head_dim <= 256

__global__ void cross_attention_kernel(const __nv_bfloat16* __restrict__ q,
                                       const __nv_bfloat16* __restrict__ k,
                                       const __nv_bfloat16* __restrict__ v,
                                       __nv_bfloat16* __restrict__ out, int64_t batch,
                                       int64_t q_tokens, int64_t k_tokens, int heads,
                                       int head_dim, float scale, int64_t out_batch_rows) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  if (warp >= batch * q_tokens * heads) return;
  const int h = int(warp % heads);
  const int64_t row = warp / heads;  // b * q_tokens + n
  const int64_t b = row / q_tokens, n = row % q_tokens;
  const int width = heads * head_dim;
  const int per_lane = head_dim / 32;

  float qv[kCrossMaxPerLane], acc[kCrossMaxPerLane];
  const __nv_bfloat16* qr = q + row * width + h * head_dim;
#pragma unroll
  for (int e = 0; e < kCrossMaxPerLane; ++e) {
    qv[e] = e < per_lane ? __bfloat162float(qr[lane + 32 * e]) * scale : 0.f;
    acc[e] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = 0; j < k_tokens; ++j) {
    const __nv_bfloat16* kr = k + (b * k_tokens + j) * width + h * head_dim;
    float s = 0.f;
#pragma unroll
    for (int e = 0; e < kCrossMaxPerLane; ++e)
      if (e < per_lane) s += qv[e] * __bfloat162float(kr[lane + 32 * e]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    const float m_new = fmaxf(m, s);
    const float correction = __expf(m - m_new);  // exp(-inf) = 0 on the first key
    const float p = __expf(s - m_new);
    l = l * correction + p;
    const __nv_bfloat16* vr = v + (b * k_tokens + j) * width + h * head_dim;
#pragma unroll
    for (int e = 0; e < kCrossMaxPerLane; ++e)
      if (e < per_lane) acc[e] = acc[e] * correction + p * __bfloat162float(vr[lane + 32 * e]);
    m = m_new;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
  __nv_bfloat16* orow = out + (b * out_batch_rows + n) * width + h * head_dim;
#pragma unroll
  for (int e = 0; e < kCrossMaxPerLane; ++e)
    if (e < per_lane) orow[lane + 32 * e] = __float2bfloat16(acc[e] * inv);
}

}  // namespace veda::dit_cuda::kernels
