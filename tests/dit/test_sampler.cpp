// Flow-matching schedule, Euler and UniPC steps, the sampling loop with guidance and capture.
#include <gtest/gtest.h>

#include <cmath>

#include "dit/synthetic_model.hpp"
#include "veda/sampler.hpp"

namespace veda {
namespace {

TEST(FlowSchedule, MatchesDiffusersFlowSigmas) {
  // diffusers: alphas = linspace(1, 1/1000, 5); sigmas = 1 - alphas, shifted, reversed, [:-1].
  FlowSchedule s = make_flow_schedule(4, 1.0, true).value();
  ASSERT_EQ(s.sigmas.size(), 5u);
  const double expected[] = {0.999, 0.74925, 0.4995, 0.24975, 0.0};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(s.sigmas[i], expected[i], 1e-12) << i;
  EXPECT_EQ(s.timesteps, (std::vector<float>{999, 749, 499, 249}));

  FlowSchedule shifted = make_flow_schedule(4, 3.0, false).value();
  EXPECT_NEAR(shifted.sigmas[0], 3 * 0.999 / (1 + 2 * 0.999), 1e-12);
  EXPECT_NEAR(shifted.timesteps[0], 1000 * 3 * 0.999 / (1 + 2 * 0.999), 1e-3);
  EXPECT_FALSE(make_flow_schedule(0, 3.0, true).is_ok());
  EXPECT_FALSE(make_flow_schedule(4, 0.0, true).is_ok());
}

// A scalar "model" v = 0.7 x - 0.3 + 0.2 sigma, run through both samplers.
double run_toy(SamplerKind kind, int steps, double shift, double x0) {
  FlowSampler sampler(kind, make_flow_schedule(steps, shift, true).value());
  float x = float(x0);
  for (int i = 0; i < steps; ++i) {
    const float v = float(0.7 * x - 0.3 + 0.2 * sampler.schedule().sigmas[i]);
    EXPECT_TRUE(sampler.step(i, &v, &x, 1).is_ok());
  }
  return x;
}

TEST(FlowSampler, UniPCMatchesDiffusersFormulation) {
  // Reference values: diffusers' UniPCMultistepScheduler.step (general R/b solve, bh2,
  // order 2, flow_prediction, lower_order_final) transcribed to scalars in Python.
  EXPECT_NEAR(run_toy(SamplerKind::kUniPC, 6, 3.0, 1.0), 0.623533018335696, 2e-6);
  EXPECT_NEAR(run_toy(SamplerKind::kUniPC, 10, 5.0, -0.5), -0.09206167507994778, 2e-6);
  EXPECT_NEAR(run_toy(SamplerKind::kUniPC, 3, 1.0, 0.25), 0.2586706889005203, 2e-6);
}

TEST(FlowSampler, EulerIntegratesTheFlow) {
  // v constant: x_end = x_start + (0 - sigma_0) * v.
  FlowSchedule schedule = make_flow_schedule(5, 3.0, false).value();
  FlowSampler sampler(SamplerKind::kEuler, schedule);
  float x = 2.0f;
  const float v = 1.5f;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(sampler.step(i, &v, &x, 1).is_ok());
  EXPECT_NEAR(x, 2.0 - schedule.sigmas[0] * 1.5, 1e-5);
}

TEST(FlowSampler, ExactVelocityReachesTheData) {
  // For one data point x0 the exact flow is v = (x - x0) / sigma; both samplers must land on x0.
  for (SamplerKind kind : {SamplerKind::kEuler, SamplerKind::kUniPC}) {
    FlowSampler sampler(kind, make_flow_schedule(7, 5.0, false).value());
    std::vector<float> data{0.5f, -0.25f, 0.9f}, noise(3);
    fill_standard_normal(noise.data(), 3, 4);
    const double s0 = sampler.schedule().sigmas[0];
    std::vector<float> x(3), v(3);
    for (int j = 0; j < 3; ++j) x[j] = float((1 - s0) * data[j] + s0 * noise[j]);
    for (int i = 0; i < 7; ++i) {
      for (int j = 0; j < 3; ++j) v[j] = float((x[j] - data[j]) / sampler.schedule().sigmas[i]);
      ASSERT_TRUE(sampler.step(i, v.data(), x.data(), 3).is_ok());
    }
    for (int j = 0; j < 3; ++j) EXPECT_NEAR(x[j], data[j], 1e-4) << sampler_kind_name(kind);
  }
}

TEST(FlowSampler, RejectsStepsOutOfOrder) {
  FlowSampler sampler(SamplerKind::kUniPC, make_flow_schedule(3, 3.0, true).value());
  float x = 0, v = 0;
  EXPECT_FALSE(sampler.step(1, &v, &x, 1).is_ok());
}

TEST(StandardNormal, DeterministicAndStandard) {
  std::vector<float> a(100000), b(100000);
  fill_standard_normal(a.data(), int64_t(a.size()), 7);
  fill_standard_normal(b.data(), int64_t(b.size()), 7);
  EXPECT_EQ(a, b);
  double mean = 0, var = 0;
  for (float v : a) mean += v;
  mean /= double(a.size());
  for (float v : a) var += (v - mean) * (v - mean);
  var /= double(a.size());
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(var, 1.0, 0.02);
  fill_standard_normal(b.data(), int64_t(b.size()), 8);
  EXPECT_NE(a, b);
}

TEST(Generate, GuidedSamplingWithCapture) {
  test::SyntheticModel m = test::make_synthetic_model();
  WanModel model = WanModel::load(m.dir).value();
  Tensor prompt = test::random_tensor(DType::kF32, {4, 8}, 5);
  Tensor negative = Tensor::zeros(DType::kF32, {4, 8});
  GenerateOptions options;
  options.frames = 3;
  options.height = 8;
  options.width = 12;
  options.steps = 4;
  options.seed = 3;
  int captured = 0;
  options.capture_steps = {1, 3};
  options.capture_layers = {0};
  options.capture = [&](int step, int layer, const Tensor& q, const Tensor&, const Tensor&,
                        Grid grid) {
    EXPECT_TRUE(step == 1 || step == 3);
    EXPECT_EQ(layer, 0);
    EXPECT_EQ(q.shape(), (Shape{1, 2, 72, 12}));  // conditional item only
    EXPECT_EQ(grid, (Grid{3, 4, 6}));
    ++captured;
    return Status::ok();
  };
  int steps_seen = 0;
  options.on_step = [&](int, int, double) { ++steps_seen; };
  Result<Tensor> a = generate(model, prompt, negative, options);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  EXPECT_EQ(a->shape(), (Shape{1, 3, 3, 8, 12}));
  EXPECT_EQ(captured, 2);
  EXPECT_EQ(steps_seen, 4);

  options.capture = nullptr;
  Result<Tensor> b = generate(model, prompt, negative, options);
  EXPECT_EQ(relative_l2(*a, *b).value(), 0.0);  // deterministic for a seed
  options.seed = 4;
  Result<Tensor> c = generate(model, prompt, negative, options);
  EXPECT_GT(relative_l2(*a, *c).value(), 0.01);
  // Veda attention with every step in the dense warm-up is dense sampling; without it, not.
  options.seed = 3;
  options.forward.attention = SelfAttentionMode::kVeda;
  options.forward.sparse.selection.density = 0.3;
  options.dense_warmup_steps = options.steps;
  EXPECT_EQ(relative_l2(generate(model, prompt, negative, options).value(), *a).value(), 0.0);
  options.dense_warmup_steps = 1;
  EXPECT_GT(relative_l2(generate(model, prompt, negative, options).value(), *a).value(), 0.0);
  options.forward.attention = SelfAttentionMode::kDense;

  options.guidance = 1.0;  // unguided: one pass per step
  EXPECT_TRUE(generate(model, prompt, negative, options).is_ok());
  options.height = 7;
  EXPECT_EQ(generate(model, prompt, negative, options).status().code(),
            ErrorCode::kInvalidArgument);
}

// The loop drives any model through FlowModelFn (the GPU one too): a zero velocity leaves the
// Euler sample at the seed's noise; warm-up passes are dense; guidance batches B = 2.
TEST(Generate, LoopDrivesAnyFlowModel) {
  WanConfig config;
  config.in_channels = config.out_channels = 3;
  config.text_dim = 8;
  GenerateOptions options;
  options.frames = 2, options.height = 4, options.width = 6;
  options.steps = 4;
  options.seed = 9;
  options.guidance = 3.0;
  options.sampler = SamplerKind::kEuler;
  options.dense_warmup_steps = 2;
  std::vector<FlowPass> passes;
  const FlowModelFn zero = [&](const Tensor& x, const std::vector<float>& timesteps,
                               const Tensor& text, const FlowPass& pass) -> Result<Tensor> {
    EXPECT_EQ(x.dim(0), 2);
    EXPECT_EQ(timesteps.size(), 2u);
    EXPECT_EQ(text.shape(), (Shape{2, 5, 8}));
    passes.push_back(pass);
    return Tensor::zeros(DType::kF32, x.shape());
  };
  const Tensor prompt = test::random_tensor(DType::kF32, {5, 8}, 1);
  const Tensor negative = Tensor::zeros(DType::kF32, {5, 8});
  Result<Tensor> sample = generate(config, zero, prompt, negative, options);
  ASSERT_TRUE(sample.is_ok()) << sample.status().to_string();
  std::vector<float> noise(size_t(sample->numel()));
  fill_standard_normal(noise.data(), sample->numel(), 9);
  EXPECT_EQ(std::vector<float>(sample->data_as<float>(), sample->data_as<float>() + noise.size()),
            noise);
  ASSERT_EQ(passes.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(passes[i].step, i);
    EXPECT_EQ(passes[i].dense, i < 2);
    EXPECT_FALSE(passes[i].capture);
  }
  // A model returning the wrong shape, and no model, are errors, not crashes.
  const FlowModelFn wrong = [](const Tensor&, const std::vector<float>&, const Tensor&,
                               const FlowPass&) -> Result<Tensor> {
    return Tensor::zeros(DType::kF32, {1, 3, 2, 4, 6});
  };
  EXPECT_EQ(generate(config, wrong, prompt, negative, options).status().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(generate(config, FlowModelFn(), prompt, negative, options).status().code(),
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace veda
