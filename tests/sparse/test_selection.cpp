// TileMask and tile selection against brute-force references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "common/test_data.hpp"
#include "veda/selection.hpp"

namespace veda {
namespace {

uint64_t fresh_seed() { return std::random_device{}() | (uint64_t(std::random_device{}()) << 32); }

constexpr float kInf = std::numeric_limits<float>::infinity();

HeadLayouts layouts_of(Grid grid, int prefix, std::vector<TileShape> shapes) {
  auto layouts = HeadLayouts::make(grid, prefix, shapes);
  EXPECT_TRUE(layouts.is_ok()) << layouts.status().to_string();
  return std::move(layouts).value();
}

// Random logits on a coarse grid (many ties), some -inf, -inf outside existing tiles.
Tensor random_logits(const HeadLayouts& layouts, int batch, uint64_t seed) {
  const int tiles = layouts.max_tiles(), heads = layouts.heads();
  Tensor logits = test::random_tensor(DType::kF32, {batch, heads, tiles, tiles}, seed, 2.0f);
  std::mt19937_64 rng(seed ^ 0x5bd1e995);
  float* p = logits.data_as<float>();
  for (int64_t i = 0; i < logits.numel(); ++i) {
    const int64_t row = i / tiles, j = i % tiles, q = row % tiles, h = (row / tiles) % heads;
    if (layouts.valid(int(h), int(q)) == 0 || layouts.valid(int(h), int(j)) == 0) {
      p[i] = -kInf;
    } else if (rng() % 10 == 0) {
      p[i] = -kInf;
    } else {
      p[i] = std::round(p[i] * 4.0f) / 4.0f;
    }
  }
  return logits;
}

// Reference: a tile is taken when fewer than `room` candidates beat it (higher logit, or equal
// logit and lower index); mass mode walks the same order summing the softmax.
std::vector<int32_t> reference_row(const float* row, int n, int q, int num_prefix, int budget,
                                   const SelectionConfig& config) {
  std::set<int32_t> chosen;
  if (config.force_prefix) {
    for (int j = 0; j < num_prefix; ++j) chosen.insert(j);
  }
  if (config.force_self) chosen.insert(q);
  std::vector<int32_t> candidates;
  for (int j = 0; j < n; ++j) {
    if (!chosen.count(j) && row[j] != -kInf) candidates.push_back(j);
  }
  const int room = std::max(0, budget - int(chosen.size()));
  auto beats = [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); };
  std::vector<std::pair<int, int32_t>> ranked;  // (rank, tile)
  for (int32_t j : candidates) {
    int rank = 0;
    for (int32_t other : candidates) rank += beats(other, j);
    ranked.push_back({rank, j});
  }
  std::sort(ranked.begin(), ranked.end());
  if (config.mode == SelectMode::kTopK) {
    for (const auto& [rank, j] : ranked) {
      if (rank < room) chosen.insert(j);
    }
  } else {
    double mx = -INFINITY, total = 0, covered = 0;
    for (int j = 0; j < n; ++j) mx = std::max(mx, double(row[j]));
    for (int j = 0; j < n; ++j) total += std::exp(row[j] - mx);
    for (int32_t j : chosen) covered += std::exp(row[j] - mx) / total;
    for (const auto& [rank, j] : ranked) {
      if (rank >= room || covered >= config.mass) break;
      chosen.insert(j);
      covered += std::exp(row[j] - mx) / total;
    }
  }
  return {chosen.begin(), chosen.end()};
}

void expect_matches_reference(const Tensor& logits, const HeadLayouts& layouts,
                              const SelectionConfig& config) {
  auto mask = select_tiles(logits, layouts, config);
  ASSERT_TRUE(mask.is_ok()) << mask.status().to_string();
  ASSERT_TRUE(mask->validate(layouts).is_ok()) << mask->validate(layouts).to_string();
  const int batch = int(logits.dim(0)), heads = layouts.heads(), tiles = layouts.max_tiles();
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const TileLayout& layout = layouts.head(h);
      const int n = layout.num_tiles();
      const double density = config.head_density.empty() ? config.density : config.head_density[h];
      const int budget = std::clamp(int(std::lround(density * n)), 1, n);
      for (int q = 0; q < tiles; ++q) {
        std::vector<int32_t> want;
        if (q < n) {
          want = reference_row(logits.data_as<float>() + mask->row_offset(b, h, q) * tiles, n, q,
                               layout.num_prefix_tiles(), budget, config);
        }
        const std::vector<int32_t> have(mask->row(b, h, q),
                                        mask->row(b, h, q) + mask->count(b, h, q));
        ASSERT_EQ(have, want) << "b " << b << " h " << h << " q " << q;
      }
    }
  }
}

TEST(TileMaskTest, EmptyAndDense) {
  const HeadLayouts layouts = layouts_of({5, 7, 9}, 10, {{4, 4, 4}, {2, 8, 4}});
  const TileMask empty = TileMask::empty(2, 2, layouts.max_tiles(), layouts.max_tiles(), 3);
  EXPECT_EQ(empty.counts.size(), size_t(2 * 2 * layouts.max_tiles()));
  EXPECT_EQ(empty.indices.size(), empty.counts.size() * 3);
  EXPECT_EQ(empty.selected_pairs(), 0);
  EXPECT_EQ(empty.density(layouts), 0.0);
  EXPECT_TRUE(empty.validate(layouts).is_ok());
  EXPECT_TRUE(
      std::all_of(empty.indices.begin(), empty.indices.end(), [](int32_t i) { return i == -1; }));

  const TileMask dense = TileMask::dense(2, layouts);
  ASSERT_TRUE(dense.validate(layouts).is_ok()) << dense.validate(layouts).to_string();
  EXPECT_DOUBLE_EQ(dense.density(layouts), 1.0);
  int64_t pairs = 0;
  for (int h = 0; h < 2; ++h) {
    const int64_t n = layouts.head(h).num_tiles();
    pairs += 2 * n * n;
    for (int q = 0; q < layouts.max_tiles(); ++q) {
      EXPECT_EQ(dense.count(1, h, q), q < n ? n : 0);
    }
  }
  EXPECT_EQ(dense.selected_pairs(), pairs);
  EXPECT_NE(layouts.head(0).num_tiles(), layouts.head(1).num_tiles());
}

TEST(TileMaskTest, ValidateCatchesBrokenMasks) {
  const HeadLayouts layouts = layouts_of({5, 7, 9}, 0, {{4, 4, 4}, {16, 2, 2}});
  const int tiles = layouts.max_tiles();
  const int short_head = layouts.head(0).num_tiles() < tiles ? 0 : 1;
  auto base = [&] {
    TileMask m = TileMask::empty(1, 2, tiles, tiles, 4);
    m.counts[m.row_offset(0, 0, 1)] = 2;
    m.row(0, 0, 1)[0] = 0;
    m.row(0, 0, 1)[1] = 1;
    return m;
  };
  ASSERT_TRUE(base().validate(layouts).is_ok());
  TileMask m = base();
  m.row(0, 0, 1)[1] = 0;  // duplicate
  EXPECT_FALSE(m.validate(layouts).is_ok());
  m = base();
  std::swap(m.row(0, 0, 1)[0], m.row(0, 0, 1)[1]);  // descending
  EXPECT_FALSE(m.validate(layouts).is_ok());
  m = base();
  m.counts[m.row_offset(0, 0, 1)] = 5;  // > max_k
  EXPECT_FALSE(m.validate(layouts).is_ok());
  m = base();
  m.row(0, 0, 1)[2] = 3;  // junk past count
  EXPECT_FALSE(m.validate(layouts).is_ok());
  m = base();
  m.row(0, 0, 1)[1] = tiles;  // out of range
  EXPECT_FALSE(m.validate(layouts).is_ok());
  m = base();
  m.counts[m.row_offset(0, short_head, 2)] = 1;  // a key tile the short head does not have
  m.row(0, short_head, 2)[0] = tiles - 1;
  EXPECT_FALSE(m.validate(layouts).is_ok());
  m = base();
  m.counts[m.row_offset(0, short_head, tiles - 1)] = 1;  // a query tile that does not exist
  m.row(0, short_head, tiles - 1)[0] = 0;
  EXPECT_FALSE(m.validate(layouts).is_ok());
  m = base();
  m.indices.pop_back();
  EXPECT_FALSE(m.validate(layouts).is_ok());
  EXPECT_FALSE(TileMask::empty(1, 3, tiles, tiles, 4).validate(layouts).is_ok());
}

TEST(SelectTest, RandomLogitsMatchReference) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  // 130 prefix tokens: 3 prefix tiles (the last ragged); heads with different tile counts.
  const HeadLayouts layouts = layouts_of({5, 7, 9}, 130, {{4, 4, 4}, {2, 8, 4}, {16, 2, 2}});
  const Tensor logits = random_logits(layouts, 2, seed);
  for (SelectMode mode : {SelectMode::kTopK, SelectMode::kMass}) {
    for (double density : {0.05, 0.3, 0.5, 1.0}) {
      for (int force = 0; force < 4; ++force) {
        SelectionConfig config;
        config.mode = mode;
        config.density = density;
        config.mass = 0.7;
        config.force_prefix = force & 1;
        config.force_self = force & 2;
        SCOPED_TRACE(::testing::Message()
                     << "mode " << int(mode) << " density " << density << " force " << force);
        expect_matches_reference(logits, layouts, config);
      }
    }
  }
  SelectionConfig per_head;
  per_head.head_density = {0.1, 0.6, 0.35};
  expect_matches_reference(logits, layouts, per_head);
  per_head.mode = SelectMode::kMass;
  per_head.mass = 0.95;
  expect_matches_reference(logits, layouts, per_head);
}

TEST(SelectTest, BudgetAndForcedTiles) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const HeadLayouts layouts = layouts_of({8, 8, 16}, 70, {{4, 4, 4}});  // 2 prefix + 16 tiles
  const int n = layouts.max_tiles();
  ASSERT_EQ(n, 18);
  // Finite logits (no -inf) where forced tiles score worst of all.
  Tensor logits = test::random_tensor(DType::kF32, {1, 1, n, n}, seed);
  for (int q = 0; q < n; ++q) {
    float* row = logits.data_as<float>() + q * n;
    row[0] = row[1] = row[q] = -1e30f;
  }
  for (double density : {0.01, 0.2, 0.5, 1.0}) {
    SelectionConfig config;
    config.density = density;
    auto mask = select_tiles(logits, layouts, config);
    ASSERT_TRUE(mask.is_ok());
    const int budget = std::clamp(int(std::lround(density * n)), 1, n);
    for (int q = 0; q < n; ++q) {
      const int forced = q < 2 ? 2 : 3;
      EXPECT_EQ(mask->count(0, 0, q), std::max(budget, forced)) << "density " << density;
      std::set<int32_t> got(mask->row(0, 0, q), mask->row(0, 0, q) + mask->count(0, 0, q));
      EXPECT_TRUE(got.count(0) && got.count(1) && got.count(q)) << "q " << q;
    }
    EXPECT_EQ(mask->max_k, std::max(budget, 3));
  }
}

TEST(SelectTest, TiesPreferLowerIndex) {
  const HeadLayouts layouts = layouts_of({1, 8, 40}, 0, {{1, 8, 8}});  // 5 tiles
  Tensor logits = Tensor::empty(DType::kF32, {1, 1, 5, 5});
  const float rows[5][5] = {{1, 3, 3, 2, 3},
                            {0, 0, 0, 0, 0},
                            {-1, -1, 5, -1, -1},
                            {2, 2, 2, 2, 1},
                            {-kInf, -kInf, 7, -kInf, -kInf}};
  std::copy(&rows[0][0], &rows[0][0] + 25, logits.data_as<float>());
  SelectionConfig config;
  config.density = 0.4;  // budget 2
  config.force_self = false;
  config.force_prefix = false;
  auto mask = select_tiles(logits, layouts, config);
  ASSERT_TRUE(mask.is_ok());
  auto row = [&](int q) {
    return std::vector<int32_t>(mask->row(0, 0, q), mask->row(0, 0, q) + mask->count(0, 0, q));
  };
  EXPECT_EQ(row(0), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(row(1), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(row(2), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(row(3), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(row(4), (std::vector<int32_t>{2}));  // -inf is never picked, even under budget
  config.force_self = true;                      // -inf self tiles are still kept when forced
  mask = select_tiles(logits, layouts, config);
  ASSERT_TRUE(mask.is_ok());
  EXPECT_EQ(row(4), (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(row(0), (std::vector<int32_t>{0, 1}));  // self + best other
}

TEST(SelectTest, MassModeStopsAtTarget) {
  const HeadLayouts layouts = layouts_of({1, 8, 32}, 0, {{1, 8, 8}});  // 4 tiles
  Tensor logits = Tensor::empty(DType::kF32, {1, 1, 4, 4});
  const float probs[4] = {0.5f, 0.3f, 0.12f, 0.08f};
  for (int q = 0; q < 4; ++q) {
    for (int j = 0; j < 4; ++j) logits.data_as<float>()[q * 4 + j] = std::log(probs[j]) + 3.0f;
  }
  SelectionConfig config;
  config.mode = SelectMode::kMass;
  config.density = 1.0;
  config.force_self = false;
  auto count_at = [&](double mass, double density) {
    config.mass = mass;
    config.density = density;
    auto mask = select_tiles(logits, layouts, config);
    EXPECT_TRUE(mask.is_ok());
    return mask->count(0, 0, 0);
  };
  EXPECT_EQ(count_at(0.4, 1.0), 1);
  EXPECT_EQ(count_at(0.75, 1.0), 2);
  EXPECT_EQ(count_at(0.85, 1.0), 3);
  EXPECT_EQ(count_at(0.99, 1.0), 4);
  EXPECT_EQ(count_at(0.99, 0.5), 2);  // the budget caps it
  config.force_self = true;           // row 3: self (0.08) counts, then 0.5, then 0.3 reach 0.88
  config.mass = 0.85;
  config.density = 1.0;
  auto mask = select_tiles(logits, layouts, config);
  ASSERT_TRUE(mask.is_ok());
  EXPECT_EQ(std::vector<int32_t>(mask->row(0, 0, 3), mask->row(0, 0, 3) + mask->count(0, 0, 3)),
            (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(std::vector<int32_t>(mask->row(0, 0, 1), mask->row(0, 0, 1) + mask->count(0, 0, 1)),
            (std::vector<int32_t>{0, 1, 2}));
}

TEST(SelectTest, NonFiniteLogits) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const HeadLayouts layouts = layouts_of({5, 7, 9}, 0, {{4, 4, 4}, {16, 2, 2}});
  const int tiles = layouts.max_tiles();
  const int short_head = layouts.head(0).num_tiles() < tiles ? 0 : 1;
  Tensor logits = random_logits(layouts, 1, seed);
  // NaN where the short head has no tiles is outside the problem: ignored.
  logits.data_as<float>()[(size_t(short_head) * tiles + tiles - 1) * tiles] = NAN;
  logits.data_as<float>()[(size_t(short_head) * tiles) * tiles + tiles - 1] = NAN;
  auto ok = select_tiles(logits, layouts, SelectionConfig{});
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->count(0, short_head, tiles - 1), 0);
  for (float bad : {NAN, kInf}) {
    Tensor poisoned = logits.clone();
    poisoned.data_as<float>()[(size_t(1) * tiles + 2) * tiles + 3] = bad;
    auto mask = select_tiles(poisoned, layouts, SelectionConfig{});
    ASSERT_FALSE(mask.is_ok());
    EXPECT_EQ(mask.status().code(), ErrorCode::kNumericError);
    EXPECT_NE(mask.status().message().find("h=1, q tile=2, k tile=3"), std::string::npos)
        << mask.status().message();
  }
}

TEST(SelectTest, RejectsBadArguments) {
  const uint64_t seed = fresh_seed();
  const HeadLayouts layouts = layouts_of({5, 7, 9}, 0, {{4, 4, 4}, {2, 8, 4}});
  const Tensor logits = random_logits(layouts, 1, seed);
  auto code_of = [&](const SelectionConfig& c, const Tensor& l) {
    return select_tiles(l, layouts, c).status().code();
  };
  for (double density : {0.0, -0.1, 1.5, double(NAN)}) {
    SelectionConfig c;
    c.density = density;
    EXPECT_EQ(code_of(c, logits), ErrorCode::kInvalidArgument) << density;
  }
  SelectionConfig c;
  c.head_density = {0.1};
  EXPECT_EQ(code_of(c, logits), ErrorCode::kInvalidArgument);
  c.head_density = {0.1, 0.0};
  EXPECT_EQ(code_of(c, logits), ErrorCode::kInvalidArgument);
  c = {};
  c.mode = SelectMode::kMass;
  c.mass = 0.0;
  EXPECT_EQ(code_of(c, logits), ErrorCode::kInvalidArgument);
  c.mass = 1.01;
  EXPECT_EQ(code_of(c, logits), ErrorCode::kInvalidArgument);
  const int tiles = layouts.max_tiles();
  EXPECT_EQ(code_of({}, test::random_tensor(DType::kF32, {1, 2, tiles, tiles - 1}, seed)),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of({}, test::random_tensor(DType::kF32, {1, 3, tiles, tiles}, seed)),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of({}, logits.to(DType::kF16)), ErrorCode::kInvalidArgument);

  auto topk = parse_select_mode("topk");
  ASSERT_TRUE(topk.is_ok());
  EXPECT_EQ(*topk, SelectMode::kTopK);
  EXPECT_EQ(*parse_select_mode("mass"), SelectMode::kMass);
  EXPECT_FALSE(parse_select_mode("top-k").is_ok());
}

}  // namespace
}  // namespace veda
