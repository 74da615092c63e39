// Calibration: head-aware tile shapes follow each head's geometry, the budget split keeps the
// overall density, and the profile it writes is valid.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "common/test_data.hpp"
#include "veda/calibrate.hpp"
#include "veda/eval.hpp"

namespace veda {
namespace {

// Attention with exact Gaussian logits -|p_i - p_j|^2 / (2 l^2) over the axes with a finite
// length l (an axis with infinite length is ignored), via q.k = 2 p.p' - |p|^2 - |p'|^2 on the
// first channels; the remaining channels carry small random noise. One length triple per head.
Capture gaussian_capture(Grid grid, const std::vector<std::array<double, 3>>& lengths, uint64_t seed,
                         int dim = 32) {
  const int heads = int(lengths.size());
  const int64_t n = grid.tokens();
  Capture c;
  c.grid = grid;
  c.layer = 0;
  c.source = "gaussian(seed=" + std::to_string(seed) + ")";
  c.q = test::random_tensor(DType::kF32, {1, heads, n, dim}, seed, 0.05f);
  c.k = test::random_tensor(DType::kF32, {1, heads, n, dim}, seed + 1, 0.05f);
  c.v = test::random_tensor(DType::kF32, {1, heads, n, dim}, seed + 2);
  const double scale = 1.0 / std::sqrt(double(dim));
  for (int h = 0; h < heads; ++h) {
    float* q = c.q.data_as<float>() + int64_t(h) * n * dim;
    float* k = c.k.data_as<float>() + int64_t(h) * n * dim;
    for (int64_t i = 0; i < n; ++i) {
      const double pos[3] = {double(i / (grid.h * grid.w)), double((i / grid.w) % grid.h), double(i % grid.w)};
      double norm2 = 0;
      for (int a = 0; a < 3; ++a) {
        if (std::isinf(lengths[h][a])) continue;
        const double x = pos[a] / (std::sqrt(2.0) * lengths[h][a]);  // |dx|^2 = |dp|^2 / (2 l^2)
        q[i * dim + a] = float(2 * x / scale);
        k[i * dim + a] = float(x);
        norm2 += x * x;
      }
      q[i * dim + 3] = float(-norm2 / scale), k[i * dim + 3] = 1;
      q[i * dim + 4] = float(1 / scale), k[i * dim + 4] = float(-norm2);
    }
  }
  return c;
}

CalibrationConfig fast_config() {
  CalibrationConfig config;
  config.density = 0.1;
  config.fit.max_query_tiles = 64;
  return config;
}

TEST(CalibrateTest, DefaultShapesFitTheGrid) {
  auto shapes = default_candidate_shapes({8, 16, 16});
  EXPECT_EQ(shapes.size(), 8u);  // 16x2x2 is longer than 8 frames
  for (const TileShape& s : shapes) EXPECT_EQ(s.volume(), 64);
  EXPECT_EQ(default_candidate_shapes({16, 16, 28}).size(), 9u);
  EXPECT_TRUE(default_candidate_shapes({8, 16, 16}, 128).empty());
}

// On Wan2.1's grids 16x2x2 pads 34-36% of its slots (4x4x4 18%), and on 21x30x52 4x2x8 pads
// slightly more than 4x4x4: target grids leave those out, and calibration then never picks them.
TEST(CalibrateTest, TargetGridsLeaveOutShapesThatPadMore) {
  const std::vector<TileShape> all = default_candidate_shapes({16, 16, 28});
  const TileShape cube{4, 4, 4}, long_t{16, 2, 2}, flat{4, 2, 8};
  EXPECT_EQ(shapes_for_target_grids(all, {}, cube), all);
  const std::vector<TileShape> wan720 = shapes_for_target_grids(all, {{21, 45, 80}}, cube);
  EXPECT_EQ(wan720.size(), all.size() - 1);
  EXPECT_EQ(std::count(wan720.begin(), wan720.end(), long_t), 0);
  const std::vector<TileShape> both = shapes_for_target_grids(all, {{21, 45, 80}, {21, 30, 52}}, cube);
  EXPECT_EQ(both.size(), all.size() - 2);
  EXPECT_EQ(std::count(both.begin(), both.end(), flat), 0);
  EXPECT_EQ(std::count(both.begin(), both.end(), cube), 1);

  // A head that attends along time (16 frames: 16x2x2 is a candidate) calibrated for 21x45x80.
  const uint64_t seed = std::random_device{}();
  Capture capture = gaussian_capture({16, 16, 16}, {{INFINITY, 1.0, 1.0}}, seed);
  CalibrationConfig config = fast_config();
  config.target_grids = {{21, 45, 80}};
  std::string messages;
  auto result = calibrate({capture}, config, [&](const std::string& m) { messages += m + "\n"; });
  ASSERT_TRUE(result) << result.status().to_string();
  EXPECT_NE(messages.find("16x2x2 (64% on 21x45x80)"), std::string::npos) << messages;
  const HeadCalibration& head = result->layers.at(0).heads.at(0);
  EXPECT_EQ(head.trials.size(), wan720.size());
  for (const ShapeTrial& t : head.trials) EXPECT_NE(t.tile, long_t);
  const TileShape chosen = result->profile.layers.at(0).heads.at(0).tile;
  EXPECT_GE(chosen.t, 8) << "seed " << seed << ": temporal head got " << chosen.str();
  EXPECT_GE(slot_use({21, 45, 80}, chosen), slot_use({21, 45, 80}, cube)) << chosen.str();
}

TEST(CalibrateTest, ProceduralTemporalHeadGetsATemporalShape) {
  ProceduralSpec spec;
  spec.seed = std::random_device{}();
  spec.heads = 2;
  spec.head_kinds = {"temporal"};
  auto capture = make_procedural_capture(spec);
  ASSERT_TRUE(capture) << capture.status().to_string();
  auto result = calibrate({*capture}, fast_config());
  ASSERT_TRUE(result) << result.status().to_string();
  for (const HeadProfile& h : result->profile.layers.at(0).heads)
    EXPECT_GE(h.tile.t, 8) << "seed " << spec.seed << ": temporal head got " << h.tile.str();
}

TEST(CalibrateTest, HeadAwareShapesFollowEachHeadsGeometry) {
  const uint64_t seed = std::random_device{}();
  // Head 0: isotropic 3D-local; head 1: attends along time at the same position.
  Capture capture = gaussian_capture({16, 16, 16}, {{1.5, 1.5, 1.5}, {INFINITY, 1.0, 1.0}}, seed);
  auto result = calibrate({capture}, fast_config(), [](const std::string& m) {
    if (std::getenv("VEDA_TEST_VERBOSE")) fprintf(stderr, "%s\n", m.c_str());
  });
  ASSERT_TRUE(result) << result.status().to_string();
  const auto& heads = result->profile.layers.at(0).heads;
  EXPECT_EQ(heads[0].tile, (TileShape{4, 4, 4})) << "seed " << seed << ": local head got " << heads[0].tile.str();
  EXPECT_GE(heads[1].tile.t, 8) << "seed " << seed << ": temporal head got " << heads[1].tile.str();
  // The chosen shape has the highest recall among the trials whose output error is no worse than
  // 4x4x4's on every capture, and its error is no worse than 4x4x4's.
  for (const HeadCalibration& hc : result->layers.at(0).heads) {
    const ShapeTrial& chosen = hc.trials[hc.chosen_trial];
    const ShapeTrial* reference = nullptr;
    for (const ShapeTrial& t : hc.trials)
      if (t.tile == TileShape{4, 4, 4}) reference = &t;
    ASSERT_NE(reference, nullptr);
    ASSERT_EQ(chosen.capture_rel_l2.size(), 1u);
    EXPECT_NEAR(chosen.capture_rel_l2[0], chosen.rel_l2[2], 1e-9);
    EXPECT_LE(chosen.rel_l2[2], reference->rel_l2[2] + 1e-9);
    for (const ShapeTrial& t : hc.trials)
      if (t.rel_l2[2] <= reference->rel_l2[2]) {
        EXPECT_GE(chosen.recall[2] + 1e-12, t.recall[2]);
      }
  }
}

TEST(CalibrateTest, MinErrorCriterionPicksTheLowestOutputError) {
  const uint64_t seed = std::random_device{}();
  Capture capture = gaussian_capture({16, 16, 16}, {{1.5, 1.5, 1.5}, {INFINITY, 1.0, 1.0}}, seed);
  CalibrationConfig config = fast_config();
  config.shape_criterion = ShapeCriterion::kMinError;
  auto result = calibrate({capture}, config);
  ASSERT_TRUE(result) << result.status().to_string();
  const auto& heads = result->profile.layers.at(0).heads;
  EXPECT_EQ(heads[0].tile, (TileShape{4, 4, 4})) << "seed " << seed << ": local head got " << heads[0].tile.str();
  EXPECT_GE(heads[1].tile.t, 8) << "seed " << seed << ": temporal head got " << heads[1].tile.str();
  // The chosen shape is the one with the lowest output error among the trials.
  for (const HeadCalibration& hc : result->layers.at(0).heads)
    for (const ShapeTrial& t : hc.trials)
      EXPECT_GE(t.rel_l2[2] + 1e-12, hc.trials[hc.chosen_trial].rel_l2[2]);
}

TEST(CalibrateTest, BudgetSplitKeepsTheOverallDensity) {
  ProceduralSpec spec;
  spec.seed = std::random_device{}();
  spec.heads = 3;  // local, temporal, diffuse: different needs
  auto capture = make_procedural_capture(spec);
  ASSERT_TRUE(capture);
  CalibrationConfig config = fast_config();
  config.candidate_shapes = {{4, 4, 4}, {8, 2, 4}};
  auto result = calibrate({*capture}, config);
  ASSERT_TRUE(result) << result.status().to_string();
  double mean = 0;
  for (const HeadProfile& h : result->profile.layers.at(0).heads) mean += h.density / spec.heads;
  EXPECT_LE(mean, config.density + 1e-12);
  EXPECT_TRUE(validate_profile(result->profile).is_ok());
  // The split never does worse on the calibration data than the uniform budget (total error).
  double uniform = 0, split = 0;
  for (const HeadCalibration& hc : result->layers.at(0).heads) {
    const ShapeTrial& t = hc.trials[hc.chosen_trial];
    uniform += t.error2[2];
    for (size_t s = 0; s < config.budget_scales.size(); ++s)
      if (config.budget_scales[s] == hc.budget_scale) split += t.error2[s];
  }
  EXPECT_LE(split, uniform + 1e-12);
}

TEST(CalibrateTest, RejectsBadInput) {
  EXPECT_FALSE(calibrate({}, CalibrationConfig{}));
  ProceduralSpec spec;
  spec.grid = {4, 8, 8};
  spec.seed = std::random_device{}();
  auto capture = make_procedural_capture(spec);
  ASSERT_TRUE(capture);
  CalibrationConfig config;
  config.density = 0;
  EXPECT_FALSE(calibrate({*capture}, config));
  config = CalibrationConfig{};
  config.budget_scales = {0.5, 2.0};  // no 1
  EXPECT_FALSE(calibrate({*capture}, config));
  config = CalibrationConfig{};
  config.max_recall_loss = -0.1;
  EXPECT_FALSE(calibrate({*capture}, config));
  config = CalibrationConfig{};
  config.shape_error_tolerance = -1;
  EXPECT_FALSE(calibrate({*capture}, config));
  spec.heads = 2;
  auto other = make_procedural_capture(spec);
  ASSERT_TRUE(other);
  EXPECT_FALSE(calibrate({*capture, *other}, CalibrationConfig{}));  // head counts differ
}

TEST(CalibrateTest, QueryRegionsSplitTheWidth) {
  auto layout = TileLayout::make({4, 8, 28}, 64, {1, 8, 8});
  ASSERT_TRUE(layout);
  auto left = query_tiles_in_region(*layout, layout->num_tiles(), QueryRegion::kLeftHalf);
  auto right = query_tiles_in_region(*layout, layout->num_tiles(), QueryRegion::kRightHalf);
  auto all = query_tiles_in_region(*layout, layout->num_tiles(), QueryRegion::kAll);
  int n_left = 0, n_right = 0;
  for (int i = 0; i < layout->num_tiles(); ++i) {
    EXPECT_FALSE(left[i] && right[i]);
    EXPECT_TRUE(all[i]);
    n_left += left[i], n_right += right[i];
  }
  EXPECT_EQ(n_left + n_right + layout->num_prefix_tiles(), layout->num_tiles());
  EXPECT_EQ(n_left, 8);  // w tiles 0-7 and 8-15 have centres left of 14
}

}  // namespace
}  // namespace veda
