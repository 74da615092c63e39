// Tile statistics, tile scores and the oracle tile mass against brute-force references.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "common/test_data.hpp"
#include "veda/scoring.hpp"

namespace veda {
namespace {

uint64_t fresh_seed() { return std::random_device{}() | (uint64_t(std::random_device{}()) << 32); }

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Ragged grid, a ragged prefix tile and per-head tile shapes with different tile counts.
HeadLayouts test_layouts() {
  auto layouts = HeadLayouts::make({4, 9, 10}, 10, {{4, 4, 4}, {2, 8, 4}, {1, 8, 8}});
  EXPECT_TRUE(layouts.is_ok());
  return std::move(layouts).value();
}

struct TiledInputs {
  Tensor q, k;  // token order
  Tensor q_tiled, k_tiled;
};
TiledInputs make_inputs(const HeadLayouts& layouts, int batch, int dim, uint64_t seed,
                        float scale = 1.0f) {
  TiledInputs in;
  in.q = test::random_tensor(DType::kF32, {batch, layouts.heads(), layouts.tokens(), dim}, seed,
                             scale);
  in.k = test::random_tensor(DType::kF32, {batch, layouts.heads(), layouts.tokens(), dim}, seed + 1,
                             scale);
  in.q_tiled = gather_to_tiles(in.q, layouts).value();
  in.k_tiled = gather_to_tiles(in.k, layouts).value();
  return in;
}

TEST(TileStatsTest, MatchesReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const HeadLayouts layouts = test_layouts();
  const int batch = 2, dim = 20, heads = layouts.heads(), tiles = layouts.max_tiles();
  const TiledInputs in = make_inputs(layouts, batch, dim, seed);
  auto stats = compute_tile_stats(in.q_tiled, layouts);
  ASSERT_TRUE(stats.is_ok()) << stats.status().to_string();
  for (const Tensor* t : {&stats->mean, &stats->max, &stats->min}) {
    ASSERT_EQ(t->shape(), (Shape{batch, heads, tiles, dim}));
  }
  const float* x = in.q_tiled.data_as<float>();
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      for (int t = 0; t < tiles; ++t) {
        const int valid = layouts.valid(h, t);
        for (int d = 0; d < dim; ++d) {
          double sum = 0;
          float hi = -INFINITY, lo = INFINITY;
          for (int s = 0; s < valid; ++s) {
            const float v =
                x[((int64_t(b) * heads + h) * layouts.padded_tokens() + t * layouts.volume() + s) *
                      dim +
                  d];
            sum += v;
            hi = std::max(hi, v);
            lo = std::min(lo, v);
          }
          const size_t i = ((size_t(b) * heads + h) * tiles + t) * dim + d;
          if (valid == 0) {
            EXPECT_EQ(stats->mean.data_as<float>()[i], 0.0f);
            EXPECT_EQ(stats->max.data_as<float>()[i], 0.0f);
            EXPECT_EQ(stats->min.data_as<float>()[i], 0.0f);
            continue;
          }
          EXPECT_NEAR(stats->mean.data_as<float>()[i], sum / valid, 1e-5);
          EXPECT_EQ(stats->max.data_as<float>()[i], hi);
          EXPECT_EQ(stats->min.data_as<float>()[i], lo);
        }
      }
    }
  }
  const Tensor wrong = test::random_tensor(DType::kF32, {1, heads, 64, dim}, seed);
  EXPECT_EQ(compute_tile_stats(wrong, layouts).status().code(), ErrorCode::kInvalidArgument);
}

// Reference logits: (1 - alpha) * mean.mean + alpha * sum_d max(qmean kmax, qmean kmin), scaled.
double reference_logit(const TileStats& q, const TileStats& k, size_t qi, size_t ki, int dim,
                       double alpha, double scale) {
  double mean = 0, ub = 0;
  for (int d = 0; d < dim; ++d) {
    const double qm = q.mean.data_as<float>()[qi * dim + d];
    mean += qm * k.mean.data_as<float>()[ki * dim + d];
    ub += std::max(qm * k.max.data_as<float>()[ki * dim + d],
                   qm * k.min.data_as<float>()[ki * dim + d]);
  }
  return scale * ((1 - alpha) * mean + alpha * ub);
}

TEST(ScoreTest, MeanAndStatsMatchReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const HeadLayouts layouts = test_layouts();
  const int batch = 2, dim = 16, heads = layouts.heads(), tiles = layouts.max_tiles();
  const TiledInputs in = make_inputs(layouts, batch, dim, seed);
  const TileStats qs = compute_tile_stats(in.q_tiled, layouts).value();
  const TileStats ks = compute_tile_stats(in.k_tiled, layouts).value();
  const float scale = 0.37f;

  struct Case {
    const char* name;
    Result<Tensor> logits;
    double alpha;
    bool log_bias;
  };
  std::vector<Case> cases;
  cases.push_back({"mean", score_tiles_mean(qs, ks, layouts, scale), 0.0, false});
  cases.push_back({"stats default", score_tiles_stats(qs, ks, layouts, scale),
                   StatsScoreOptions{}.key_alpha, StatsScoreOptions{}.log_valid_bias});
  cases.push_back({"stats alpha 0.7 + bias",
                   score_tiles_stats(qs, ks, layouts, scale, {0.7f, true}), 0.7, true});
  cases.push_back(
      {"stats alpha 1", score_tiles_stats(qs, ks, layouts, scale, {1.0f, false}), 1.0, false});
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(c.logits.is_ok()) << c.logits.status().to_string();
    ASSERT_EQ(c.logits->shape(), (Shape{batch, heads, tiles, tiles}));
    const float* got = c.logits->data_as<float>();
    for (int b = 0; b < batch; ++b) {
      for (int h = 0; h < heads; ++h) {
        for (int i = 0; i < tiles; ++i) {
          for (int j = 0; j < tiles; ++j) {
            const float have = got[((size_t(b) * heads + h) * tiles + i) * tiles + j];
            if (layouts.valid(h, i) == 0 || layouts.valid(h, j) == 0) {
              ASSERT_EQ(have, kNegInf) << h << " " << i << " " << j;
              continue;
            }
            const size_t row = (size_t(b) * heads + h) * tiles;
            double want = reference_logit(qs, ks, row + i, row + j, dim, c.alpha, scale);
            if (c.log_bias) want += std::log(double(layouts.valid(h, j)));
            ASSERT_NEAR(have, want, 1e-4 * (1 + std::abs(want))) << h << " " << i << " " << j;
          }
        }
      }
    }
  }
  EXPECT_FALSE(score_tiles_stats(qs, ks, layouts, scale, {1.5f, false}).is_ok());
  EXPECT_FALSE(score_tiles_mean(qs, compute_tile_stats(in.k_tiled, test_layouts()).value(),
                                HeadLayouts::uniform({4, 9, 10}, 10, 2, {4, 4, 4}).value(), scale)
                   .is_ok());
}

// Brute force in double from token-order inputs, independent of gather and tiling code paths
// other than the slot map.
std::vector<double> reference_tile_mass(const Tensor& q, const Tensor& k,
                                        const HeadLayouts& layouts, double scale) {
  const int64_t batch = q.dim(0), heads = q.dim(1), tokens = q.dim(2), dim = q.dim(3);
  const int tiles = layouts.max_tiles();
  std::vector<double> mass(size_t(batch * heads) * tiles * tiles, 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const TileLayout& layout = layouts.head(int(h));
      std::vector<int> tile_of(static_cast<size_t>(tokens));
      for (size_t slot = 0; slot < layout.slot_token().size(); ++slot) {
        if (layout.slot_token()[slot] >= 0)
          tile_of[layout.slot_token()[slot]] = int(slot / layout.volume());
      }
      const float* qh = q.data_as<float>() + (b * heads + h) * tokens * dim;
      const float* kh = k.data_as<float>() + (b * heads + h) * tokens * dim;
      double* out = &mass[size_t(b * heads + h) * tiles * tiles];
      std::vector<double> logit(static_cast<size_t>(tokens));
      for (int64_t i = 0; i < tokens; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < tokens; ++j) {
          double s = 0;
          for (int64_t d = 0; d < dim; ++d) s += double(qh[i * dim + d]) * kh[j * dim + d];
          logit[j] = s * scale;
          mx = std::max(mx, logit[j]);
        }
        double total = 0;
        for (int64_t j = 0; j < tokens; ++j) total += std::exp(logit[j] - mx);
        const int qt = tile_of[i];
        for (int64_t j = 0; j < tokens; ++j) {
          out[size_t(qt) * tiles + tile_of[j]] +=
              std::exp(logit[j] - mx) / total / layout.tile_valid()[qt];
        }
      }
    }
  }
  return mass;
}

TEST(OracleTest, MatchesDoublePrecisionReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const HeadLayouts layouts = test_layouts();
  const int batch = 2, dim = 32, heads = layouts.heads(), tiles = layouts.max_tiles();
  // Scale 2 inputs make attention peaky, so the row max matters.
  const TiledInputs in = make_inputs(layouts, batch, dim, seed, 2.0f);
  const float scale = 1.0f / std::sqrt(float(dim));
  auto mass = oracle_tile_mass(in.q_tiled, in.k_tiled, layouts, scale);
  ASSERT_TRUE(mass.is_ok()) << mass.status().to_string();
  ASSERT_EQ(mass->shape(), (Shape{batch, heads, tiles, tiles}));
  const std::vector<double> want = reference_tile_mass(in.q, in.k, layouts, scale);
  const float* got = mass->data_as<float>();
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < tiles; ++i) {
        double row_sum = 0;
        for (int j = 0; j < tiles; ++j) {
          const size_t idx = ((size_t(b) * heads + h) * tiles + i) * tiles + j;
          ASSERT_NEAR(got[idx], want[idx], 2e-6 + 1e-5 * want[idx])
              << "b " << b << " h " << h << " q " << i << " k " << j;
          if (layouts.valid(h, i) == 0 || layouts.valid(h, j) == 0) {
            ASSERT_EQ(got[idx], 0.0f);
          }
          row_sum += got[idx];
        }
        if (layouts.valid(h, i) > 0) {
          EXPECT_NEAR(row_sum, 1.0, 1e-5) << "b " << b << " h " << h << " q " << i;
        } else {
          EXPECT_EQ(row_sum, 0.0);
        }
      }
    }
  }

  // kOracle logits are the log of the mass, -inf on empty tiles.
  auto logits = score_tiles(ScoreMethod::kOracle, in.q_tiled, in.k_tiled, layouts, scale);
  ASSERT_TRUE(logits.is_ok());
  for (int64_t i = 0; i < logits->numel(); ++i) {
    const int64_t row = i / tiles, j = i % tiles, qt = row % tiles, h = (row / tiles) % heads;
    if (layouts.valid(int(h), int(qt)) == 0 || layouts.valid(int(h), int(j)) == 0) {
      ASSERT_EQ(logits->data_as<float>()[i], kNegInf);
    } else {
      ASSERT_NEAR(logits->data_as<float>()[i],
                  std::log(std::max(got[i], std::numeric_limits<float>::min())), 1e-5);
    }
  }
}

TEST(OracleTest, VolumeOneTwentyEightAndBadInputs) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto layouts = HeadLayouts::make({3, 9, 11}, 5, {{2, 8, 8}, {4, 4, 8}});
  ASSERT_TRUE(layouts.is_ok());
  const int dim = 8;
  const TiledInputs in = make_inputs(*layouts, 1, dim, seed, 1.5f);
  auto mass = oracle_tile_mass(in.q_tiled, in.k_tiled, *layouts, 0.5f);
  ASSERT_TRUE(mass.is_ok());
  const std::vector<double> want = reference_tile_mass(in.q, in.k, *layouts, 0.5);
  for (int64_t i = 0; i < mass->numel(); ++i) {
    ASSERT_NEAR(mass->data_as<float>()[i], want[i], 2e-6 + 1e-5 * want[i]) << i;
  }

  Tensor poisoned = in.k_tiled.clone();
  poisoned.data_as<float>()[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(oracle_tile_mass(in.q_tiled, poisoned, *layouts, 0.5f).status().code(),
            ErrorCode::kNumericError);
  const Tensor short_k = test::random_tensor(DType::kF32, {1, 2, 128, dim}, seed);
  EXPECT_EQ(oracle_tile_mass(in.q_tiled, short_k, *layouts, 0.5f).status().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_FALSE(oracle_tile_mass(in.q_tiled, in.k_tiled.to(DType::kF16), *layouts, 0.5f).is_ok());
}

// A key tile with one strong key: pooling averages it away, the extrema bound does not.
TEST(ScoreTest, StatsKeepsASingleStrongKey) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto layouts = HeadLayouts::uniform({1, 8, 24}, 0, 1, {1, 8, 8});  // tiles = w blocks of 8
  ASSERT_TRUE(layouts.is_ok());
  const int dim = 4, tokens = 8 * 24;
  Tensor q = test::random_tensor(DType::kF32, {1, 1, tokens, dim}, seed, 0.01f);
  Tensor k = test::random_tensor(DType::kF32, {1, 1, tokens, dim}, seed + 1, 0.01f);
  auto tile_of = [](int token) { return (token % 24) / 8; };
  bool strong_placed = false;
  for (int i = 0; i < tokens; ++i) {
    float* qi = q.data_as<float>() + i * dim;
    float* ki = k.data_as<float>() + i * dim;
    qi[0] += 1.0f;
    switch (tile_of(i)) {
      case 0:
        ki[0] -= 1.0f;
        break;
      case 1:
        ki[0] += 0.5f;
        break;  // uniformly mild
      default:
        ki[0] += strong_placed ? -0.1f : 8.0f;  // one strong key, the rest slightly negative
        strong_placed = true;
    }
  }
  const Tensor qt = gather_to_tiles(q, *layouts).value();
  const Tensor kt = gather_to_tiles(k, *layouts).value();
  auto logits_of = [&](ScoreMethod m) { return score_tiles(m, qt, kt, *layouts, 1.0f).value(); };
  for (int row = 0; row < 3; ++row) {
    const Tensor mean = logits_of(ScoreMethod::kMean), stats = logits_of(ScoreMethod::kStats),
                 oracle = logits_of(ScoreMethod::kOracle);
    auto at = [&](const Tensor& t, int j) { return t.data_as<float>()[row * 3 + j]; };
    EXPECT_GT(at(mean, 1), at(mean, 2)) << "row " << row;
    EXPECT_GT(at(stats, 2), at(stats, 1)) << "row " << row;
    EXPECT_GT(at(oracle, 2), at(oracle, 1)) << "row " << row;
  }
}

TEST(ScoreTest, MethodNames) {
  for (ScoreMethod m : {ScoreMethod::kMean, ScoreMethod::kStats, ScoreMethod::kOracle}) {
    auto parsed = parse_score_method(score_method_name(m));
    ASSERT_TRUE(parsed.is_ok());
    EXPECT_EQ(*parsed, m);
  }
  EXPECT_EQ(parse_score_method("max").status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace veda
