// Tile layout: the map between video tokens in (t, h, w) row-major order (optional prefix tokens
// first) and tile order, per head.
//
// Tile order: prefix tiles first (prefix tokens in order, `volume` per tile, the last one ragged),
// then video tiles in (tile_t, tile_h, tile_w) row-major order. Inside a tile its valid tokens come
// first, in (t, h, w) row-major order, then padding slots up to `volume`, the tile's slot count
// (64 or 128). So a tile is described by its valid-token count alone, and kernels mask slots >=
// tile_valid[tile].
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "veda/status.hpp"
#include "veda/tensor.hpp"

namespace veda {

struct Grid {
  int t = 0, h = 0, w = 0;
  int64_t tokens() const { return int64_t(t) * h * w; }
  std::string str() const;                          // "16x16x28"
  static Result<Grid> parse(std::string_view text);  // "16x16x28"
  bool operator==(const Grid&) const = default;
};

struct TileShape {
  int t = 4, h = 4, w = 4;
  int volume() const { return t * h * w; }  // tokens of a whole tile (valid where slots() > 0)
  // Slots a tile of this shape takes in tile order: 64 for 33-64 tokens, 128 for 65-128, 0 for
  // other counts (unsupported). A shape with fewer tokens than slots pads every tile; that pays
  // where it fits the grid exactly and 64-token shapes leave ragged edges (3x5x4, 60 tokens, tiles
  // 21x30x52 and 21x45x80 with 94% of the slots used, 4x4x4 82%: docs/perf-notes.md).
  int slots() const;
  std::string str() const;                               // "4x4x4"
  static Result<TileShape> parse(std::string_view text);  // "4x4x4"
  bool operator==(const TileShape&) const = default;
};

// Dense attention needs no locality, so it takes the tokens in their own order, in blocks of
// kTokenBlock.volume() (the grid flattened to 1 x 1 x tokens): only the last block is padded.
// 3D tiles pad every ragged edge, and a dense pass pays for the padding squared (18% of the slots
// at 4x4x4 on 21x45x80: 1.49x the work).
inline constexpr TileShape kTokenBlock{1, 1, 128};
// The grid flattened to 1 x 1 x tokens; an error past the int32 token range.
Result<Grid> token_order_grid(const Grid& grid);

inline constexpr int kDefaultTileVolume = 64;

// The share of slots that hold tokens when `shape` tiles `grid` (no prefix): 1 where the shape
// divides the grid and fills its slots; 0 for a shape without slots or an empty grid. At one tile
// density the attention work grows as 1 / slot_use^2.
double slot_use(Grid grid, TileShape shape);

// One head's layout.
class TileLayout {
 public:
  // Errors: empty grid, non-positive extents, a shape without slots (TileShape::slots), negative
  // prefix.
  static Result<TileLayout> make(Grid grid, int prefix_tokens, TileShape shape);

  Grid grid() const { return grid_; }
  TileShape shape() const { return shape_; }
  int prefix_tokens() const { return prefix_tokens_; }
  int volume() const { return shape_.slots(); }  // slots per tile
  int num_prefix_tiles() const { return num_prefix_tiles_; }
  int num_tiles() const { return int(tile_valid_.size()); }
  std::array<int, 3> tiles_per_axis() const { return tiles_per_axis_; }  // video tiles along t,h,w
  int64_t tokens() const { return prefix_tokens_ + grid_.tokens(); }
  int64_t padded_tokens() const { return int64_t(num_tiles()) * volume(); }

  const std::vector<int32_t>& tile_valid() const { return tile_valid_; }  // [num_tiles]
  const std::vector<int32_t>& slot_token() const { return slot_token_; }  // [padded], -1 = pad
  bool is_prefix_tile(int tile) const { return tile < num_prefix_tiles_; }
  // Position of a video tile in the tile grid (t, h, w); {-1,-1,-1} for prefix tiles.
  std::array<int, 3> tile_coords(int tile) const;

 private:
  Grid grid_;
  TileShape shape_;
  int prefix_tokens_ = 0;
  int num_prefix_tiles_ = 0;
  std::array<int, 3> tiles_per_axis_{};
  std::vector<int32_t> tile_valid_;
  std::vector<int32_t> slot_token_;
};

// The layouts of every head of one attention call. Heads may use different tile shapes of one
// slot count, so their tile counts can differ: tensors in tile order are sized by max_tiles(), and
// a head's tiles beyond its own count are empty (valid 0).
class HeadLayouts {
 public:
  // One shape per head (all with the same slot count).
  static Result<HeadLayouts> make(Grid grid, int prefix_tokens,
                                  const std::vector<TileShape>& per_head);
  static Result<HeadLayouts> uniform(Grid grid, int prefix_tokens, int heads, TileShape shape);

  int heads() const { return int(heads_.size()); }
  const TileLayout& head(int h) const { return heads_.at(h); }
  int volume() const { return heads_.front().volume(); }
  int max_tiles() const { return max_tiles_; }
  int64_t tokens() const { return heads_.front().tokens(); }
  int64_t padded_tokens() const { return int64_t(max_tiles_) * volume(); }
  // [heads][max_tiles] valid-token counts, 0 past a head's own tiles (the kernels' input).
  const std::vector<int32_t>& valid_table() const { return valid_table_; }
  int32_t valid(int h, int tile) const { return valid_table_[size_t(h) * max_tiles_ + tile]; }

 private:
  std::vector<TileLayout> heads_;
  int max_tiles_ = 0;
  std::vector<int32_t> valid_table_;
};

// x [B, H, N, D] in token order (any dtype) -> f32 [B, H, padded_tokens, D] in tile order,
// padding slots zero. Errors on shape mismatch.
Result<Tensor> gather_to_tiles(const Tensor& x, const HeadLayouts& layouts);
// x [B, H, padded_tokens, D] (f32) in tile order -> f32 [B, H, N, D] in token order.
Result<Tensor> scatter_from_tiles(const Tensor& x_tiled, const HeadLayouts& layouts);

// Where element (b, h, token, d) of a token-order tensor lives: b * batch + h * head +
// token * token + d (in elements). [B, H, N, D] is {H*N*D, N*D, D}; token-major [B, N, H*D] is
// {N*H*D, D, H*D}.
struct TokenStrides {
  int64_t batch = 0, head = 0, token = 0;
};
// The unchecked cores of the two above, for any token-order layout: `tiled` is contiguous f32
// [batch, heads, padded_tokens, dim]; x is `x_dtype` (gather) or f32 (scatter).
void gather_to_tiles(const void* x, DType x_dtype, TokenStrides strides, int64_t batch,
                     int64_t dim, const HeadLayouts& layouts, float* tiled);
void scatter_from_tiles(const float* tiled, int64_t batch, int64_t dim, const HeadLayouts& layouts,
                        float* x, TokenStrides strides);

}  // namespace veda
