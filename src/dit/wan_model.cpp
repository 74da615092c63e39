// The WanTransformer3DModel forward pass on the CPU (f32), following diffusers'
// transformer_wan.py: patch embedding, time/text conditioning, blocks of modulated
// self-attention (RMSNorm q/k, 3D RoPE) + cross-attention + FFN, modulated output norm,
// unpatchify.
#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "dit/wan_ops.hpp"
#include "dit/wan_weights.hpp"
#include "veda/metrics.hpp"
#include "veda/attention.hpp"
#include "veda/scoring.hpp"
#include "veda/selection.hpp"
#include "veda/thread_pool.hpp"

namespace veda {
namespace {

using Clock = std::chrono::steady_clock;

// Adds the wall time of its scope to one ForwardTimings field.
class ScopedTimer {
 public:
  explicit ScopedTimer(double& slot) : slot_(slot), start_(Clock::now()) {}
  ~ScopedTimer() { slot_ += std::chrono::duration<double>(Clock::now() - start_).count(); }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  double& slot_;
  Clock::time_point start_;
};

// The self-attention layouts of one layer: per-head shapes from the options, else the default.
Result<HeadLayouts> layer_layouts(const SparseAttentionConfig& sparse, SelfAttentionMode mode,
                                  int layer, Grid grid, int heads) {
  if (mode == SelfAttentionMode::kVeda && size_t(layer) < sparse.layer_head_shapes.size() &&
      !sparse.layer_head_shapes[layer].empty()) {
    const std::vector<TileShape>& shapes = sparse.layer_head_shapes[layer];
    if (int(shapes.size()) != heads) {
      return invalid_argument(fmt::format("layer {}: {} per-head tile shapes for {} heads", layer,
                                          shapes.size(), heads));
    }
    return HeadLayouts::make(grid, 0, shapes);
  }
  const TileShape shape = mode == SelfAttentionMode::kVeda ? sparse.tile_shape : TileShape{4, 4, 4};
  return HeadLayouts::uniform(grid, 0, heads, shape);
}

struct SelfAttentionCall {
  const float* q;  // token-major [B*N, H*D], post-norm and post-RoPE
  const float* k;
  const float* v;
  float* out;  // token-major [B*N, H*D]
  int64_t batch;
  int heads, head_dim;
  int layer;
};

// Self-attention through Veda's API: gather to tile order, (score + select,) attend, scatter.
Status run_self_attention(const SelfAttentionCall& call, const HeadLayouts& layouts,
                          const ForwardOptions& options, ForwardTimings& timings) {
  const int64_t padded = layouts.padded_tokens();
  const Shape tiled_shape{call.batch, call.heads, padded, call.head_dim};
  Tensor q_tiled = Tensor::empty(DType::kF32, tiled_shape);
  Tensor k_tiled = Tensor::empty(DType::kF32, tiled_shape);
  Tensor v_tiled = Tensor::empty(DType::kF32, tiled_shape);
  Tensor o_tiled = Tensor::empty(DType::kF32, tiled_shape);
  // q, k, v are token-major [B, N, H*D].
  const int64_t width = int64_t(call.heads) * call.head_dim;
  const TokenStrides token_major{layouts.tokens() * width, call.head_dim, width};
  gather_to_tiles(call.q, DType::kF32, token_major, call.batch, call.head_dim, layouts, q_tiled.data_as<float>());
  gather_to_tiles(call.k, DType::kF32, token_major, call.batch, call.head_dim, layouts, k_tiled.data_as<float>());
  gather_to_tiles(call.v, DType::kF32, token_major, call.batch, call.head_dim, layouts, v_tiled.data_as<float>());
  const float scale = 1.0f / std::sqrt(float(call.head_dim));

  TileMask mask;
  const TileMask* mask_ptr = nullptr;
  if (options.attention == SelfAttentionMode::kVeda) {
    const SparseAttentionConfig& sparse = options.sparse;
    Tensor logits;
    if (sparse.score == ScoreMethod::kOracle) {
      VEDA_ASSIGN_OR_RETURN(Tensor mass, oracle_tile_mass(q_tiled, k_tiled, layouts, scale));
      // Selection ranks logits; the log of the exact mass ranks the same and keeps softmax sense.
      float* m = mass.data_as<float>();
      for (int64_t i = 0; i < mass.numel(); ++i) m[i] = m[i] > 0 ? std::log(m[i]) : -INFINITY;
      logits = mass;
    } else {
      VEDA_ASSIGN_OR_RETURN(TileStats q_stats, compute_tile_stats(q_tiled, layouts));
      VEDA_ASSIGN_OR_RETURN(TileStats k_stats, compute_tile_stats(k_tiled, layouts));
      if (sparse.scorer) {
        VEDA_ASSIGN_OR_RETURN(logits, sparse.scorer(call.layer, q_stats, k_stats, layouts, scale));
      }
      if (logits.defined()) {
        // The scorer handled this layer.
      } else if (sparse.score == ScoreMethod::kMean) {
        VEDA_ASSIGN_OR_RETURN(logits, score_tiles_mean(q_stats, k_stats, layouts, scale));
      } else {
        VEDA_ASSIGN_OR_RETURN(logits, score_tiles_stats(q_stats, k_stats, layouts, scale));
      }
    }
    SelectionConfig selection = sparse.selection;
    if (size_t(call.layer) < sparse.layer_head_density.size() &&
        !sparse.layer_head_density[call.layer].empty()) {
      selection.head_density = sparse.layer_head_density[call.layer];
    }
    VEDA_ASSIGN_OR_RETURN(mask, select_tiles(logits, layouts, selection));
    mask_ptr = &mask;
    timings.selected_density_sum += mask.density(layouts);
    timings.sparse_attention_calls += 1;
  }

  VEDA_ASSIGN_OR_RETURN(AttentionParams params, make_attention_params(q_tiled, k_tiled, v_tiled,
                                                                      o_tiled, layouts, mask_ptr,
                                                                      scale));
  VEDA_RETURN_IF_ERROR(attention_cpu(params));
  scatter_from_tiles(o_tiled.data_as<float>(), call.batch, call.head_dim, layouts, call.out, token_major);
  return Status::ok();
}

Status check_forward_inputs(const WanConfig& c, const Tensor& x,
                            const std::vector<float>& timesteps, const Tensor& text) {
  if (x.dtype() != DType::kF32 || x.rank() != 5 || x.dim(1) != c.in_channels) {
    return invalid_argument(fmt::format("forward: x must be f32 [B, {}, F, H, W], got {} {}",
                                        c.in_channels, dtype_name(x.dtype()),
                                        shape_to_string(x.shape())));
  }
  if (x.dim(0) < 1 || x.dim(2) % c.patch_t || x.dim(3) % c.patch_h || x.dim(4) % c.patch_w ||
      x.dim(2) == 0 || x.dim(3) == 0 || x.dim(4) == 0) {
    return invalid_argument(fmt::format("forward: x {} is not a whole number of {}x{}x{} patches",
                                        shape_to_string(x.shape()), c.patch_t, c.patch_h,
                                        c.patch_w));
  }
  const int64_t grid[3] = {x.dim(2) / c.patch_t, x.dim(3) / c.patch_h, x.dim(4) / c.patch_w};
  for (int64_t g : grid) {
    if (g > c.rope_max_seq_len) {
      return invalid_argument(fmt::format("forward: {} patches along an axis exceed "
                                          "rope_max_seq_len {}",
                                          g, c.rope_max_seq_len));
    }
  }
  if (int64_t(timesteps.size()) != x.dim(0)) {
    return invalid_argument(fmt::format("forward: {} timesteps for batch {}", timesteps.size(),
                                        x.dim(0)));
  }
  if (text.dtype() != DType::kF32 || text.rank() != 3 || text.dim(0) != x.dim(0) ||
      text.dim(2) != c.text_dim || text.dim(1) < 1) {
    return invalid_argument(fmt::format("forward: text must be f32 [{}, L, {}], got {} {}",
                                        x.dim(0), c.text_dim, dtype_name(text.dtype()),
                                        shape_to_string(text.shape())));
  }
  return Status::ok();
}

}  // namespace

void ForwardTimings::add(const ForwardTimings& o) {
  self_attention += o.self_attention;
  cross_attention += o.cross_attention;
  gemm += o.gemm;
  other += o.other;
  forward_passes += o.forward_passes;
  selected_density_sum += o.selected_density_sum;
  sparse_attention_calls += o.sparse_attention_calls;
}

Result<SelfAttentionMode> parse_self_attention_mode(const std::string& name) {
  if (name == "dense") return SelfAttentionMode::kDense;
  if (name == "veda") return SelfAttentionMode::kVeda;
  return invalid_argument(fmt::format("unknown attention mode '{}' (dense, veda)", name));
}

const char* self_attention_mode_name(SelfAttentionMode mode) {
  return mode == SelfAttentionMode::kDense ? "dense" : "veda";
}

Result<Tensor> WanModel::forward(const Tensor& x, const std::vector<float>& timesteps,
                                 const Tensor& text, const ForwardOptions& options) const {
  if (!weights_) return invalid_argument("forward: model not loaded");
  const WanConfig& c = config_;
  const WanWeights& w = *weights_;
  VEDA_RETURN_IF_ERROR(check_forward_inputs(c, x, timesteps, text));

  ForwardTimings timings;
  const int64_t batch = x.dim(0);
  const int64_t frames = x.dim(2), height = x.dim(3), width = x.dim(4);
  const Grid grid{int(frames / c.patch_t), int(height / c.patch_h), int(width / c.patch_w)};
  const int64_t tokens = grid.tokens();
  const int64_t rows = batch * tokens;
  const int64_t dim = c.dim();
  const int64_t text_tokens = text.dim(1);
  const int64_t patch_features = int64_t(c.in_channels) * c.patch_volume();

  // --- Patch embedding: each (C, pt, ph, pw) patch flattened, times the Conv3d weight.
  Tensor patches = Tensor::empty(DType::kF32, {rows, patch_features});
  {
    ScopedTimer timer(timings.other);
    const float* xs = x.data_as<float>();
    float* p = patches.data_as<float>();
    parallel_for(0, rows, [&](int64_t r) {
      const int64_t b = r / tokens, token = r % tokens;
      const int64_t ft = token / (int64_t(grid.h) * grid.w);
      const int64_t fh = (token / grid.w) % grid.h;
      const int64_t fw = token % grid.w;
      float* dst = p + r * patch_features;
      for (int ch = 0; ch < c.in_channels; ++ch)
        for (int i = 0; i < c.patch_t; ++i)
          for (int j = 0; j < c.patch_h; ++j)
            for (int k = 0; k < c.patch_w; ++k)
              *dst++ = xs[(((b * c.in_channels + ch) * frames + ft * c.patch_t + i) * height +
                           fh * c.patch_h + j) * width + fw * c.patch_w + k];
    }, 64);
  }
  Tensor hidden_t = Tensor::empty(DType::kF32, {rows, dim});  // [B*N, dim] residual stream
  float* hidden = hidden_t.data_as<float>();
  {
    ScopedTimer timer(timings.gemm);
    wan_ops::linear(patches.data_as<float>(), rows, w.patch_embedding, hidden);
  }
  patches = Tensor();

  // --- Conditioning: temb [B, dim], modulation inputs [B, 6*dim], text context [B*L, dim].
  std::vector<float> temb(size_t(batch * dim)), temb_act(size_t(batch * dim));
  std::vector<float> time_mod(size_t(batch * 6 * dim));
  Tensor context_t = Tensor::empty(DType::kF32, {batch * text_tokens, dim});
  {
    ScopedTimer timer(timings.gemm);
    std::vector<float> sinusoid = wan_ops::timestep_sinusoid(timesteps, c.freq_dim);
    std::vector<float> h1(size_t(batch * dim));
    wan_ops::linear(sinusoid.data(), batch, w.time_embedder_1, h1.data());
    wan_ops::silu(h1.data(), int64_t(h1.size()));
    wan_ops::linear(h1.data(), batch, w.time_embedder_2, temb.data());
    temb_act = temb;
    wan_ops::silu(temb_act.data(), int64_t(temb_act.size()));
    wan_ops::linear(temb_act.data(), batch, w.time_proj, time_mod.data());

    Tensor text_hidden = Tensor::empty(DType::kF32, {batch * text_tokens, dim});
    wan_ops::linear(text.data_as<float>(), batch * text_tokens, w.text_embedder_1,
                    text_hidden.data_as<float>());
    wan_ops::gelu_tanh(text_hidden.data_as<float>(), text_hidden.numel());
    wan_ops::linear(text_hidden.data_as<float>(), batch * text_tokens, w.text_embedder_2,
                    context_t.data_as<float>());
  }
  const float* context = context_t.data_as<float>();

  const wan_ops::RopeTable rope = wan_ops::make_rope_table(grid, c.head_dim);
  const float attn_scale = 1.0f / std::sqrt(float(c.head_dim));

  // Scratch buffers reused by every block.
  Tensor norm_t = Tensor::empty(DType::kF32, {rows, dim});
  Tensor q_t = Tensor::empty(DType::kF32, {rows, dim});
  Tensor k_t = Tensor::empty(DType::kF32, {rows, dim});
  Tensor v_t = Tensor::empty(DType::kF32, {rows, dim});
  Tensor attn_t = Tensor::empty(DType::kF32, {rows, dim});
  Tensor proj_t = Tensor::empty(DType::kF32, {rows, dim});
  Tensor ffn_t = Tensor::empty(DType::kF32, {rows, int64_t(c.ffn_dim)});
  Tensor ctx_k_t = Tensor::empty(DType::kF32, {batch * text_tokens, dim});
  Tensor ctx_v_t = Tensor::empty(DType::kF32, {batch * text_tokens, dim});
  float* norm = norm_t.data_as<float>();
  float* q = q_t.data_as<float>();
  float* k = k_t.data_as<float>();
  float* v = v_t.data_as<float>();
  float* attn = attn_t.data_as<float>();
  float* proj = proj_t.data_as<float>();
  float* ffn = ffn_t.data_as<float>();

  Result<HeadLayouts> shared_layouts = layer_layouts(options.sparse, options.attention, -1, grid,
                                                     c.num_heads);
  if (!shared_layouts.is_ok()) return shared_layouts.status();

  std::vector<float> modulation(size_t(batch * 6 * dim));  // [B][6][dim]
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const WanBlockWeights& blk = w.blocks[layer];
    {
      ScopedTimer timer(timings.other);
      // scale_shift_table [1, 6, dim] + time_proj [B, 6*dim] viewed as [B, 6, dim].
      const float* table = blk.scale_shift_table.data_as<float>();
      for (int64_t i = 0; i < batch * 6 * dim; ++i) {
        modulation[i] = table[i % (6 * dim)] + time_mod[i];
      }
    }
    const int64_t mod_stride = 6 * dim;
    const float* shift_msa = &modulation[0 * dim];
    const float* scale_msa = &modulation[1 * dim];
    const float* gate_msa = &modulation[2 * dim];
    const float* c_shift_msa = &modulation[3 * dim];
    const float* c_scale_msa = &modulation[4 * dim];
    const float* c_gate_msa = &modulation[5 * dim];

    // --- 1. Self-attention (attn1).
    {
      ScopedTimer timer(timings.other);
      wan_ops::layer_norm_modulate(hidden, norm, rows, dim, c.eps, tokens, shift_msa, scale_msa,
                                   mod_stride);
    }
    {
      ScopedTimer timer(timings.gemm);
      wan_ops::linear(norm, rows, blk.attn1.to_q, q);
      wan_ops::linear(norm, rows, blk.attn1.to_k, k);
      wan_ops::linear(norm, rows, blk.attn1.to_v, v);
    }
    {
      ScopedTimer timer(timings.other);
      wan_ops::rms_norm(q, rows, dim, c.eps, blk.attn1.norm_q.data_as<float>());
      wan_ops::rms_norm(k, rows, dim, c.eps, blk.attn1.norm_k.data_as<float>());
      wan_ops::apply_rope(q, rows, c.num_heads, c.head_dim, rope);
      wan_ops::apply_rope(k, rows, c.num_heads, c.head_dim, rope);
    }
    if (options.capture) {
      bool wanted = false;
      for (int l : options.capture_layers) wanted |= l == layer;
      if (wanted) {
        const Shape heads_shape{batch, c.num_heads, tokens, c.head_dim};
        Tensor cq = Tensor::empty(DType::kF32, heads_shape);
        Tensor ck = Tensor::empty(DType::kF32, heads_shape);
        Tensor cv = Tensor::empty(DType::kF32, heads_shape);
        wan_ops::token_major_to_heads(q, batch, tokens, c.num_heads, c.head_dim, cq.data_as<float>());
        wan_ops::token_major_to_heads(k, batch, tokens, c.num_heads, c.head_dim, ck.data_as<float>());
        wan_ops::token_major_to_heads(v, batch, tokens, c.num_heads, c.head_dim, cv.data_as<float>());
        VEDA_RETURN_IF_ERROR(options.capture(layer, cq, ck, cv, grid));
      }
    }
    {
      ScopedTimer timer(timings.self_attention);
      const HeadLayouts* layouts = &shared_layouts.value();
      Result<HeadLayouts> own_layouts = HeadLayouts();
      if (options.attention == SelfAttentionMode::kVeda &&
          size_t(layer) < options.sparse.layer_head_shapes.size() &&
          !options.sparse.layer_head_shapes[layer].empty()) {
        own_layouts = layer_layouts(options.sparse, options.attention, layer, grid, c.num_heads);
        if (!own_layouts.is_ok()) return own_layouts.status();
        layouts = &own_layouts.value();
      }
      SelfAttentionCall call{q, k, v, attn, batch, c.num_heads, c.head_dim, layer};
      Status st = run_self_attention(call, *layouts, options, timings);
      if (!st.is_ok()) {
        return Status(st.code(), fmt::format("layer {} self-attention: {}", layer, st.message()));
      }
    }
    {
      ScopedTimer timer(timings.gemm);
      wan_ops::linear(attn, rows, blk.attn1.to_out, proj);
    }
    {
      ScopedTimer timer(timings.other);
      wan_ops::add_residual(hidden, proj, rows, dim, tokens, gate_msa, mod_stride);
    }

    // --- 2. Cross-attention (attn2) to the text context; plain residual.
    {
      ScopedTimer timer(timings.other);
      if (c.cross_attn_norm) {
        wan_ops::layer_norm_affine(hidden, norm, rows, dim, c.eps,
                                   blk.norm2_weight.data_as<float>(),
                                   blk.norm2_bias.data_as<float>());
      } else {
        std::memcpy(norm, hidden, size_t(rows * dim) * 4);
      }
    }
    {
      ScopedTimer timer(timings.gemm);
      wan_ops::linear(norm, rows, blk.attn2.to_q, q);
      wan_ops::linear(context, batch * text_tokens, blk.attn2.to_k, ctx_k_t.data_as<float>());
      wan_ops::linear(context, batch * text_tokens, blk.attn2.to_v, ctx_v_t.data_as<float>());
    }
    {
      ScopedTimer timer(timings.other);
      wan_ops::rms_norm(q, rows, dim, c.eps, blk.attn2.norm_q.data_as<float>());
      wan_ops::rms_norm(ctx_k_t.data_as<float>(), batch * text_tokens, dim, c.eps,
                        blk.attn2.norm_k.data_as<float>());
    }
    {
      ScopedTimer timer(timings.cross_attention);
      wan_ops::dense_attention_token_major(q, ctx_k_t.data_as<float>(), ctx_v_t.data_as<float>(),
                                           attn, batch, tokens, text_tokens, c.num_heads,
                                           c.head_dim, attn_scale);
    }
    {
      ScopedTimer timer(timings.gemm);
      wan_ops::linear(attn, rows, blk.attn2.to_out, proj);
    }
    {
      ScopedTimer timer(timings.other);
      wan_ops::add_residual(hidden, proj, rows, dim, tokens, nullptr, 0);
    }

    // --- 3. Feed-forward (linear, GELU-tanh, linear); gated residual.
    {
      ScopedTimer timer(timings.other);
      wan_ops::layer_norm_modulate(hidden, norm, rows, dim, c.eps, tokens, c_shift_msa,
                                   c_scale_msa, mod_stride);
    }
    {
      ScopedTimer timer(timings.gemm);
      wan_ops::linear(norm, rows, blk.ffn_in, ffn);
    }
    {
      ScopedTimer timer(timings.other);
      wan_ops::gelu_tanh(ffn, rows * c.ffn_dim);
    }
    {
      ScopedTimer timer(timings.gemm);
      wan_ops::linear(ffn, rows, blk.ffn_out, proj);
    }
    {
      ScopedTimer timer(timings.other);
      wan_ops::add_residual(hidden, proj, rows, dim, tokens, c_gate_msa, mod_stride);
    }
  }

  // --- Output: shift, scale = scale_shift_table [1, 2, dim] + temb; norm, modulate, project.
  const int64_t out_features = int64_t(c.out_channels) * c.patch_volume();
  Tensor projected = Tensor::empty(DType::kF32, {rows, out_features});
  {
    ScopedTimer timer(timings.other);
    std::vector<float> out_mod(size_t(batch * 2 * dim));  // [B][2][dim]
    const float* table = w.scale_shift_table.data_as<float>();
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < 2 * dim; ++i) out_mod[b * 2 * dim + i] = table[i] + temb[b * dim + i % dim];
    }
    wan_ops::layer_norm_modulate(hidden, norm, rows, dim, c.eps, tokens, &out_mod[0],
                                 &out_mod[dim], 2 * dim);
  }
  {
    ScopedTimer timer(timings.gemm);
    wan_ops::linear(norm, rows, w.proj_out, projected.data_as<float>());
  }
  // Unpatchify: feature index ((i*ph + j)*pw + k)*C + ch -> out[b, ch, f*pt+i, h*ph+j, w*pw+k].
  Tensor out = Tensor::empty(DType::kF32, {batch, c.out_channels, frames, height, width});
  {
    ScopedTimer timer(timings.other);
    const float* p = projected.data_as<float>();
    float* o = out.data_as<float>();
    parallel_for(0, rows, [&](int64_t r) {
      const int64_t b = r / tokens, token = r % tokens;
      const int64_t ft = token / (int64_t(grid.h) * grid.w);
      const int64_t fh = (token / grid.w) % grid.h;
      const int64_t fw = token % grid.w;
      const float* src = p + r * out_features;
      for (int i = 0; i < c.patch_t; ++i)
        for (int j = 0; j < c.patch_h; ++j)
          for (int k = 0; k < c.patch_w; ++k)
            for (int ch = 0; ch < c.out_channels; ++ch)
              o[(((b * c.out_channels + ch) * frames + ft * c.patch_t + i) * height +
                 fh * c.patch_h + j) * width + fw * c.patch_w + k] = *src++;
    }, 64);
  }
  timings.forward_passes = 1;
  if (options.timings) options.timings->add(timings);
  return out;
}

Result<double> relative_l2(const Tensor& a, const Tensor& b) {
  if (a.dtype() != DType::kF32 || b.dtype() != DType::kF32 || a.shape() != b.shape()) {
    return invalid_argument(fmt::format("relative_l2: need two f32 tensors of one shape, got {} "
                                        "and {}",
                                        shape_to_string(a.shape()), shape_to_string(b.shape())));
  }
  return compare(a.data_as<float>(), b.data_as<float>(), size_t(a.numel())).rel_l2;
}

}  // namespace veda
