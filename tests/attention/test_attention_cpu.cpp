// attention_cpu against a brute-force fp64 attention over many cases (ggml test-backend-ops
// style: one table of shapes x dtypes x densities), plus the contract's edge cases.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "attention/attention_test_util.hpp"
#include "common/test_data.hpp"
#include "veda/attention.hpp"

namespace veda::test {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
// f32 arithmetic over a few hundred keys: the CPU backend stays well inside 1e-5 of max|ref|.
constexpr double kRelAtol = 1e-5;

struct ShapeConfig {
  std::string name;
  Grid grid;
  int prefix_tokens = 0;
  std::vector<TileShape> per_head;  // one per head
  int batch = 1;
  int64_t head_dim = 64;
};

struct AttentionCase {
  ShapeConfig shape;
  DType dtype = DType::kF32;
  double density = 1.0;
  uint64_t seed = 0;
  std::string name() const {
    return shape.name + "_" + dtype_name(dtype) + "_d" + std::to_string(int(density * 100));
  }
};

// gtest prints the case's name instead of its bytes.
void PrintTo(const AttentionCase& c, std::ostream* os) { *os << c.name(); }

std::vector<ShapeConfig> shape_configs() {
  const TileShape cube{4, 4, 4}, long_t{16, 2, 2}, flat{1, 8, 8};
  return {
      {"even_4x8x8_t64", {4, 8, 8}, 0, {cube, cube}, 1, 64},
      {"ragged_5x7x9_t64", {5, 7, 9}, 0, {cube, cube}, 2, 64},
      {"ragged_3x6x10_prefix7_t64", {3, 6, 10}, 7, {cube, cube, cube}, 1, 128},
      // Head-aware tiling: one volume, different shapes, so heads own different tile counts.
      {"head_aware_5x7x9_prefix5", {5, 7, 9}, 5, {cube, long_t, flat}, 1, 128},
      {"ragged_5x7x9_t128", {5, 7, 9}, 0, {{8, 4, 4}, {4, 4, 8}}, 1, 64},
      {"ragged_3x6x10_prefix70_t128", {3, 6, 10}, 70, {{4, 4, 8}, {4, 4, 8}}, 2, 128},
      {"larger_8x8x16_t64", {8, 8, 16}, 3, {cube, long_t}, 1, 128},
      // Fewer tokens than slots: 60-token tiles in 64 slots beside 4x4x4, 120 in 128.
      {"slots_6x10x8_3x5x4", {6, 10, 8}, 2, {{3, 5, 4}, cube}, 1, 64},
      {"slots_6x10x8_3x5x8_t128", {6, 10, 8}, 0, {{3, 5, 8}, {3, 5, 8}}, 1, 128},
  };
}

std::vector<AttentionCase> all_cases() {
  std::vector<AttentionCase> cases;
  uint64_t seed = 1000;
  for (const ShapeConfig& shape : shape_configs()) {
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (double density : {1.0, 0.3, 0.1}) cases.push_back({shape, dtype, density, seed++});
    }
  }
  // Unusual head dims (the CPU backend takes any in [1, 256]).
  const TileShape cube{4, 4, 4};
  for (int64_t head_dim : {1, 24, 80, 256}) {
    ShapeConfig shape{"head_dim" + std::to_string(head_dim), {5, 7, 9}, 2, {cube, cube}, 1,
                      head_dim};
    cases.push_back({shape, DType::kF32, 0.3, seed++});
    cases.push_back({shape, DType::kF16, 1.0, seed++});
  }
  return cases;
}

// Everything one case needs: layouts, inputs with NaN padding, a poisoned output.
struct CaseData {
  HeadLayouts layouts;
  Tensor q, k, v, o;
  std::vector<float> lse;
  TileMask mask;
  float scale = 0;
};

CaseData make_case(const AttentionCase& c) {
  auto layouts = HeadLayouts::make(c.shape.grid, c.shape.prefix_tokens, c.shape.per_head);
  EXPECT_TRUE(layouts.is_ok()) << layouts.status().to_string();
  CaseData data{std::move(layouts).value(), {}, {}, {}, {}, {}, {}, 0};
  const int heads = int(c.shape.per_head.size());
  const Shape shape{c.shape.batch, heads, data.layouts.padded_tokens(), c.shape.head_dim};
  // q scaled up a little so that the softmax is peaked rather than near-uniform.
  data.q = random_tensor(c.dtype, shape, c.seed * 3 + 0, 1.5f);
  data.k = random_tensor(c.dtype, shape, c.seed * 3 + 1, 1.0f);
  data.v = random_tensor(c.dtype, shape, c.seed * 3 + 2, 1.0f);
  for (Tensor* t : {&data.q, &data.k, &data.v}) poison_padding(*t, data.layouts);
  data.o = Tensor::empty(c.dtype, shape);
  fill_nan(data.o);
  data.lse.assign(size_t(shape[0] * shape[1] * shape[2]), std::numeric_limits<float>::quiet_NaN());
  data.mask = random_mask(c.shape.batch, data.layouts, c.density, c.seed);
  data.scale = float(1.0 / std::sqrt(double(c.shape.head_dim)));
  return data;
}

// Output rows with no expected value (padding, empty tiles, empty mask rows) must be exactly zero
// with lse -inf; the other lse values must match.
void expect_lse_and_empty_rows(const CaseData& data, const ExpectedAttention& expected) {
  const std::vector<float> out = to_f32_vector(data.o);
  const int64_t dim = data.o.dim(3);
  int64_t bad_empty = 0, bad_lse = 0;
  double worst_lse = 0;
  for (size_t row = 0; row < expected.lse.size(); ++row) {
    if (std::isinf(expected.lse[row])) {
      bool zero = data.lse[row] == -kInf;
      for (int64_t c = 0; c < dim; ++c) zero = zero && out[row * dim + c] == 0.0f;
      bad_empty += zero ? 0 : 1;
    } else {
      const double err = std::abs(double(data.lse[row]) - expected.lse[row]);
      worst_lse = std::max(worst_lse, err);
      // f32 log-sum-exp: error ~ ulp(|lse|) plus the sum's rounding.
      if (!(err <= 1e-5 * (1.0 + std::abs(expected.lse[row])))) ++bad_lse;
    }
  }
  EXPECT_EQ(bad_empty, 0) << "rows that should be zero with lse -inf";
  EXPECT_EQ(bad_lse, 0) << "lse rows out of tolerance, worst abs error " << worst_lse;
}

class AttentionCpuCase : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionCpuCase, MatchesBruteForce) {
  const AttentionCase& c = GetParam();
  CaseData data = make_case(c);
  auto params = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, &data.mask,
                                      data.scale, data.lse.data());
  ASSERT_TRUE(params.is_ok()) << params.status().to_string();
  ASSERT_TRUE(attention_cpu(*params).is_ok());

  const ExpectedAttention expected =
      brute_force_attention(data.q, data.k, data.v, data.layouts, &data.mask, data.scale);
  const ToleranceCheck check = check_against(data.o, expected.out, kRelAtol);
  EXPECT_TRUE(check.passed()) << check.describe();
  expect_lse_and_empty_rows(data, expected);
}

INSTANTIATE_TEST_SUITE_P(Table, AttentionCpuCase, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<AttentionCase>& info) {
                           return info.param.name();
                         });

// At density 1 the sparse path must equal dense attention; attention_reference is the oracle.
class AttentionCpuFullDensity : public ::testing::TestWithParam<AttentionCase> {};

std::vector<AttentionCase> full_density_cases() {
  std::vector<AttentionCase> cases;
  for (const AttentionCase& c : all_cases()) {
    if (c.density >= 1.0) cases.push_back(c);
  }
  return cases;
}

TEST_P(AttentionCpuFullDensity, EqualsReference) {
  const AttentionCase& c = GetParam();
  CaseData data = make_case(c);
  auto sparse = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, &data.mask,
                                      data.scale, data.lse.data());
  ASSERT_TRUE(sparse.is_ok()) << sparse.status().to_string();
  ASSERT_TRUE(attention_cpu(*sparse).is_ok());

  // The null mask (dense) path must give the same.
  Tensor o_dense = Tensor::empty(c.dtype, data.o.shape());
  fill_nan(o_dense);
  auto dense = make_attention_params(data.q, data.k, data.v, o_dense, data.layouts, nullptr,
                                     data.scale);
  ASSERT_TRUE(dense.is_ok());
  ASSERT_TRUE(attention_cpu(*dense).is_ok());
  EXPECT_EQ(max_rel_error(o_dense, data.o), 0.0);

  Tensor o_ref = Tensor::empty(c.dtype, data.o.shape());
  fill_nan(o_ref);
  std::vector<float> lse_ref(data.lse.size(), std::numeric_limits<float>::quiet_NaN());
  auto reference = make_attention_params(data.q, data.k, data.v, o_ref, data.layouts, nullptr,
                                         data.scale, lse_ref.data());
  ASSERT_TRUE(reference.is_ok());
  ASSERT_TRUE(attention_reference(*reference).is_ok());
  const double rel = max_rel_error(data.o, o_ref);
  if (c.dtype == DType::kF32) {
    EXPECT_LT(rel, 1e-5);
  } else {
    // Both round the same near-exact value to 16 bits: at most one ulp apart.
    EXPECT_LT(rel, c.dtype == DType::kF16 ? 2.0 / 1024 : 2.0 / 128);
  }
  for (size_t i = 0; i < lse_ref.size(); ++i) {
    if (std::isinf(lse_ref[i])) {
      ASSERT_EQ(data.lse[i], lse_ref[i]) << "row " << i;
    } else {
      ASSERT_NEAR(data.lse[i], lse_ref[i], 1e-5 * (1 + std::abs(lse_ref[i]))) << "row " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Table, AttentionCpuFullDensity, ::testing::ValuesIn(full_density_cases()),
                         [](const ::testing::TestParamInfo<AttentionCase>& info) {
                           return info.param.name();
                         });

// ---------------------------------------------------------------------------------------------

AttentionCase small_case(DType dtype, double density, uint64_t seed) {
  const TileShape cube{4, 4, 4};
  return {{"small", {5, 7, 9}, 3, {cube, cube}, 1, 64}, dtype, density, seed};
}

TEST(AttentionReference, MatchesBruteForceDense) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    CaseData data = make_case(small_case(dtype, 1.0, 7));
    auto params = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, nullptr,
                                        data.scale, data.lse.data());
    ASSERT_TRUE(params.is_ok());
    ASSERT_TRUE(attention_reference(*params).is_ok());
    const ExpectedAttention expected =
        brute_force_attention(data.q, data.k, data.v, data.layouts, nullptr, data.scale);
    // fp64 on both sides: only the final rounding to the output dtype differs.
    const ToleranceCheck check = check_against(data.o, expected.out, 1e-7);
    EXPECT_TRUE(check.passed()) << dtype_name(dtype) << ": " << check.describe();
    expect_lse_and_empty_rows(data, expected);
  }
}

TEST(AttentionReference, IgnoresTheMask) {
  CaseData data = make_case(small_case(DType::kF32, 0.1, 8));
  Tensor o_masked = Tensor::empty(DType::kF32, data.o.shape());
  auto masked = make_attention_params(data.q, data.k, data.v, o_masked, data.layouts, &data.mask,
                                      data.scale);
  auto dense = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, nullptr,
                                     data.scale);
  ASSERT_TRUE(masked.is_ok() && dense.is_ok());
  ASSERT_TRUE(attention_reference(*masked).is_ok());
  ASSERT_TRUE(attention_reference(*dense).is_ok());
  EXPECT_EQ(max_rel_error(o_masked, data.o), 0.0);
}

TEST(AttentionCpu, EmptyMaskGivesZerosAndMinusInfinity) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    CaseData data = make_case(small_case(dtype, 1.0, 9));
    const int tiles = data.layouts.max_tiles();
    TileMask empty = TileMask::empty(1, data.layouts.heads(), tiles, tiles, tiles);
    auto params = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, &empty,
                                        data.scale, data.lse.data());
    ASSERT_TRUE(params.is_ok());
    ASSERT_TRUE(attention_cpu(*params).is_ok());
    for (float x : to_f32_vector(data.o)) ASSERT_EQ(x, 0.0f) << dtype_name(dtype);
    for (float x : data.lse) ASSERT_EQ(x, -kInf) << dtype_name(dtype);
  }
}

TEST(AttentionCpu, MaxKZeroMaskIsAccepted) {
  CaseData data = make_case(small_case(DType::kF32, 1.0, 10));
  const int tiles = data.layouts.max_tiles();
  TileMask empty = TileMask::empty(1, data.layouts.heads(), tiles, tiles, 0);
  auto params = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, &empty,
                                      data.scale, data.lse.data());
  ASSERT_TRUE(params.is_ok()) << params.status().to_string();
  ASSERT_TRUE(attention_cpu(*params).is_ok());
  for (float x : to_f32_vector(data.o)) ASSERT_EQ(x, 0.0f);
}

TEST(AttentionCpu, LseIsOptional) {
  CaseData data = make_case(small_case(DType::kF16, 0.3, 11));
  Tensor o_without = Tensor::empty(DType::kF16, data.o.shape());
  fill_nan(o_without);
  auto with_lse = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, &data.mask,
                                        data.scale, data.lse.data());
  auto without = make_attention_params(data.q, data.k, data.v, o_without, data.layouts,
                                       &data.mask, data.scale);
  ASSERT_TRUE(with_lse.is_ok() && without.is_ok());
  ASSERT_TRUE(attention_cpu(*with_lse).is_ok());
  ASSERT_TRUE(attention_cpu(*without).is_ok());
  EXPECT_EQ(max_rel_error(o_without, data.o), 0.0);
}

// lse is the log of the softmax normaliser: exp(s - lse) over the selected keys sums to one, and
// o = sum_j exp(s_j - lse) v_j. Checked directly on one row, independent of the brute force.
TEST(AttentionCpu, LseNormalisesTheSoftmax) {
  CaseData data = make_case(small_case(DType::kF32, 0.3, 12));
  auto params = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, &data.mask,
                                      data.scale, data.lse.data());
  ASSERT_TRUE(params.is_ok());
  ASSERT_TRUE(attention_cpu(*params).is_ok());
  const int64_t dim = data.q.dim(3), volume = data.layouts.volume();
  const float* q = data.q.data_as<float>();
  const float* k = data.k.data_as<float>();
  const float* v = data.v.data_as<float>();
  const float* o = data.o.data_as<float>();
  int rows_checked = 0;
  for (int q_tile = 0; q_tile < data.layouts.max_tiles(); ++q_tile) {
    const int count = data.mask.count(0, 1, q_tile);
    if (count == 0 || data.layouts.valid(1, q_tile) == 0) continue;
    const int64_t row = data.layouts.padded_tokens() + q_tile * volume;  // head 1, slot 0
    double total = 0;
    std::vector<double> out(size_t(dim), 0.0);
    for (int i = 0; i < count; ++i) {
      const int key_tile = data.mask.row(0, 1, q_tile)[i];
      for (int s = 0; s < data.layouts.valid(1, key_tile); ++s) {
        const int64_t key = data.layouts.padded_tokens() + key_tile * volume + s;
        double dot = 0;
        for (int64_t c = 0; c < dim; ++c) dot += double(q[row * dim + c]) * k[key * dim + c];
        const double p = std::exp(dot * data.scale - data.lse[size_t(row)]);
        total += p;
        for (int64_t c = 0; c < dim; ++c) out[c] += p * v[key * dim + c];
      }
    }
    EXPECT_NEAR(total, 1.0, 1e-5) << "query tile " << q_tile;
    for (int64_t c = 0; c < dim; ++c) EXPECT_NEAR(o[row * dim + c], out[c], 1e-5);
    ++rows_checked;
  }
  EXPECT_GT(rows_checked, 0);
}

// NaN inputs are not screened: they must show in the output rows they reach, and nowhere else.
TEST(AttentionCpu, NanInQueryPropagatesToItsRowOnly) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    CaseData data = make_case(small_case(dtype, 1.0, 13));
    const int64_t dim = data.q.dim(3);
    const int64_t poisoned_row = data.layouts.padded_tokens() + 64 + 5;  // head 1, tile 1, slot 5
    ASSERT_GT(data.layouts.valid(1, 1), 5);
    set_nan(data.q, poisoned_row * dim + 3);
    auto params = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, nullptr,
                                        data.scale, data.lse.data());
    ASSERT_TRUE(params.is_ok());
    ASSERT_TRUE(attention_cpu(*params).is_ok());
    const std::vector<float> out = to_f32_vector(data.o);
    for (int64_t row = 0; row < int64_t(data.lse.size()); ++row) {
      const bool expect_nan = row == poisoned_row;
      EXPECT_EQ(std::isnan(data.lse[size_t(row)]), expect_nan) << dtype_name(dtype) << " row " << row;
      for (int64_t c = 0; c < dim; ++c) {
        ASSERT_EQ(std::isnan(out[size_t(row * dim + c)]), expect_nan)
            << dtype_name(dtype) << " row " << row << " col " << c;
      }
    }
  }
}

TEST(AttentionCpu, NanInKeyPropagatesToQueriesThatSelectIt) {
  CaseData data = make_case(small_case(DType::kF16, 0.3, 14));
  const int64_t dim = data.q.dim(3), volume = data.layouts.volume();
  const int key_tile = 2;
  set_nan(data.k, (int64_t(key_tile) * volume + 1) * dim);  // batch 0, head 0, tile 2, slot 1
  auto params = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, &data.mask,
                                      data.scale, data.lse.data());
  ASSERT_TRUE(params.is_ok());
  ASSERT_TRUE(attention_cpu(*params).is_ok());
  const std::vector<float> out = to_f32_vector(data.o);
  int nan_tiles = 0;
  for (int q_tile = 0; q_tile < data.layouts.max_tiles(); ++q_tile) {
    const int32_t* row = data.mask.row(0, 0, q_tile);
    const bool selects = std::find(row, row + data.mask.count(0, 0, q_tile), key_tile) !=
                         row + data.mask.count(0, 0, q_tile);
    nan_tiles += selects ? 1 : 0;
    for (int s = 0; s < data.layouts.valid(0, q_tile); ++s) {
      const int64_t r = int64_t(q_tile) * volume + s;
      EXPECT_EQ(std::isnan(out[size_t(r * dim)]), selects) << "query tile " << q_tile;
    }
  }
  EXPECT_GT(nan_tiles, 0) << "pick another seed: no query tile selected the poisoned key tile";
  // Head 1 never sees head 0's keys.
  for (size_t i = size_t(data.layouts.padded_tokens() * dim); i < out.size(); ++i) {
    ASSERT_FALSE(std::isnan(out[i]));
  }
}

// Params with other strides: q, k, v, o as [B, tokens, H, D] (token-major) must give the same
// result as the contiguous [B, H, tokens, D] layout.
TEST(AttentionCpu, StridedLayoutMatchesContiguous) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    CaseData data = make_case(small_case(dtype, 0.3, 15));
    auto params = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, &data.mask,
                                        data.scale);
    ASSERT_TRUE(params.is_ok());
    ASSERT_TRUE(attention_cpu(*params).is_ok());

    const int64_t batch = data.q.dim(0), heads = data.q.dim(1), tokens = data.q.dim(2),
                  dim = data.q.dim(3);
    const size_t elem = dtype_size(dtype);
    auto to_token_major = [&](const Tensor& t) {
      Tensor out = Tensor::empty(dtype, {batch, tokens, heads, dim});
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t n = 0; n < tokens; ++n)
            std::memcpy(static_cast<char*>(out.data()) + (((b * tokens + n) * heads + h) * dim) * elem,
                        static_cast<const char*>(t.data()) + (((b * heads + h) * tokens + n) * dim) * elem,
                        dim * elem);
      return out;
    };
    Tensor q_t = to_token_major(data.q), k_t = to_token_major(data.k), v_t = to_token_major(data.v);
    Tensor o_t = Tensor::empty(dtype, q_t.shape());
    fill_nan(o_t);
    AttentionParams strided = *params;
    strided.q = q_t.data();
    strided.k = k_t.data();
    strided.v = v_t.data();
    strided.o = o_t.data();
    strided.q_batch_stride = strided.k_batch_stride = strided.v_batch_stride =
        strided.o_batch_stride = tokens * heads * dim;
    strided.q_head_stride = strided.k_head_stride = strided.v_head_stride =
        strided.o_head_stride = dim;
    strided.q_row_stride = strided.k_row_stride = strided.v_row_stride = strided.o_row_stride =
        heads * dim;
    ASSERT_TRUE(attention_cpu(strided).is_ok());
    Tensor back = Tensor::empty(dtype, data.o.shape());
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t n = 0; n < tokens; ++n)
          std::memcpy(static_cast<char*>(back.data()) + (((b * heads + h) * tokens + n) * dim) * elem,
                      static_cast<const char*>(o_t.data()) + (((b * tokens + n) * heads + h) * dim) * elem,
                      dim * elem);
    EXPECT_LT(max_rel_error(back, data.o), 1e-6) << dtype_name(dtype);
  }
}

// Fresh inputs per call, identical output: no state leaks between calls (thread-local scratch).
TEST(AttentionCpu, RepeatedCallsAreDeterministic) {
  CaseData data = make_case(small_case(DType::kF32, 0.3, 16));
  auto params = make_attention_params(data.q, data.k, data.v, data.o, data.layouts, &data.mask,
                                      data.scale);
  ASSERT_TRUE(params.is_ok());
  ASSERT_TRUE(attention_cpu(*params).is_ok());
  Tensor first = data.o.clone();
  fill_nan(data.o);
  ASSERT_TRUE(attention_cpu(*params).is_ok());
  EXPECT_EQ(max_rel_error(data.o, first), 0.0);
}

}  // namespace
}  // namespace veda::test
