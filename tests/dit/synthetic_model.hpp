// A few-layer, narrow Wan model with random weights, written to a fresh directory.
#pragma once
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "common/test_data.hpp"
#include "dit/wan_weights.hpp"
#include "veda/dit.hpp"
#include "veda/safetensors.hpp"

namespace veda::test {

struct SyntheticModel {
  std::string dir;
  WanConfig config;
};

inline std::string synthetic_config_json() {
  return R"({"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2],
             "num_attention_heads": 2, "attention_head_dim": 12, "in_channels": 3,
             "out_channels": 3, "text_dim": 8, "freq_dim": 16, "ffn_dim": 32, "num_layers": 2,
             "cross_attn_norm": true, "qk_norm": "rms_norm_across_heads", "eps": 1e-06,
             "rope_max_seq_len": 1024})";
}

inline SyntheticModel make_synthetic_model(DType dtype = DType::kBF16) {
  SyntheticModel m;
  m.dir = temp_dir();
  std::ofstream(m.dir + "/config.json") << synthetic_config_json();
  m.config = WanConfig::from_json_text(synthetic_config_json()).value();
  std::vector<NamedTensor> tensors;
  uint64_t seed = 1;
  for (const ExpectedTensor& e : expected_wan_tensors(m.config)) {
    tensors.push_back({e.name, random_tensor(dtype, e.shape, seed++, 0.3f)});
  }
  EXPECT_TRUE(write_safetensors(m.dir + "/model.safetensors", tensors).is_ok());
  return m;
}

}  // namespace veda::test
