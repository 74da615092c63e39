// Tile layout, head layouts and gather/scatter against brute-force references.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

#include "common/test_data.hpp"
#include "veda/tile_layout.hpp"

namespace veda {
namespace {

uint64_t fresh_seed() { return std::random_device{}() | (uint64_t(std::random_device{}()) << 32); }

// Reference tiling: walk the tokens in global order and append each to its tile; a tile's tokens
// then come out in (t, h, w) row-major order, which is the layout's in-tile order.
struct ReferenceTiling {
  std::vector<std::vector<int32_t>> tiles;
};
ReferenceTiling reference_tiling(Grid grid, int prefix, TileShape shape) {
  const int volume = shape.slots();
  const int num_prefix = (prefix + volume - 1) / volume;
  const int nt = (grid.t + shape.t - 1) / shape.t, nh = (grid.h + shape.h - 1) / shape.h,
            nw = (grid.w + shape.w - 1) / shape.w;
  ReferenceTiling ref;
  ref.tiles.resize(size_t(num_prefix + nt * nh * nw));
  for (int i = 0; i < prefix; ++i) ref.tiles[i / volume].push_back(i);
  int32_t token = prefix;
  for (int t = 0; t < grid.t; ++t) {
    for (int h = 0; h < grid.h; ++h) {
      for (int w = 0; w < grid.w; ++w, ++token) {
        const int tile = num_prefix + ((t / shape.t) * nh + h / shape.h) * nw + w / shape.w;
        ref.tiles[tile].push_back(token);
      }
    }
  }
  return ref;
}

void expect_layout_matches_reference(Grid grid, int prefix, TileShape shape) {
  SCOPED_TRACE(grid.str() + " prefix " + std::to_string(prefix) + " shape " + shape.str());
  auto layout = TileLayout::make(grid, prefix, shape);
  ASSERT_TRUE(layout.is_ok()) << layout.status().to_string();
  const ReferenceTiling ref = reference_tiling(grid, prefix, shape);
  const int volume = shape.slots();
  EXPECT_EQ(layout->volume(), volume);
  ASSERT_EQ(layout->num_tiles(), int(ref.tiles.size()));
  EXPECT_EQ(layout->num_prefix_tiles(), (prefix + volume - 1) / volume);
  EXPECT_EQ(layout->tokens(), prefix + grid.tokens());
  EXPECT_EQ(layout->padded_tokens(), int64_t(ref.tiles.size()) * volume);
  ASSERT_EQ(layout->slot_token().size(), size_t(layout->padded_tokens()));
  for (int tile = 0; tile < layout->num_tiles(); ++tile) {
    const auto& expected = ref.tiles[tile];
    ASSERT_EQ(layout->tile_valid()[tile], int(expected.size())) << "tile " << tile;
    EXPECT_GT(layout->tile_valid()[tile], 0);
    for (int s = 0; s < volume; ++s) {
      const int32_t want = s < int(expected.size()) ? expected[s] : -1;
      ASSERT_EQ(layout->slot_token()[size_t(tile) * volume + s], want)
          << "tile " << tile << " slot " << s;
    }
  }
  // Tile coordinates: prefix tiles none, video tiles row-major over the tile grid.
  const auto per_axis = layout->tiles_per_axis();
  EXPECT_EQ(per_axis[0], (grid.t + shape.t - 1) / shape.t);
  EXPECT_EQ(per_axis[1], (grid.h + shape.h - 1) / shape.h);
  EXPECT_EQ(per_axis[2], (grid.w + shape.w - 1) / shape.w);
  for (int tile = 0; tile < layout->num_tiles(); ++tile) {
    const auto c = layout->tile_coords(tile);
    if (layout->is_prefix_tile(tile)) {
      EXPECT_EQ(c, (std::array<int, 3>{-1, -1, -1}));
      continue;
    }
    const int v = tile - layout->num_prefix_tiles();
    EXPECT_EQ((c[0] * per_axis[1] + c[1]) * per_axis[2] + c[2], v);
    // The first valid token of the tile sits at the tile's origin.
    const int32_t first = layout->slot_token()[size_t(tile) * volume] - prefix;
    EXPECT_EQ(first / (grid.h * grid.w), c[0] * shape.t);
    EXPECT_EQ(first / grid.w % grid.h, c[1] * shape.h);
    EXPECT_EQ(first % grid.w, c[2] * shape.w);
  }
}

TEST(GridTest, ParseAndPrint) {
  auto grid = Grid::parse("16x16x28");
  ASSERT_TRUE(grid.is_ok());
  EXPECT_EQ(*grid, (Grid{16, 16, 28}));
  EXPECT_EQ(grid->str(), "16x16x28");
  EXPECT_EQ(grid->tokens(), 16 * 16 * 28);
  auto shape = TileShape::parse("2x8x4");
  ASSERT_TRUE(shape.is_ok());
  EXPECT_EQ(*shape, (TileShape{2, 8, 4}));
  EXPECT_EQ(shape->str(), "2x8x4");
  EXPECT_EQ(shape->volume(), 64);
  for (const char* bad : {"", "16x16", "16x16x28x2", "0x4x4", "4x-1x4", "ax4x4", "4x4x4 ", " 4x4x4",
                          "4xx4", "4x4x", "99999999999x1x1"}) {
    EXPECT_FALSE(Grid::parse(bad).is_ok()) << bad;
    auto st = TileShape::parse(bad);
    ASSERT_FALSE(st.is_ok()) << bad;
    EXPECT_EQ(st.status().code(), ErrorCode::kInvalidArgument);
  }
}

TEST(TileLayoutTest, MatchesReferenceOnRaggedGrids) {
  expect_layout_matches_reference({5, 7, 9}, 0, {4, 4, 4});
  expect_layout_matches_reference({5, 7, 9}, 0, {2, 8, 4});
  expect_layout_matches_reference({5, 7, 9}, 10, {4, 4, 4});
  expect_layout_matches_reference({5, 7, 9}, 10, {2, 8, 4});
  expect_layout_matches_reference({5, 7, 9}, 64, {16, 2, 2});
  expect_layout_matches_reference({5, 7, 9}, 130, {4, 4, 8});  // volume 128, 2 prefix tiles
  expect_layout_matches_reference({1, 1, 1}, 3, {1, 8, 8});
  expect_layout_matches_reference({16, 16, 28}, 0, {4, 4, 4});
  expect_layout_matches_reference({21, 30, 52}, 0, {4, 4, 4});
  expect_layout_matches_reference({21, 30, 52}, 77, {1, 8, 16});
  // Shapes with fewer tokens than slots: every tile padded to 64 / 128 slots.
  expect_layout_matches_reference({21, 30, 52}, 0, {3, 5, 4});  // 60 tokens
  expect_layout_matches_reference({7, 10, 9}, 70, {3, 5, 4});   // ragged too, 2 prefix tiles
  expect_layout_matches_reference({5, 7, 9}, 0, {3, 5, 8});     // 120 tokens, 128 slots
  expect_layout_matches_reference({21, 45, 80}, 5, {21, 3, 1});  // 63 tokens
}

TEST(TileLayoutTest, ShapesThatFitTheGridWithFewerTokensThanSlots) {
  // 3x5x4 tiles both Wan grids exactly: every tile holds 60 tokens in 64 slots (94%), where 4x4x4
  // leaves ragged edges (82%).
  for (const Grid grid : {Grid{21, 30, 52}, Grid{21, 45, 80}}) {
    auto layout = TileLayout::make(grid, 0, {3, 5, 4});
    ASSERT_TRUE(layout.is_ok()) << layout.status().to_string();
    EXPECT_EQ(layout->volume(), 64);
    EXPECT_EQ(layout->num_tiles() * 60, grid.tokens());
    for (int32_t v : layout->tile_valid()) ASSERT_EQ(v, 60);
  }
  EXPECT_EQ((TileShape{3, 5, 4}.slots()), 64);
  EXPECT_EQ((TileShape{4, 4, 4}.slots()), 64);
  EXPECT_EQ((TileShape{3, 5, 8}.slots()), 128);
  EXPECT_EQ((TileShape{4, 4, 8}.slots()), 128);
  EXPECT_EQ((TileShape{4, 4, 2}.slots()), 0);   // 32 tokens: under half the slots
  EXPECT_EQ((TileShape{3, 3, 3}.slots()), 0);   // 27
  EXPECT_EQ((TileShape{4, 4, 16}.slots()), 0);  // 256
  // A product that wraps a 32-bit int into 33..128 must not pass: (2^30 + 1) * 64 = 2^36 + 64.
  EXPECT_EQ((TileShape{1073741825, 64, 1}.slots()), 0);
  EXPECT_FALSE(TileLayout::make({21, 30, 52}, 0, {1073741825, 64, 1}).is_ok());
}

// slot_use against the layout itself: valid tokens / (tiles * slots), ragged edges and shapes with
// fewer tokens than slots included.
TEST(TileShape, SlotUseMatchesTheLayout) {
  for (const Grid grid : {Grid{21, 45, 80}, Grid{21, 30, 52}, Grid{16, 16, 28}, Grid{3, 7, 5}}) {
    for (const TileShape shape : {TileShape{4, 4, 4}, TileShape{16, 2, 2}, TileShape{1, 8, 8},
                                  TileShape{3, 5, 4}, TileShape{4, 4, 8}}) {
      auto layout = TileLayout::make(grid, 0, shape);
      ASSERT_TRUE(layout.is_ok()) << layout.status().to_string();
      const double expected = double(layout->tokens()) / double(layout->padded_tokens());
      EXPECT_DOUBLE_EQ(slot_use(grid, shape), expected) << grid.str() << " " << shape.str();
    }
  }
  EXPECT_DOUBLE_EQ(slot_use({16, 16, 28}, {4, 4, 4}), 1.0);
  EXPECT_NEAR(slot_use({21, 45, 80}, {16, 2, 2}), 75600.0 / (2 * 23 * 40 * 64), 1e-15);
  EXPECT_EQ(slot_use({16, 16, 28}, {4, 4, 1}), 0.0);  // 16 tokens: no slot count
  EXPECT_EQ(slot_use({0, 16, 28}, {4, 4, 4}), 0.0);
}

TEST(TileLayoutTest, RaggedEdgeCounts) {
  // 21x30x52 with 4x4x4: 6x8x13 tiles; the last t slab holds 1 frame, the last h row 2 rows.
  auto layout = TileLayout::make({21, 30, 52}, 0, {4, 4, 4});
  ASSERT_TRUE(layout.is_ok());
  EXPECT_EQ(layout->tiles_per_axis(), (std::array<int, 3>{6, 8, 13}));
  EXPECT_EQ(layout->num_tiles(), 6 * 8 * 13);
  EXPECT_EQ(layout->tile_valid().front(), 64);
  EXPECT_EQ(layout->tile_valid().back(), 1 * 2 * 4);
  // Prefix of 10 tokens with volume 64: one ragged prefix tile.
  auto with_prefix = TileLayout::make({5, 7, 9}, 10, {4, 4, 4});
  ASSERT_TRUE(with_prefix.is_ok());
  EXPECT_EQ(with_prefix->num_prefix_tiles(), 1);
  EXPECT_EQ(with_prefix->tile_valid()[0], 10);
  EXPECT_TRUE(with_prefix->is_prefix_tile(0));
  EXPECT_FALSE(with_prefix->is_prefix_tile(1));
  int64_t total = 0;
  for (int32_t v : with_prefix->tile_valid()) total += v;
  EXPECT_EQ(total, with_prefix->tokens());
}

TEST(TileLayoutTest, TokenOrderBlocks) {
  // The dense layout: 15x16x28 = 6,720 tokens in order, 52 full 128-token blocks and one of 64.
  auto flat = token_order_grid({15, 16, 28});
  ASSERT_TRUE(flat.is_ok());
  const Grid grid = *flat;
  EXPECT_EQ(grid, (Grid{1, 1, 6720}));
  EXPECT_FALSE(token_order_grid({2048, 2048, 1024}).is_ok());  // 2^32 tokens
  auto layout = TileLayout::make(grid, 0, kTokenBlock);
  ASSERT_TRUE(layout.is_ok()) << layout.status().to_string();
  EXPECT_EQ(layout->num_tiles(), 53);
  EXPECT_EQ(layout->padded_tokens(), 53 * 128);
  EXPECT_EQ(layout->tile_valid()[51], 128);
  EXPECT_EQ(layout->tile_valid().back(), 64);
  for (int64_t s = 0; s < layout->padded_tokens(); ++s)  // slot = token, padding only at the end
    ASSERT_EQ(layout->slot_token()[size_t(s)], s < 6720 ? int32_t(s) : -1) << "slot " << s;
}

TEST(TileLayoutTest, RejectsBadArguments) {
  EXPECT_EQ(TileLayout::make({4, 4, 4}, 0, {4, 4, 2}).status().code(),
            ErrorCode::kInvalidArgument);                            // volume 32
  EXPECT_FALSE(TileLayout::make({4, 4, 4}, 0, {4, 4, 16}).is_ok());  // volume 256
  EXPECT_FALSE(TileLayout::make({0, 4, 4}, 0, {4, 4, 4}).is_ok());
  EXPECT_FALSE(TileLayout::make({4, -1, 4}, 0, {4, 4, 4}).is_ok());
  EXPECT_FALSE(TileLayout::make({4, 4, 4}, -1, {4, 4, 4}).is_ok());
  EXPECT_FALSE(TileLayout::make({4, 4, 4}, 0, {0, 4, 4}).is_ok());
  EXPECT_FALSE(TileLayout::make({4, 4, 4}, 0, {-4, -4, 4}).is_ok());
  EXPECT_TRUE(TileLayout::make({4, 4, 4}, 0, {4, 4, 8}).is_ok());  // volume 128
}

TEST(HeadLayoutsTest, PerHeadShapes) {
  const Grid grid{5, 7, 9};
  const std::vector<TileShape> shapes{{4, 4, 4}, {2, 8, 4}, {16, 2, 2}, {1, 8, 8}};
  auto layouts = HeadLayouts::make(grid, 10, shapes);
  ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
  ASSERT_EQ(layouts->heads(), 4);
  EXPECT_EQ(layouts->volume(), 64);
  EXPECT_EQ(layouts->tokens(), 10 + grid.tokens());
  int max_tiles = 0;
  for (int h = 0; h < 4; ++h) {
    EXPECT_EQ(layouts->head(h).shape(), shapes[h]);
    max_tiles = std::max(max_tiles, layouts->head(h).num_tiles());
  }
  EXPECT_EQ(layouts->max_tiles(), max_tiles);
  EXPECT_EQ(layouts->padded_tokens(), int64_t(max_tiles) * 64);
  ASSERT_EQ(layouts->valid_table().size(), size_t(4 * max_tiles));
  bool some_head_shorter = false;
  for (int h = 0; h < 4; ++h) {
    const auto& head = layouts->head(h);
    for (int t = 0; t < max_tiles; ++t) {
      const int32_t want = t < head.num_tiles() ? head.tile_valid()[t] : 0;
      EXPECT_EQ(layouts->valid(h, t), want);
      EXPECT_EQ(layouts->valid_table()[size_t(h) * max_tiles + t], want);
    }
    some_head_shorter |= head.num_tiles() < max_tiles;
  }
  EXPECT_TRUE(some_head_shorter);  // the case this test is about

  auto uniform = HeadLayouts::uniform({16, 16, 28}, 0, 3, {4, 4, 4});
  ASSERT_TRUE(uniform.is_ok());
  EXPECT_EQ(uniform->max_tiles(), 4 * 4 * 7);
  EXPECT_EQ(uniform->heads(), 3);

  EXPECT_FALSE(HeadLayouts::make(grid, 0, {}).is_ok());
  EXPECT_FALSE(HeadLayouts::make(grid, 0, {{4, 4, 4}, {4, 4, 8}}).is_ok());  // 64 vs 128
  EXPECT_FALSE(HeadLayouts::uniform(grid, 0, 0, {4, 4, 4}).is_ok());
  EXPECT_FALSE(HeadLayouts::make(grid, 0, {{4, 4, 4}, {4, 4, 2}}).is_ok());
  EXPECT_FALSE(HeadLayouts::make(grid, 0, {{3, 5, 4}, {3, 5, 8}}).is_ok());  // 64 vs 128 slots
  auto mixed = HeadLayouts::make(grid, 0, {{4, 4, 4}, {3, 5, 4}});            // 64 and 60 tokens
  ASSERT_TRUE(mixed.is_ok()) << mixed.status().to_string();
  EXPECT_EQ(mixed->volume(), 64);
}

class GatherScatterTest : public ::testing::TestWithParam<DType> {};

TEST_P(GatherScatterTest, MatchesReferenceAndRoundTrips) {
  const DType dtype = GetParam();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Grid grid{5, 7, 9};
  const int prefix = 10, batch = 2, dim = 24;
  auto layouts = HeadLayouts::make(grid, prefix, {{4, 4, 4}, {2, 8, 4}, {16, 2, 2}});
  ASSERT_TRUE(layouts.is_ok());
  const int heads = layouts->heads();
  const int64_t tokens = layouts->tokens(), padded = layouts->padded_tokens();
  const Tensor x = test::random_tensor(dtype, {batch, heads, tokens, dim}, seed);
  const Tensor x32 = x.to(DType::kF32);

  auto tiled = gather_to_tiles(x, *layouts);
  ASSERT_TRUE(tiled.is_ok()) << tiled.status().to_string();
  ASSERT_EQ(tiled->dtype(), DType::kF32);
  ASSERT_EQ(tiled->shape(), (Shape{batch, heads, padded, dim}));
  const float* src = x32.data_as<float>();
  const float* got = tiled->data_as<float>();
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const auto& slots = layouts->head(h).slot_token();
      for (int64_t slot = 0; slot < padded; ++slot) {
        const int32_t token = slot < int64_t(slots.size()) ? slots[slot] : -1;
        for (int d = 0; d < dim; ++d) {
          const float want =
              token < 0 ? 0.0f : src[((int64_t(b) * heads + h) * tokens + token) * dim + d];
          const float have = got[((int64_t(b) * heads + h) * padded + slot) * dim + d];
          ASSERT_EQ(have, want) << "b " << b << " h " << h << " slot " << slot << " d " << d;
        }
      }
    }
  }

  auto back = scatter_from_tiles(*tiled, *layouts);
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  ASSERT_EQ(back->shape(), x32.shape());
  for (int64_t i = 0; i < x32.numel(); ++i) {
    ASSERT_EQ(back->data_as<float>()[i], src[i]) << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, GatherScatterTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(GatherScatterTest, LargeRaggedRoundTrip) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  auto layouts = HeadLayouts::make({21, 30, 52}, 0, {{4, 4, 4}, {1, 8, 8}});
  ASSERT_TRUE(layouts.is_ok());
  const Tensor x = test::random_tensor(DType::kF32, {1, 2, layouts->tokens(), 8}, seed);
  auto tiled = gather_to_tiles(x, *layouts);
  ASSERT_TRUE(tiled.is_ok());
  auto back = scatter_from_tiles(*tiled, *layouts);
  ASSERT_TRUE(back.is_ok());
  EXPECT_EQ(std::memcmp(back->data(), x.data(), x.nbytes()), 0);
}

TEST(GatherScatterTest, RejectsShapeMismatch) {
  auto layouts = HeadLayouts::uniform({5, 7, 9}, 0, 2, {4, 4, 4});
  ASSERT_TRUE(layouts.is_ok());
  const uint64_t seed = fresh_seed();
  const Tensor wrong_tokens = test::random_tensor(DType::kF32, {1, 2, 5 * 7 * 9 + 1, 8}, seed);
  EXPECT_EQ(gather_to_tiles(wrong_tokens, *layouts).status().code(), ErrorCode::kInvalidArgument);
  const Tensor wrong_heads = test::random_tensor(DType::kF32, {1, 3, 5 * 7 * 9, 8}, seed);
  EXPECT_FALSE(gather_to_tiles(wrong_heads, *layouts).is_ok());
  const Tensor rank3 = test::random_tensor(DType::kF32, {2, 5 * 7 * 9, 8}, seed);
  EXPECT_FALSE(gather_to_tiles(rank3, *layouts).is_ok());
  const Tensor not_padded = test::random_tensor(DType::kF32, {1, 2, 5 * 7 * 9, 8}, seed);
  EXPECT_FALSE(scatter_from_tiles(not_padded, *layouts).is_ok());
}

}  // namespace
}  // namespace veda
