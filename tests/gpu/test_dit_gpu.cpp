// The CUDA Wan DiT forward (WanCudaModel) against the tiny model's golden output and against the
// CPU forward. The model is found through $VEDA_TINY_WAN (on the device machine) or
// VEDA_SHARED_DIR/data/tiny-wan. Skips without a GPU or without the model files.
#include <gtest/gtest.h>

#include <fmt/core.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/test_data.hpp"
#include "veda/cuda.hpp"
#include "veda/dit.hpp"
#include "veda/dit_cuda.hpp"
#include "veda/safetensors.hpp"

namespace veda {
namespace {
namespace fs = std::filesystem;

std::string tiny_wan_dir() {
  if (const char* env = std::getenv("VEDA_TINY_WAN")) return env;
  return VEDA_SHARED_DIR "/data/tiny-wan";
}

#define SKIP_WITHOUT_GPU_OR_MODEL()                                                   \
  do {                                                                                \
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";                  \
    if (!fs::exists(tiny_wan_dir() + "/config.json"))                                 \
      GTEST_SKIP() << tiny_wan_dir() << " missing (set VEDA_TINY_WAN)";               \
  } while (0)

struct Golden {
  Tensor x, text, out;
  std::vector<float> timesteps;
};

Golden load_golden() {
  Golden g;
  SafetensorsFile f = SafetensorsFile::open(tiny_wan_dir() + "/golden.safetensors").value();
  g.x = f.get("x")->to(DType::kF32);
  g.text = f.get("text")->to(DType::kF32);
  g.out = f.get("out")->to(DType::kF32);
  Tensor t = f.get("t")->to(DType::kF32);
  g.timesteps.assign(t.data_as<float>(), t.data_as<float>() + t.numel());
  return g;
}

Result<WanCudaModel> load_cuda_model() {
  VEDA_ASSIGN_OR_RETURN(WanConfig config, WanConfig::from_file(tiny_wan_dir() + "/config.json"));
  return WanCudaModel::load(config, tiny_wan_dir());
}

TEST(WanCudaForward, GoldenOutputOfTinyWan) {
  SKIP_WITHOUT_GPU_OR_MODEL();
  Result<WanCudaModel> model = load_cuda_model();
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  const Golden g = load_golden();
  WanCudaTimings timings;
  Result<Tensor> out = model->forward(g.x, g.timesteps, g.text, {}, &timings);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  ASSERT_TRUE(out->check_finite("out").is_ok());
  const double rel = relative_l2(*out, g.out).value();
  fmt::print("tiny-wan CUDA golden forward (dense): relative L2 = {:.3e}, {:.2f} ms "
             "(self-attn {:.2f}, cross {:.2f}, GEMM {:.2f}, other {:.2f})\n",
             rel, timings.total_ms, timings.self_attention_ms, timings.cross_attention_ms,
             timings.gemm_ms, timings.other_ms);
  EXPECT_LE(rel, 2e-2);
}

// Veda mode at density 1 selects every existing key tile: the result must match dense.
TEST(WanCudaForward, VedaAtFullDensityMatchesDense) {
  SKIP_WITHOUT_GPU_OR_MODEL();
  Result<WanCudaModel> model = load_cuda_model();
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  const Golden g = load_golden();
  WanCudaOptions veda;
  veda.attention = SelfAttentionMode::kVeda;
  veda.density = 1.0;
  Result<Tensor> sparse = model->forward(g.x, g.timesteps, g.text, veda);
  ASSERT_TRUE(sparse.is_ok()) << sparse.status().to_string();
  const double rel = relative_l2(*sparse, g.out).value();
  fmt::print("tiny-wan CUDA veda density 1: relative L2 vs golden = {:.3e}\n", rel);
  EXPECT_LE(rel, 2e-2);
  // A real sparse run stays finite and in the golden's neighbourhood.
  veda.density = 0.25;
  Result<Tensor> quarter = model->forward(g.x, g.timesteps, g.text, veda);
  ASSERT_TRUE(quarter.is_ok()) << quarter.status().to_string();
  ASSERT_TRUE(quarter->check_finite("out").is_ok());
  fmt::print("tiny-wan CUDA veda density 0.25: relative L2 vs golden = {:.3e}\n",
             relative_l2(*quarter, g.out).value());
}

// Text of 64 tokens takes the attention_cuda cross-attention path (the benchmark's); batch 2
// with different timesteps checks per-sample modulation. Reference: the CPU forward.
TEST(WanCudaForward, TiledCrossAttentionAndBatchMatchCpu) {
  SKIP_WITHOUT_GPU_OR_MODEL();
  Result<WanCudaModel> model = load_cuda_model();
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  Result<WanModel> cpu = WanModel::load(tiny_wan_dir());
  ASSERT_TRUE(cpu.is_ok()) << cpu.status().to_string();
  const int64_t text_dim = model->config().text_dim;
  // 6 frames 44 x 76: grid 6 x 11 x 19 = 1,254 tokens (ragged 4x4x4 tiles on every axis, a
  // ragged last 64-token cross-attention tile), batch 2.
  Tensor x = test::random_tensor(DType::kF32, {2, model->config().in_channels, 6, 44, 76}, 5);
  Tensor text = test::random_tensor(DType::kF32, {2, 64, text_dim}, 6);
  const std::vector<float> timesteps = {250.f, 900.f};
  Result<Tensor> ref = cpu->forward(x, timesteps, text);
  ASSERT_TRUE(ref.is_ok()) << ref.status().to_string();
  Result<Tensor> out = model->forward(x, timesteps, text);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  const double rel = relative_l2(*out, *ref).value();
  fmt::print("tiny-wan CUDA vs CPU, B=2, 64 text tokens (tiled cross-attention): rel L2 = {:.3e}\n",
             rel);
  EXPECT_LE(rel, 2e-2);
}

}  // namespace
}  // namespace veda
