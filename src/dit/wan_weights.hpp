// The f32 weights of a WanTransformer3DModel, grouped by module and keyed by checkpoint names.
#pragma once
#include <string>
#include <vector>

#include "veda/dit.hpp"
#include "veda/tensor.hpp"

namespace veda {

// nn.Linear: weight [out, in], bias [out].
struct LinearWeights {
  Tensor weight, bias;
  int64_t in_features() const { return weight.dim(1); }
  int64_t out_features() const { return weight.dim(0); }
};

// WanAttention (attn1 / attn2): to_q, to_k, to_v, to_out.0 and RMSNorm weights over the full width.
struct WanAttentionWeights {
  LinearWeights to_q, to_k, to_v, to_out;
  Tensor norm_q, norm_k;  // [dim]
};

struct WanBlockWeights {
  WanAttentionWeights attn1, attn2;
  Tensor norm2_weight, norm2_bias;  // [dim]; undefined when cross_attn_norm is false
  LinearWeights ffn_in;             // ffn.net.0.proj: [ffn_dim, dim]
  LinearWeights ffn_out;            // ffn.net.2: [dim, ffn_dim]
  Tensor scale_shift_table;         // [1, 6, dim]: shift, scale, gate (attn1); shift, scale, gate (ffn)
};

struct WanWeights {
  LinearWeights patch_embedding;  // Conv3d weight [dim, C, pt, ph, pw] viewed as [dim, C*pt*ph*pw]
  LinearWeights time_embedder_1, time_embedder_2;  // condition_embedder.time_embedder.linear_{1,2}
  LinearWeights time_proj;                         // condition_embedder.time_proj: [6*dim, dim]
  LinearWeights text_embedder_1, text_embedder_2;  // condition_embedder.text_embedder.linear_{1,2}
  std::vector<WanBlockWeights> blocks;
  Tensor scale_shift_table;  // [1, 2, dim]: shift, scale of the output norm
  LinearWeights proj_out;    // [out_channels*pt*ph*pw, dim]
};

// Every tensor name a checkpoint for `config` must hold, with its shape.
struct ExpectedTensor {
  std::string name;
  Shape shape;
};
std::vector<ExpectedTensor> expected_wan_tensors(const WanConfig& config);

}  // namespace veda
