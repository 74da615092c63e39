// `veda generate`: text-to-video sampling with a Wan DiT, dense or Veda attention.
#include <fmt/core.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "dit_cli_common.hpp"
#include "veda/safetensors.hpp"
#include "veda/video.hpp"

namespace veda::cli {
namespace {

namespace fs = std::filesystem;

struct GenerateArgs {
  std::string model, output, compare_to;
  std::string device = "cpu";
  double fps = 8.0;
  PromptArgs prompt;
  SamplingArgs sampling;
  AttentionArgs attention;
};

// The decoded video of an output directory: its video.safetensors sample as 8-bit frames.
Result<VideoFrames> load_output_video(const std::string& dir) {
  const std::string path = dir + "/video.safetensors";
  VEDA_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(path));
  VEDA_ASSIGN_OR_RETURN(Tensor sample, file.get("video"));
  return frames_from_sample(sample);
}

Status run_generate(const GenerateArgs& args) {
  ForwardTimings timings;
  VEDA_ASSIGN_OR_RETURN(SamplingModel model,
                        load_sampling_model(args.model, args.device, args.attention, &timings));
  const WanConfig& config = model.config;
  VEDA_ASSIGN_OR_RETURN(auto embeds, args.prompt.load(args.model, config));
  VEDA_ASSIGN_OR_RETURN(GenerateOptions options, args.sampling.to_options());
  const bool veda = args.attention.mode == "veda";
  const auto start = std::chrono::steady_clock::now();
  options.on_step = [&](int step, int steps, double seconds) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    print_progress(step, steps, seconds, elapsed);
  };

  fmt::print(
      "generate on {}: {} frames {}x{}, {} steps ({}), seed {}, guidance {}, shift {}, {} "
      "attention{}{}\n",
      model.device, options.frames, options.height, options.width, options.steps,
      sampler_kind_name(options.sampler), options.seed, options.guidance, options.shift,
      args.attention.mode,
      veda ? fmt::format(" at density {}", args.attention.density) : std::string(),
      veda && !args.attention.profile.empty() ? fmt::format(", profile {}", args.attention.profile)
                                              : std::string());
  std::fflush(stdout);  // before the progress bar on stderr
  VEDA_ASSIGN_OR_RETURN(Tensor sample,
                        generate(config, model.forward, embeds.first, embeds.second, options));
  const double total =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::error_code ec;
  fs::create_directories(args.output, ec);
  if (ec) return io_error(fmt::format("{}: cannot create: {}", args.output, ec.message()));
  const std::map<std::string, std::string> metadata{
      {"prompt", args.prompt.describe()},
      {"seed", std::to_string(options.seed)},
      {"steps", std::to_string(options.steps)},
      {"sampler", sampler_kind_name(options.sampler)},
      {"guidance", fmt::format("{}", options.guidance)},
      {"shift", fmt::format("{}", options.shift)},
      {"attention", args.attention.mode},
      {"density", fmt::format("{}", args.attention.density)},
      {"profile", args.attention.profile},
      {"device", model.device},
      {"dense_steps", std::to_string(options.dense_warmup_steps)},
  };
  const bool pixel_space = config.in_channels == 3 && config.out_channels == 3;
  if (pixel_space) {
    VEDA_RETURN_IF_ERROR(write_safetensors(args.output + "/video.safetensors",
                                           {{"video", sample}}, metadata));
    VEDA_ASSIGN_OR_RETURN(VideoFrames video, frames_from_sample(sample));
    VEDA_RETURN_IF_ERROR(write_png_frames(args.output + "/frames", video));
    VEDA_RETURN_IF_ERROR(write_gif(args.output + "/video.gif", video, args.fps));
    fmt::print("wrote {}/frames/frame_*.png ({} frames), {}/video.gif, {}/video.safetensors\n",
               args.output, video.frames, args.output, args.output);
  } else {
    VEDA_RETURN_IF_ERROR(write_safetensors(args.output + "/latents.safetensors",
                                           {{"latents", sample}}, metadata));
    fmt::print("wrote {}/latents.safetensors {}: latent-space model; VAE decoding is not part of "
               "Veda yet\n",
               args.output, shape_to_string(sample.shape()));
  }

  fmt::print("total {:.2f} s, {:.2f} s/step\n", total, total / options.steps);
  print_timing_breakdown(timings, model.clock);

  nlohmann::json report = {{"model", args.model},
                           {"frames", options.frames},
                           {"height", options.height},
                           {"width", options.width},
                           {"seconds_total", total},
                           {"seconds_self_attention", timings.self_attention},
                           {"seconds_cross_attention", timings.cross_attention},
                           {"seconds_gemm", timings.gemm},
                           {"seconds_other", timings.other},
                           {"timing_clock", model.clock}};
  // Known only where the masks reach the host (the CPU path); absent rather than a false 0.
  if (timings.sparse_attention_calls > 0)
    report["mean_selected_density"] = timings.mean_selected_density();
  for (const auto& [key, value] : metadata) report[key] = value;

  if (!args.compare_to.empty()) {
    if (!pixel_space) return unsupported("--compare-to needs a pixel-space model");
    VEDA_ASSIGN_OR_RETURN(VideoFrames reference, load_output_video(args.compare_to));
    VEDA_ASSIGN_OR_RETURN(VideoFrames video, frames_from_sample(sample));
    VEDA_ASSIGN_OR_RETURN(VideoQuality quality, compare_videos(video, reference));
    fmt::print("vs {}: PSNR {:.2f} dB, SSIM {:.4f}\n", args.compare_to, quality.psnr,
               quality.ssim);
    report["compare_to"] = args.compare_to;
    report["psnr"] = quality.psnr;
    report["ssim"] = quality.ssim;
  }
  std::ofstream(args.output + "/generation.json") << report.dump(2) << "\n";
  return Status::ok();
}

const bool kRegistered = register_command(
    {"generate", "Generate a video with a Wan DiT (dense or Veda attention)",
     [](CLI::App& sub) -> RunFn {
       auto args = std::make_shared<GenerateArgs>();
       sub.add_option("--model", args->model, "Model directory (config.json + safetensors)")
           ->required();
       sub.add_option("-o,--output", args->output, "Output directory")->required();
       sub.add_option("--device", args->device, "cpu or cuda (bf16 forward on the GPU)")
           ->capture_default_str();
       sub.add_option("--fps", args->fps, "GIF frame rate");
       sub.add_option("--compare-to", args->compare_to,
                      "Output directory of another run (e.g. dense, same seed): print PSNR/SSIM");
       args->prompt.add_to(sub);
       args->sampling.add_to(sub, "--steps");
       args->attention.add_to(sub);
       return [args] { return run_generate(*args); };
     }});

}  // namespace
}  // namespace veda::cli
