#include "veda/estimator.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "veda/gemm.hpp"
#include "veda/thread_pool.hpp"

namespace veda {

int distance_bin(int tile_distance) {
  int d = std::abs(tile_distance);
  if (d < 8) return d;
  if (d < 16) return 8;
  if (d < 32) return 9;
  return 10;
}

std::array<double, EstimatorParams::kNumFree> EstimatorParams::to_vector() const {
  std::array<double, kNumFree> v{};
  v[0] = pooled, v[1] = key_upper, v[2] = key_lower, v[3] = query_upper, v[4] = log_valid;
  v[5] = prefix_bias;
  for (int axis = 0; axis < 3; ++axis)
    for (int bin = 1; bin < kDistanceBins; ++bin)
      v[6 + axis * (kDistanceBins - 1) + bin - 1] = distance[axis][bin];
  return v;
}

EstimatorParams EstimatorParams::from_vector(const std::array<double, kNumFree>& v) {
  EstimatorParams p;
  p.pooled = v[0], p.key_upper = v[1], p.key_lower = v[2], p.query_upper = v[3], p.log_valid = v[4];
  p.prefix_bias = v[5];
  for (int axis = 0; axis < 3; ++axis) {
    p.distance[axis][0] = 0;
    for (int bin = 1; bin < kDistanceBins; ++bin)
      p.distance[axis][bin] = v[6 + axis * (kDistanceBins - 1) + bin - 1];
  }
  return p;
}

bool EstimatorParams::is_finite() const {
  for (double x : to_vector())
    if (!std::isfinite(x)) return false;
  return true;
}

namespace {

constexpr int kFree = EstimatorParams::kNumFree;
constexpr int kPrefixIndex = kNumStatFeatures;
int distance_param_index(int axis, int bin) { return kNumStatFeatures + 1 + axis * (kDistanceBins - 1) + bin - 1; }

Status check_stats(const TileStats& s, const HeadLayouts& layouts, const char* what) {
  for (const Tensor* t : {&s.mean, &s.max, &s.min}) {
    if (!t->defined() || t->dtype() != DType::kF32 || t->rank() != 4 ||
        t->dim(1) != layouts.heads() || t->dim(2) != layouts.max_tiles() ||
        t->dim(0) != s.mean.dim(0) || t->dim(3) != s.mean.dim(3)) {
      return invalid_argument(fmt::format(
          "{} tile statistics must be f32 [B, {}, {}, D] (same for mean/max/min), got {}", what,
          layouts.heads(), layouts.max_tiles(), t->defined() ? shape_to_string(t->shape()) : "none"));
    }
  }
  return Status::ok();
}

// The four GEMM-computed feature planes of one (batch, head), each [max_tiles][max_tiles].
struct FeaturePlanes {
  std::vector<float> pooled, key_upper, key_lower, query_upper;
};

FeaturePlanes feature_planes(const TileStats& q, const TileStats& k, int64_t max_tiles,
                             int64_t batch, int64_t head, int nq, int nk, float scale) {
  const int64_t heads = q.mean.dim(1), dim = q.mean.dim(3);
  const size_t offset = size_t((batch * heads + head) * max_tiles * dim);
  const float* q_mean = q.mean.data_as<float>() + offset;
  const float* q_max = q.max.data_as<float>() + offset;
  const float* q_min = q.min.data_as<float>() + offset;
  const float* k_mean = k.mean.data_as<float>() + offset;
  const float* k_max = k.max.data_as<float>() + offset;
  const float* k_min = k.min.data_as<float>() + offset;

  // sum_d max(a_d * hi_d, a_d * lo_d) = [a+ | a-] . [hi | lo], so each bound is one GEMM of depth 2D.
  auto split_signs = [dim](const float* x, int rows) {
    std::vector<float> out(size_t(rows) * 2 * dim);
    for (int r = 0; r < rows; ++r)
      for (int64_t d = 0; d < dim; ++d) {
        float v = x[r * dim + d];
        out[(r * 2) * dim + d] = std::max(v, 0.0f);
        out[(r * 2 + 1) * dim + d] = std::min(v, 0.0f);
      }
    return out;
  };
  auto concat = [dim](const float* a, const float* b, int rows) {
    std::vector<float> out(size_t(rows) * 2 * dim);
    for (int r = 0; r < rows; ++r) {
      std::copy(a + r * dim, a + (r + 1) * dim, out.begin() + (r * 2) * dim);
      std::copy(b + r * dim, b + (r + 1) * dim, out.begin() + (r * 2 + 1) * dim);
    }
    return out;
  };

  FeaturePlanes p;
  const size_t n = size_t(nq) * nk;
  p.pooled.resize(n), p.key_upper.resize(n), p.key_lower.resize(n), p.query_upper.resize(n);
  gemm_f32(false, true, nq, nk, dim, scale, q_mean, dim, k_mean, dim, 0, p.pooled.data(), nk);
  std::vector<float> q_signs = split_signs(q_mean, nq);
  std::vector<float> k_hi_lo = concat(k_max, k_min, nk), k_lo_hi = concat(k_min, k_max, nk);
  gemm_f32(false, true, nq, nk, 2 * dim, scale, q_signs.data(), 2 * dim, k_hi_lo.data(), 2 * dim, 0,
           p.key_upper.data(), nk);
  gemm_f32(false, true, nq, nk, 2 * dim, scale, q_signs.data(), 2 * dim, k_lo_hi.data(), 2 * dim, 0,
           p.key_lower.data(), nk);
  std::vector<float> q_hi_lo = concat(q_max, q_min, nq), k_signs = split_signs(k_mean, nk);
  gemm_f32(false, true, nq, nk, 2 * dim, scale, q_hi_lo.data(), 2 * dim, k_signs.data(), 2 * dim, 0,
           p.query_upper.data(), nk);
  return p;
}

// Bin per axis between two tiles; -1 on every axis when either is a prefix tile.
std::array<int8_t, 3> pair_bins(const TileLayout& layout, int q_tile, int k_tile) {
  if (layout.is_prefix_tile(q_tile) || layout.is_prefix_tile(k_tile)) return {-1, -1, -1};
  auto a = layout.tile_coords(q_tile), b = layout.tile_coords(k_tile);
  return {int8_t(distance_bin(a[0] - b[0])), int8_t(distance_bin(a[1] - b[1])),
          int8_t(distance_bin(a[2] - b[2]))};
}

}  // namespace

Result<Tensor> score_tiles_estimated(const TileStats& q, const TileStats& k,
                                     const HeadLayouts& layouts, float scale,
                                     const std::vector<EstimatorParams>& per_head) {
  VEDA_RETURN_IF_ERROR(check_stats(q, layouts, "query"));
  VEDA_RETURN_IF_ERROR(check_stats(k, layouts, "key"));
  if (q.mean.shape() != k.mean.shape())
    return invalid_argument("query and key tile statistics differ in shape");
  if (int(per_head.size()) != layouts.heads())
    return invalid_argument(fmt::format("estimator has {} parameter sets for {} heads",
                                        per_head.size(), layouts.heads()));
  for (const EstimatorParams& p : per_head)
    if (!p.is_finite()) return invalid_argument("estimator parameters must be finite");

  const int64_t batch = q.mean.dim(0), heads = layouts.heads(), max_tiles = layouts.max_tiles();
  Tensor logits = Tensor::empty(DType::kF32, {batch, heads, max_tiles, max_tiles});
  float* out = logits.data_as<float>();
  parallel_for(0, batch * heads, [&](int64_t bh) {
    const int64_t b = bh / heads, h = bh % heads;
    const TileLayout& layout = layouts.head(int(h));
    const EstimatorParams& p = per_head[h];
    const int n = layout.num_tiles();
    FeaturePlanes planes = feature_planes(q, k, max_tiles, b, h, n, n, scale);
    float* head_out = out + size_t(bh) * max_tiles * max_tiles;
    std::fill(head_out, head_out + max_tiles * max_tiles, -std::numeric_limits<float>::infinity());
    const auto& valid = layout.tile_valid();
    for (int i = 0; i < n; ++i) {
      if (valid[i] == 0) continue;
      for (int j = 0; j < n; ++j) {
        if (valid[j] == 0) continue;
        const size_t ij = size_t(i) * n + j;
        double z = p.pooled * planes.pooled[ij] + p.key_upper * planes.key_upper[ij] +
                   p.key_lower * planes.key_lower[ij] + p.query_upper * planes.query_upper[ij] +
                   p.log_valid * std::log(double(valid[j]));
        if (layout.is_prefix_tile(j)) {
          z += p.prefix_bias;
        } else {
          auto bins = pair_bins(layout, i, j);
          if (bins[0] >= 0)
            for (int axis = 0; axis < 3; ++axis) z += p.distance[axis][bins[axis]];
        }
        head_out[size_t(i) * max_tiles + j] = float(z);
      }
    }
  });
  return logits;
}

Status EstimatorFitData::add_head(const TileStats& q, const TileStats& k, const Tensor& mass,
                                  const HeadLayouts& layouts, int batch, int head, float scale,
                                  const FitOptions& options, const std::vector<bool>* query_filter) {
  VEDA_RETURN_IF_ERROR(check_stats(q, layouts, "query"));
  VEDA_RETURN_IF_ERROR(check_stats(k, layouts, "key"));
  const int64_t max_tiles = layouts.max_tiles();
  if (batch < 0 || batch >= q.mean.dim(0) || head < 0 || head >= layouts.heads())
    return invalid_argument(fmt::format("batch {} / head {} out of range", batch, head));
  if (mass.dtype() != DType::kF32 ||
      mass.shape() != Shape{q.mean.dim(0), layouts.heads(), max_tiles, max_tiles})
    return invalid_argument("tile mass must be f32 [B, H, max_tiles, max_tiles], got " +
                            shape_to_string(mass.shape()));
  if (query_filter && int64_t(query_filter->size()) != max_tiles)
    return invalid_argument("query filter must have one entry per tile");
  if (options.max_query_tiles <= 0) return invalid_argument("max_query_tiles must be positive");

  const TileLayout& layout = layouts.head(head);
  const int n = layout.num_tiles();
  const auto& valid = layout.tile_valid();
  std::vector<int> rows;
  for (int i = 0; i < n; ++i)
    if (valid[i] > 0 && (!query_filter || (*query_filter)[i])) rows.push_back(i);
  if (int(rows.size()) > options.max_query_tiles) {  // evenly spaced, deterministic
    std::vector<int> kept;
    for (int m = 0; m < options.max_query_tiles; ++m)
      kept.push_back(rows[size_t(int64_t(m) * int64_t(rows.size()) / options.max_query_tiles)]);
    rows = std::move(kept);
  }

  FeaturePlanes planes = feature_planes(q, k, max_tiles, batch, head, n, n, scale);
  const float* head_mass = mass.data_as<float>() + size_t((int64_t(batch) * layouts.heads() + head) * max_tiles * max_tiles);
  for (int i : rows) {
    for (int j = 0; j < n; ++j) {
      if (valid[j] == 0) continue;
      const size_t ij = size_t(i) * n + j;
      const float m = head_mass[size_t(i) * max_tiles + j];
      if (!std::isfinite(m) || m < 0) return numeric_error("tile mass has a negative or non-finite entry");
      target_.push_back(m);
      stat_features_.insert(stat_features_.end(),
                            {planes.pooled[ij], planes.key_upper[ij], planes.key_lower[ij],
                             planes.query_upper[ij], std::log(float(valid[j]))});
      prefix_key_.push_back(layout.is_prefix_tile(j) ? 1 : 0);
      distance_bin_.push_back(pair_bins(layout, i, j));
    }
    row_weight_.push_back(valid[i]);
    row_begin_.push_back(int64_t(target_.size()));
  }
  return Status::ok();
}

// Reaches EstimatorFitData's rows for the fit (kept out of the public header).
struct EstimatorFitAccess {
  const EstimatorFitData& d;

  double row_weight(int64_t r) const { return d.row_weight_[r]; }

  // The nonzero entries of one pair's feature vector: at most 5 stats + prefix + 3 bins.
  int nonzeros(int64_t pair, int* index, double* value) const {
    int n = 0;
    const float* f = &d.stat_features_[size_t(pair) * kNumStatFeatures];
    for (int s = 0; s < kNumStatFeatures; ++s) index[n] = s, value[n++] = f[s];
    if (d.prefix_key_[pair]) index[n] = kPrefixIndex, value[n++] = 1;
    const auto& bins = d.distance_bin_[pair];
    for (int axis = 0; axis < 3; ++axis)
      if (bins[axis] > 0) index[n] = distance_param_index(axis, bins[axis]), value[n++] = 1;
    return n;
  }

  struct Accumulator {
    double loss = 0;
    std::array<double, kFree> grad{};
    std::array<double, kFree * kFree> hess{};
  };

  // Weighted cross-entropy (minus the targets' entropy, so KL), and optionally its derivatives,
  // over rows [begin, end).
  void accumulate(int64_t begin, int64_t end, const std::array<double, kFree>& theta,
                  bool derivatives, Accumulator& acc) const {
    std::vector<double> z;
    int index[9];
    double value[9];
    for (int64_t r = begin; r < end; ++r) {
      const int64_t p0 = d.row_begin_[r], p1 = d.row_begin_[r + 1];
      z.resize(size_t(p1 - p0));
      double z_max = -std::numeric_limits<double>::infinity(), target_sum = 0, entropy_term = 0;
      for (int64_t p = p0; p < p1; ++p) {
        int n = nonzeros(p, index, value);
        double zp = 0;
        for (int e = 0; e < n; ++e) zp += theta[index[e]] * value[e];
        z[p - p0] = zp;
        z_max = std::max(z_max, zp);
        const double t = d.target_[p];
        target_sum += t;
        if (t > 0) entropy_term += t * std::log(t);
      }
      double sum_exp = 0;
      for (double& zp : z) sum_exp += std::exp(zp - z_max);
      const double lse = z_max + std::log(sum_exp);
      double cross = 0;
      for (int64_t p = p0; p < p1; ++p) cross -= d.target_[p] * z[p - p0];
      const double w = d.row_weight_[r];
      acc.loss += w * (entropy_term + cross + target_sum * lse);
      if (!derivatives) continue;
      // grad = sum_j (T s_j - t_j) x_j ; hess = T (sum_j s_j x_j x_j^T - m m^T), m = sum_j s_j x_j.
      std::array<double, kFree> mean{};
      std::array<double, kFree * kFree> second{};
      for (int64_t p = p0; p < p1; ++p) {
        const double s = std::exp(z[p - p0] - lse);
        const double g = target_sum * s - d.target_[p];
        int n = nonzeros(p, index, value);
        for (int a = 0; a < n; ++a) {
          acc.grad[index[a]] += w * g * value[a];
          mean[index[a]] += s * value[a];
          for (int b = 0; b < n; ++b) second[index[a] * kFree + index[b]] += s * value[a] * value[b];
        }
      }
      for (int a = 0; a < kFree; ++a)
        for (int b = 0; b < kFree; ++b)
          acc.hess[a * kFree + b] += w * target_sum * (second[a * kFree + b] - mean[a] * mean[b]);
    }
  }

  // Over all rows, in fixed chunks summed in order so the result does not depend on threads.
  Accumulator evaluate(const std::array<double, kFree>& theta, bool derivatives) const {
    const int64_t rows = int64_t(d.row_weight_.size());
    const int64_t chunk = 16;
    const int64_t chunks = (rows + chunk - 1) / chunk;
    std::vector<Accumulator> parts(static_cast<size_t>(chunks));
    parallel_for(0, chunks, [&](int64_t c) {
      accumulate(c * chunk, std::min(rows, (c + 1) * chunk), theta, derivatives, parts[c]);
    });
    Accumulator total;
    for (const Accumulator& part : parts) {
      total.loss += part.loss;
      for (int a = 0; a < kFree; ++a) total.grad[a] += part.grad[a];
      if (derivatives)
        for (int a = 0; a < kFree * kFree; ++a) total.hess[a] += part.hess[a];
    }
    return total;
  }
};

namespace {

// Solves A x = b for symmetric positive definite A (Cholesky); false if A is not.
bool solve_spd(std::array<double, kFree * kFree> a, std::array<double, kFree> b,
               std::array<double, kFree>& x) {
  const int n = kFree;
  for (int j = 0; j < n; ++j) {
    double diag = a[j * n + j];
    for (int k = 0; k < j; ++k) diag -= a[j * n + k] * a[j * n + k];
    if (!(diag > 0)) return false;
    a[j * n + j] = std::sqrt(diag);
    for (int i = j + 1; i < n; ++i) {
      double v = a[i * n + j];
      for (int k = 0; k < j; ++k) v -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = v / a[j * n + j];
    }
  }
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < i; ++k) b[i] -= a[i * n + k] * b[k];
    b[i] /= a[i * n + i];
  }
  for (int i = n - 1; i >= 0; --i) {
    for (int k = i + 1; k < n; ++k) b[i] -= a[k * n + i] * b[k];
    b[i] /= a[i * n + i];
  }
  x = b;
  return true;
}

}  // namespace

Result<FitReport> fit_estimator(const EstimatorFitData& data, const FitOptions& options,
                                const EstimatorParams& start) {
  if (data.rows() == 0) return invalid_argument("no training rows: every query tile was empty or filtered out");
  if (!start.is_finite()) return invalid_argument("starting estimator parameters must be finite");
  if (options.max_iterations < 0 || !(options.ridge > 0))
    return invalid_argument("fit needs max_iterations >= 0 and ridge > 0");

  EstimatorFitAccess access{data};
  double weight_sum = 0;
  for (int64_t r = 0; r < data.rows(); ++r) weight_sum += access.row_weight(r);
  const std::array<double, kFree> prior = EstimatorParams{}.to_vector();
  constexpr int kQueryUpper = EstimatorParams::kQueryUpperIndex;  // held at 0 unless fitted
  auto objective = [&](const std::array<double, kFree>& theta, bool derivatives) {
    EstimatorFitAccess::Accumulator acc = access.evaluate(theta, derivatives);
    acc.loss /= weight_sum;
    for (int a = 0; a < kFree; ++a) {
      const double delta = theta[a] - prior[a];
      acc.loss += 0.5 * options.ridge * delta * delta;
      if (!derivatives) continue;
      acc.grad[a] = acc.grad[a] / weight_sum + options.ridge * delta;
      for (int b = 0; b < kFree; ++b) acc.hess[a * kFree + b] /= weight_sum;
      acc.hess[a * kFree + a] += options.ridge;
    }
    if (derivatives && !options.query_upper) {  // held at its start: no gradient, no coupling
      acc.grad[kQueryUpper] = 0;
      for (int b = 0; b < kFree; ++b)
        acc.hess[kQueryUpper * kFree + b] = acc.hess[b * kFree + kQueryUpper] = 0;
      acc.hess[kQueryUpper * kFree + kQueryUpper] = 1;
    }
    return acc;
  };

  FitReport report;
  std::array<double, kFree> theta = start.to_vector();
  if (!options.query_upper) theta[kQueryUpper] = 0;
  EstimatorFitAccess::Accumulator current = objective(theta, true);
  report.initial_loss = current.loss;
  for (int iter = 0; iter < options.max_iterations; ++iter) {
    std::array<double, kFree> neg_grad, step;
    for (int a = 0; a < kFree; ++a) neg_grad[a] = -current.grad[a];
    if (!solve_spd(current.hess, neg_grad, step))
      return numeric_error("estimator fit: Hessian not positive definite (non-finite features?)");
    double decrement = 0;
    for (int a = 0; a < kFree; ++a) decrement += neg_grad[a] * step[a];
    if (!std::isfinite(decrement)) return numeric_error("estimator fit diverged (non-finite step)");
    if (decrement * 0.5 < options.tolerance) {
      report.converged = true;
      break;
    }
    // Backtracking (Armijo) line search along the Newton step.
    double t = 1;
    std::array<double, kFree> trial;
    bool accepted = false;
    for (int halvings = 0; halvings < 40; ++halvings, t *= 0.5) {
      for (int a = 0; a < kFree; ++a) trial[a] = theta[a] + t * step[a];
      double loss = objective(trial, false).loss;
      if (std::isfinite(loss) && loss <= current.loss - 0.25 * t * decrement) {
        accepted = true;
        break;
      }
    }
    report.iterations = iter + 1;
    if (!accepted) {  // no progress possible at double precision: we are at the minimum
      report.converged = true;
      break;
    }
    theta = trial;
    current = objective(theta, true);
  }
  // Report the data term alone (KL per query), without the ridge.
  std::array<double, kFree> start_vec = start.to_vector();
  auto data_loss = [&](const std::array<double, kFree>& th) {
    return access.evaluate(th, false).loss / weight_sum;
  };
  report.initial_loss = data_loss(start_vec);
  report.final_loss = data_loss(theta);
  report.params = EstimatorParams::from_vector(theta);
  return report;
}

}  // namespace veda
