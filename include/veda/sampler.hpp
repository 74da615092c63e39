// Text-to-video sampling with a Wan DiT: flow matching with Wan's timestep shift, Euler or UniPC
// (order 2, bh2, x0-prediction: diffusers' UniPCMultistepScheduler as Wan configures it), and
// classifier-free guidance with the conditional and unconditional passes batched as B = 2.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "veda/dit.hpp"
#include "veda/status.hpp"
#include "veda/tensor.hpp"

namespace veda {

// sigmas: steps + 1 values from ~1 down to 0 (the last), shifted as Wan does:
// sigma' = shift * sigma / (1 + (shift - 1) * sigma). timesteps: the model's timestep per step,
// sigma * num_train_timesteps (truncated to an integer like diffusers' UniPC when asked).
struct FlowSchedule {
  std::vector<double> sigmas;
  std::vector<float> timesteps;
  int steps() const { return int(timesteps.size()); }
};
Result<FlowSchedule> make_flow_schedule(int steps, double shift, bool integer_timesteps,
                                        int num_train_timesteps = 1000);

enum class SamplerKind { kEuler, kUniPC };
Result<SamplerKind> parse_sampler_kind(const std::string& name);  // "euler", "unipc"
const char* sampler_kind_name(SamplerKind kind);

// Steps a sample along the schedule given the model's flow prediction (velocity = noise - x0).
class FlowSampler {
 public:
  FlowSampler(SamplerKind kind, FlowSchedule schedule);
  const FlowSchedule& schedule() const { return schedule_; }
  // Advances `sample` (f32, n values) from sigmas[step] to sigmas[step + 1]. Steps must be taken
  // in order 0, 1, ... steps - 1.
  Status step(int step, const float* velocity, float* sample, int64_t n);

 private:
  void unipc_step(int step, const float* velocity, float* sample, int64_t n);

  SamplerKind kind_;
  FlowSchedule schedule_;
  int next_step_ = 0;
  // UniPC state: x0 predictions of the last two steps (newest last), the sample before the last
  // predictor, and the order the last predictor used.
  std::vector<std::vector<float>> model_outputs_;
  std::vector<float> last_sample_;
  int last_order_ = 0;
  int lower_order_nums_ = 0;
};

// Deterministic standard normal values from a seed (splitmix64 + Box-Muller), the same on every
// platform and standard library.
void fill_standard_normal(float* data, int64_t n, uint64_t seed);

// What the sampling loop asks of one forward pass besides its inputs.
struct FlowPass {
  int step = 0;
  bool dense = false;  // dense self-attention (the dense warm-up steps)
  // Non-null: self-attention inputs of `capture_layers`, every batch item (veda/dit.hpp).
  AttentionCaptureFn capture;
  std::vector<int> capture_layers;

  // `options` (ForwardOptions or WanCudaOptions) as this pass runs the model: dense attention on
  // a warm-up step, its capture.
  template <class Options>
  Options applied_to(Options options) const {
    if (dense) options.attention = SelfAttentionMode::kDense;
    options.capture = capture;
    options.capture_layers = capture_layers;
    return options;
  }
};

// The model as the sampling loop sees it: the flow prediction f32 [B, out_channels, F, H, W] for
// x f32 [B, in_channels, F, H, W], B timesteps and text f32 [B, L, text_dim]. The CPU model:
// cpu_flow_model below; the GPU model: cuda_flow_model (veda/dit_cuda.hpp).
using FlowModelFn =
    std::function<Result<Tensor>(const Tensor& x, const std::vector<float>& timesteps,
                                 const Tensor& text, const FlowPass& pass)>;

// WanModel::forward with `forward` (timings accumulate into forward.timings when set). `model`
// must outlive the function.
FlowModelFn cpu_flow_model(const WanModel& model, ForwardOptions forward);

struct GenerateOptions {
  int frames = 16, height = 64, width = 112;  // model input size (pixels or latents)
  int steps = 20;
  uint64_t seed = 0;
  double guidance = 5.0;  // <= 1: no classifier-free guidance (one pass per step)
  double shift = 3.0;
  SamplerKind sampler = SamplerKind::kUniPC;
  // The CPU model's attention options (generate(const WanModel&, ...)); timings accumulate into
  // forward.timings when set.
  ForwardOptions forward;
  // The first steps run with dense self-attention even in Veda mode: they lay out the video and
  // are the most sensitive to approximation.
  int dense_warmup_steps = 0;
  // Called after every step with its index and wall time.
  std::function<void(int step, int steps, double seconds)> on_step;
  // Self-attention capture: called for capture_layers at capture_steps (0-based) with q, k, v of
  // the conditional batch item only, [1, H, N, D] f32.
  std::function<Status(int step, int layer, const Tensor& q, const Tensor& k, const Tensor& v,
                       Grid grid)>
      capture;
  std::vector<int> capture_steps, capture_layers;
  // >= 0: stop after this step (0-based) and return the partly denoised sample (captures need
  // no later steps).
  int stop_after_step = -1;
};

// Samples a video from prompt embeddings [L, text_dim] (and unconditional embeddings of the same
// shape for guidance) with `model` of `config` on any device; options.forward is not used here.
// Returns the final x0 sample f32 [1, C, F, H, W].
Result<Tensor> generate(const WanConfig& config, const FlowModelFn& model,
                        const Tensor& prompt_embeds, const Tensor& negative_embeds,
                        const GenerateOptions& options);
// The same on the CPU with options.forward.
Result<Tensor> generate(const WanModel& model, const Tensor& prompt_embeds,
                        const Tensor& negative_embeds, const GenerateOptions& options);

}  // namespace veda
