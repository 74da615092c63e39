// The Wan DiT forward pass: golden output of the small model, batching, sparse vs dense
// attention, and checkpoint validation.
#include <fmt/core.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/test_data.hpp"
#include "dit/synthetic_model.hpp"
#include "dit/wan_weights.hpp"
#include "veda/dit.hpp"
#include "veda/safetensors.hpp"

namespace veda {
namespace {

namespace fs = std::filesystem;
const std::string kTinyWan = VEDA_SHARED_DIR "/data/tiny-wan";

using test::make_synthetic_model;
using test::synthetic_config_json;
using test::SyntheticModel;

Tensor slice_batch(const Tensor& t, int64_t b) {
  Shape shape = t.shape();
  const int64_t per = t.numel() / shape[0];
  shape[0] = 1;
  Tensor out = Tensor::empty(DType::kF32, shape);
  std::copy_n(t.data_as<float>() + b * per, per, out.data_as<float>());
  return out;
}

TEST(WanForward, GoldenOutputOfTinyWan) {
  ASSERT_TRUE(fs::exists(kTinyWan + "/config.json")) << kTinyWan << " missing";
  Result<WanModel> model = WanModel::load(kTinyWan);
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  Result<SafetensorsFile> golden = SafetensorsFile::open(kTinyWan + "/golden.safetensors");
  ASSERT_TRUE(golden.is_ok()) << golden.status().to_string();
  Tensor x = golden->get("x")->to(DType::kF32);
  Tensor t = golden->get("t")->to(DType::kF32);
  Tensor text = golden->get("text")->to(DType::kF32);
  Tensor reference = golden->get("out")->to(DType::kF32);
  std::vector<float> timesteps(t.data_as<float>(), t.data_as<float>() + t.numel());

  Result<Tensor> out = model->forward(x, timesteps, text);
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  ASSERT_TRUE(out->check_finite("out").is_ok());
  const double rel = relative_l2(*out, reference).value();
  fmt::print("tiny-wan golden forward: relative L2 = {:.3e}\n", rel);
  EXPECT_LE(rel, 1e-3);
}

TEST(WanForward, BatchedEqualsPerSample) {
  SyntheticModel m = make_synthetic_model();
  WanModel model = WanModel::load(m.dir).value();
  Tensor x = test::random_tensor(DType::kF32, {2, 3, 3, 8, 12}, 11);
  Tensor text = test::random_tensor(DType::kF32, {2, 5, 8}, 12);
  Result<Tensor> both = model.forward(x, {900.f, 250.f}, text);
  ASSERT_TRUE(both.is_ok()) << both.status().to_string();
  for (int64_t b = 0; b < 2; ++b) {
    Result<Tensor> one = model.forward(slice_batch(x, b), {b == 0 ? 900.f : 250.f},
                                       slice_batch(text, b));
    ASSERT_TRUE(one.is_ok()) << one.status().to_string();
    EXPECT_LE(relative_l2(slice_batch(*both, b), *one).value(), 1e-5) << "sample " << b;
  }
}

TEST(WanForward, VedaAttentionAtFullDensityEqualsDense) {
  SyntheticModel m = make_synthetic_model();
  WanModel model = WanModel::load(m.dir).value();
  // Grid 5x6x7: every axis ragged for 4x4x4 tiles.
  Tensor x = test::random_tensor(DType::kF32, {1, 3, 5, 12, 14}, 21);
  Tensor text = test::random_tensor(DType::kF32, {1, 4, 8}, 22);
  Tensor dense = model.forward(x, {500.f}, text).value();

  ForwardOptions full;
  full.attention = SelfAttentionMode::kVeda;
  full.sparse.selection.density = 1.0;
  Result<Tensor> sparse_full = model.forward(x, {500.f}, text, full);
  ASSERT_TRUE(sparse_full.is_ok()) << sparse_full.status().to_string();
  EXPECT_LE(relative_l2(*sparse_full, dense).value(), 1e-5);

  ForwardOptions low = full;
  low.sparse.selection.density = 0.3;
  ForwardTimings timings;
  low.timings = &timings;
  Result<Tensor> sparse_low = model.forward(x, {500.f}, text, low);
  ASSERT_TRUE(sparse_low.is_ok()) << sparse_low.status().to_string();
  EXPECT_TRUE(sparse_low->check_finite("sparse").is_ok());
  EXPECT_GT(relative_l2(*sparse_low, dense).value(), 0.0);
  EXPECT_EQ(timings.sparse_attention_calls, m.config.num_layers);
  EXPECT_LT(timings.mean_selected_density(), 0.6);
}

TEST(WanForward, CaptureHookSeesPostRopeQkv) {
  SyntheticModel m = make_synthetic_model();
  WanModel model = WanModel::load(m.dir).value();
  Tensor x = test::random_tensor(DType::kF32, {2, 3, 2, 4, 6}, 31);
  Tensor text = test::random_tensor(DType::kF32, {2, 3, 8}, 32);
  ForwardOptions options;
  std::vector<int> seen;
  options.capture_layers = {1};
  options.capture = [&](int layer, const Tensor& q, const Tensor& k, const Tensor& v, Grid grid) {
    seen.push_back(layer);
    EXPECT_EQ(q.shape(), (Shape{2, 2, 12, 12}));
    EXPECT_EQ(k.shape(), q.shape());
    EXPECT_EQ(v.shape(), q.shape());
    EXPECT_EQ(grid, (Grid{2, 2, 3}));
    return Status::ok();
  };
  ASSERT_TRUE(model.forward(x, {100.f, 100.f}, text, options).is_ok());
  EXPECT_EQ(seen, std::vector<int>{1});
}

TEST(WanForward, RejectsBadInputs) {
  SyntheticModel m = make_synthetic_model();
  WanModel model = WanModel::load(m.dir).value();
  Tensor text = test::random_tensor(DType::kF32, {1, 3, 8}, 2);
  // Height 7 is not a whole number of 2-pixel patches.
  Result<Tensor> bad = model.forward(test::random_tensor(DType::kF32, {1, 3, 2, 7, 8}, 1), {1.f},
                                     text);
  EXPECT_EQ(bad.status().code(), ErrorCode::kInvalidArgument);
  Result<Tensor> bad_text = model.forward(test::random_tensor(DType::kF32, {1, 3, 2, 4, 4}, 1),
                                          {1.f}, test::random_tensor(DType::kF32, {1, 3, 9}, 3));
  EXPECT_EQ(bad_text.status().code(), ErrorCode::kInvalidArgument);
}

// --- Loading errors

TEST(WanLoad, SyntheticModelInEveryDtype) {
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    SyntheticModel m = make_synthetic_model(dt);
    Result<WanModel> model = WanModel::load(m.dir);
    EXPECT_TRUE(model.is_ok()) << dtype_name(dt) << ": " << model.status().to_string();
  }
}

// Copies tiny-wan's config and shards, then rewrites the index without one tensor.
TEST(WanLoad, MissingTensorIsNamed) {
  ASSERT_TRUE(fs::exists(kTinyWan + "/config.json"));
  const std::string dir = test::temp_dir();
  for (const auto& entry : fs::directory_iterator(kTinyWan)) {
    const std::string name = entry.path().filename().string();
    if (name == "golden.safetensors" || name.ends_with(".index.json")) continue;
    fs::copy_file(entry.path(), dir + "/" + name);
  }
  nlohmann::json index;
  std::ifstream(kTinyWan + "/diffusion_pytorch_model.safetensors.index.json") >> index;
  index["weight_map"].erase("blocks.3.attn1.norm_k.weight");
  std::ofstream(dir + "/diffusion_pytorch_model.safetensors.index.json") << index.dump();

  Result<WanModel> model = WanModel::load(dir);
  ASSERT_FALSE(model.is_ok());
  EXPECT_EQ(model.status().code(), ErrorCode::kFormatError);
  EXPECT_NE(model.status().message().find("missing tensor 'blocks.3.attn1.norm_k.weight'"),
            std::string::npos)
      << model.status().message();
}

// tiny-wan's weights with a config that disagrees on ffn_dim: the first mis-shaped tensor is named.
TEST(WanLoad, WrongShapeIsNamed) {
  ASSERT_TRUE(fs::exists(kTinyWan + "/config.json"));
  nlohmann::json config;
  std::ifstream(kTinyWan + "/config.json") >> config;
  config["ffn_dim"] = 1000;
  Result<WanConfig> parsed = WanConfig::from_json_text(config.dump());
  ASSERT_TRUE(parsed.is_ok());
  Result<WanModel> model = WanModel::load(*parsed, kTinyWan);
  ASSERT_FALSE(model.is_ok());
  EXPECT_NE(model.status().message().find("'blocks.0.ffn.net.0.proj.weight' has shape "
                                          "[1024, 384], expected [1000, 384]"),
            std::string::npos)
      << model.status().message();
}

TEST(WanLoad, ExtraTensorIsNamed) {
  SyntheticModel m = make_synthetic_model();
  std::vector<NamedTensor> tensors;
  for (const ExpectedTensor& e : expected_wan_tensors(m.config)) {
    tensors.push_back({e.name, test::random_tensor(DType::kF32, e.shape, 1)});
  }
  tensors.push_back({"blocks.9.attn1.to_q.weight", test::random_tensor(DType::kF32, {2, 2}, 1)});
  ASSERT_TRUE(write_safetensors(m.dir + "/model.safetensors", tensors).is_ok());
  Result<WanModel> model = WanModel::load(m.dir);
  ASSERT_FALSE(model.is_ok());
  EXPECT_NE(model.status().message().find("unexpected tensor 'blocks.9.attn1.to_q.weight'"),
            std::string::npos)
      << model.status().message();
}

TEST(WanLoad, ConfigErrors) {
  EXPECT_EQ(WanConfig::from_json_text("{").status().code(), ErrorCode::kFormatError);
  EXPECT_EQ(WanConfig::from_json_text(R"({"num_attention_heads": 2})").status().code(),
            ErrorCode::kFormatError);
  nlohmann::json i2v = nlohmann::json::parse(synthetic_config_json());
  i2v["image_dim"] = 1280;
  EXPECT_EQ(WanConfig::from_json_text(i2v.dump()).status().code(), ErrorCode::kUnsupported);
  EXPECT_EQ(WanModel::load("/nonexistent/model").status().code(), ErrorCode::kIoError);
}

}  // namespace
}  // namespace veda
