// WanConfig from a diffusers config.json.
#include <fmt/core.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "veda/dit.hpp"

namespace veda {
namespace {

using json = nlohmann::json;

Status read_positive_int(const json& j, const char* key, int& out, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) return format_error(fmt::format("config.json: missing field '{}'", key));
    return Status::ok();
  }
  if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0) {
    return format_error(fmt::format("config.json: '{}' must be a positive integer, got {}", key,
                                    j[key].dump()));
  }
  out = j[key].get<int>();
  return Status::ok();
}

}  // namespace

Result<WanConfig> WanConfig::from_json_text(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return format_error("config.json: not a JSON object");

  WanConfig c;
  if (j.contains("_class_name") && j["_class_name"].is_string() &&
      j["_class_name"].get<std::string>() != "WanTransformer3DModel") {
    return unsupported(fmt::format("config.json: model class '{}' is not WanTransformer3DModel",
                                   j["_class_name"].get<std::string>()));
  }
  if (j.contains("patch_size")) {
    const json& p = j["patch_size"];
    if (!p.is_array() || p.size() != 3 || !p[0].is_number_integer() ||
        !p[1].is_number_integer() || !p[2].is_number_integer() || p[0].get<int>() <= 0 ||
        p[1].get<int>() <= 0 || p[2].get<int>() <= 0) {
      return format_error(fmt::format("config.json: 'patch_size' must be 3 positive integers, got {}",
                                      p.dump()));
    }
    c.patch_t = p[0].get<int>();
    c.patch_h = p[1].get<int>();
    c.patch_w = p[2].get<int>();
  }
  VEDA_RETURN_IF_ERROR(read_positive_int(j, "num_attention_heads", c.num_heads, true));
  VEDA_RETURN_IF_ERROR(read_positive_int(j, "attention_head_dim", c.head_dim, true));
  VEDA_RETURN_IF_ERROR(read_positive_int(j, "in_channels", c.in_channels, true));
  c.out_channels = c.in_channels;  // diffusers: out_channels or in_channels
  VEDA_RETURN_IF_ERROR(read_positive_int(j, "out_channels", c.out_channels, false));
  VEDA_RETURN_IF_ERROR(read_positive_int(j, "text_dim", c.text_dim, true));
  VEDA_RETURN_IF_ERROR(read_positive_int(j, "freq_dim", c.freq_dim, false));
  VEDA_RETURN_IF_ERROR(read_positive_int(j, "ffn_dim", c.ffn_dim, true));
  VEDA_RETURN_IF_ERROR(read_positive_int(j, "num_layers", c.num_layers, true));
  VEDA_RETURN_IF_ERROR(read_positive_int(j, "rope_max_seq_len", c.rope_max_seq_len, false));
  if (j.contains("cross_attn_norm")) {
    if (!j["cross_attn_norm"].is_boolean()) return format_error("config.json: 'cross_attn_norm' must be a boolean");
    c.cross_attn_norm = j["cross_attn_norm"].get<bool>();
  }
  if (j.contains("eps")) {
    if (!j["eps"].is_number() || j["eps"].get<double>() <= 0) {
      return format_error("config.json: 'eps' must be a positive number");
    }
    c.eps = j["eps"].get<float>();
  }
  if (j.contains("qk_norm") && !(j["qk_norm"].is_string() &&
                                 j["qk_norm"].get<std::string>() == "rms_norm_across_heads")) {
    return unsupported(fmt::format("config.json: qk_norm {} (only \"rms_norm_across_heads\")",
                                   j["qk_norm"].dump()));
  }
  for (const char* key : {"image_dim", "added_kv_proj_dim", "pos_embed_seq_len"}) {
    if (j.contains(key) && !j[key].is_null()) {
      return unsupported(fmt::format("config.json: '{}' is set: image-conditioned Wan models are "
                                     "not supported (text-to-video only)",
                                     key));
    }
  }
  // RoPE splits head_dim into t/h/w parts of rotated pairs; every part must be even.
  if (c.head_dim % 2 != 0 || (c.head_dim - 4 * (c.head_dim / 6)) % 2 != 0 || c.head_dim < 6) {
    return unsupported(fmt::format("config.json: attention_head_dim {} cannot be split into 3D "
                                   "RoPE parts",
                                   c.head_dim));
  }
  if (c.freq_dim % 2 != 0) return format_error("config.json: 'freq_dim' must be even");
  return c;
}

Result<WanConfig> WanConfig::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return io_error(fmt::format("{}: cannot open", path));
  std::stringstream ss;
  ss << in.rdbuf();
  Result<WanConfig> config = from_json_text(ss.str());
  if (!config.is_ok()) {
    return Status(config.status().code(), fmt::format("{}: {}", path, config.status().message()));
  }
  return config;
}

}  // namespace veda
