#include "dit_cli_common.hpp"

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <cstring>
#include <filesystem>

#include "veda/profile.hpp"
#include "veda/safetensors.hpp"
#ifdef VEDA_HAS_CUDA
#include "veda/cuda.hpp"
#endif

namespace veda::cli {

void AttentionArgs::add_to(CLI::App& sub) {
  sub.add_option("--attention", mode, "Self-attention: dense | veda (tile-sparse)")
      ->check(CLI::IsMember({"dense", "veda"}));
  sub.add_option("--density", density, "veda: share of key tiles kept per query tile, (0, 1]");
  sub.add_option("--tile-shape", tile_shape, "veda: tile shape TxHxW (33-64 or 65-128 tokens: 64- or 128-slot tiles)");
  sub.add_option("--score", score, "veda: tile scoring: stats | mean | oracle");
  sub.add_option("--select", select, "veda: selection: topk | mass");
  sub.add_option("--profile", profile,
                 "veda: calibration profile (per-head tile shapes, densities, estimators) for "
                 "the layers it covers");
}

Result<ForwardOptions> AttentionArgs::to_options(int num_layers, int heads,
                                                 std::shared_ptr<const Profile>* loaded) const {
  ForwardOptions options;
  VEDA_ASSIGN_OR_RETURN(options.attention, parse_self_attention_mode(mode));
  if (!(density > 0 && density <= 1)) {
    return invalid_argument(fmt::format("--density {} is not in (0, 1]", density));
  }
  options.sparse.selection.density = density;
  VEDA_ASSIGN_OR_RETURN(options.sparse.tile_shape, TileShape::parse(tile_shape));
  VEDA_ASSIGN_OR_RETURN(options.sparse.score, parse_score_method(score));
  VEDA_ASSIGN_OR_RETURN(options.sparse.selection.mode, parse_select_mode(select));
  if (profile.empty()) return options;
  if (options.attention != SelfAttentionMode::kVeda) {
    return invalid_argument("--profile applies to --attention veda only");
  }
  VEDA_ASSIGN_OR_RETURN(Profile from_file, load_profile(profile));
  auto shared = std::make_shared<const Profile>(std::move(from_file));
  Status st = use_profile(shared, num_layers, heads, density, &options.sparse);
  if (!st.is_ok()) return Status(st.code(), fmt::format("{}: {}", profile, st.message()));
  if (loaded) *loaded = shared;
  return options;
}

#ifdef VEDA_HAS_CUDA
Result<WanCudaOptions> AttentionArgs::to_cuda_options(const WanConfig& config) const {
  std::shared_ptr<const Profile> loaded;
  VEDA_ASSIGN_OR_RETURN(ForwardOptions cpu,
                        to_options(config.num_layers, config.num_heads, &loaded));
  if (cpu.attention == SelfAttentionMode::kVeda) {
    if (cpu.sparse.selection.mode != SelectMode::kTopK)
      return unsupported("--device cuda: only --select topk runs on the GPU");
    if (cpu.sparse.score != ScoreMethod::kStats && cpu.sparse.score != ScoreMethod::kMean)
      return unsupported(
          fmt::format("--device cuda: --score {} runs on the CPU only (use stats "
                      "or mean)",
                      score));
  }
  WanCudaOptions options;
  options.attention = cpu.attention;
  options.density = cpu.sparse.selection.density;
  options.tile_shape = cpu.sparse.tile_shape;
  options.score = cpu.sparse.score;
  options.profile = loaded;
  return options;
}
#endif

void PromptArgs::add_to(CLI::App& sub) {
  auto* file = sub.add_option("--prompt-embeds", embeds_file,
                              "Safetensors with 'prompt_embeds' [L, text_dim] (optionally "
                              "'negative_prompt_embeds')");
  auto* idx = sub.add_option("--prompt-index", index,
                             "Use 'prompt_N' of MODEL/golden.safetensors (the test model's "
                             "prompts)");
  file->excludes(idx);
  sub.add_option("--negative-embeds", negative_file,
                 "Safetensors with the unconditional embeddings (default: zeros)");
}

namespace {

Result<Tensor> read_embeddings(const std::string& path, const std::vector<std::string>& names,
                               bool allow_single, const WanConfig& config) {
  VEDA_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(path));
  std::string chosen;
  for (const std::string& n : names) {
    if (file.contains(n)) {
      chosen = n;
      break;
    }
  }
  if (chosen.empty() && allow_single && file.names().size() == 1) chosen = file.names().front();
  if (chosen.empty()) {
    return format_error(fmt::format("{}: no tensor named {}", path, fmt::join(names, " or ")));
  }
  VEDA_ASSIGN_OR_RETURN(Tensor t, file.get(chosen));
  if (t.rank() == 3 && t.dim(0) == 1) {
    VEDA_ASSIGN_OR_RETURN(t, t.reshape({t.dim(1), t.dim(2)}));
  }
  if (t.rank() != 2 || t.dim(1) != config.text_dim) {
    return invalid_argument(fmt::format("{}: '{}' has shape {}, expected [L, {}]", path, chosen,
                                        shape_to_string(t.shape()), config.text_dim));
  }
  return t.to(DType::kF32);
}

}  // namespace

Result<std::pair<Tensor, Tensor>> PromptArgs::load(const std::string& model_dir,
                                                   const WanConfig& config) const {
  Tensor cond, uncond;
  if (!embeds_file.empty()) {
    VEDA_ASSIGN_OR_RETURN(cond, read_embeddings(embeds_file, {"prompt_embeds", "text"}, true,
                                                config));
    VEDA_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(embeds_file));
    if (file.contains("negative_prompt_embeds")) {
      VEDA_ASSIGN_OR_RETURN(uncond, read_embeddings(embeds_file, {"negative_prompt_embeds"},
                                                    false, config));
    }
  } else if (index >= 0) {
    const std::string path = model_dir + "/golden.safetensors";
    VEDA_ASSIGN_OR_RETURN(cond, read_embeddings(path, {fmt::format("prompt_{}", index)}, false,
                                                config));
  } else {
    return invalid_argument("give --prompt-embeds FILE or --prompt-index N");
  }
  if (!negative_file.empty()) {
    VEDA_ASSIGN_OR_RETURN(uncond, read_embeddings(negative_file,
                                                  {"negative_prompt_embeds", "prompt_embeds",
                                                   "text"},
                                                  true, config));
  }
  if (!uncond.defined()) uncond = Tensor::zeros(DType::kF32, cond.shape());
  if (uncond.shape() != cond.shape()) {
    return invalid_argument(fmt::format("unconditional embeddings {} differ from the prompt's {}",
                                        shape_to_string(uncond.shape()),
                                        shape_to_string(cond.shape())));
  }
  return std::make_pair(cond, uncond);
}

std::string PromptArgs::describe() const {
  if (!embeds_file.empty()) return embeds_file;
  return fmt::format("prompt_{}", index);
}

void SamplingArgs::add_to(CLI::App& sub, const std::string& steps_flag) {
  GenerateOptions& o = options;
  sub.add_option("--frames", o.frames, "Frames (model input frames; latent frames for latent models)")
      ->capture_default_str();
  sub.add_option("--height", o.height, "Height (model input)")->capture_default_str();
  sub.add_option("--width", o.width, "Width (model input)")->capture_default_str();
  sub.add_option(steps_flag, o.steps, "Sampling steps")->capture_default_str();
  sub.add_option("--seed", o.seed, "Noise seed")->capture_default_str();
  sub.add_option("--guidance", o.guidance, "Classifier-free guidance scale (<= 1: off)")
      ->capture_default_str();
  sub.add_option("--shift", o.shift, "Flow-matching timestep shift (Wan: 3 at 480p, 5 at 720p)")
      ->capture_default_str();
  sub.add_option("--sampler", sampler, "unipc | euler")
      ->check(CLI::IsMember({"unipc", "euler"}))
      ->capture_default_str();
  sub.add_option("--dense-steps", o.dense_warmup_steps,
                 "veda: run the first N steps with dense attention");
}

Result<GenerateOptions> SamplingArgs::to_options() const {
  GenerateOptions o = options;
  VEDA_ASSIGN_OR_RETURN(o.sampler, parse_sampler_kind(sampler));
  return o;
}

Result<SamplingModel> load_sampling_model(const std::string& model_dir, const std::string& device,
                                          const AttentionArgs& attention, ForwardTimings* timings) {
  SamplingModel m;
  if (device == "cpu") {
    VEDA_ASSIGN_OR_RETURN(WanModel loaded, WanModel::load(model_dir));
    m.config = loaded.config();
    VEDA_ASSIGN_OR_RETURN(ForwardOptions options,
                          attention.to_options(m.config.num_layers, m.config.num_heads));
    options.timings = timings;
    auto model = std::make_shared<const WanModel>(std::move(loaded));
    m.forward = cpu_flow_model(*model, std::move(options));
    m.holder = model;
    m.device = "cpu";
    m.clock = "wall";
    return m;
  }
  if (device != "cuda") {
    return invalid_argument(fmt::format("--device {}: expected cpu or cuda", device));
  }
#ifdef VEDA_HAS_CUDA
  VEDA_ASSIGN_OR_RETURN(m.config, WanConfig::from_file(model_dir + "/config.json"));
  VEDA_ASSIGN_OR_RETURN(WanCudaOptions options, attention.to_cuda_options(m.config));
  VEDA_ASSIGN_OR_RETURN(m.device, cuda_device_description());
  VEDA_ASSIGN_OR_RETURN(WanCudaModel loaded, WanCudaModel::load(m.config, model_dir));
  auto model = std::make_shared<WanCudaModel>(std::move(loaded));
  m.forward = cuda_flow_model(*model, std::move(options), timings);
  m.holder = model;
  m.clock = "GPU, CUDA events";
  return m;
#else
  return unsupported(
      "--device cuda: this veda was built without CUDA (configure with "
      "-DVEDA_CUDA=ON where nvcc is available)");
#endif
}

void print_progress(int step, int steps, double step_seconds, double elapsed_seconds) {
  constexpr int kWidth = 30;
  const int done = (step + 1) * kWidth / steps;
  const double eta = elapsed_seconds / (step + 1) * (steps - step - 1);
  fmt::print(stderr, "\r[{}{}] {}/{} {:.2f} s/step, ETA {:.0f} s   ", std::string(done, '#'),
             std::string(kWidth - done, '.'), step + 1, steps, step_seconds, eta);
  if (step + 1 == steps) fmt::print(stderr, "\n");
  std::fflush(stderr);
}

void print_timing_breakdown(const ForwardTimings& t, const std::string& clock) {
  const double total = t.total() > 0 ? t.total() : 1;
  fmt::print(
      "time ({}): self-attention {:.2f} s ({:.0f}%), cross-attention {:.2f} s ({:.0f}%), "
      "GEMMs {:.2f} s ({:.0f}%), other {:.2f} s ({:.0f}%) over {} forward pass{}\n",
      clock, t.self_attention, 100 * t.self_attention / total, t.cross_attention,
      100 * t.cross_attention / total, t.gemm, 100 * t.gemm / total, t.other, 100 * t.other / total,
      t.forward_passes, t.forward_passes == 1 ? "" : "es");
  if (t.sparse_attention_calls > 0) {
    fmt::print("veda attention: mean selected density {:.3f} over {} calls\n",
               t.mean_selected_density(), t.sparse_attention_calls);
  }
}

}  // namespace veda::cli
