// veda bench dit: one Wan2.1 forward on the GPU with random bf16 weights at a preset's shape,
// dense and Veda (tile-sparse) self-attention: device time per part (CUDA events), median of
// several runs after a warm-up, the end-to-end ratio and the ideal ratio given the measured
// attention share: ideal = 1 / (1 - share + share * sparse_attn / dense_attn).
#include <fmt/core.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "command.hpp"
#include "table.hpp"
#include "veda/dit.hpp"
#include "veda/scoring.hpp"
#include "veda/tile_layout.hpp"
#ifdef VEDA_HAS_CUDA
#include "veda/cuda.hpp"
#include "veda/dit_cuda.hpp"
#endif

namespace veda::cli {
namespace {

struct BenchDitArgs {
  std::string preset = "wan2.1-1.3b-480p";
  bool random_weights = false;
  double density = 0.05;
  std::string tile = "4x4x4";
  std::string score = "stats";
  int layers = 0;  // 0: all of the preset's layers
  int text_tokens = 512;
  int warmup = 1, runs = 3;
  uint64_t seed = 1;
  std::string json_out;
};

// Wan2.1 T2V shapes: the config, and the latent size of the preset's video (81 frames).
struct Preset {
  WanConfig config;
  int frames = 0, height = 0, width = 0;  // latent input size
};

Result<Preset> make_preset(const std::string& name) {
  Preset p;
  WanConfig& c = p.config;
  c.patch_t = 1, c.patch_h = 2, c.patch_w = 2;
  c.head_dim = 128;
  c.in_channels = c.out_channels = 16;
  c.text_dim = 4096;
  c.freq_dim = 256;
  c.cross_attn_norm = true;
  c.eps = 1e-6f;
  if (name == "wan2.1-1.3b-480p") {
    c.num_heads = 12, c.ffn_dim = 8960, c.num_layers = 30;
    p.frames = 21, p.height = 60, p.width = 104;  // grid 21x30x52 = 32,760 tokens
  } else if (name == "wan2.1-14b-720p") {
    c.num_heads = 40, c.ffn_dim = 13824, c.num_layers = 40;
    p.frames = 21, p.height = 90, p.width = 160;  // grid 21x45x80 = 75,600 tokens
  } else {
    return invalid_argument(fmt::format("--preset {}: expected wan2.1-1.3b-480p or wan2.1-14b-720p",
                                        name));
  }
  return p;
}

#ifdef VEDA_HAS_CUDA
struct ModeResult {
  std::string name;
  WanCudaTimings median;
};

Result<ModeResult> time_mode(WanCudaModel& model, const Tensor& x, const Tensor& text,
                             const WanCudaOptions& options, const BenchDitArgs& args,
                             const std::string& name) {
  const std::vector<float> timesteps(size_t(x.dim(0)), 500.f);
  std::vector<double> self, cross, gemm, other, total;
  for (int i = 0; i < args.warmup + args.runs; ++i) {
    WanCudaTimings t;
    VEDA_ASSIGN_OR_RETURN(Tensor out, model.forward(x, timesteps, text, options, &t));
    if (i == 0) {
      Status finite = out.check_finite(name + " forward output");
      if (!finite.is_ok()) fmt::print(stderr, "  warning: {}\n", finite.message());
    }
    if (i < args.warmup) continue;
    self.push_back(t.self_attention_ms);
    cross.push_back(t.cross_attention_ms);
    gemm.push_back(t.gemm_ms);
    other.push_back(t.other_ms);
    total.push_back(t.total_ms);
    fmt::print(stderr, "  {} run {}: {:.1f} ms\n", name, i - args.warmup + 1, t.total_ms);
  }
  ModeResult r;
  r.name = name;
  r.median.self_attention_ms = median(self);
  r.median.cross_attention_ms = median(cross);
  r.median.gemm_ms = median(gemm);
  r.median.other_ms = median(other);
  r.median.total_ms = median(total);
  return r;
}
#endif

Status run_bench_dit(const BenchDitArgs& args) {
  VEDA_ASSIGN_OR_RETURN(Preset preset, make_preset(args.preset));
  if (!args.random_weights) {
    return invalid_argument("bench dit: pass --random-weights (it times one forward with random "
                            "bf16 weights at the preset's shape)");
  }
  if (!(args.density > 0 && args.density <= 1))
    return invalid_argument(fmt::format("--density {} is not in (0, 1]", args.density));
  if (args.runs < 1 || args.warmup < 0) return invalid_argument("--runs >= 1, --warmup >= 0");
#ifdef VEDA_HAS_CUDA
  const WanConfig& c = preset.config;
  const int layers = args.layers > 0 ? std::min(args.layers, c.num_layers) : c.num_layers;
  const double scale_to_full = double(c.num_layers) / layers;
  VEDA_ASSIGN_OR_RETURN(std::string device, cuda_device_description());
  VEDA_ASSIGN_OR_RETURN(TileShape tile, TileShape::parse(args.tile));
  VEDA_ASSIGN_OR_RETURN(ScoreMethod score, parse_score_method(args.score));
  const Grid grid{preset.frames / c.patch_t, preset.height / c.patch_h, preset.width / c.patch_w};
  fmt::print("bench dit: {} on {}\n  dim {}, {} heads x {}, ffn {}, {} of {} layers, grid {} = {} "
             "tokens, {} text tokens, batch 1, veda tile {} at density {} (dense: token order, "
             "{}-token blocks)\n",
             args.preset, device, c.dim(), c.num_heads, c.head_dim, c.ffn_dim, layers,
             c.num_layers, grid.str(), grid.tokens(), args.text_tokens, tile.str(), args.density,
             kTokenBlock.volume());

  VEDA_ASSIGN_OR_RETURN(WanCudaModel model, WanCudaModel::random(c, args.seed, layers));
  fmt::print("  random weights: {:.2f} GB bf16 on the device\n", double(model.weight_bytes()) / 1e9);
  Tensor x = Tensor::empty(DType::kF32, {1, c.in_channels, preset.frames, preset.height, preset.width});
  Tensor text = Tensor::empty(DType::kF32, {1, args.text_tokens, c.text_dim});
  std::mt19937_64 rng(args.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int64_t i = 0; i < x.numel(); ++i) x.data_as<float>()[i] = normal(rng);
  for (int64_t i = 0; i < text.numel(); ++i) text.data_as<float>()[i] = normal(rng);

  WanCudaOptions dense;
  dense.attention = SelfAttentionMode::kDense;
  WanCudaOptions sparse = dense;
  sparse.attention = SelfAttentionMode::kVeda;
  sparse.tile_shape = tile;
  sparse.density = args.density;
  sparse.score = score;
  VEDA_ASSIGN_OR_RETURN(ModeResult d, time_mode(model, x, text, dense, args, "dense"));
  VEDA_ASSIGN_OR_RETURN(DeviceMemoryUse mem, cuda_device_memory_use());
  fmt::print("  device memory in use after the dense forwards: {:.1f} of {:.1f} GB\n",
             double(mem.used) / 1e9, double(mem.total) / 1e9);
  VEDA_ASSIGN_OR_RETURN(ModeResult s, time_mode(model, x, text, sparse, args,
                                                fmt::format("veda {:.0f}%", args.density * 100)));

  auto row = [&](const ModeResult& r) {
    const WanCudaTimings& t = r.median;
    auto cell = [&](double ms) {
      return fmt::format("{:.1f} ({:.0f}%)", ms * scale_to_full, 100.0 * ms / t.total_ms);
    };
    return std::vector<std::string>{r.name, fmt::format("{:.1f}", t.total_ms * scale_to_full),
                                    cell(t.self_attention_ms), cell(t.cross_attention_ms),
                                    cell(t.gemm_ms), cell(t.other_ms)};
  };
  Table table;
  table.header = {"mode", "forward ms", "self-attention", "cross-attention", "GEMMs", "other"};
  table.rows = {row(d), row(s)};
  const double share = d.median.self_attention_ms / d.median.total_ms;
  const double attn_ratio = s.median.self_attention_ms / d.median.self_attention_ms;
  const double e2e = d.median.total_ms / s.median.total_ms;
  const double ideal = 1.0 / (1.0 - share + share * attn_ratio);
  fmt::print("\n{}", table.to_markdown());
  if (layers != c.num_layers) {
    fmt::print("(measured on {} layers, times scaled by {:.2f} to {} layers; embedding and output "
               "scaled too)\n",
               layers, scale_to_full, c.num_layers);
  }
  fmt::print("median of {} runs after {} warm-up, device time (CUDA events)\n", args.runs,
             args.warmup);
  fmt::print("dense attention share {:.1f}%, self-attention speed-up {:.2f}x, end-to-end {:.2f}x, "
             "ideal for that share and attention speed-up {:.2f}x\n",
             100 * share, 1.0 / attn_ratio, e2e, ideal);

  if (!args.json_out.empty()) {
    nlohmann::json j;
    j["preset"] = args.preset;
    j["device"] = device;
    j["layers_run"] = layers;
    j["layers_model"] = c.num_layers;
    j["scale_to_full"] = scale_to_full;
    j["density"] = args.density;
    j["tile"] = tile.str();
    j["text_tokens"] = args.text_tokens;
    j["runs"] = args.runs;
    j["warmup"] = args.warmup;
    for (const ModeResult* r : {&d, &s}) {
      j["modes"][r->name] = {{"total_ms", r->median.total_ms},
                             {"self_attention_ms", r->median.self_attention_ms},
                             {"cross_attention_ms", r->median.cross_attention_ms},
                             {"gemm_ms", r->median.gemm_ms},
                             {"other_ms", r->median.other_ms}};
    }
    j["attention_share"] = share;
    j["attention_speedup"] = 1.0 / attn_ratio;
    j["end_to_end_speedup"] = e2e;
    j["ideal_speedup"] = ideal;
    j["device_memory_used_gb"] = double(mem.used) / 1e9;
    std::ofstream f(args.json_out);
    if (!f) return io_error(fmt::format("{}: cannot write", args.json_out));
    f << j.dump(2) << "\n";
  }
  return Status::ok();
#else
  (void)preset;
  return unsupported("bench dit: this veda was built without CUDA (configure with -DVEDA_CUDA=ON "
                     "where nvcc is available)");
#endif
}

const bool kRegistered = register_command(
    {"bench dit", "time one Wan2.1 forward on the GPU (random weights): dense vs Veda",
     [](CLI::App& sub) -> RunFn {
       auto args = std::make_shared<BenchDitArgs>();
       sub.add_option("--preset", args->preset, "wan2.1-1.3b-480p | wan2.1-14b-720p")
           ->capture_default_str();
       sub.add_flag("--random-weights", args->random_weights,
                    "random bf16 weights (required: no checkpoint is loaded)");
       sub.add_option("--density", args->density, "Veda mode density")->capture_default_str();
       sub.add_option("--tile-shape", args->tile, "tile shape of every head")->capture_default_str();
       sub.add_option("--score", args->score, "tile scoring: stats | mean")->capture_default_str();
       sub.add_option("--layers", args->layers,
                      "run only this many blocks and scale the times to the model's depth")
           ->capture_default_str();
       sub.add_option("--text-tokens", args->text_tokens, "text length (Wan: 512)")
           ->capture_default_str();
       sub.add_option("--warmup", args->warmup, "untimed forwards per mode")->capture_default_str();
       sub.add_option("--runs", args->runs, "timed forwards per mode (median)")->capture_default_str();
       sub.add_option("--seed", args->seed, "random weights and inputs")->capture_default_str();
       sub.add_option("--json", args->json_out, "also write the results as JSON to this file");
       return [args] { return run_bench_dit(*args); };
     }});

}  // namespace
}  // namespace veda::cli
