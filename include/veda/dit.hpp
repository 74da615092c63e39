// A Wan2.1-architecture video DiT (diffusers WanTransformer3DModel) on the CPU, whose
// self-attention runs through Veda's attention API: dense, or tile-sparse ("veda" mode).
//
// Checkpoints use the diffusers layout (config.json + safetensors shards, bf16/f16/f32); weights
// are converted to f32 at load time. Tokens are the patches of the (frames, height, width) video
// in (t, h, w) row-major order; there are no prefix tokens (text enters through cross-attention).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "veda/scoring.hpp"
#include "veda/selection.hpp"
#include "veda/status.hpp"
#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

// The fields of a diffusers WanTransformer3DModel config.json that the forward pass uses.
struct WanConfig {
  int patch_t = 1, patch_h = 2, patch_w = 2;
  int num_heads = 40;
  int head_dim = 128;
  int in_channels = 16;
  int out_channels = 16;
  int text_dim = 4096;
  int freq_dim = 256;
  int ffn_dim = 13824;
  int num_layers = 40;
  bool cross_attn_norm = true;
  float eps = 1e-6f;
  int rope_max_seq_len = 1024;

  int dim() const { return num_heads * head_dim; }
  int patch_volume() const { return patch_t * patch_h * patch_w; }
  // Errors name the offending field; image-conditioned (I2V) variants are kUnsupported.
  static Result<WanConfig> from_json_text(const std::string& text);
  static Result<WanConfig> from_file(const std::string& path);
};

// Wall time spent per kind of work, summed over forward passes (seconds).
struct ForwardTimings {
  double self_attention = 0;   // tile gather, scoring, selection, attention, scatter
  double cross_attention = 0;  // attention over the text tokens (projections count as GEMMs)
  double gemm = 0;             // every linear layer and the patch embedding
  double other = 0;            // norms, RoPE, activations, modulation, residuals
  int64_t forward_passes = 0;
  // Veda mode: sum of the selected density over sparse attention calls, and their count.
  double selected_density_sum = 0;
  int64_t sparse_attention_calls = 0;
  double mean_selected_density() const {
    return sparse_attention_calls ? selected_density_sum / double(sparse_attention_calls) : 0;
  }
  double total() const { return self_attention + cross_attention + gemm + other; }
  void add(const ForwardTimings& o);
};

enum class SelfAttentionMode { kDense, kVeda };
Result<SelfAttentionMode> parse_self_attention_mode(const std::string& name);  // "dense", "veda"
const char* self_attention_mode_name(SelfAttentionMode mode);

// Tile-sparse self-attention settings ("veda" mode).
struct SparseAttentionConfig {
  TileShape tile_shape{4, 4, 4};  // every head, unless layer_head_shapes says otherwise
  // Optional per-layer, per-head tile shapes ([layer][head], e.g. from a calibration profile);
  // an empty inner vector means "tile_shape for every head of that layer".
  std::vector<std::vector<TileShape>> layer_head_shapes;
  // Optional per-layer, per-head densities overriding selection.density.
  std::vector<std::vector<double>> layer_head_density;
  ScoreMethod score = ScoreMethod::kStats;
  SelectionConfig selection;  // density, mode, forced tiles
  // Optional scorer replacing `score` (e.g. a calibrated estimator from a profile): tile logits
  // [B, H, max_tiles, max_tiles] for one layer; an undefined Tensor means "use `score`".
  std::function<Result<Tensor>(int layer, const TileStats& q, const TileStats& k,
                               const HeadLayouts& layouts, float scale)>
      scorer;
};

struct Profile;  // veda/profile.hpp

// Veda mode from a calibration profile: the layers it covers get its per-head tile shapes, its
// per-head split of `density` (Profile::head_densities) and its fitted estimators as `scorer`;
// other layers keep `sparse`'s tile shape, density and score. Errors: the profile is for another
// head count.
Status use_profile(std::shared_ptr<const Profile> profile, int num_layers, int heads,
                   double density, SparseAttentionConfig* sparse);

// Receives one layer's self-attention inputs: q, k, v f32 [B, H, N, D], post-norm and post-RoPE,
// tokens in (t, h, w) row-major order. An error stops the forward pass.
using AttentionCaptureFn =
    std::function<Status(int layer, const Tensor& q, const Tensor& k, const Tensor& v, Grid grid)>;

struct ForwardOptions {
  SelfAttentionMode attention = SelfAttentionMode::kDense;
  SparseAttentionConfig sparse;
  AttentionCaptureFn capture;       // null: no capture
  std::vector<int> capture_layers;  // layers passed to `capture`
  ForwardTimings* timings = nullptr;  // accumulated into when set
};

struct WanWeights;  // f32 weights keyed by checkpoint names (src/dit/wan_weights.hpp)

class WanModel {
 public:
  // `path`: a directory with config.json and the safetensors checkpoint (single file or sharded
  // with an index). Every expected tensor must be present with its exact shape and a float dtype
  // (F32/F16/BF16); missing, extra and mis-shaped tensors are errors naming the tensor.
  static Result<WanModel> load(const std::string& path);
  // The same with a config given directly and the checkpoint at `checkpoint_path`.
  static Result<WanModel> load(const WanConfig& config, const std::string& checkpoint_path);

  const WanConfig& config() const { return config_; }

  // The model's flow prediction.
  //   x          f32 [B, in_channels, F, H, W], F, H, W divisible by the patch size
  //   timesteps  B values in [0, 1000] (the scheduler's timestep, not sigma)
  //   text       f32 [B, L, text_dim] prompt embeddings
  //   returns    f32 [B, out_channels, F, H, W]
  Result<Tensor> forward(const Tensor& x, const std::vector<float>& timesteps, const Tensor& text,
                         const ForwardOptions& options = {}) const;

 private:
  WanConfig config_;
  std::shared_ptr<const WanWeights> weights_;
};

// Relative L2 distance ||a - b|| / ||b|| of two f32 tensors of one shape (fp64 accumulation).
Result<double> relative_l2(const Tensor& a, const Tensor& b);

}  // namespace veda
