#include "veda/metrics.hpp"

#include <cmath>
#include <limits>

#include "veda/thread_pool.hpp"

namespace veda {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct ErrorSums {
  double diff = 0, out = 0, ref = 0, dot = 0;
  void add(const float* o, const float* r, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const double a = o[i], b = r[i];
      diff += (a - b) * (a - b);
      out += a * a;
      ref += b * b;
      dot += a * b;
    }
  }
  void merge(const ErrorSums& other) {
    diff += other.diff;
    out += other.out;
    ref += other.ref;
    dot += other.dot;
  }
  // Zero references: rel_l2 is 0 for a zero output, +inf otherwise; cosine of two zero vectors
  // is 1, of one zero vector 0. NaN anywhere propagates through the sums.
  OutputError finish() const {
    OutputError e;
    e.rel_l2 =
        ref > 0 ? std::sqrt(diff / ref) : (diff == 0 ? 0.0 : (std::isnan(diff) ? kNaN : HUGE_VAL));
    const double norms = std::sqrt(out) * std::sqrt(ref);
    e.cosine =
        norms > 0 ? dot / norms : (out == 0 && ref == 0 ? 1.0 : (std::isnan(out) ? kNaN : 0.0));
    return e;
  }
};

}  // namespace

std::vector<double> tile_mass_recall(const Tensor& mass, const TileMask& mask,
                                     const HeadLayouts& layouts) {
  const int heads = layouts.heads();
  const int64_t tiles = layouts.max_tiles();
  if (mass.dtype() != DType::kF32 || mass.rank() != 4 || mass.dim(1) != heads ||
      mass.dim(2) != tiles || mass.dim(3) != tiles || mask.batch != mass.dim(0) ||
      mask.heads != heads || mask.q_tiles != tiles ||
      mask.counts.size() != size_t(mask.batch) * heads * tiles ||
      mask.indices.size() != mask.counts.size() * size_t(mask.max_k)) {
    return std::vector<double>(size_t(heads), kNaN);  // mismatched inputs never pass
  }
  const int batch = mask.batch;
  std::vector<double> recall(size_t(heads), 0.0);
  parallel_for(0, heads, [&](int64_t h) {
    double weighted = 0.0, weight = 0.0;
    for (int b = 0; b < batch; ++b) {
      for (int q = 0; q < layouts.head(int(h)).num_tiles(); ++q) {
        const float* row = mass.data_as<float>() + mask.row_offset(b, int(h), q) * tiles;
        double total = 0.0, selected = 0.0;
        for (int64_t j = 0; j < tiles; ++j) total += row[j];
        const int32_t* idx = mask.row(b, int(h), q);
        for (int i = 0; i < mask.count(b, int(h), q); ++i) {
          if (idx[i] < 0 || idx[i] >= tiles) return void(recall[h] = kNaN);
          selected += row[idx[i]];
        }
        const double valid = layouts.valid(int(h), q);
        weighted += valid * (total > 0 ? selected / total : (total == 0 ? 0.0 : kNaN));
        weight += valid;
      }
    }
    recall[h] = weight > 0 ? weighted / weight : kNaN;
  });
  return recall;
}

std::vector<OutputError> compare_per_head(const Tensor& out, const Tensor& ref,
                                          const HeadLayouts& layouts) {
  const int heads = layouts.heads();
  const OutputError nan_error{kNaN, kNaN};
  if (out.dtype() != DType::kF32 || ref.dtype() != DType::kF32 || out.shape() != ref.shape() ||
      out.rank() != 4 || out.dim(1) != heads || out.dim(2) != layouts.padded_tokens()) {
    return std::vector<OutputError>(size_t(heads), nan_error);
  }
  const int64_t batch = out.dim(0), dim = out.dim(3), padded = layouts.padded_tokens();
  const int volume = layouts.volume();
  std::vector<ErrorSums> sums(size_t(batch * heads));
  parallel_for(0, batch * heads, [&](int64_t bh) {
    const int h = int(bh % heads);
    const TileLayout& layout = layouts.head(h);
    ErrorSums s;
    for (int t = 0; t < layout.num_tiles(); ++t) {
      const int64_t offset = (bh * padded + int64_t(t) * volume) * dim;
      s.add(out.data_as<float>() + offset, ref.data_as<float>() + offset,
            size_t(layout.tile_valid()[t]) * dim);
    }
    sums[bh] = s;
  });
  std::vector<OutputError> result;
  result.reserve(size_t(heads));
  for (int h = 0; h < heads; ++h) {
    ErrorSums total;
    for (int64_t b = 0; b < batch; ++b) total.merge(sums[b * heads + h]);
    result.push_back(total.finish());
  }
  return result;
}

OutputError compare(const float* out, const float* ref, size_t n) {
  ErrorSums s;
  s.add(out, ref, n);
  return s.finish();
}

}  // namespace veda
