#include "veda/tile_layout.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>

#include "veda/thread_pool.hpp"

namespace veda {
namespace {

// "AxBxC" with three positive integers.
Result<std::array<int, 3>> parse_triple(std::string_view text, const char* what) {
  std::array<int, 3> out{};
  std::string_view rest = text;
  for (int i = 0; i < 3; ++i) {
    size_t end = i < 2 ? rest.find('x') : rest.size();
    if (end == std::string_view::npos) break;
    std::string_view part = rest.substr(0, end);
    int value = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (ec != std::errc() || ptr != part.data() + part.size() || part.empty() || value <= 0) {
      return invalid_argument(
          fmt::format("bad {} '{}': expected TxHxW with positive integers", what, text));
    }
    out[i] = value;
    if (i == 2) return out;
    rest = rest.substr(end + 1);
  }
  return invalid_argument(
      fmt::format("bad {} '{}': expected TxHxW with positive integers", what, text));
}

int ceil_div(int a, int b) { return (a + b - 1) / b; }

}  // namespace

std::string Grid::str() const { return fmt::format("{}x{}x{}", t, h, w); }

Result<Grid> token_order_grid(const Grid& grid) {
  if (grid.t <= 0 || grid.h <= 0 || grid.w <= 0)
    return invalid_argument(fmt::format("grid {} must have positive extents", grid.str()));
  if (grid.tokens() > std::numeric_limits<int32_t>::max())
    return invalid_argument(fmt::format("grid {} has {} tokens, more than the int32 token index range",
                                        grid.str(), grid.tokens()));
  return Grid{1, 1, int(grid.tokens())};
}

Result<Grid> Grid::parse(std::string_view text) {
  VEDA_ASSIGN_OR_RETURN(auto v, parse_triple(text, "grid"));
  return Grid{v[0], v[1], v[2]};
}

int TileShape::slots() const {
  if (t <= 0 || h <= 0 || w <= 0) return 0;
  const int64_t tokens = int64_t(t) * h * w;  // 64-bit: huge extents must not wrap into range
  return tokens > 32 && tokens <= 64 ? 64 : tokens > 64 && tokens <= 128 ? 128 : 0;
}

std::string TileShape::str() const { return fmt::format("{}x{}x{}", t, h, w); }

double slot_use(Grid grid, TileShape shape) {
  if (shape.slots() == 0 || grid.t <= 0 || grid.h <= 0 || grid.w <= 0) return 0;
  const int64_t tiles = int64_t(ceil_div(grid.t, shape.t)) * ceil_div(grid.h, shape.h) *
                        ceil_div(grid.w, shape.w);
  return double(grid.tokens()) / (double(tiles) * shape.slots());
}

Result<TileShape> TileShape::parse(std::string_view text) {
  VEDA_ASSIGN_OR_RETURN(auto v, parse_triple(text, "tile shape"));
  return TileShape{v[0], v[1], v[2]};
}

Result<TileLayout> TileLayout::make(Grid grid, int prefix_tokens, TileShape shape) {
  if (grid.t <= 0 || grid.h <= 0 || grid.w <= 0) {
    return invalid_argument(fmt::format("grid {} must have positive extents", grid.str()));
  }
  if (shape.t <= 0 || shape.h <= 0 || shape.w <= 0) {
    return invalid_argument(fmt::format("tile shape {} must have positive extents", shape.str()));
  }
  if (shape.slots() == 0) {
    return invalid_argument(fmt::format(
        "tile shape {} holds {} tokens; supported: 33-64 tokens (64-slot tiles) or 65-128 (128)",
        shape.str(), int64_t(shape.t) * shape.h * shape.w));
  }
  if (prefix_tokens < 0) {
    return invalid_argument(fmt::format("prefix_tokens {} is negative", prefix_tokens));
  }
  const int volume = shape.slots();
  const int64_t total = int64_t(prefix_tokens) + grid.tokens();
  if (total > std::numeric_limits<int32_t>::max()) {  // slot_token holds int32 token ids
    return invalid_argument(fmt::format("{} tokens exceed the int32 token index range", total));
  }

  TileLayout layout;
  layout.grid_ = grid;
  layout.shape_ = shape;
  layout.prefix_tokens_ = prefix_tokens;
  layout.num_prefix_tiles_ = ceil_div(prefix_tokens, volume);
  const int nt = ceil_div(grid.t, shape.t), nh = ceil_div(grid.h, shape.h),
            nw = ceil_div(grid.w, shape.w);
  layout.tiles_per_axis_ = {nt, nh, nw};
  const int num_tiles = layout.num_prefix_tiles_ + nt * nh * nw;
  layout.tile_valid_.assign(num_tiles, 0);
  layout.slot_token_.assign(size_t(num_tiles) * volume, -1);

  for (int tile = 0; tile < layout.num_prefix_tiles_; ++tile) {
    const int first = tile * volume;
    const int count = std::min(volume, prefix_tokens - first);
    layout.tile_valid_[tile] = count;
    int32_t* slots = &layout.slot_token_[size_t(tile) * volume];
    for (int i = 0; i < count; ++i) slots[i] = first + i;
  }
  int tile = layout.num_prefix_tiles_;
  for (int tt = 0; tt < nt; ++tt) {
    for (int th = 0; th < nh; ++th) {
      for (int tw = 0; tw < nw; ++tw, ++tile) {
        const int t0 = tt * shape.t, h0 = th * shape.h, w0 = tw * shape.w;
        const int t1 = std::min(grid.t, t0 + shape.t), h1 = std::min(grid.h, h0 + shape.h),
                  w1 = std::min(grid.w, w0 + shape.w);
        int32_t* slots = &layout.slot_token_[size_t(tile) * volume];
        int n = 0;
        for (int t = t0; t < t1; ++t) {
          for (int h = h0; h < h1; ++h) {
            const int32_t row = prefix_tokens + int32_t((int64_t(t) * grid.h + h) * grid.w);
            for (int w = w0; w < w1; ++w) slots[n++] = row + w;
          }
        }
        layout.tile_valid_[tile] = n;
      }
    }
  }
  return layout;
}

std::array<int, 3> TileLayout::tile_coords(int tile) const {
  if (tile < num_prefix_tiles_ || tile >= num_tiles()) return {-1, -1, -1};
  const int v = tile - num_prefix_tiles_;
  const int nh = tiles_per_axis_[1], nw = tiles_per_axis_[2];
  return {v / (nh * nw), (v / nw) % nh, v % nw};
}

Result<HeadLayouts> HeadLayouts::make(Grid grid, int prefix_tokens,
                                      const std::vector<TileShape>& per_head) {
  if (per_head.empty()) return invalid_argument("HeadLayouts needs at least one head");
  HeadLayouts out;
  out.heads_.reserve(per_head.size());
  for (size_t h = 0; h < per_head.size(); ++h) {
    auto layout = TileLayout::make(grid, prefix_tokens, per_head[h]);
    if (!layout) {
      return Status(layout.status().code(),
                    fmt::format("head {}: {}", h, layout.status().message()));
    }
    if (h > 0 && layout->volume() != out.heads_.front().volume()) {
      return invalid_argument(fmt::format(
          "head {} tile shape {} takes {} slots, head 0 {}: all heads need one slot count", h,
          per_head[h].str(), layout->volume(), out.heads_.front().volume()));
    }
    out.max_tiles_ = std::max(out.max_tiles_, layout->num_tiles());
    out.heads_.push_back(std::move(layout).value());
  }
  out.valid_table_.assign(out.heads_.size() * size_t(out.max_tiles_), 0);
  for (size_t h = 0; h < out.heads_.size(); ++h) {
    const auto& valid = out.heads_[h].tile_valid();
    std::copy(valid.begin(), valid.end(), out.valid_table_.begin() + h * out.max_tiles_);
  }
  return out;
}

Result<HeadLayouts> HeadLayouts::uniform(Grid grid, int prefix_tokens, int heads, TileShape shape) {
  if (heads <= 0) return invalid_argument(fmt::format("heads must be positive, got {}", heads));
  return make(grid, prefix_tokens, std::vector<TileShape>(size_t(heads), shape));
}

void gather_to_tiles(const void* x, DType x_dtype, TokenStrides strides, int64_t batch,
                     int64_t dim, const HeadLayouts& layouts, float* tiled) {
  const int64_t heads = layouts.heads(), padded = layouts.padded_tokens();
  const int volume = layouts.volume(), max_tiles = layouts.max_tiles();
  const size_t elem = dtype_size(x_dtype);
  const auto* src = static_cast<const char*>(x);
  // One work item per (b, h, tile): it writes the tile's `volume` rows, padding included.
  parallel_for(0, batch * heads * max_tiles, [&](int64_t item) {
    const int64_t tile = item % max_tiles, bh = item / max_tiles, b = bh / heads, h = bh % heads;
    const TileLayout& layout = layouts.head(int(h));
    float* tile_dst = tiled + (bh * padded + tile * volume) * dim;
    int valid = 0;
    if (tile < layout.num_tiles()) {
      valid = layout.tile_valid()[tile];
      const int32_t* slots = &layout.slot_token()[size_t(tile) * volume];
      const char* head_src = src + size_t(b * strides.batch + h * strides.head) * elem;
      for (int s = 0; s < valid; ++s) {
        convert_to_f32(head_src + size_t(slots[s] * strides.token) * elem, x_dtype,
                       tile_dst + s * dim, size_t(dim));
      }
    }
    std::memset(tile_dst + valid * dim, 0, sizeof(float) * size_t(volume - valid) * dim);
  });
}

void scatter_from_tiles(const float* tiled, int64_t batch, int64_t dim, const HeadLayouts& layouts,
                        float* x, TokenStrides strides) {
  const int64_t heads = layouts.heads(), padded = layouts.padded_tokens();
  const int volume = layouts.volume(), max_tiles = layouts.max_tiles();
  // Every token sits in exactly one valid slot of each head, so x is fully written.
  parallel_for(0, batch * heads * max_tiles, [&](int64_t item) {
    const int64_t tile = item % max_tiles, bh = item / max_tiles, b = bh / heads, h = bh % heads;
    const TileLayout& layout = layouts.head(int(h));
    if (tile >= layout.num_tiles()) return;
    const int valid = layout.tile_valid()[tile];
    const int32_t* slots = &layout.slot_token()[size_t(tile) * volume];
    const float* tile_src = tiled + (bh * padded + tile * volume) * dim;
    float* head_dst = x + b * strides.batch + h * strides.head;
    for (int s = 0; s < valid; ++s) {
      std::memcpy(head_dst + slots[s] * strides.token, tile_src + s * dim,
                  sizeof(float) * size_t(dim));
    }
  });
}

Result<Tensor> gather_to_tiles(const Tensor& x, const HeadLayouts& layouts) {
  if (x.rank() != 4 || x.dim(1) != layouts.heads() || x.dim(2) != layouts.tokens()) {
    return invalid_argument(fmt::format("gather_to_tiles: x is {}, expected [B, {}, {}, D]",
                                        shape_to_string(x.shape()), layouts.heads(),
                                        layouts.tokens()));
  }
  const int64_t batch = x.dim(0), heads = x.dim(1), tokens = x.dim(2), dim = x.dim(3);
  Tensor out = Tensor::empty(DType::kF32, {batch, heads, layouts.padded_tokens(), dim});
  gather_to_tiles(x.data(), x.dtype(), {heads * tokens * dim, tokens * dim, dim}, batch, dim,
                  layouts, out.data_as<float>());
  return out;
}

Result<Tensor> scatter_from_tiles(const Tensor& x_tiled, const HeadLayouts& layouts) {
  if (x_tiled.rank() != 4 || x_tiled.dim(1) != layouts.heads() ||
      x_tiled.dim(2) != layouts.padded_tokens()) {
    return invalid_argument(fmt::format("scatter_from_tiles: x is {}, expected [B, {}, {}, D]",
                                        shape_to_string(x_tiled.shape()), layouts.heads(),
                                        layouts.padded_tokens()));
  }
  const Tensor tiled = x_tiled.dtype() == DType::kF32 ? x_tiled : x_tiled.to(DType::kF32);
  const int64_t batch = tiled.dim(0), heads = tiled.dim(1), dim = tiled.dim(3);
  const int64_t tokens = layouts.tokens();
  Tensor out = Tensor::empty(DType::kF32, {batch, heads, tokens, dim});
  scatter_from_tiles(tiled.data_as<float>(), batch, dim, layouts, out.data_as<float>(),
                     {heads * tokens * dim, tokens * dim, dim});
  return out;
}

}  // namespace veda
