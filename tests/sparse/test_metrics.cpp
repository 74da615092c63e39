// Quality metrics against brute-force references, and the recall of each scoring method on the
// shared development capture.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "common/test_data.hpp"
#include "veda/capture.hpp"
#include "veda/metrics.hpp"
#include "veda/scoring.hpp"
#include "veda/selection.hpp"

namespace veda {
namespace {

uint64_t fresh_seed() { return std::random_device{}() | (uint64_t(std::random_device{}()) << 32); }

HeadLayouts test_layouts() {
  auto layouts = HeadLayouts::make({5, 7, 9}, 10, {{4, 4, 4}, {2, 8, 4}, {16, 2, 2}});
  EXPECT_TRUE(layouts.is_ok());
  return std::move(layouts).value();
}

// Positive rows summing to 1 over existing tiles, zero elsewhere.
Tensor random_mass(const HeadLayouts& layouts, int batch, uint64_t seed) {
  const int tiles = layouts.max_tiles(), heads = layouts.heads();
  Tensor mass = test::random_tensor(DType::kF32, {batch, heads, tiles, tiles}, seed);
  float* p = mass.data_as<float>();
  for (int64_t row = 0; row < int64_t(batch) * heads * tiles; ++row) {
    const int h = int((row / tiles) % heads), q = int(row % tiles);
    double total = 0;
    for (int j = 0; j < tiles; ++j) {
      float& v = p[row * tiles + j];
      v = layouts.valid(h, q) && layouts.valid(h, j) ? std::exp(2.0f * v) : 0.0f;
      total += v;
    }
    for (int j = 0; j < tiles && total > 0; ++j)
      p[row * tiles + j] = float(p[row * tiles + j] / total);
  }
  return mass;
}

TEST(RecallTest, MatchesReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const HeadLayouts layouts = test_layouts();
  const int batch = 2, heads = layouts.heads(), tiles = layouts.max_tiles();
  const Tensor mass = random_mass(layouts, batch, seed);
  const Tensor logits = test::random_tensor(DType::kF32, {batch, heads, tiles, tiles}, seed + 7);
  SelectionConfig config;
  config.density = 0.3;
  const TileMask mask = select_tiles(logits, layouts, config).value();
  const std::vector<double> recall = tile_mass_recall(mass, mask, layouts);
  ASSERT_EQ(recall.size(), size_t(heads));
  for (int h = 0; h < heads; ++h) {
    double weighted = 0, weight = 0;
    for (int b = 0; b < batch; ++b) {
      for (int q = 0; q < layouts.head(h).num_tiles(); ++q) {
        const float* row = mass.data_as<float>() + mask.row_offset(b, h, q) * tiles;
        double selected = 0;
        for (int i = 0; i < mask.count(b, h, q); ++i) selected += row[mask.row(b, h, q)[i]];
        weighted += layouts.valid(h, q) * selected;
        weight += layouts.valid(h, q);
      }
    }
    EXPECT_NEAR(recall[h], weighted / weight, 1e-6) << "head " << h;
    EXPECT_GT(recall[h], 0.0);
    EXPECT_LT(recall[h], 1.0);
  }
  for (double r : tile_mass_recall(mass, TileMask::dense(batch, layouts), layouts)) {
    EXPECT_NEAR(r, 1.0, 1e-6);
  }
  for (double r : tile_mass_recall(mass, TileMask::empty(batch, heads, tiles, tiles, 1), layouts)) {
    EXPECT_EQ(r, 0.0);
  }
  // Mismatched inputs give NaN, never a passing number.
  for (double r : tile_mass_recall(mass, TileMask::dense(batch + 1, layouts), layouts)) {
    EXPECT_TRUE(std::isnan(r));
  }
}

TEST(CompareTest, PerHeadMatchesReferenceOverValidTokens) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const HeadLayouts layouts = test_layouts();
  const int batch = 2, heads = layouts.heads(), dim = 12;
  const int64_t padded = layouts.padded_tokens();
  const Tensor ref = test::random_tensor(DType::kF32, {batch, heads, padded, dim}, seed);
  Tensor out = test::random_tensor(DType::kF32, {batch, heads, padded, dim}, seed + 1, 0.3f);
  for (int64_t i = 0; i < out.numel(); ++i) out.data_as<float>()[i] += ref.data_as<float>()[i];
  // Poison padding slots: they must not count.
  auto is_valid_slot = [&](int h, int64_t slot) {
    return slot % 64 < layouts.valid(h, int(slot / 64));
  };
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      for (int64_t slot = 0; slot < padded; ++slot) {
        if (is_valid_slot(h, slot)) continue;
        for (int d = 0; d < dim; ++d) {
          out.data_as<float>()[((int64_t(b) * heads + h) * padded + slot) * dim + d] = 1e30f;
        }
      }
    }
  }
  const std::vector<OutputError> errors = compare_per_head(out, ref, layouts);
  ASSERT_EQ(errors.size(), size_t(heads));
  for (int h = 0; h < heads; ++h) {
    double diff = 0, on = 0, rn = 0, dot = 0;
    for (int b = 0; b < batch; ++b) {
      for (int64_t slot = 0; slot < padded; ++slot) {
        if (!is_valid_slot(h, slot)) continue;
        for (int d = 0; d < dim; ++d) {
          const size_t i = ((size_t(b) * heads + h) * padded + slot) * dim + d;
          const double o = out.data_as<float>()[i], r = ref.data_as<float>()[i];
          diff += (o - r) * (o - r);
          on += o * o;
          rn += r * r;
          dot += o * r;
        }
      }
    }
    EXPECT_NEAR(errors[h].rel_l2, std::sqrt(diff / rn), 1e-9) << "head " << h;
    EXPECT_NEAR(errors[h].cosine, dot / std::sqrt(on * rn), 1e-9) << "head " << h;
    EXPECT_GT(errors[h].rel_l2, 0.1);
    EXPECT_LT(errors[h].rel_l2, 0.6);
  }
  // One NaN in a valid slot of head 1 makes that head NaN and leaves the others alone.
  Tensor poisoned = out.clone();
  poisoned.data_as<float>()[(int64_t(1) * padded + 5) * dim] =
      std::numeric_limits<float>::quiet_NaN();
  const std::vector<OutputError> nan_errors = compare_per_head(poisoned, ref, layouts);
  EXPECT_TRUE(std::isnan(nan_errors[1].rel_l2));
  EXPECT_TRUE(std::isnan(nan_errors[1].cosine));
  EXPECT_FALSE(nan_errors[1].rel_l2 < 1.0);
  EXPECT_EQ(nan_errors[0].rel_l2, errors[0].rel_l2);
  // Mismatched shapes: NaN.
  const Tensor short_out = test::random_tensor(DType::kF32, {batch, heads, padded, dim - 1}, seed);
  for (const auto& e : compare_per_head(short_out, ref, layouts)) EXPECT_TRUE(std::isnan(e.rel_l2));
}

TEST(CompareTest, FlatArrays) {
  const uint64_t seed = fresh_seed();
  const Tensor ref = test::random_tensor(DType::kF32, {1000}, seed);
  std::vector<float> same(ref.data_as<float>(), ref.data_as<float>() + 1000);
  std::vector<float> doubled = same, negated = same;
  for (auto& v : doubled) v *= 2;
  for (auto& v : negated) v = -v;
  const float* r = ref.data_as<float>();
  EXPECT_EQ(compare(same.data(), r, 1000).rel_l2, 0.0);
  EXPECT_NEAR(compare(same.data(), r, 1000).cosine, 1.0, 1e-12);
  EXPECT_NEAR(compare(doubled.data(), r, 1000).rel_l2, 1.0, 1e-12);
  EXPECT_NEAR(compare(doubled.data(), r, 1000).cosine, 1.0, 1e-12);
  EXPECT_NEAR(compare(negated.data(), r, 1000).rel_l2, 2.0, 1e-12);
  EXPECT_NEAR(compare(negated.data(), r, 1000).cosine, -1.0, 1e-12);
  const std::vector<float> zeros(1000, 0.0f);
  EXPECT_EQ(compare(zeros.data(), zeros.data(), 1000).rel_l2, 0.0);
  EXPECT_TRUE(std::isinf(compare(same.data(), zeros.data(), 1000).rel_l2));
  same[17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(compare(same.data(), r, 1000).rel_l2));
  EXPECT_TRUE(std::isnan(compare(same.data(), r, 1000).cosine));
}

// The selection of the exact tile mass is the best a top-k selection can do, so its recall bounds
// every estimator's; the statistics-aware score should beat plain mean pooling on real attention.
TEST(CaptureRecallTest, OracleBoundsEstimatorsOnSharedCapture) {
  auto capture = load_capture(test::shared_capture_path());
  ASSERT_TRUE(capture.is_ok()) << capture.status().to_string();
  const int heads = int(capture->q.dim(1));
  auto layouts = HeadLayouts::uniform(capture->grid, capture->prefix_tokens, heads, {4, 4, 4});
  ASSERT_TRUE(layouts.is_ok());
  const Tensor q = gather_to_tiles(capture->q, *layouts).value();
  const Tensor k = gather_to_tiles(capture->k, *layouts).value();
  const float scale = 1.0f / std::sqrt(float(capture->q.dim(3)));

  const auto start = std::chrono::steady_clock::now();
  auto mass = oracle_tile_mass(q, k, *layouts, scale);
  const double oracle_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(mass.is_ok()) << mass.status().to_string();
  const int tiles = layouts->max_tiles();
  for (int64_t row = 0; row < mass->numel() / tiles; ++row) {
    double sum = 0;
    for (int j = 0; j < tiles; ++j) sum += mass->data_as<float>()[row * tiles + j];
    ASSERT_NEAR(sum, 1.0, 1e-5) << "row " << row;
  }

  const TileStats qs = compute_tile_stats(q, *layouts).value();
  const TileStats ks = compute_tile_stats(k, *layouts).value();
  const Tensor mean_logits = score_tiles_mean(qs, ks, *layouts, scale).value();
  const Tensor stats_logits = score_tiles_stats(qs, ks, *layouts, scale).value();
  // kOracle logits (score_tiles_oracle) without a second full-attention pass: every tile exists.
  Tensor oracle_logits = mass->clone();
  for (int64_t i = 0; i < oracle_logits.numel(); ++i) {
    float& v = oracle_logits.data_as<float>()[i];
    v = std::log(std::max(v, std::numeric_limits<float>::min()));
  }

  std::printf("[ capture  ] %s, %d heads x %lld tokens, 4x4x4 tiles, oracle %.2f s\n",
              capture->source.c_str(), heads, (long long)layouts->tokens(), oracle_seconds);
  for (double density : {0.05, 0.1}) {
    SelectionConfig config;
    config.density = density;
    auto average = [&](const Tensor& logits) {
      const TileMask mask = select_tiles(logits, *layouts, config).value();
      double sum = 0;
      for (double r : tile_mass_recall(*mass, mask, *layouts)) sum += r;
      return sum / heads;
    };
    const double mean = average(mean_logits), stats = average(stats_logits),
                 oracle = average(oracle_logits);
    std::printf("[ recall   ] density %.2f: mean %.4f  stats %.4f  oracle %.4f\n", density, mean,
                stats, oracle);
    EXPECT_GE(oracle, mean - 1e-6) << "density " << density;
    EXPECT_GE(oracle, stats - 1e-6) << "density " << density;
    EXPECT_GT(stats, mean) << "density " << density;
  }
}

}  // namespace
}  // namespace veda
