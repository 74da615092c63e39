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
  if (args.device != "cpu") {
    return unsupported(fmt::format("--device {}: generation runs on the CPU only so far",
                                   args.device));
  }
  VEDA_ASSIGN_OR_RETURN(WanModel model, WanModel::load(args.model));
  const WanConfig& config = model.config();
  VEDA_ASSIGN_OR_RETURN(auto embeds, args.prompt.load(args.model, config));
  VEDA_ASSIGN_OR_RETURN(GenerateOptions options, args.sampling.to_options());
  VEDA_ASSIGN_OR_RETURN(options.forward,
                        args.attention.to_options(config.num_layers, config.num_heads));
  ForwardTimings timings;
  options.forward.timings = &timings;
  const auto start = std::chrono::steady_clock::now();
  options.on_step = [&](int step, int steps, double seconds) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    print_progress(step, steps, seconds, elapsed);
  };

  fmt::print("generate: {} frames {}x{}, {} steps ({}), seed {}, guidance {}, shift {}, {} "
             "attention{}\n",
             options.frames, options.height, options.width, options.steps,
             sampler_kind_name(options.sampler), options.seed, options.guidance, options.shift,
             self_attention_mode_name(options.forward.attention),
             options.forward.attention == SelfAttentionMode::kVeda
                 ? fmt::format(" at density {}", args.attention.density)
                 : std::string());
  std::fflush(stdout);  // before the progress bar on stderr
  VEDA_ASSIGN_OR_RETURN(Tensor sample, generate(model, embeds.first, embeds.second, options));
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
      {"attention", self_attention_mode_name(options.forward.attention)},
      {"density", fmt::format("{}", args.attention.density)},
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
  print_timing_breakdown(timings);

  nlohmann::json report = {{"model", args.model},
                           {"frames", options.frames},
                           {"height", options.height},
                           {"width", options.width},
                           {"seconds_total", total},
                           {"seconds_self_attention", timings.self_attention},
                           {"seconds_cross_attention", timings.cross_attention},
                           {"seconds_gemm", timings.gemm},
                           {"seconds_other", timings.other},
                           {"mean_selected_density", timings.mean_selected_density()}};
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
       sub.add_option("--device", args->device, "cpu");
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
