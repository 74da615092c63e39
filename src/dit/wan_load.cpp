// Loading a WanTransformer3DModel checkpoint: validate every tensor against the config, convert
// to f32.
#include <fmt/core.h>

#include <filesystem>
#include <map>
#include <set>

#include "dit/wan_weights.hpp"
#include "veda/safetensors.hpp"

namespace veda {
namespace fs = std::filesystem;

std::vector<ExpectedTensor> expected_wan_tensors(const WanConfig& c) {
  const int64_t dim = c.dim();
  std::vector<ExpectedTensor> out;
  auto linear = [&](const std::string& prefix, int64_t out_f, int64_t in_f) {
    out.push_back({prefix + ".weight", {out_f, in_f}});
    out.push_back({prefix + ".bias", {out_f}});
  };
  out.push_back({"patch_embedding.weight", {dim, c.in_channels, c.patch_t, c.patch_h, c.patch_w}});
  out.push_back({"patch_embedding.bias", {dim}});
  linear("condition_embedder.time_embedder.linear_1", dim, c.freq_dim);
  linear("condition_embedder.time_embedder.linear_2", dim, dim);
  linear("condition_embedder.time_proj", 6 * dim, dim);
  linear("condition_embedder.text_embedder.linear_1", dim, c.text_dim);
  linear("condition_embedder.text_embedder.linear_2", dim, dim);
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string b = fmt::format("blocks.{}.", i);
    for (const char* attn : {"attn1", "attn2"}) {
      for (const char* proj : {"to_q", "to_k", "to_v", "to_out.0"}) {
        linear(b + attn + "." + proj, dim, dim);
      }
      out.push_back({b + attn + ".norm_q.weight", {dim}});
      out.push_back({b + attn + ".norm_k.weight", {dim}});
    }
    if (c.cross_attn_norm) {
      out.push_back({b + "norm2.weight", {dim}});
      out.push_back({b + "norm2.bias", {dim}});
    }
    linear(b + "ffn.net.0.proj", c.ffn_dim, dim);
    linear(b + "ffn.net.2", dim, c.ffn_dim);
    out.push_back({b + "scale_shift_table", {1, 6, dim}});
  }
  out.push_back({"scale_shift_table", {1, 2, dim}});
  linear("proj_out", int64_t(c.out_channels) * c.patch_volume(), dim);
  return out;
}

namespace {

Result<WanWeights> load_weights(const WanConfig& config, const Checkpoint& ckpt,
                                const std::string& where) {
  const std::vector<ExpectedTensor> expected = expected_wan_tensors(config);
  std::set<std::string> expected_names;
  for (const ExpectedTensor& e : expected) expected_names.insert(e.name);

  // Validate everything before converting anything, so the first error is the one reported.
  for (const ExpectedTensor& e : expected) {
    const TensorInfo* info = ckpt.info(e.name);
    if (info == nullptr) {
      return format_error(fmt::format("{}: missing tensor '{}' (expected shape {})", where, e.name,
                                      shape_to_string(e.shape)));
    }
    if (info->shape != e.shape) {
      return format_error(fmt::format("{}: tensor '{}' has shape {}, expected {} for this config",
                                      where, e.name, shape_to_string(info->shape),
                                      shape_to_string(e.shape)));
    }
    if (!parse_dtype(info->dtype_name).is_ok()) {
      return unsupported(fmt::format("{}: tensor '{}' has dtype {}; supported: F32, F16, BF16",
                                     where, e.name, info->dtype_name));
    }
  }
  for (const std::string& name : ckpt.names()) {
    if (!expected_names.count(name)) {
      return format_error(fmt::format("{}: unexpected tensor '{}' (not part of a "
                                      "WanTransformer3DModel with this config.json)",
                                      where, name));
    }
  }

  std::map<std::string, Tensor> f32;
  for (const ExpectedTensor& e : expected) {
    VEDA_ASSIGN_OR_RETURN(Tensor t, ckpt.get(e.name));
    f32[e.name] = t.to(DType::kF32);
  }
  auto take = [&](const std::string& name) { return f32.at(name); };
  auto linear = [&](const std::string& prefix) {
    return LinearWeights{take(prefix + ".weight"), take(prefix + ".bias")};
  };

  WanWeights w;
  // Conv3d with kernel = stride = patch is a linear map of each flattened (C, pt, ph, pw) patch.
  VEDA_ASSIGN_OR_RETURN(Tensor patch_w, take("patch_embedding.weight")
                                            .reshape({config.dim(), int64_t(config.in_channels) *
                                                                        config.patch_volume()}));
  w.patch_embedding = {patch_w, take("patch_embedding.bias")};
  w.time_embedder_1 = linear("condition_embedder.time_embedder.linear_1");
  w.time_embedder_2 = linear("condition_embedder.time_embedder.linear_2");
  w.time_proj = linear("condition_embedder.time_proj");
  w.text_embedder_1 = linear("condition_embedder.text_embedder.linear_1");
  w.text_embedder_2 = linear("condition_embedder.text_embedder.linear_2");
  for (int i = 0; i < config.num_layers; ++i) {
    const std::string b = fmt::format("blocks.{}.", i);
    WanBlockWeights block;
    auto attention = [&](const std::string& attn) {
      WanAttentionWeights a;
      a.to_q = linear(b + attn + ".to_q");
      a.to_k = linear(b + attn + ".to_k");
      a.to_v = linear(b + attn + ".to_v");
      a.to_out = linear(b + attn + ".to_out.0");
      a.norm_q = take(b + attn + ".norm_q.weight");
      a.norm_k = take(b + attn + ".norm_k.weight");
      return a;
    };
    block.attn1 = attention("attn1");
    block.attn2 = attention("attn2");
    if (config.cross_attn_norm) {
      block.norm2_weight = take(b + "norm2.weight");
      block.norm2_bias = take(b + "norm2.bias");
    }
    block.ffn_in = linear(b + "ffn.net.0.proj");
    block.ffn_out = linear(b + "ffn.net.2");
    block.scale_shift_table = take(b + "scale_shift_table");
    w.blocks.push_back(std::move(block));
  }
  w.scale_shift_table = take("scale_shift_table");
  w.proj_out = linear("proj_out");
  return w;
}

}  // namespace

Result<WanModel> WanModel::load(const std::string& path) {
  const fs::path dir(path);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return io_error(fmt::format("{}: not a model directory (expected config.json and "
                                "*.safetensors)",
                                path));
  }
  VEDA_ASSIGN_OR_RETURN(WanConfig config, WanConfig::from_file((dir / "config.json").string()));
  return load(config, path);
}

Result<WanModel> WanModel::load(const WanConfig& config, const std::string& checkpoint_path) {
  VEDA_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::open(checkpoint_path));
  VEDA_ASSIGN_OR_RETURN(WanWeights weights, load_weights(config, ckpt, checkpoint_path));
  WanModel model;
  model.config_ = config;
  model.weights_ = std::make_shared<const WanWeights>(std::move(weights));
  return model;
}

}  // namespace veda
