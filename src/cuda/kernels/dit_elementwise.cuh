// Elementwise and row-wise kernels of the Wan DiT forward (launched from dit_kernels.cu).
//
// Algorithm: one CTA per token row for the row reductions (LayerNorm, RMSNorm over the full
// width across heads): the row is staged in shared memory as f32, block-reduced (warp shuffles,
// then one warp over the warp partials), statistics in f32, then every thread writes its
// elements. RoPE rotates adjacent pairs (2i, 2i+1) of each head with a [token][pair] (cos, sin)
// table, written token-major or head-major (the self-attention operands in tile order come from
// dit_tile_producer.cuh instead). Flat kernels (GELU, residual, SiLU) are grid-stride loops.
// Layout: activations token-major [B * N, width] (bf16, or f32 for the residual stream);
// attention operands head-major [B, H, rows, head_dim].
// Sync: __syncthreads around the shared-memory reductions only; no inter-CTA communication.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace veda::dit_cuda::kernels {

constexpr int kRowThreads = 256;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the CTA; every thread gets the result. `scratch` holds >= 33 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch reuse across calls
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < int(blockDim.x >> 5) ? scratch[lane] : 0.f;
    t = warp_sum(t);
    if (lane == 0) scratch[32] = t;
  }
  __syncthreads();
  return scratch[32];
}

// grid: rows; dynamic smem: dim floats + 33.
__global__ void layer_norm_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ y,
                                  int dim, float eps, int64_t rows_per_sample,
                                  const float* __restrict__ shift, const float* __restrict__ scale,
                                  int64_t mod_stride, const float* __restrict__ weight,
                                  const float* __restrict__ bias) {
  extern __shared__ float smem[];
  float* row = smem;
  float* scratch = smem + dim;
  const int64_t r = blockIdx.x;
  const float* xr = x + r * dim;
  float sum = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = xr[i];
    row[i] = v;
    sum += v;
  }
  const float mean = block_sum(sum, scratch) / float(dim);
  float var = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = row[i] - mean;
    var += d * d;
  }
  const float rstd = rsqrtf(block_sum(var, scratch) / float(dim) + eps);
  __nv_bfloat16* yr = y + r * dim;
  const int64_t s = r / rows_per_sample;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = (row[i] - mean) * rstd;
    if (shift != nullptr) {
      v = v * (1.f + scale[s * mod_stride + i]) + shift[s * mod_stride + i];
    } else if (weight != nullptr) {
      v = v * weight[i] + bias[i];
    }
    yr[i] = __float2bfloat16(v);
  }
}

// grid: batch * tokens; dynamic smem: width floats + 33.
__global__ void rms_rope_kernel(const __nv_bfloat16* x, __nv_bfloat16* dst, int64_t tokens,
                                int heads, int head_dim, bool normalize, float eps,
                                const float* __restrict__ weight, const float2* __restrict__ rope,
                                bool head_major) {
  extern __shared__ float smem[];
  const int width = heads * head_dim;
  float* row = smem;
  float* scratch = smem + width;
  const int64_t r = blockIdx.x;
  const int64_t b = r / tokens, token = r % tokens;
  const __nv_bfloat16* xr = x + r * width;
  float sq = 0.f;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    const float v = __bfloat162float(xr[i]);
    row[i] = v;
    sq += v * v;
  }
  float rstd = 1.f;
  if (normalize) {
    rstd = rsqrtf(block_sum(sq, scratch) / float(width) + eps);
  } else {
    __syncthreads();
  }
  const int half = head_dim / 2;
  for (int p = threadIdx.x; p < width / 2; p += blockDim.x) {
    const int i = 2 * p;
    const int h = i / head_dim, d = i % head_dim;
    float x1 = row[i], x2 = row[i + 1];
    if (normalize) {
      x1 *= rstd * weight[i];
      x2 *= rstd * weight[i + 1];
    }
    if (rope != nullptr) {
      const float2 cs = rope[token * half + d / 2];
      const float y1 = x1 * cs.x - x2 * cs.y;
      const float y2 = x1 * cs.y + x2 * cs.x;
      x1 = y1;
      x2 = y2;
    }
    __nv_bfloat162 out;
    out.x = __float2bfloat16(x1);
    out.y = __float2bfloat16(x2);
    const int64_t offset =
        head_major ? ((b * heads + h) * tokens + token) * head_dim + d : r * width + i;
    *reinterpret_cast<__nv_bfloat162*>(dst + offset) = out;
  }
}

// grid-stride over batch * tokens * heads * (head_dim / 8) 16-byte chunks.
__global__ void heads_to_rows_kernel(const uint4* __restrict__ src, uint4* __restrict__ y,
                                     int64_t batch, int64_t tokens, int heads, int head_dim,
                                     const int32_t* __restrict__ token_slot, int64_t src_tokens) {
  const int chunks = head_dim / 8;
  const int64_t total = batch * tokens * heads * chunks;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int c = int(i % chunks);
    const int h = int((i / chunks) % heads);
    const int64_t row = i / (int64_t(chunks) * heads);  // b * tokens + token
    const int64_t b = row / tokens, token = row % tokens;
    const int64_t slot = token_slot[int64_t(h) * tokens + token];
    y[i] = src[((b * heads + h) * src_tokens + slot) * chunks + c];
  }
}

__global__ void gated_residual_kernel(float* __restrict__ hidden, const __nv_bfloat16* __restrict__ y,
                                      int64_t rows, int dim, int64_t rows_per_sample,
                                      const float* __restrict__ gate, int64_t gate_stride) {
  const int64_t total = rows * dim / 2;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = 2 * i;
    const int64_t r = e / dim;
    const int col = int(e % dim);
    const float2 yv = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(y)[i]);
    float2 h = reinterpret_cast<float2*>(hidden)[i];
    if (gate != nullptr) {
      const float* g = gate + (r / rows_per_sample) * gate_stride + col;
      h.x += yv.x * g[0];
      h.y += yv.y * g[1];
    } else {
      h.x += yv.x;
      h.y += yv.y;
    }
    reinterpret_cast<float2*>(hidden)[i] = h;
  }
}

__device__ __forceinline__ float gelu_tanh_f(float v) {
  const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
  return 0.5f * v * (1.f + tanhf(u));
}

__global__ void gelu_tanh_kernel(__nv_bfloat162* x, int64_t pairs) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs;
       i += int64_t(gridDim.x) * blockDim.x) {
    float2 v = __bfloat1622float2(x[i]);
    v.x = gelu_tanh_f(v.x);
    v.y = gelu_tanh_f(v.y);
    x[i] = __float22bfloat162_rn(v);
  }
}

__global__ void silu_to_bf16_kernel(const float* x, __nv_bfloat16* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    y[i] = __float2bfloat16(v / (1.f + __expf(-v)));
  }
}

__global__ void f32_to_bf16_kernel(const float* x, __nv_bfloat16* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16(x[i]);
}

__global__ void add_table_kernel(const float* table, const float* x, float* out, int64_t batch,
                                 int64_t n, int64_t x_stride, int64_t x_period) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < batch * n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / n, j = i % n;
    out[i] = table[j] + x[b * x_stride + j % x_period];
  }
}

// One thread per patch feature: rows = B*F'*H'*W', features = C*pt*ph*pw (Conv3d weight order).
__global__ void patchify_kernel(const float* x, __nv_bfloat16* patches, int batch, int channels,
                                int frames, int height, int width, int pt, int ph, int pw) {
  const int gf = frames / pt, gh = height / ph, gw = width / pw;
  const int features = channels * pt * ph * pw;
  const int64_t total = int64_t(batch) * gf * gh * gw * features;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int f = int(i % features);
    const int64_t r = i / features;
    const int k = f % pw; f /= pw;
    const int j = f % ph; f /= ph;
    const int t = f % pt;
    const int ch = f / pt;
    const int fw = int(r % gw), fh = int((r / gw) % gh), ft = int((r / (int64_t(gw) * gh)) % gf);
    const int64_t b = r / (int64_t(gw) * gh * gf);
    const float v = x[(((b * channels + ch) * frames + ft * pt + t) * int64_t(height) + fh * ph + j) *
                          width + fw * pw + k];
    patches[i] = __float2bfloat16(v);
  }
}

// One thread per output feature: feature index ((t*ph + j)*pw + k)*C + ch.
__global__ void unpatchify_kernel(const float* proj, float* out, int batch, int channels,
                                  int frames, int height, int width, int pt, int ph, int pw) {
  const int gf = frames / pt, gh = height / ph, gw = width / pw;
  const int features = channels * pt * ph * pw;
  const int64_t total = int64_t(batch) * gf * gh * gw * features;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int f = int(i % features);
    const int64_t r = i / features;
    const int ch = f % channels; f /= channels;
    const int k = f % pw; f /= pw;
    const int j = f % ph; f /= ph;
    const int t = f;
    const int fw = int(r % gw), fh = int((r / gw) % gh), ft = int((r / (int64_t(gw) * gh)) % gf);
    const int64_t b = r / (int64_t(gw) * gh * gf);
    out[(((b * channels + ch) * frames + ft * pt + t) * int64_t(height) + fh * ph + j) * width +
        fw * pw + k] = proj[i];
  }
}

}  // namespace veda::dit_cuda::kernels
