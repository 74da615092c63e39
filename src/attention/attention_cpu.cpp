// CPU attention: the tile-sparse backend (attention_cpu) and the dense fp64 ground truth
// (attention_reference).
//
// attention_cpu is flash-attention style over tiles. One work item is one (batch, head, query
// tile); items are spread over the thread pool. For an item:
//   Q (valid rows only, f32)             <- q, converted once
//   for each selected key tile (ascending):
//     S = scale * Q K^T                  gemm_f32, valid rows x valid keys (padding slots are
//                                        never read, which is how they are masked)
//     online softmax on S's rows         running max m and sum l; S becomes P = exp(S - m_new),
//                                        the accumulator O is rescaled by exp(m_old - m_new)
//     O += P V                           gemm_f32
//   o = O / l, lse = m + log(l)          padding rows and tiles with no key tile: 0 and -inf
// Keys and values of f16/bf16 inputs are converted to f32 once per (batch, head) before the query
// tiles run (a few heads at a time to bound the scratch memory); f32 inputs are read in place.
//
// NaN/Inf inputs are not screened (that would cost a pass over q, k, v and hide nothing the
// output does not show): they propagate. A NaN in a q row makes that output row NaN (lse NaN); a
// NaN in a k row makes NaN every output row whose query tile selected that key tile; a NaN in v
// shows in its column of those rows. Padding slots are never read, so they may hold anything.
// Callers that need a clean error use Tensor::check_finite on the inputs or outputs.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "veda/attention.hpp"
#include "veda/gemm.hpp"
#include "veda/thread_pool.hpp"

// The softmax loops are compiled for several ISAs and picked at load time: the build targets
// baseline x86-64 (never -march=native), but the machines running it have AVX2/AVX-512.
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define VEDA_CPU_CLONES __attribute__((target_clones("default", "avx2", "avx512f")))
#else
#define VEDA_CPU_CLONES
#endif

namespace veda {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------------
// Element access

const void* element_at(const void* base, DType dt, int64_t offset) {
  return static_cast<const char*>(base) + offset * int64_t(dtype_size(dt));
}
void* element_at(void* base, DType dt, int64_t offset) {
  return static_cast<char*>(base) + offset * int64_t(dtype_size(dt));
}

// `rows` rows of `cols` elements (source row stride in elements) -> f32 rows of stride dst_ld.
void load_rows_f32(const void* src, DType dt, int64_t src_row_stride, int64_t rows, int64_t cols,
                   float* dst, int64_t dst_ld) {
  if (src_row_stride == cols && dst_ld == cols) {
    convert_to_f32(src, dt, dst, size_t(rows * cols));
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    convert_to_f32(element_at(src, dt, r * src_row_stride), dt, dst + r * dst_ld, size_t(cols));
  }
}

// ---------------------------------------------------------------------------------------------
// Vectorisable softmax pieces

// exp(x) for the softmax range (x <= 0, a little above 0 is fine), relative error ~2 ulp.
// Branch-free so that the loops calling it vectorise; NaN in gives NaN out, x below -87 gives
// ~1e-38 instead of flushing to 0 (harmless next to the row maximum's exp(0) = 1).
inline float exp_softmax(float x) {
  // x = max(x, -87) keeping NaN, on the bits: a float compare-and-select here stops GCC from
  // vectorising the loop (it keeps FP compares in branches under -ftrapping-math). Negative
  // floats order like their bit patterns, up to -inf (0xff800000); above it are NaNs.
  constexpr uint32_t kLowestBits = std::bit_cast<uint32_t>(-87.0f);
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t clamp = 0u - uint32_t((bits > kLowestBits) & (bits <= 0xff800000u));
  x = std::bit_cast<float>((bits & ~clamp) | (kLowestBits & clamp));
  // n = round(x / ln2) via the 1.5 * 2^23 trick: its low mantissa bits hold n as an integer.
  constexpr float kRoundMagic = 12582912.0f;
  const float shifted = x * 1.44269504088896341f + kRoundMagic;
  const float n = shifted - kRoundMagic;
  const uint32_t n_bits = std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(kRoundMagic);
  // r = x - n ln2 in two steps (Cody-Waite) for accuracy; |r| <= ln2 / 2.
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  // Cephes expf polynomial.
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float exp_r = p * r * r + r + 1.0f;
  const float two_to_n = std::bit_cast<float>((n_bits + 127u) << 23);
  return exp_r * two_to_n;
}

// One online-softmax step for a block of scores (rows x cols, leading dimension ld): the scores
// become P = exp(s - new_max) in place, the running max and sum of each row are updated, and the
// output accumulator rows (stride head_dim) are rescaled by exp(old_max - new_max).
VEDA_CPU_CLONES
void online_softmax_step(float* scores, int64_t ld, int rows, int cols, float* row_max,
                         float* row_sum, float* out, int64_t head_dim) {
  constexpr int kLanes = 16;  // independent accumulators, so max and sum vectorise
  for (int r = 0; r < rows; ++r) {
    float* s = scores + r * ld;
    // Row max. std::max(m, NaN) keeps m, so NaN scores are skipped here, but they still reach
    // the sum through exp(NaN) below: NaN propagates to the output.
    float lane_max[kLanes];
    for (int l = 0; l < kLanes; ++l) lane_max[l] = kNegInf;
    int j = 0;
    for (; j + kLanes <= cols; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) lane_max[l] = std::max(lane_max[l], s[j + l]);
    }
    float block_max = kNegInf;
    for (int l = 0; l < kLanes; ++l) block_max = std::max(block_max, lane_max[l]);
    for (; j < cols; ++j) block_max = std::max(block_max, s[j]);

    const float old_max = row_max[r];
    const float new_max = std::max(old_max, block_max);
    for (j = 0; j < cols; ++j) s[j] = exp_softmax(s[j] - new_max);

    float lane_sum[kLanes] = {};
    j = 0;
    for (; j + kLanes <= cols; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) lane_sum[l] += s[j + l];
    }
    float block_sum = 0;
    for (int l = 0; l < kLanes; ++l) block_sum += lane_sum[l];
    for (; j < cols; ++j) block_sum += s[j];

    // Before the first key tile O and l are zero: skip exp(-inf - -inf) = NaN.
    if (old_max == kNegInf) {
      row_sum[r] = block_sum;
    } else {
      const float alpha = std::exp(old_max - new_max);
      row_sum[r] = row_sum[r] * alpha + block_sum;
      if (alpha != 1.0f) {
        float* o = out + r * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) o[d] *= alpha;
      }
    }
    row_max[r] = new_max;
  }
}

// ---------------------------------------------------------------------------------------------
// attention_cpu

// f32 keys and values of one (batch, head): the input itself (f32) or a converted copy.
struct KeyValues {
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t k_ld = 0, v_ld = 0;
};

// Per-thread buffers, kept between work items (reallocating a few hundred KiB per tile would
// cost page faults).
struct TileScratch {
  std::vector<float> q, scores, out, row_max, row_sum;
  void reserve(int64_t tile_size, int64_t head_dim) {
    q.resize(size_t(tile_size * head_dim));
    scores.resize(size_t(tile_size * tile_size));
    out.resize(size_t(tile_size * head_dim));
    row_max.resize(size_t(tile_size));
    row_sum.resize(size_t(tile_size));
  }
};

// Writes `rows` zero rows of o (zero is all-zero bits in every dtype) and -inf lse.
void write_empty_rows(const AttentionParams& p, int64_t o_first_row, float* lse_first,
                      int64_t rows) {
  const size_t row_bytes = size_t(p.head_dim) * dtype_size(p.dtype);
  for (int64_t r = 0; r < rows; ++r) {
    std::memset(element_at(p.o, p.dtype, o_first_row + r * p.o_row_stride), 0, row_bytes);
  }
  if (lse_first != nullptr) std::fill(lse_first, lse_first + rows, kNegInf);
}

void attend_query_tile(const AttentionParams& p, int64_t b, int64_t h, int q_tile,
                       const KeyValues& kv, TileScratch& scratch) {
  const int64_t d = p.head_dim;
  const int32_t* valid = p.tile_valid + h * p.num_tiles;
  const int64_t first_token = int64_t(q_tile) * p.tile_size;
  const int64_t o_first_row = b * p.o_batch_stride + h * p.o_head_stride + first_token * p.o_row_stride;
  float* lse = p.lse == nullptr ? nullptr : p.lse + (b * p.heads + h) * p.tokens + first_token;

  // The key tiles of this query tile: the mask row, or every tile when dense.
  const int32_t* selected = nullptr;
  int num_selected = p.num_tiles;
  if (p.mask_counts != nullptr) {
    const int64_t mask_row = (b * p.heads + h) * p.num_tiles + q_tile;
    num_selected = p.mask_counts[mask_row];
    selected = p.mask_indices == nullptr ? nullptr : p.mask_indices + mask_row * p.max_k;
  }
  const int valid_q = valid[q_tile];
  bool any_key = false;
  for (int i = 0; i < num_selected && !any_key; ++i) any_key = valid[selected ? selected[i] : i] > 0;
  if (valid_q == 0 || !any_key) {
    write_empty_rows(p, o_first_row, lse, p.tile_size);
    return;
  }

  scratch.reserve(p.tile_size, d);
  float* q = scratch.q.data();
  float* scores = scratch.scores.data();
  float* out = scratch.out.data();
  float* row_max = scratch.row_max.data();
  float* row_sum = scratch.row_sum.data();
  const int64_t q_first = b * p.q_batch_stride + h * p.q_head_stride + first_token * p.q_row_stride;
  load_rows_f32(element_at(p.q, p.dtype, q_first), p.dtype, p.q_row_stride, valid_q, d, q, d);
  std::fill(out, out + valid_q * d, 0.0f);
  std::fill(row_max, row_max + valid_q, kNegInf);
  std::fill(row_sum, row_sum + valid_q, 0.0f);

  const int64_t ld_scores = p.tile_size;
  for (int i = 0; i < num_selected; ++i) {
    const int k_tile = selected ? selected[i] : i;
    const int valid_k = valid[k_tile];
    if (valid_k == 0) continue;
    const float* k = kv.k + int64_t(k_tile) * p.tile_size * kv.k_ld;
    const float* v = kv.v + int64_t(k_tile) * p.tile_size * kv.v_ld;
    gemm_f32(false, true, valid_q, valid_k, d, p.softmax_scale, q, d, k, kv.k_ld, 0.0f, scores,
             ld_scores);
    online_softmax_step(scores, ld_scores, valid_q, valid_k, row_max, row_sum, out, d);
    gemm_f32(false, false, valid_q, d, valid_k, 1.0f, scores, ld_scores, v, kv.v_ld, 1.0f, out, d);
  }

  for (int r = 0; r < valid_q; ++r) {
    const float inv_sum = 1.0f / row_sum[r];
    float* o_row = out + r * d;
    for (int64_t c = 0; c < d; ++c) o_row[c] *= inv_sum;
    if (lse != nullptr) lse[r] = row_max[r] + std::log(row_sum[r]);
  }
  for (int r = 0; r < valid_q; ++r) {
    convert_from_f32(out + r * d, element_at(p.o, p.dtype, o_first_row + r * p.o_row_stride),
                     p.dtype, size_t(d));
  }
  write_empty_rows(p, o_first_row + valid_q * p.o_row_stride, lse ? lse + valid_q : nullptr,
                   p.tile_size - valid_q);
}

// Bound on the f32 copies of keys and values held at once for f16/bf16 inputs.
constexpr int64_t kConvertedKeyValueBudgetBytes = int64_t(256) << 20;

// ---------------------------------------------------------------------------------------------
// attention_reference

void reference_query_tile(const AttentionParams& p, int64_t b, int64_t h, int q_tile,
                          const std::vector<double>& keys, const std::vector<double>& values,
                          int64_t n_keys) {
  const int64_t d = p.head_dim;
  const int64_t first_token = int64_t(q_tile) * p.tile_size;
  const int64_t o_first_row = b * p.o_batch_stride + h * p.o_head_stride + first_token * p.o_row_stride;
  float* lse = p.lse == nullptr ? nullptr : p.lse + (b * p.heads + h) * p.tokens + first_token;
  const int valid_q = p.tile_valid[h * p.num_tiles + q_tile];
  if (n_keys == 0) {
    write_empty_rows(p, o_first_row, lse, p.tile_size);
    return;
  }
  std::vector<float> q_row(static_cast<size_t>(d)), o_row(static_cast<size_t>(d));
  std::vector<double> q_double(static_cast<size_t>(d)), acc(static_cast<size_t>(d));
  std::vector<double> scores(static_cast<size_t>(n_keys));
  for (int r = 0; r < valid_q; ++r) {
    const int64_t q_offset =
        b * p.q_batch_stride + h * p.q_head_stride + (first_token + r) * p.q_row_stride;
    convert_to_f32(element_at(p.q, p.dtype, q_offset), p.dtype, q_row.data(), size_t(d));
    for (int64_t c = 0; c < d; ++c) q_double[c] = q_row[c];
    double max_score = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n_keys; ++j) {
      const double* key = &keys[size_t(j * d)];
      // Eight partial sums: same fp64 accuracy, and the loop vectorises.
      double lanes[8] = {};
      int64_t c = 0;
      for (; c + 8 <= d; c += 8) {
        for (int l = 0; l < 8; ++l) lanes[l] += q_double[c + l] * key[c + l];
      }
      double dot = 0;
      for (int l = 0; l < 8; ++l) dot += lanes[l];
      for (; c < d; ++c) dot += q_double[c] * key[c];
      scores[j] = dot * double(p.softmax_scale);
      // A NaN score is skipped here but its exp(NaN) weight makes the sum NaN.
      max_score = std::max(max_score, scores[j]);
    }
    std::fill(acc.begin(), acc.end(), 0.0);
    double sum = 0;
    for (int64_t j = 0; j < n_keys; ++j) {
      const double weight = std::exp(scores[j] - max_score);
      sum += weight;
      const double* value = &values[size_t(j * d)];
      for (int64_t c = 0; c < d; ++c) acc[c] += weight * value[c];
    }
    for (int64_t c = 0; c < d; ++c) o_row[c] = float(acc[c] / sum);
    convert_from_f32(o_row.data(), element_at(p.o, p.dtype, o_first_row + r * p.o_row_stride),
                     p.dtype, size_t(d));
    if (lse != nullptr) lse[r] = float(max_score + std::log(sum));
  }
  write_empty_rows(p, o_first_row + valid_q * p.o_row_stride, lse ? lse + valid_q : nullptr,
                   p.tile_size - valid_q);
}

}  // namespace

Status attention_cpu(const AttentionParams& p) {
  VEDA_RETURN_IF_ERROR(check_attention_params(p));
  const int64_t pairs = p.batch * p.heads;
  const bool convert_kv = p.dtype != DType::kF32;
  const int64_t pair_bytes = 2 * p.tokens * p.head_dim * int64_t(sizeof(float));
  const int64_t pairs_per_group =
      convert_kv ? std::clamp<int64_t>(kConvertedKeyValueBudgetBytes / pair_bytes, 1, pairs)
                 : pairs;
  std::vector<float> converted;  // [pair in group][k | v][tokens][head_dim]
  if (convert_kv) converted.resize(size_t(pairs_per_group * 2 * p.tokens * p.head_dim));
  const int64_t head_elems = p.tokens * p.head_dim;

  for (int64_t group_begin = 0; group_begin < pairs; group_begin += pairs_per_group) {
    const int64_t group_pairs = std::min(pairs_per_group, pairs - group_begin);
    auto key_values = [&](int64_t pair_in_group) {
      const int64_t pair = group_begin + pair_in_group;
      const int64_t b = pair / p.heads, h = pair % p.heads;
      if (convert_kv) {
        const float* base = converted.data() + pair_in_group * 2 * head_elems;
        return KeyValues{base, base + head_elems, p.head_dim, p.head_dim};
      }
      return KeyValues{
          static_cast<const float*>(p.k) + b * p.k_batch_stride + h * p.k_head_stride,
          static_cast<const float*>(p.v) + b * p.v_batch_stride + h * p.v_head_stride,
          p.k_row_stride, p.v_row_stride};
    };
    if (convert_kv) {
      // One item per (pair, tile, k|v), only tiles with valid rows (padding stays unread).
      parallel_for(0, group_pairs * p.num_tiles * 2, [&](int64_t item) {
        const bool is_value = item % 2 == 1;
        const int tile = int((item / 2) % p.num_tiles);
        const int64_t pair_in_group = item / (2 * p.num_tiles);
        const int64_t pair = group_begin + pair_in_group;
        const int64_t b = pair / p.heads, h = pair % p.heads;
        const int valid = p.tile_valid[h * p.num_tiles + tile];
        if (valid == 0) return;
        const int64_t first_row = int64_t(tile) * p.tile_size;
        const void* src = is_value ? p.v : p.k;
        const int64_t src_offset =
            is_value ? b * p.v_batch_stride + h * p.v_head_stride + first_row * p.v_row_stride
                     : b * p.k_batch_stride + h * p.k_head_stride + first_row * p.k_row_stride;
        float* dst = converted.data() + (pair_in_group * 2 + (is_value ? 1 : 0)) * head_elems +
                     first_row * p.head_dim;
        load_rows_f32(element_at(src, p.dtype, src_offset), p.dtype,
                      is_value ? p.v_row_stride : p.k_row_stride, valid, p.head_dim, dst,
                      p.head_dim);
      });
    }
    parallel_for(0, group_pairs * p.num_tiles, [&](int64_t item) {
      thread_local TileScratch scratch;
      const int64_t pair_in_group = item / p.num_tiles;
      const int64_t pair = group_begin + pair_in_group;
      attend_query_tile(p, pair / p.heads, pair % p.heads, int(item % p.num_tiles),
                        key_values(pair_in_group), scratch);
    });
  }
  return Status::ok();
}

Status attention_reference(const AttentionParams& p) {
  VEDA_RETURN_IF_ERROR(check_attention_params(p));
  // One (batch, head) at a time: its valid keys and values, in fp64, packed densely.
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.heads; ++h) {
      std::vector<int64_t> key_rows;
      for (int tile = 0; tile < p.num_tiles; ++tile) {
        const int valid = p.tile_valid[h * p.num_tiles + tile];
        for (int r = 0; r < valid; ++r) key_rows.push_back(int64_t(tile) * p.tile_size + r);
      }
      const int64_t d = p.head_dim, n_keys = int64_t(key_rows.size());
      std::vector<double> keys(size_t(n_keys * d)), values(size_t(n_keys * d));
      parallel_for(0, n_keys, [&](int64_t j) {
        std::vector<float> row(static_cast<size_t>(d));
        const int64_t token = key_rows[size_t(j)];
        convert_to_f32(element_at(p.k, p.dtype, b * p.k_batch_stride + h * p.k_head_stride +
                                                     token * p.k_row_stride),
                       p.dtype, row.data(), size_t(d));
        for (int64_t c = 0; c < d; ++c) keys[size_t(j * d + c)] = row[c];
        convert_to_f32(element_at(p.v, p.dtype, b * p.v_batch_stride + h * p.v_head_stride +
                                                     token * p.v_row_stride),
                       p.dtype, row.data(), size_t(d));
        for (int64_t c = 0; c < d; ++c) values[size_t(j * d + c)] = row[c];
      }, 64);
      parallel_for(0, p.num_tiles, [&](int64_t q_tile) {
        reference_query_tile(p, b, h, int(q_tile), keys, values, n_keys);
      });
    }
  }
  return Status::ok();
}

}  // namespace veda
