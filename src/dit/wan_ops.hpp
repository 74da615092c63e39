// Row-wise building blocks of the Wan forward pass on f32 token-major activations [rows, width],
// multi-threaded over rows.
#pragma once
#include <cstdint>
#include <vector>

#include "dit/wan_weights.hpp"
#include "veda/tile_layout.hpp"

namespace veda::wan_ops {

// y[rows, out] = x[rows, in] * W^T + b.
void linear(const float* x, int64_t rows, const LinearWeights& l, float* y);

// y = LayerNorm(x) (no affine) * (1 + scale[s]) + shift[s], where s = row / rows_per_sample and
// shift/scale point at per-sample vectors `modulation_stride` floats apart.
void layer_norm_modulate(const float* x, float* y, int64_t rows, int64_t width, float eps,
                         int64_t rows_per_sample, const float* shift, const float* scale,
                         int64_t modulation_stride);
// y = LayerNorm(x) * weight + bias.
void layer_norm_affine(const float* x, float* y, int64_t rows, int64_t width, float eps,
                       const float* weight, const float* bias);
// In place: x = x / sqrt(mean(x^2) + eps) * weight, over the full width.
void rms_norm(float* x, int64_t rows, int64_t width, float eps, const float* weight);

void gelu_tanh(float* x, int64_t n);
void silu(float* x, int64_t n);
// x += y * gate[s] (gated residual; s = row / rows_per_sample), or x += y when gate is null.
void add_residual(float* x, const float* y, int64_t rows, int64_t width, int64_t rows_per_sample,
                  const float* gate, int64_t gate_stride);

// Wan's 3D RoPE: head_dim splits into t, h, w parts of rotated adjacent pairs
// (h = w = 2 * (head_dim / 6), t the rest), frequency theta^(-2i/part) per pair.
struct RopeTable {
  int64_t tokens = 0, pairs = 0;    // pairs = head_dim / 2
  std::vector<float> cos, sin;      // [tokens][pairs]
};
RopeTable make_rope_table(Grid grid, int head_dim, double theta = 10000.0);
// In place on [batch * tokens, heads * head_dim].
void apply_rope(float* x, int64_t rows, int heads, int head_dim, const RopeTable& table);

// Wan's timestep sinusoid, [cos | sin] halves (diffusers Timesteps, flip_sin_to_cos).
std::vector<float> timestep_sinusoid(const std::vector<float>& timesteps, int freq_dim);

// Dense attention of token-major q [B*Nq, H*D] over k, v [B*Nk, H*D] -> out [B*Nq, H*D].
void dense_attention_token_major(const float* q, const float* k, const float* v, float* out,
                                 int64_t batch, int64_t q_tokens, int64_t k_tokens, int heads,
                                 int head_dim, float scale);

// Token-major [B*N, H*D] -> [B, H, N, D].
void token_major_to_heads(const float* x, int64_t batch, int64_t tokens, int heads, int head_dim,
                          float* out);

}  // namespace veda::wan_ops
