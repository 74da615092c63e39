#include "attention/attention_test_util.hpp"

#include <algorithm>
#include <cstring>
#include <random>
#include <sstream>

namespace veda::test {

namespace {

void set_nan_range(Tensor& t, int64_t begin, int64_t count) {
  auto* bytes = static_cast<char*>(t.data());
  for (int64_t i = begin; i < begin + count; ++i) {
    switch (t.dtype()) {
      case DType::kF32: {
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(bytes + i * 4, &nan, 4);
        break;
      }
      case DType::kF16: {
        const uint16_t nan = 0x7e00;
        std::memcpy(bytes + i * 2, &nan, 2);
        break;
      }
      case DType::kBF16: {
        const uint16_t nan = 0x7fc0;
        std::memcpy(bytes + i * 2, &nan, 2);
        break;
      }
    }
  }
}

}  // namespace

void fill_nan(Tensor& t) { set_nan_range(t, 0, t.numel()); }

void set_nan(Tensor& t, int64_t index) { set_nan_range(t, index, 1); }

void poison_padding(Tensor& t, const HeadLayouts& layouts) {
  const int64_t batch = t.dim(0), heads = t.dim(1), padded = t.dim(2), dim = t.dim(3);
  const int volume = layouts.volume();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t slot = 0; slot < padded; ++slot) {
        if (slot % volume < layouts.valid(int(h), int(slot / volume))) continue;
        set_nan_range(t, ((b * heads + h) * padded + slot) * dim, dim);
      }
    }
  }
}

TileMask random_mask(int batch, const HeadLayouts& layouts, double density, uint64_t seed,
                     double empty_fraction) {
  const int tiles = layouts.max_tiles();
  TileMask mask = TileMask::empty(batch, layouts.heads(), tiles, tiles, tiles);
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < layouts.heads(); ++h) {
      std::vector<int32_t> existing;
      for (int t = 0; t < tiles; ++t) {
        if (layouts.valid(h, t) > 0) existing.push_back(t);
      }
      for (int q = 0; q < tiles; ++q) {
        if (layouts.valid(h, q) == 0) continue;
        std::vector<int32_t> chosen = existing;
        if (density < 1.0) {
          if (uniform(engine) < empty_fraction) continue;
          const size_t keep = std::max<size_t>(1, size_t(std::lround(density * existing.size())));
          std::shuffle(chosen.begin(), chosen.end(), engine);
          chosen.resize(std::min(keep, chosen.size()));
          std::sort(chosen.begin(), chosen.end());
        }
        mask.counts[mask.row_offset(b, h, q)] = int32_t(chosen.size());
        std::copy(chosen.begin(), chosen.end(), mask.row(b, h, q));
      }
    }
  }
  return mask;
}

ExpectedAttention brute_force_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const HeadLayouts& layouts, const TileMask* mask,
                                        double softmax_scale) {
  const int64_t batch = q.dim(0), heads = q.dim(1), padded = q.dim(2), dim = q.dim(3);
  const int volume = layouts.volume(), tiles = layouts.max_tiles();
  const std::vector<float> qf = to_f32_vector(q), kf = to_f32_vector(k), vf = to_f32_vector(v);
  ExpectedAttention expected;
  expected.out.assign(size_t(batch * heads * padded * dim), 0.0);
  expected.lse.assign(size_t(batch * heads * padded), -std::numeric_limits<double>::infinity());
  std::vector<double> scores;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t head_base = (b * heads + h) * padded;
      for (int q_tile = 0; q_tile < tiles; ++q_tile) {
        std::vector<int32_t> key_tiles;
        if (mask == nullptr) {
          for (int t = 0; t < tiles; ++t) key_tiles.push_back(t);
        } else {
          const int count = mask->count(int(b), int(h), q_tile);
          key_tiles.assign(mask->row(int(b), int(h), q_tile), mask->row(int(b), int(h), q_tile) + count);
        }
        std::vector<int64_t> keys;  // slots
        for (int32_t t : key_tiles) {
          for (int s = 0; s < layouts.valid(int(h), t); ++s) keys.push_back(int64_t(t) * volume + s);
        }
        if (keys.empty()) continue;
        for (int r = 0; r < layouts.valid(int(h), q_tile); ++r) {
          const int64_t row = head_base + int64_t(q_tile) * volume + r;
          const float* qr = &qf[size_t(row * dim)];
          scores.assign(keys.size(), 0.0);
          double max_score = -std::numeric_limits<double>::infinity();
          for (size_t j = 0; j < keys.size(); ++j) {
            const float* kr = &kf[size_t((head_base + keys[j]) * dim)];
            double dot = 0;
            for (int64_t c = 0; c < dim; ++c) dot += double(qr[c]) * double(kr[c]);
            scores[j] = dot * softmax_scale;
            max_score = std::max(max_score, scores[j]);
          }
          double sum = 0;
          double* out = &expected.out[size_t(row * dim)];
          for (size_t j = 0; j < keys.size(); ++j) {
            const double w = std::exp(scores[j] - max_score);
            sum += w;
            const float* vr = &vf[size_t((head_base + keys[j]) * dim)];
            for (int64_t c = 0; c < dim; ++c) out[c] += w * double(vr[c]);
          }
          for (int64_t c = 0; c < dim; ++c) out[c] /= sum;
          expected.lse[size_t(row)] = max_score + std::log(sum);
        }
      }
    }
  }
  return expected;
}

std::string ToleranceCheck::describe() const {
  std::ostringstream s;
  s << "max_err " << max_err << " (at " << worst_index << "), allowed " << allowed
    << " (2 * lowp " << max_err_lowp << " + atol), max|ref| " << max_ref << ", non-finite "
    << non_finite;
  return s.str();
}

ToleranceCheck check_against(const Tensor& actual, const std::vector<double>& expected,
                             double rel_atol) {
  const std::vector<float> got = to_f32_vector(actual);
  // The expected values rounded to the output dtype: the error a perfect kernel still has.
  std::vector<float> rounded(expected.begin(), expected.end());
  round_through(rounded.data(), rounded.size(), actual.dtype());
  ToleranceCheck check;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (!std::isfinite(got[i])) {
      ++check.non_finite;
      continue;
    }
    const double err = std::abs(double(got[i]) - expected[i]);
    if (err > check.max_err) {
      check.max_err = err;
      check.worst_index = int64_t(i);
    }
    check.max_err_lowp = std::max(check.max_err_lowp, std::abs(double(rounded[i]) - expected[i]));
    check.max_ref = std::max(check.max_ref, std::abs(expected[i]));
  }
  check.allowed = 2 * check.max_err_lowp + rel_atol * check.max_ref;
  return check;
}

double max_rel_error(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = to_f32_vector(a), y = to_f32_vector(b);
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) return std::numeric_limits<double>::infinity();
    max_err = std::max(max_err, std::abs(double(x[i]) - double(y[i])));
    max_ref = std::max(max_ref, std::abs(double(y[i])));
  }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

}  // namespace veda::test
