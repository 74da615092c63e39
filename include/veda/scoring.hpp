// Tile statistics and tile scores.
#pragma once
#include <string_view>

#include "veda/status.hpp"
#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

// Per (batch, head, tile) statistics over the tile's valid tokens; each f32 [B, H, max_tiles, D].
// Rows of empty tiles are zero.
struct TileStats {
  Tensor mean, max, min;
};
Result<TileStats> compute_tile_stats(const Tensor& x_tiled, const HeadLayouts& layouts);

enum class ScoreMethod {
  kMean,    // pooled q . pooled k * scale (Video Sparse Attention)
  kStats,   // statistics-aware: uses the per-channel extrema so a single strong key is not averaged away
  kOracle,  // log of the exact tile mass from full attention
};
Result<ScoreMethod> parse_score_method(std::string_view name);  // "mean", "stats", "oracle"
const char* score_method_name(ScoreMethod m);

// Tile logits [B, H, max_tiles, max_tiles] (f32); -inf where the query or key tile is empty.
Result<Tensor> score_tiles_mean(const TileStats& q, const TileStats& k, const HeadLayouts& layouts,
                                float scale);
Result<Tensor> score_tiles_stats(const TileStats& q, const TileStats& k,
                                 const HeadLayouts& layouts, float scale);

// Exact tile mass [B, H, max_tiles, max_tiles] from full attention on tiled q and k (f32):
// for each query tile, the mean over its valid queries of the softmax mass that falls in each key
// tile. Each existing row sums to 1; entries of empty tiles are 0.
Result<Tensor> oracle_tile_mass(const Tensor& q_tiled, const Tensor& k_tiled,
                                const HeadLayouts& layouts, float scale);

}  // namespace veda
