#include "veda/scoring.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "veda/gemm.hpp"
#include "veda/thread_pool.hpp"

namespace veda {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) for x <= 0 (callers subtract the row max): Cody-Waite reduction and a degree-6
// polynomial, ~2e-7 relative error, branch-free so the loops over a tile vectorise.
// Below -87 (and for -inf, the padding marker) the result is exactly 0.
inline float exp_nonpositive(float x_in) {
  const float x = std::max(x_in, -87.0f);  // keeps 2^n a normal float
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;     // round to nearest
  const float y = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // |y| <= ln2 / 2
  float p = 1.0f / 720.0f;
  p = p * y + 1.0f / 120.0f;
  p = p * y + 1.0f / 24.0f;
  p = p * y + 1.0f / 6.0f;
  p = p * y + 0.5f;
  p = p * y + 1.0f;
  p = p * y + 1.0f;
  const float result = p * std::bit_cast<float>((int32_t(n) + 127) << 23);
  return x_in >= -87.0f ? result : 0.0f;
}

constexpr int kLanes = 16;  // divides every tile volume

Status check_tiled(const Tensor& x, const HeadLayouts& layouts, const char* what) {
  if (x.dtype() != DType::kF32 || x.rank() != 4 || x.dim(1) != layouts.heads() ||
      x.dim(2) != layouts.padded_tokens() || x.dim(3) <= 0) {
    return invalid_argument(fmt::format("{} is {} {}, expected F32 [B, {}, {}, D]", what,
                                        dtype_name(x.dtype()), shape_to_string(x.shape()),
                                        layouts.heads(), layouts.padded_tokens()));
  }
  return Status::ok();
}

Status check_stats(const TileStats& q, const TileStats& k, const HeadLayouts& layouts) {
  const Shape& shape = q.mean.shape();
  if (shape.size() != 4 || shape[1] != layouts.heads() || shape[2] != layouts.max_tiles()) {
    return invalid_argument(fmt::format("tile stats are {}, expected [B, {}, {}, D]",
                                        shape_to_string(shape), layouts.heads(),
                                        layouts.max_tiles()));
  }
  for (const Tensor* t : {&q.mean, &q.max, &q.min, &k.mean, &k.max, &k.min}) {
    if (t->dtype() != DType::kF32 || t->shape() != shape) {
      return invalid_argument(fmt::format("tile stats disagree: {} {} vs F32 {}",
                                          dtype_name(t->dtype()), shape_to_string(t->shape()),
                                          shape_to_string(shape)));
    }
  }
  return Status::ok();
}

// Runs fn(b, h) for every head. With fewer heads than threads, heads run one after another and
// `parallel_inside` tells fn to spread its own work over the pool instead.
template <class Fn>
void for_each_head(int64_t batch, int64_t heads, Fn&& fn) {
  const int64_t items = batch * heads;
  if (items >= ThreadPool::global().size()) {
    parallel_for(0, items, [&](int64_t i) { fn(i / heads, i % heads, false); });
  } else {
    for (int64_t i = 0; i < items; ++i) fn(i / heads, i % heads, true);
  }
}

// A linear tile scorer: logit[q][k] = sum over blocks of weight * <fq(q), fk(k)> + bias_k, with
// per-channel features of the tile statistics. Every statistics score is one of these, so each
// costs a single GEMM of width blocks * D.
enum class QueryFeature { kMean, kMeanPos, kMeanNeg };
enum class KeyFeature { kMean, kMax, kMin };
struct FeatureBlock {
  QueryFeature query;
  KeyFeature key;
  float weight;
};

void query_feature(QueryFeature f, const float* mean, int64_t d, float weight, float* out) {
  switch (f) {
    case QueryFeature::kMean:
      for (int64_t i = 0; i < d; ++i) out[i] = weight * mean[i];
      break;
    case QueryFeature::kMeanPos:
      for (int64_t i = 0; i < d; ++i) out[i] = weight * std::max(mean[i], 0.0f);
      break;
    case QueryFeature::kMeanNeg:
      for (int64_t i = 0; i < d; ++i) out[i] = weight * std::min(mean[i], 0.0f);
      break;
  }
}

void key_feature(KeyFeature f, const float* mean, const float* max, const float* min, int64_t d,
                 float* out) {
  switch (f) {
    case KeyFeature::kMean:
      std::copy(mean, mean + d, out);
      break;
    case KeyFeature::kMax:
      std::copy(max, max + d, out);
      break;
    case KeyFeature::kMin:
      std::copy(min, min + d, out);
      break;
  }
}

Result<Tensor> score_with_features(const TileStats& q, const TileStats& k,
                                   const HeadLayouts& layouts,
                                   const std::vector<FeatureBlock>& blocks, bool log_valid_bias) {
  VEDA_RETURN_IF_ERROR(check_stats(q, k, layouts));
  const int64_t batch = q.mean.dim(0), heads = q.mean.dim(1), dim = q.mean.dim(3);
  const int64_t tiles = layouts.max_tiles();
  const int64_t width = int64_t(blocks.size()) * dim;
  Tensor logits = Tensor::empty(DType::kF32, {batch, heads, tiles, tiles});
  float* out = logits.data_as<float>();

  for_each_head(batch, heads, [&](int64_t b, int64_t h, bool parallel_inside) {
    const int64_t n = layouts.head(int(h)).num_tiles();
    const int64_t stat_offset = (b * heads + h) * tiles * dim;
    std::vector<float> qa(size_t(n * width)), kb(size_t(n * width));
    for (int64_t t = 0; t < n; ++t) {
      const int64_t o = stat_offset + t * dim;
      for (size_t i = 0; i < blocks.size(); ++i) {
        query_feature(blocks[i].query, q.mean.data_as<float>() + o, dim, blocks[i].weight,
                      &qa[t * width + int64_t(i) * dim]);
        key_feature(blocks[i].key, k.mean.data_as<float>() + o, k.max.data_as<float>() + o,
                    k.min.data_as<float>() + o, dim, &kb[t * width + int64_t(i) * dim]);
      }
    }
    float* head_out = out + (b * heads + h) * tiles * tiles;
    auto gemm = parallel_inside ? gemm_f32_parallel : gemm_f32;
    gemm(false, true, n, n, width, 1.0f, qa.data(), width, kb.data(), width, 0.0f, head_out, tiles);
    std::vector<float> bias(size_t(n), 0.0f);
    if (log_valid_bias) {
      for (int64_t j = 0; j < n; ++j) bias[j] = std::log(float(layouts.valid(int(h), int(j))));
    }
    for (int64_t i = 0; i < tiles; ++i) {
      float* row = head_out + i * tiles;
      if (i >= n) {
        std::fill(row, row + tiles, kNegInf);
        continue;
      }
      if (log_valid_bias) {
        for (int64_t j = 0; j < n; ++j) row[j] += bias[j];
      }
      std::fill(row + n, row + tiles, kNegInf);
    }
  });
  return logits;
}

}  // namespace

Result<TileStats> compute_tile_stats(const Tensor& x_tiled, const HeadLayouts& layouts) {
  VEDA_RETURN_IF_ERROR(check_tiled(x_tiled, layouts, "compute_tile_stats: x"));
  const int64_t batch = x_tiled.dim(0), heads = x_tiled.dim(1), dim = x_tiled.dim(3);
  const int64_t tiles = layouts.max_tiles(), volume = layouts.volume();
  const int64_t padded = layouts.padded_tokens();
  TileStats stats{Tensor::empty(DType::kF32, {batch, heads, tiles, dim}),
                  Tensor::empty(DType::kF32, {batch, heads, tiles, dim}),
                  Tensor::empty(DType::kF32, {batch, heads, tiles, dim})};
  const float* x = x_tiled.data_as<float>();
  float* mean = stats.mean.data_as<float>();
  float* max = stats.max.data_as<float>();
  float* min = stats.min.data_as<float>();

  parallel_for(
      0, batch * heads * tiles,
      [&](int64_t item) {
        const int64_t tile = item % tiles, bh = item / tiles, h = bh % heads;
        const int valid = layouts.valid(int(h), int(tile));
        float* mean_row = mean + item * dim;
        float* max_row = max + item * dim;
        float* min_row = min + item * dim;
        if (valid == 0) {
          std::fill(mean_row, mean_row + dim, 0.0f);
          std::fill(max_row, max_row + dim, 0.0f);
          std::fill(min_row, min_row + dim, 0.0f);
          return;
        }
        const float* rows = x + (bh * padded + tile * volume) * dim;
        std::copy(rows, rows + dim, mean_row);
        std::copy(rows, rows + dim, max_row);
        std::copy(rows, rows + dim, min_row);
        for (int s = 1; s < valid; ++s) {
          const float* r = rows + s * dim;
          for (int64_t d = 0; d < dim; ++d) {
            mean_row[d] += r[d];
            max_row[d] = std::max(max_row[d], r[d]);
            min_row[d] = std::min(min_row[d], r[d]);
          }
        }
        const float inv = 1.0f / float(valid);
        for (int64_t d = 0; d < dim; ++d) mean_row[d] *= inv;
      },
      16);
  return stats;
}

Result<ScoreMethod> parse_score_method(std::string_view name) {
  if (name == "mean") return ScoreMethod::kMean;
  if (name == "stats") return ScoreMethod::kStats;
  if (name == "oracle") return ScoreMethod::kOracle;
  return invalid_argument(
      fmt::format("unknown score method '{}': expected mean, stats or oracle", name));
}

const char* score_method_name(ScoreMethod m) {
  switch (m) {
    case ScoreMethod::kMean:
      return "mean";
    case ScoreMethod::kStats:
      return "stats";
    case ScoreMethod::kOracle:
      return "oracle";
  }
  return "unknown";
}

Result<Tensor> score_tiles_mean(const TileStats& q, const TileStats& k, const HeadLayouts& layouts,
                                float scale) {
  return score_with_features(q, k, layouts, {{QueryFeature::kMean, KeyFeature::kMean, scale}},
                             false);
}

Result<Tensor> score_tiles_stats(const TileStats& q, const TileStats& k, const HeadLayouts& layouts,
                                 float scale) {
  return score_tiles_stats(q, k, layouts, scale, StatsScoreOptions{});
}

Result<Tensor> score_tiles_stats(const TileStats& q, const TileStats& k, const HeadLayouts& layouts,
                                 float scale, const StatsScoreOptions& options) {
  // ub = sum_d max(qmean_d kmax_d, qmean_d kmin_d) is the largest logit the pooled query reaches
  // on the key tile's per-channel box; it splits into qmean+ . kmax + qmean- . kmin, so the blend
  // (1 - alpha) * mean + alpha * ub is one GEMM over [mean | + | -] x [mean | max | min] features.
  if (!(options.key_alpha >= 0.0f && options.key_alpha <= 1.0f)) {
    return invalid_argument(
        fmt::format("score_tiles_stats: key_alpha {} is not in [0, 1]", options.key_alpha));
  }
  std::vector<FeatureBlock> blocks;
  const float alpha = options.key_alpha;
  blocks.push_back({QueryFeature::kMean, KeyFeature::kMean, scale * (1.0f - alpha)});
  if (alpha != 0.0f) {
    blocks.push_back({QueryFeature::kMeanPos, KeyFeature::kMax, scale * alpha});
    blocks.push_back({QueryFeature::kMeanNeg, KeyFeature::kMin, scale * alpha});
  }
  return score_with_features(q, k, layouts, blocks, options.log_valid_bias);
}

Result<Tensor> oracle_tile_mass(const Tensor& q_tiled, const Tensor& k_tiled,
                                const HeadLayouts& layouts, float scale) {
  VEDA_RETURN_IF_ERROR(check_tiled(q_tiled, layouts, "oracle_tile_mass: q"));
  VEDA_RETURN_IF_ERROR(check_tiled(k_tiled, layouts, "oracle_tile_mass: k"));
  if (q_tiled.shape() != k_tiled.shape()) {
    return invalid_argument(fmt::format("oracle_tile_mass: q {} and k {} differ",
                                        shape_to_string(q_tiled.shape()),
                                        shape_to_string(k_tiled.shape())));
  }
  if (!std::isfinite(scale)) return invalid_argument("oracle_tile_mass: scale is not finite");
  VEDA_RETURN_IF_ERROR(q_tiled.check_finite("oracle_tile_mass: q"));
  VEDA_RETURN_IF_ERROR(k_tiled.check_finite("oracle_tile_mass: k"));

  const int64_t batch = q_tiled.dim(0), heads = q_tiled.dim(1), dim = q_tiled.dim(3);
  const int64_t tiles = layouts.max_tiles(), volume = layouts.volume();
  const int64_t padded = layouts.padded_tokens();
  Tensor mass = Tensor::zeros(DType::kF32, {batch, heads, tiles, tiles});
  const float* q = q_tiled.data_as<float>();
  const float* k = k_tiled.data_as<float>();
  float* out = mass.data_as<float>();

  // One work item per (b, h, query tile): logits of its valid queries against every key of the
  // head (one GEMM), then a stable softmax per query row, summed per key tile. Items are handed
  // out in chunks that own their scratch, so no buffer outlives the call.
  const int64_t items = batch * heads * tiles;
  const int64_t chunk = std::max<int64_t>(1, items / (8 * ThreadPool::global().size()));
  parallel_for(0, (items + chunk - 1) / chunk, [&](int64_t chunk_index) {
    std::vector<float> logits, tile_sum;
    std::vector<double> acc;
    const int64_t first = chunk_index * chunk, last = std::min(items, first + chunk);
    for (int64_t item = first; item < last; ++item) {
      const int64_t qt = item % tiles, bh = item / tiles, h = bh % heads;
      const int q_valid = layouts.valid(int(h), int(qt));
      if (q_valid == 0) continue;
      const int64_t nk_tiles = layouts.head(int(h)).num_tiles();
      const int64_t nk = nk_tiles * volume;
      const int32_t* k_valid = &layouts.valid_table()[size_t(h) * tiles];
      logits.resize(size_t(q_valid * nk));
      tile_sum.resize(size_t(nk_tiles));
      acc.assign(size_t(nk_tiles), 0.0);

      gemm_f32(false, true, q_valid, nk, dim, scale, q + (bh * padded + qt * volume) * dim, dim,
               k + bh * padded * dim, dim, 0.0f, logits.data(), nk);

      // Padding keys get -inf so that every key tile is a fixed-width run of `volume` logits.
      for (int64_t j = 0; j < nk_tiles; ++j) {
        if (k_valid[j] == volume) continue;
        for (int r = 0; r < q_valid; ++r) {
          float* seg = logits.data() + size_t(r) * nk + j * volume;
          std::fill(seg + k_valid[j], seg + volume, kNegInf);
        }
      }
      for (int r = 0; r < q_valid; ++r) {
        const float* row = logits.data() + size_t(r) * nk;
        // Fixed-width lanes: without -ffast-math only this form of a float reduction vectorises.
        float lanes[kLanes];
        std::fill(lanes, lanes + kLanes, kNegInf);
        for (int64_t s = 0; s < nk; s += kLanes) {
          for (int i = 0; i < kLanes; ++i) lanes[i] = std::max(lanes[i], row[s + i]);
        }
        const float row_max = *std::max_element(lanes, lanes + kLanes);
        float total = 0.0f;
        for (int64_t j = 0; j < nk_tiles; ++j) {
          const float* seg = row + j * volume;
          std::fill(lanes, lanes + kLanes, 0.0f);
          for (int s = 0; s < volume; s += kLanes) {
            for (int i = 0; i < kLanes; ++i) lanes[i] += exp_nonpositive(seg[s + i] - row_max);
          }
          float sum = 0.0f;
          for (int i = 0; i < kLanes; ++i) sum += lanes[i];
          tile_sum[j] = sum;
          total += sum;
        }
        const double inv_total = 1.0 / double(total);  // total >= 1: the max key contributes 1
        for (int64_t j = 0; j < nk_tiles; ++j) acc[j] += double(tile_sum[j]) * inv_total;
      }
      float* out_row = out + item * tiles;
      for (int64_t j = 0; j < nk_tiles; ++j) out_row[j] = float(acc[j] / q_valid);
    }
  });
  return mass;
}

Result<Tensor> score_tiles_oracle(const Tensor& q_tiled, const Tensor& k_tiled,
                                  const HeadLayouts& layouts, float scale) {
  VEDA_ASSIGN_OR_RETURN(Tensor mass, oracle_tile_mass(q_tiled, k_tiled, layouts, scale));
  float* m = mass.data_as<float>();
  const int64_t rows = mass.numel() / layouts.max_tiles();
  const int64_t tiles = layouts.max_tiles(), heads = layouts.heads();
  parallel_for(0, rows, [&](int64_t r) {
    const int64_t qt = r % tiles, h = (r / tiles) % heads;
    const bool q_exists = layouts.valid(int(h), int(qt)) > 0;
    float* row = m + r * tiles;
    for (int64_t j = 0; j < tiles; ++j) {
      // Existing tiles whose mass underflowed stay finite (selectable, ranked last).
      row[j] = q_exists && layouts.valid(int(h), int(j)) > 0
                   ? std::log(std::max(row[j], std::numeric_limits<float>::min()))
                   : kNegInf;
    }
  });
  return mass;
}

Result<Tensor> score_tiles(ScoreMethod method, const Tensor& q_tiled, const Tensor& k_tiled,
                           const HeadLayouts& layouts, float scale) {
  if (method == ScoreMethod::kOracle) return score_tiles_oracle(q_tiled, k_tiled, layouts, scale);
  VEDA_ASSIGN_OR_RETURN(TileStats q_stats, compute_tile_stats(q_tiled, layouts));
  VEDA_ASSIGN_OR_RETURN(TileStats k_stats, compute_tile_stats(k_tiled, layouts));
  if (method == ScoreMethod::kMean) return score_tiles_mean(q_stats, k_stats, layouts, scale);
  return score_tiles_stats(q_stats, k_stats, layouts, scale);
}

}  // namespace veda
