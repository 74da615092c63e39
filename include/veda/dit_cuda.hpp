// The Wan2.1 DiT forward pass (diffusers WanTransformer3DModel, T2V) on one CUDA device: bf16
// weights and activations, fp32 accumulation and an fp32 residual stream, cuBLASLt GEMMs, fused
// elementwise kernels, self-attention through attention_cuda (dense, or tile-sparse "veda" mode
// with the GPU selector), dense cross-attention. The CPU forward (veda/dit.hpp) is the reference.
//
// No CUDA headers here. Everything returns a Status; nothing exits or aborts.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "veda/dit.hpp"
#include "veda/profile.hpp"
#include "veda/sampler.hpp"
#include "veda/status.hpp"
#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

struct WanCudaOptions {
  SelfAttentionMode attention = SelfAttentionMode::kDense;
  double density = 0.05;          // veda mode: share of key tiles per query tile (top-k)
  TileShape tile_shape{4, 4, 4};  // veda mode: every head's tile (dense: kTokenBlock, token order)
  ScoreMethod score = ScoreMethod::kStats;  // veda mode: kMean or kStats
  // Veda mode, optional: the layers the profile covers use its per-head tile shapes, its split of
  // `density` and its fitted estimators (GpuSelector kEstimator); the others use the fields above.
  std::shared_ptr<const Profile> profile;
  // Optional: self-attention inputs of `capture_layers` (q, k, v f32 [B, H, N, D], post-norm and
  // post-RoPE, from the bf16 device values). Each capture copies to the host (synchronises).
  AttentionCaptureFn capture;
  std::vector<int> capture_layers;
  // Record CUDA events around every part of the forward (adds a little launch overhead) and fill
  // WanCudaTimings' per-part fields; the total is always measured.
  bool time_parts = true;
};

// Device milliseconds of one forward (CUDA events), excluding host<->device copies of the
// inputs and output.
struct WanCudaTimings {
  double self_attention_ms = 0;   // selection, attention, scatter (norm/RoPE/layout: other)
  double cross_attention_ms = 0;  // attention over the text tokens (projections are GEMMs)
  double gemm_ms = 0;             // every linear layer
  double other_ms = 0;            // norms, RoPE, activations, modulation, residuals, patchify
  double total_ms = 0;            // first event to last
  double mean_selected_density = 0;  // veda mode: the mask's density over existing pairs
};

// Device memory in use (total - free, all processes) and the device's total, in bytes.
struct DeviceMemoryUse {
  size_t used = 0, total = 0;
};
Result<DeviceMemoryUse> cuda_device_memory_use();

class WanCudaModel {
 public:
  // Uploads a diffusers checkpoint (a directory or file, see Checkpoint::open) as bf16 for
  // `config` (parse config.json with WanConfig::from_file). Every expected tensor must be present
  // with its shape. Errors for I2V configs, head_dim other than 64/128, no CUDA device.
  static Result<WanCudaModel> load(const WanConfig& config, const std::string& checkpoint_path);
  // Random bf16 weights (uniform, scaled by 1/sqrt(fan-in)) drawn on the device: for benchmarks.
  // `layers` < 0: config.num_layers; otherwise only that many blocks are allocated and run.
  static Result<WanCudaModel> random(const WanConfig& config, uint64_t seed, int layers = -1);

  WanCudaModel();
  ~WanCudaModel();
  WanCudaModel(WanCudaModel&&) noexcept;
  WanCudaModel& operator=(WanCudaModel&&) noexcept;

  const WanConfig& config() const;
  int layers() const;  // blocks actually held (== config().num_layers unless random(.., layers))
  size_t weight_bytes() const;

  // Same contract as WanModel::forward: x f32 [B, in_channels, F, H, W], B timesteps, text f32
  // [B, L, text_dim]; returns f32 [B, out_channels, F, H, W]. Synchronous.
  Result<Tensor> forward(const Tensor& x, const std::vector<float>& timesteps, const Tensor& text,
                         const WanCudaOptions& options = {}, WanCudaTimings* timings = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The sampling loop's model (veda/sampler.hpp) on the GPU: forwards with `options`, with dense
// self-attention on the loop's dense passes and its captures. Adds every forward's per-part
// device times (CUDA events, in seconds) to `timings` when set. `model` must outlive the function.
FlowModelFn cuda_flow_model(WanCudaModel& model, WanCudaOptions options,
                            ForwardTimings* timings = nullptr);

}  // namespace veda
