// `veda forward`: one forward pass of a Wan DiT on an input file (x, t, text), e.g. golden data.
#include <fmt/core.h>

#include <chrono>

#include "command.hpp"
#include "dit_cli_common.hpp"
#include "veda/dit.hpp"
#include "veda/safetensors.hpp"

namespace veda::cli {
namespace {

struct ForwardArgs {
  std::string model, input, output;
  std::string device = "cpu";
  AttentionArgs attention;
};

Status run_forward(const ForwardArgs& args) {
  if (args.device != "cpu") {
    return unsupported(fmt::format("--device {}: the DiT forward runs on the CPU only so far",
                                   args.device));
  }
  VEDA_ASSIGN_OR_RETURN(WanModel model, WanModel::load(args.model));
  VEDA_ASSIGN_OR_RETURN(ForwardOptions options, args.attention.to_options(
                                                    model.config().num_layers, model.config().num_heads));
  VEDA_ASSIGN_OR_RETURN(SafetensorsFile input, SafetensorsFile::open(args.input));
  for (const char* name : {"x", "t", "text"}) {
    if (!input.contains(name)) {
      return format_error(fmt::format("{}: missing tensor '{}' (need x [B,C,F,H,W], t [B], "
                                      "text [B,L,text_dim])",
                                      args.input, name));
    }
  }
  VEDA_ASSIGN_OR_RETURN(Tensor x, input.get("x"));
  VEDA_ASSIGN_OR_RETURN(Tensor t, input.get("t"));
  VEDA_ASSIGN_OR_RETURN(Tensor text, input.get("text"));
  x = x.to(DType::kF32);
  text = text.to(DType::kF32);
  t = t.to(DType::kF32);
  std::vector<float> timesteps(t.data_as<float>(), t.data_as<float>() + t.numel());

  ForwardTimings timings;
  options.timings = &timings;
  const auto start = std::chrono::steady_clock::now();
  VEDA_ASSIGN_OR_RETURN(Tensor out, model.forward(x, timesteps, text, options));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  VEDA_RETURN_IF_ERROR(out.check_finite("forward output"));
  VEDA_RETURN_IF_ERROR(write_safetensors(args.output, {{"out", out}},
                                         {{"attention", self_attention_mode_name(options.attention)}}));

  fmt::print("forward: {} -> {} {} in {:.2f} s ({} attention)\n", shape_to_string(x.shape()),
             args.output, shape_to_string(out.shape()), seconds,
             self_attention_mode_name(options.attention));
  print_timing_breakdown(timings);
  if (input.contains("out")) {
    VEDA_ASSIGN_OR_RETURN(Tensor reference, input.get("out"));
    reference = reference.to(DType::kF32);
    VEDA_ASSIGN_OR_RETURN(double rel, relative_l2(out, reference));
    fmt::print("reference 'out' in {}: relative L2 = {:.3e}\n", args.input, rel);
  }
  return Status::ok();
}

const bool kRegistered = register_command(
    {"forward", "Run one DiT forward pass on an input file (x, t, text) and save the output",
     [](CLI::App& sub) -> RunFn {
       auto args = std::make_shared<ForwardArgs>();
       sub.add_option("--model", args->model, "Model directory (config.json + safetensors)")
           ->required();
       sub.add_option("--input", args->input, "Safetensors with x [B,C,F,H,W], t [B], text [B,L,D]")
           ->required();
       sub.add_option("-o,--output", args->output, "Output safetensors (tensor 'out')")->required();
       sub.add_option("--device", args->device, "cpu");
       args->attention.add_to(sub);
       return [args] { return run_forward(*args); };
     }});

}  // namespace
}  // namespace veda::cli
