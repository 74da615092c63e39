// The distilled tile estimator: a per-head linear model in logit space over cheap tile statistics
// and a learned prior on the relative tile distance per axis, fitted so that softmax(logits) of a
// query tile's row reproduces the exact tile mass of full attention (cross-entropy).
//
// Features of a (query tile i, key tile j) pair, all in logit units (scaled by softmax scale s):
//   pooled       s * mean_q(i) . mean_k(j)                      (Video Sparse Attention's score)
//   key_upper    s * sum_d max(mean_q_d * max_k_d, mean_q_d * min_k_d)  (bound over the keys)
//   key_lower    s * sum_d min(mean_q_d * max_k_d, mean_q_d * min_k_d)
//   query_upper  s * sum_d max(max_q_d * mean_k_d, min_q_d * mean_k_d)  (bound over the queries)
//   log_valid    log(valid tokens of key tile j)                 (ragged tiles hold less mass)
// plus prefix_bias for prefix (text) key tiles, and for video-video pairs the prior
// distance[axis][bin(|tile_i - tile_j| along axis)], bin 0 (same position) fixed at 0.
// Every feature is a GEMM or a lookup, so the estimator costs little more than mean pooling.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "veda/scoring.hpp"
#include "veda/status.hpp"
#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

inline constexpr int kNumStatFeatures = 5;  // pooled, key_upper, key_lower, query_upper, log_valid
// Tile distances 0..7 each have a bin, then 8-15, 16-31 and >= 32 share one.
inline constexpr int kDistanceBins = 11;
int distance_bin(int tile_distance);

struct EstimatorParams {
  double pooled = 1, key_upper = 0, key_lower = 0, query_upper = 0, log_valid = 1;
  double prefix_bias = 0;
  // [axis t, h, w][bin]; bin 0 is the reference and stays 0.
  std::array<std::array<double, kDistanceBins>, 3> distance{};

  // The parameters the fit moves, in a fixed order (the stat weights, prefix_bias, then the
  // distance bins 1.. of t, h, w).
  static constexpr int kNumFree = kNumStatFeatures + 1 + 3 * (kDistanceBins - 1);
  static constexpr int kQueryUpperIndex = 3;  // query_upper's place in to_vector()
  std::array<double, kNumFree> to_vector() const;
  static EstimatorParams from_vector(const std::array<double, kNumFree>& v);
  // Every value finite.
  bool is_finite() const;
  // A parameter set with every statistic term, a prefix bias and a distance prior in use, for
  // benchmarks: the selection does all the work such a profile asks of it. query_upper doubles
  // the GPU scoring width (FitOptions::query_upper).
  static EstimatorParams every_term(bool query_upper);
};

inline EstimatorParams EstimatorParams::every_term(bool query_upper) {
  EstimatorParams p;
  p.key_upper = 0.4, p.key_lower = -0.05, p.query_upper = query_upper ? 0.1 : 0.0;
  p.prefix_bias = 0.3;
  for (auto& axis : p.distance)
    for (int bin = 1; bin < kDistanceBins; ++bin) axis[size_t(bin)] = -0.1 * bin;
  return p;
}

// Tile logits [B, H, max_tiles, max_tiles] (f32) from tile statistics with one parameter set per
// head; -inf where the query or key tile is empty. Errors on size mismatches.
Result<Tensor> score_tiles_estimated(const TileStats& q, const TileStats& k,
                                     const HeadLayouts& layouts, float scale,
                                     const std::vector<EstimatorParams>& per_head);

struct FitOptions {
  int max_iterations = 60;          // Newton steps
  double tolerance = 1e-9;          // stop when the Newton decrement falls below this
  double ridge = 1e-5;              // L2 pull of every free parameter toward its default
  int max_query_tiles = 256;        // per head and capture; evenly spaced query tiles beyond this
  // Fit query_upper too. Off, it stays 0 and the GPU selection scores half as wide a feature row
  // (no query maxima and minima); on held-out captures it made no difference (README).
  bool query_upper = false;
};

// Training rows for one head: one row per query tile, its features against every existing key
// tile and the exact tile mass as target. Rows from several captures (and tile layouts of the
// same shape) may be added; the fit treats them as one data set.
class EstimatorFitData {
 public:
  // Adds head `head` of batch item `batch`. `mass` is oracle_tile_mass's output for these
  // layouts. `query_filter` (optional, [max_tiles]) keeps only query tiles where it is true.
  Status add_head(const TileStats& q, const TileStats& k, const Tensor& mass,
                  const HeadLayouts& layouts, int batch, int head, float scale,
                  const FitOptions& options, const std::vector<bool>* query_filter = nullptr);
  int64_t rows() const { return int64_t(row_weight_.size()); }
  int64_t pairs() const { return int64_t(target_.size()); }

 private:
  friend struct EstimatorFitAccess;
  std::vector<double> row_weight_;    // valid queries of the row's query tile
  std::vector<int64_t> row_begin_{0};  // pair range of each row
  std::vector<float> target_;          // [pair] exact mass
  std::vector<float> stat_features_;   // [pair][kNumStatFeatures]
  std::vector<uint8_t> prefix_key_;    // [pair] 1 when the key tile is a prefix tile
  std::vector<std::array<int8_t, 3>> distance_bin_;  // [pair] bin per axis, -1 for none
};

struct FitReport {
  EstimatorParams params;
  double initial_loss = 0;  // KL(true mass || softmax(logits)) per query, weighted, at the start
  double final_loss = 0;
  int iterations = 0;
  bool converged = false;
};

// Minimises the valid-query-weighted KL divergence between each row's true tile mass and the
// softmax of its estimated logits by damped Newton steps from `start` (convex: linear model,
// log-sum-exp loss, ridge). Deterministic for a given data set.
Result<FitReport> fit_estimator(const EstimatorFitData& data, const FitOptions& options,
                                const EstimatorParams& start = EstimatorParams{});

}  // namespace veda
