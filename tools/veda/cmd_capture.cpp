// `veda capture`: run a dense generation and save self-attention inputs (q, k, v post-norm,
// post-RoPE, f16) of chosen layers at chosen steps, the calibration input.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <sstream>

#include "command.hpp"
#include "dit_cli_common.hpp"
#include "veda/capture.hpp"

namespace veda::cli {
namespace {

namespace fs = std::filesystem;

struct CaptureArgs {
  std::string model, output;
  std::string device = "cpu";
  std::vector<int> layers{1, 3, 6};
  std::vector<int> capture_steps{5, 15};
  PromptArgs prompt;
  SamplingArgs sampling;
};

Status run_capture(const CaptureArgs& args) {
  // Dense attention (the default AttentionArgs): captures are calibration data.
  VEDA_ASSIGN_OR_RETURN(SamplingModel model,
                        load_sampling_model(args.model, args.device, AttentionArgs(), nullptr));
  const WanConfig& config = model.config;
  for (int layer : args.layers) {
    if (layer < 0 || layer >= config.num_layers) {
      return invalid_argument(fmt::format("--layers: {} is not in [0, {})", layer,
                                          config.num_layers));
    }
  }
  for (int step : args.capture_steps) {
    if (step < 0 || step >= args.sampling.options.steps) {
      return invalid_argument(fmt::format("--steps: {} is not in [0, {}) (--num-steps)", step,
                                          args.sampling.options.steps));
    }
  }
  VEDA_ASSIGN_OR_RETURN(auto embeds, args.prompt.load(args.model, config));
  VEDA_ASSIGN_OR_RETURN(GenerateOptions options, args.sampling.to_options());
  std::error_code ec;
  fs::create_directories(args.output, ec);
  if (ec) return io_error(fmt::format("{}: cannot create: {}", args.output, ec.message()));

  const std::string prompt_tag =
      args.prompt.index >= 0 ? fmt::format("p{}", args.prompt.index) : std::string("pe");
  int written = 0;
  options.capture_layers = args.layers;
  options.capture_steps = args.capture_steps;
  options.capture = [&](int step, int layer, const Tensor& q, const Tensor& k, const Tensor& v,
                        Grid grid) -> Status {
    Capture capture;
    capture.q = q.to(DType::kF16);
    capture.k = k.to(DType::kF16);
    capture.v = v.to(DType::kF16);
    capture.grid = grid;
    capture.prefix_tokens = 0;
    capture.layer = layer;
    capture.step = step;
    capture.source =
        fmt::format("veda capture ({}): {} {}, seed {}, {} steps, conditional branch", model.device,
                    args.model, args.prompt.describe(), options.seed, options.steps);
    const std::string path = fmt::format("{}/{}_s{}_l{}_t{}.safetensors", args.output, prompt_tag,
                                         options.seed, layer, step);
    VEDA_RETURN_IF_ERROR(save_capture(path, capture));
    ++written;
    return Status::ok();
  };
  const auto start = std::chrono::steady_clock::now();
  options.on_step = [&](int step, int steps, double seconds) {
    print_progress(step, steps, seconds,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  };
  // Stop sampling after the last captured step: later steps add nothing to the captures.
  options.stop_after_step =
      *std::max_element(args.capture_steps.begin(), args.capture_steps.end());
  VEDA_ASSIGN_OR_RETURN(Tensor sample,
                        generate(config, model.forward, embeds.first, embeds.second, options));
  (void)sample;
  fmt::print("wrote {} captures to {}\n", written, args.output);
  return Status::ok();
}

const bool kRegistered = register_command(
    {"capture", "Capture self-attention q, k, v of a dense generation (calibration data)",
     [](CLI::App& sub) -> RunFn {
       auto args = std::make_shared<CaptureArgs>();
       sub.add_option("--model", args->model, "Model directory")->required();
       sub.add_option("-o,--output", args->output, "Output directory")->required();
       sub.add_option("--device", args->device, "cpu or cuda (q, k, v from the bf16 GPU forward)")
           ->capture_default_str();
       sub.add_option("--layers", args->layers, "Layers to capture, e.g. 1,3,6")->delimiter(',');
       sub.add_option("--steps", args->capture_steps, "Steps (0-based) to capture, e.g. 5,15")
           ->delimiter(',');
       args->prompt.add_to(sub);
       args->sampling.add_to(sub, "--num-steps");
       return [args] { return run_capture(*args); };
     }});

}  // namespace
}  // namespace veda::cli
