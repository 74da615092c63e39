// Options and printing shared by the DiT subcommands (forward, generate, capture).
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "veda/dit.hpp"
#include "veda/profile.hpp"
#include "veda/sampler.hpp"
#ifdef VEDA_HAS_CUDA
#include "veda/dit_cuda.hpp"
#endif

namespace veda::cli {

// --attention dense|veda, --density, --tile-shape, --score, --select, --profile
struct AttentionArgs {
  std::string mode = "dense";
  double density = 0.1;
  std::string tile_shape = "4x4x4";
  std::string score = "stats";
  std::string select = "topk";
  std::string profile;  // calibration profile: per-head tile shapes, densities, estimators

  void add_to(CLI::App& sub);
  // `num_layers`/`heads` check the profile against the model; `loaded` receives the profile.
  Result<ForwardOptions> to_options(int num_layers, int heads,
                                    std::shared_ptr<const Profile>* loaded = nullptr) const;
#ifdef VEDA_HAS_CUDA
  // --device cuda: the same settings for WanCudaModel; unsupported for what runs on the CPU only
  // (--score oracle, --select mass).
  Result<WanCudaOptions> to_cuda_options(const WanConfig& config) const;
#endif
};

// --prompt-embeds FILE | --prompt-index N, --negative-embeds FILE
struct PromptArgs {
  std::string embeds_file;
  int index = -1;
  std::string negative_file;

  void add_to(CLI::App& sub);
  // Conditional and unconditional embeddings, each f32 [L, text_dim].
  // --prompt-embeds: tensor 'prompt_embeds' (or 'text', or the file's only tensor), [L, D] or
  //   [1, L, D]; 'negative_prompt_embeds' in the same file is the unconditional one.
  // --prompt-index N: 'prompt_N' of MODEL/golden.safetensors (the small test model's prompts).
  // Without negative embeddings the unconditional input is zeros of the prompt's shape.
  Result<std::pair<Tensor, Tensor>> load(const std::string& model_dir,
                                         const WanConfig& config) const;
  std::string describe() const;
};

// --frames, --height, --width, --seed, --guidance, --shift, --sampler and the step count.
struct SamplingArgs {
  GenerateOptions options;  // the library's defaults are the CLI's defaults
  std::string sampler = "unipc";

  // `steps_flag`: "--steps" for generate; capture uses --steps for the captured steps.
  void add_to(CLI::App& sub, const std::string& steps_flag);
  Result<GenerateOptions> to_options() const;
};

// The model a sampling subcommand (generate, capture) runs on --device cpu or cuda.
struct SamplingModel {
  WanConfig config;
  std::string device;   // "cpu", or the GPU's description
  std::string clock;    // how `timings` are measured, for the printed breakdown
  FlowModelFn forward;  // refers to the model `holder` keeps alive
  std::shared_ptr<const void> holder;
};
// Loads MODEL_DIR for `device` with the attention settings; forwards add their time per part to
// `timings` (CPU: wall time; CUDA: device time from CUDA events). One-line errors for device and
// option combinations that cannot run.
Result<SamplingModel> load_sampling_model(const std::string& model_dir, const std::string& device,
                                          const AttentionArgs& attention, ForwardTimings* timings);

// A one-line progress bar on stderr, redrawn per step: [#####.....] 5/10 1.23 s/step ETA 6 s
void print_progress(int step, int steps, double step_seconds, double elapsed_seconds);

// "time (CLOCK): self-attention 12.3 s (45%), cross-attention ..., GEMMs ..., other ..."
void print_timing_breakdown(const ForwardTimings& timings, const std::string& clock = "wall");

}  // namespace veda::cli
