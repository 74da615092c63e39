#include "dit/wan_ops.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "veda/gemm.hpp"
#include "veda/thread_pool.hpp"

namespace veda::wan_ops {
namespace {

// Rows handed to one thread at a time for cheap row-wise work.
constexpr int64_t kRowGrain = 64;

void layer_norm_row(const float* x, int64_t width, float eps, float* mean_out, float* rstd_out) {
  double sum = 0;
  for (int64_t i = 0; i < width; ++i) sum += x[i];
  const double mean = sum / double(width);
  double var = 0;
  for (int64_t i = 0; i < width; ++i) {
    const double d = x[i] - mean;
    var += d * d;
  }
  var /= double(width);
  *mean_out = float(mean);
  *rstd_out = float(1.0 / std::sqrt(var + eps));
}

}  // namespace

void linear(const float* x, int64_t rows, const LinearWeights& l, float* y) {
  const int64_t in = l.in_features(), out = l.out_features();
  const float* bias = l.bias.data_as<float>();
  parallel_for(0, rows, [&](int64_t r) { std::memcpy(y + r * out, bias, size_t(out) * 4); },
               kRowGrain);
  gemm_f32_parallel(false, true, rows, out, in, 1.0f, x, in, l.weight.data_as<float>(), in, 1.0f,
                    y, out);
}

void layer_norm_modulate(const float* x, float* y, int64_t rows, int64_t width, float eps,
                         int64_t rows_per_sample, const float* shift, const float* scale,
                         int64_t modulation_stride) {
  parallel_for(0, rows, [&](int64_t r) {
    const float* xr = x + r * width;
    float* yr = y + r * width;
    const int64_t s = r / rows_per_sample;
    const float* sh = shift + s * modulation_stride;
    const float* sc = scale + s * modulation_stride;
    float mean, rstd;
    layer_norm_row(xr, width, eps, &mean, &rstd);
    for (int64_t i = 0; i < width; ++i) yr[i] = (xr[i] - mean) * rstd * (1.0f + sc[i]) + sh[i];
  }, kRowGrain);
}

void layer_norm_affine(const float* x, float* y, int64_t rows, int64_t width, float eps,
                       const float* weight, const float* bias) {
  parallel_for(0, rows, [&](int64_t r) {
    const float* xr = x + r * width;
    float* yr = y + r * width;
    float mean, rstd;
    layer_norm_row(xr, width, eps, &mean, &rstd);
    for (int64_t i = 0; i < width; ++i) yr[i] = (xr[i] - mean) * rstd * weight[i] + bias[i];
  }, kRowGrain);
}

void rms_norm(float* x, int64_t rows, int64_t width, float eps, const float* weight) {
  parallel_for(0, rows, [&](int64_t r) {
    float* xr = x + r * width;
    double sum_sq = 0;
    for (int64_t i = 0; i < width; ++i) sum_sq += double(xr[i]) * xr[i];
    const float rstd = float(1.0 / std::sqrt(sum_sq / double(width) + eps));
    for (int64_t i = 0; i < width; ++i) xr[i] = xr[i] * rstd * weight[i];
  }, kRowGrain);
}

void gelu_tanh(float* x, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  constexpr int64_t kChunk = 1 << 14;
  parallel_for(0, (n + kChunk - 1) / kChunk, [&](int64_t chunk) {
    const int64_t end = std::min(n, (chunk + 1) * kChunk);
    for (int64_t i = chunk * kChunk; i < end; ++i) {
      // 0.5 * (1 + tanh(u)) = sigmoid(2u): one exp instead of tanhf, which is several times
      // slower in glibc.
      const float v = x[i];
      const float u = kSqrt2OverPi * (v + 0.044715f * v * v * v);
      x[i] = v / (1.0f + std::exp(-2.0f * u));
    }
  });
}

void silu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
}

void add_residual(float* x, const float* y, int64_t rows, int64_t width, int64_t rows_per_sample,
                  const float* gate, int64_t gate_stride) {
  parallel_for(0, rows, [&](int64_t r) {
    float* xr = x + r * width;
    const float* yr = y + r * width;
    if (gate == nullptr) {
      for (int64_t i = 0; i < width; ++i) xr[i] += yr[i];
    } else {
      const float* g = gate + (r / rows_per_sample) * gate_stride;
      for (int64_t i = 0; i < width; ++i) xr[i] += yr[i] * g[i];
    }
  }, kRowGrain);
}

RopeTable make_rope_table(Grid grid, int head_dim, double theta) {
  const int hw_dim = 2 * (head_dim / 6);
  const int t_dim = head_dim - 2 * hw_dim;
  RopeTable table;
  table.tokens = grid.tokens();
  table.pairs = head_dim / 2;
  table.cos.resize(size_t(table.tokens * table.pairs));
  table.sin.resize(table.cos.size());
  // Per pair: which axis it rotates with and its frequency within that axis' part.
  std::vector<int> pair_axis;
  std::vector<double> pair_freq;
  const int part_dims[3] = {t_dim, hw_dim, hw_dim};
  for (int axis = 0; axis < 3; ++axis) {
    for (int i = 0; i < part_dims[axis] / 2; ++i) {
      pair_axis.push_back(axis);
      pair_freq.push_back(1.0 / std::pow(theta, double(2 * i) / double(part_dims[axis])));
    }
  }
  for (int t = 0; t < grid.t; ++t) {
    for (int h = 0; h < grid.h; ++h) {
      for (int w = 0; w < grid.w; ++w) {
        const int64_t token = (int64_t(t) * grid.h + h) * grid.w + w;
        const int position[3] = {t, h, w};
        for (int64_t p = 0; p < table.pairs; ++p) {
          const double angle = position[pair_axis[p]] * pair_freq[p];
          table.cos[token * table.pairs + p] = float(std::cos(angle));
          table.sin[token * table.pairs + p] = float(std::sin(angle));
        }
      }
    }
  }
  return table;
}

void apply_rope(float* x, int64_t rows, int heads, int head_dim, const RopeTable& table) {
  const int64_t width = int64_t(heads) * head_dim;
  parallel_for(0, rows, [&](int64_t r) {
    const int64_t token = r % table.tokens;
    const float* c = &table.cos[token * table.pairs];
    const float* s = &table.sin[token * table.pairs];
    float* xr = x + r * width;
    for (int h = 0; h < heads; ++h) {
      float* xh = xr + int64_t(h) * head_dim;
      for (int64_t p = 0; p < table.pairs; ++p) {
        const float x1 = xh[2 * p], x2 = xh[2 * p + 1];
        xh[2 * p] = x1 * c[p] - x2 * s[p];
        xh[2 * p + 1] = x1 * s[p] + x2 * c[p];
      }
    }
  }, kRowGrain);
}

std::vector<float> timestep_sinusoid(const std::vector<float>& timesteps, int freq_dim) {
  const int half = freq_dim / 2;
  std::vector<float> out(timesteps.size() * size_t(freq_dim));
  for (size_t b = 0; b < timesteps.size(); ++b) {
    for (int i = 0; i < half; ++i) {
      // f32 like diffusers' Timesteps, so large timesteps round the same way.
      const float exponent = -std::log(10000.0f) * float(i) / float(half);
      const float arg = timesteps[b] * std::exp(exponent);
      out[b * freq_dim + i] = float(std::cos(double(arg)));
      out[b * freq_dim + half + i] = float(std::sin(double(arg)));
    }
  }
  return out;
}

void dense_attention_token_major(const float* q, const float* k, const float* v, float* out,
                                 int64_t batch, int64_t q_tokens, int64_t k_tokens, int heads,
                                 int head_dim, float scale) {
  const int64_t width = int64_t(heads) * head_dim;
  constexpr int64_t kChunk = 128;  // query rows per task
  const int64_t chunks = (q_tokens + kChunk - 1) / kChunk;
  parallel_for(0, batch * heads * chunks, [&](int64_t task) {
    const int64_t chunk = task % chunks;
    const int64_t h = (task / chunks) % heads;
    const int64_t b = task / (chunks * heads);
    const int64_t row0 = chunk * kChunk;
    const int64_t rows = std::min(kChunk, q_tokens - row0);
    const float* qb = q + (b * q_tokens + row0) * width + h * head_dim;
    const float* kb = k + b * k_tokens * width + h * head_dim;
    const float* vb = v + b * k_tokens * width + h * head_dim;
    float* ob = out + (b * q_tokens + row0) * width + h * head_dim;
    std::vector<float> scores(size_t(rows * k_tokens));
    gemm_f32(false, true, rows, k_tokens, head_dim, scale, qb, width, kb, width, 0.0f,
             scores.data(), k_tokens);
    for (int64_t r = 0; r < rows; ++r) {
      float* s = &scores[r * k_tokens];
      const float m = *std::max_element(s, s + k_tokens);
      double sum = 0;
      for (int64_t j = 0; j < k_tokens; ++j) {
        s[j] = std::exp(s[j] - m);
        sum += s[j];
      }
      const float inv = float(1.0 / sum);
      for (int64_t j = 0; j < k_tokens; ++j) s[j] *= inv;
    }
    gemm_f32(false, false, rows, head_dim, k_tokens, 1.0f, scores.data(), k_tokens, vb, width,
             0.0f, ob, width);
  });
}

void token_major_to_heads(const float* x, int64_t batch, int64_t tokens, int heads, int head_dim,
                          float* out) {
  const int64_t width = int64_t(heads) * head_dim;
  parallel_for(0, batch * heads, [&](int64_t bh) {
    const int64_t b = bh / heads;
    const int64_t h = bh % heads;
    for (int64_t n = 0; n < tokens; ++n) {
      std::memcpy(out + (bh * tokens + n) * head_dim, x + (b * tokens + n) * width + h * head_dim,
                  size_t(head_dim) * 4);
    }
  });
}

}  // namespace veda::wan_ops
