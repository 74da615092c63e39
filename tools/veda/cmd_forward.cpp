// `veda forward`: one forward pass of a Wan DiT on an input file (x, t, text), e.g. golden data.
#include <fmt/core.h>

#include <chrono>

#include "command.hpp"
#include "dit_cli_common.hpp"
#include "veda/dit.hpp"
#include "veda/safetensors.hpp"
#ifdef VEDA_HAS_CUDA
#include "veda/cuda.hpp"
#include "veda/dit_cuda.hpp"
#endif

namespace veda::cli {
namespace {

struct ForwardArgs {
  std::string model, input, output;
  std::string device = "cpu";
  AttentionArgs attention;
};

// Reads x, t, text from the input file (f32).
struct ForwardInput {
  Tensor x, text;
  std::vector<float> timesteps;
};
[[maybe_unused]] Result<ForwardInput> read_input(const SafetensorsFile& input, const std::string& path) {
  for (const char* name : {"x", "t", "text"}) {
    if (!input.contains(name)) {
      return format_error(fmt::format("{}: missing tensor '{}' (need x [B,C,F,H,W], t [B], "
                                      "text [B,L,text_dim])",
                                      path, name));
    }
  }
  ForwardInput in;
  VEDA_ASSIGN_OR_RETURN(Tensor x, input.get("x"));
  VEDA_ASSIGN_OR_RETURN(Tensor t, input.get("t"));
  VEDA_ASSIGN_OR_RETURN(Tensor text, input.get("text"));
  in.x = x.to(DType::kF32);
  in.text = text.to(DType::kF32);
  t = t.to(DType::kF32);
  in.timesteps.assign(t.data_as<float>(), t.data_as<float>() + t.numel());
  return in;
}

[[maybe_unused]] Status compare_to_reference(const SafetensorsFile& input, const std::string& path,
                            const Tensor& out) {
  if (!input.contains("out")) return Status::ok();
  VEDA_ASSIGN_OR_RETURN(Tensor reference, input.get("out"));
  reference = reference.to(DType::kF32);
  VEDA_ASSIGN_OR_RETURN(double rel, relative_l2(out, reference));
  fmt::print("reference 'out' in {}: relative L2 = {:.3e}\n", path, rel);
  return Status::ok();
}

// --device cuda: the bf16 CUDA forward (veda/dit_cuda.hpp).
Status run_forward_cuda(const ForwardArgs& args) {
#ifdef VEDA_HAS_CUDA
  VEDA_ASSIGN_OR_RETURN(WanConfig config, WanConfig::from_file(args.model + "/config.json"));
  VEDA_ASSIGN_OR_RETURN(WanCudaOptions options, args.attention.to_cuda_options(config));
  VEDA_ASSIGN_OR_RETURN(std::string device, cuda_device_description());
  VEDA_ASSIGN_OR_RETURN(WanCudaModel model, WanCudaModel::load(config, args.model));
  VEDA_ASSIGN_OR_RETURN(SafetensorsFile input, SafetensorsFile::open(args.input));
  VEDA_ASSIGN_OR_RETURN(ForwardInput in, read_input(input, args.input));
  WanCudaTimings timings;
  const auto start = std::chrono::steady_clock::now();
  VEDA_ASSIGN_OR_RETURN(Tensor out, model.forward(in.x, in.timesteps, in.text, options, &timings));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  VEDA_RETURN_IF_ERROR(out.check_finite("forward output"));
  VEDA_RETURN_IF_ERROR(write_safetensors(args.output, {{"out", out}},
                                         {{"attention", self_attention_mode_name(options.attention)},
                                          {"device", "cuda"}}));
  fmt::print("forward (cuda, {}): {} -> {} {} in {:.3f} s wall, {:.2f} ms on the device ({} "
             "attention)\n",
             device, shape_to_string(in.x.shape()), args.output, shape_to_string(out.shape()),
             seconds, timings.total_ms, self_attention_mode_name(options.attention));
  fmt::print("  self-attention {:.2f} ms, cross-attention {:.2f} ms, GEMMs {:.2f} ms, other "
             "{:.2f} ms (first call: includes one-time setup)\n",
             timings.self_attention_ms, timings.cross_attention_ms, timings.gemm_ms,
             timings.other_ms);
  return compare_to_reference(input, args.input, out);
#else
  (void)args;
  return unsupported("--device cuda: this veda was built without CUDA (configure with "
                     "-DVEDA_CUDA=ON where nvcc is available)");
#endif
}

Status run_forward(const ForwardArgs& args) {
  if (args.device == "cuda") return run_forward_cuda(args);
  if (args.device != "cpu") {
    return invalid_argument(fmt::format("--device {}: expected cpu or cuda", args.device));
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
       sub.add_option("--device", args->device, "cpu or cuda (bf16 forward on the GPU)");
       args->attention.add_to(sub);
       return [args] { return run_forward(*args); };
     }});

}  // namespace
}  // namespace veda::cli
