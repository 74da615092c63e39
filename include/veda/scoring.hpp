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

// The statistics-aware score:
//   logit = scale * ((1 - key_alpha) * qmean.kmean + key_alpha * ub) (+ log(valid keys) if asked)
//   ub    = sum_d max(qmean_d kmax_d, qmean_d kmin_d): the largest logit the pooled query can reach
//           on the key tile's per-channel [kmin, kmax] box, so one strong key is not averaged away.
// Defaults chosen on the development capture (3 heads x 7168 tokens, layer 6) by top-k recall of
// the oracle tile mass at densities 0.05 and 0.1 over tile shapes 4x4x4, 2x4x8, 1x8x8, 16x2x2:
// key_alpha 0.3-0.5 is flat and best (0.4 picked; 1.0, the bound alone, is worse than the mean);
// the log(valid) bias for ragged key tiles lowered recall on the ragged shapes, so it is off;
// a query-extrema bound and a Gaussian key-variance term did not help and were dropped.
struct StatsScoreOptions {
  float key_alpha = 0.4f;       // in [0, 1]; 0 = score_tiles_mean
  bool log_valid_bias = false;  // add log(valid keys) of the key tile
};
Result<Tensor> score_tiles_stats(const TileStats& q, const TileStats& k,
                                 const HeadLayouts& layouts, float scale,
                                 const StatsScoreOptions& options);

// Exact tile mass [B, H, max_tiles, max_tiles] from full attention on tiled q and k (f32):
// for each query tile, the mean over its valid queries of the softmax mass that falls in each key
// tile. Each existing row sums to 1; entries of empty tiles are 0.
Result<Tensor> oracle_tile_mass(const Tensor& q_tiled, const Tensor& k_tiled,
                                const HeadLayouts& layouts, float scale);

// kOracle logits: log of oracle_tile_mass, floored at log(FLT_MIN) for existing tiles (so they stay
// selectable), -inf where the query or key tile is empty.
Result<Tensor> score_tiles_oracle(const Tensor& q_tiled, const Tensor& k_tiled,
                                  const HeadLayouts& layouts, float scale);
// Logits of any method from tiled q and k ([B, H, padded, D] f32); statistics computed inside.
Result<Tensor> score_tiles(ScoreMethod method, const Tensor& q_tiled, const Tensor& k_tiled,
                           const HeadLayouts& layouts, float scale);

}  // namespace veda
