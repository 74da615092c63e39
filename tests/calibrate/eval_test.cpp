// Evaluation with a calibration profile: method veda appears, the oracle picks shapes per head,
// and a profile that does not match the capture is rejected.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>

#include "veda/calibrate.hpp"
#include "veda/eval.hpp"

namespace veda {
namespace {

struct Calibrated {
  Capture calibration, evaluation;
  Profile profile;
};

// Two samples of one procedural "layer" (batch items share the heads' structure): calibrate on
// the first, evaluate on the second.
Calibrated calibrated_pair() {
  ProceduralSpec spec;
  spec.seed = std::random_device{}();
  spec.batch = 2;
  spec.grid = {8, 16, 16};
  auto both = make_procedural_capture(spec);
  EXPECT_TRUE(both) << both.status().to_string();
  auto half = [&](int b) {
    Capture c = *both;
    const int64_t per_item = both->q.numel() / 2;
    for (auto [dst, src] : {std::pair{&c.q, &both->q}, {&c.k, &both->k}, {&c.v, &both->v}}) {
      Shape shape = src->shape();
      shape[0] = 1;
      *dst = Tensor::empty(src->dtype(), shape);
      std::memcpy(dst->data(), static_cast<const char*>(src->data()) + b * per_item * dtype_size(src->dtype()),
                  per_item * dtype_size(src->dtype()));
    }
    c.layer = 4;
    c.source = "procedural sample " + std::to_string(b);
    return c;
  };
  Calibrated out{half(0), half(1), {}};
  CalibrationConfig config;
  config.density = 0.1;
  config.fit.max_query_tiles = 64;
  auto result = calibrate({out.calibration}, config);
  EXPECT_TRUE(result) << result.status().to_string();
  if (result) out.profile = result->profile;
  return out;
}

TEST(EvalTest, ProfileAddsVedaAndPerHeadOracle) {
  Calibrated c = calibrated_pair();
  EvalConfig config;
  config.densities = {0.1};
  config.profile = c.profile;
  config.veda_ablations = true;
  auto rows = evaluate_capture(c.evaluation, config);
  ASSERT_TRUE(rows) << rows.status().to_string();
  std::map<std::string, EvalRow> mean_rows;
  for (const EvalRow& r : *rows) {
    if (r.head < 0) mean_rows[r.method] = r;
    EXPECT_TRUE(std::isfinite(r.recall) && std::isfinite(r.rel_l2)) << r.method;
  }
  for (const char* m : {"mean", "stats", "oracle", "veda", "veda-shape", "veda-fit"})
    EXPECT_EQ(mean_rows.count(m), 1u) << m;
  // The oracle picks per head among shapes that include the profile's, so at the same density
  // (veda-fit: no budget split) its recall is at least the estimator's.
  EXPECT_GE(mean_rows["oracle"].recall + 1e-9, mean_rows["veda-fit"].recall);
  // On held-out data of the same structure the calibrated selection beats mean pooling.
  EXPECT_GT(mean_rows["veda"].recall, mean_rows["mean"].recall);
  EXPECT_NEAR(mean_rows["veda"].actual_density, 0.1, 0.03);
  // Per-head rows name the profile's shapes.
  for (const EvalRow& r : *rows) {
    if (r.method == "veda" && r.head >= 0) {
      EXPECT_EQ(r.tile, c.profile.layers[0].heads[r.head].tile.str());
    }
  }
}

TEST(EvalTest, RejectsAProfileForAnotherLayerOrHeadCount) {
  Calibrated c = calibrated_pair();
  EvalConfig config;
  config.densities = {0.05};
  config.profile = c.profile;
  Capture other_layer = c.evaluation;
  other_layer.layer = 9;
  auto rows = evaluate_capture(other_layer, config);
  ASSERT_FALSE(rows);
  EXPECT_NE(rows.status().message().find("no entry for layer 9"), std::string::npos);
  config.profile->heads = 2;
  config.profile->layers[0].heads.pop_back();
  EXPECT_FALSE(evaluate_capture(c.evaluation, config));
}

TEST(EvalTest, WithoutAProfileRowsAreUnchanged) {
  ProceduralSpec spec;
  spec.seed = std::random_device{}();
  spec.grid = {4, 8, 16};
  auto capture = make_procedural_capture(spec);
  ASSERT_TRUE(capture);
  EvalConfig config;
  auto rows = evaluate_capture(*capture, config);
  ASSERT_TRUE(rows) << rows.status().to_string();
  // 3 methods x 3 densities x (3 heads + mean).
  EXPECT_EQ(rows->size(), 3u * 3u * 4u);
  for (const EvalRow& r : *rows) {
    EXPECT_EQ(r.tile, "4x4x4");
    EXPECT_GE(r.recall, 0);
    EXPECT_LE(r.recall, 1 + 1e-6);
  }
}

}  // namespace
}  // namespace veda
