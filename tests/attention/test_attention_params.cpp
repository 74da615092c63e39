// make_attention_params / check_attention_params: bad params are errors with clear messages,
// and attention_cpu / attention_reference refuse them without touching the output.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "attention/attention_test_util.hpp"
#include "common/test_data.hpp"
#include "veda/attention.hpp"

namespace veda::test {
namespace {

struct Fixture {
  HeadLayouts layouts;
  Tensor q, k, v, o;
  TileMask mask;
};

Fixture make_fixture(DType dtype = DType::kF32) {
  auto layouts = HeadLayouts::uniform({3, 6, 10}, 7, 2, {4, 4, 4});
  EXPECT_TRUE(layouts.is_ok());
  Fixture f{std::move(layouts).value(), {}, {}, {}, {}, {}};
  const Shape shape{1, 2, f.layouts.padded_tokens(), 64};
  f.q = random_tensor(dtype, shape, 1);
  f.k = random_tensor(dtype, shape, 2);
  f.v = random_tensor(dtype, shape, 3);
  f.o = Tensor::empty(dtype, shape);
  f.mask = random_mask(1, f.layouts, 0.5, 4);
  return f;
}

TEST(AttentionParams, MakeFillsContiguousParams) {
  Fixture f = make_fixture(DType::kBF16);
  std::vector<float> lse(size_t(2 * f.layouts.padded_tokens()));
  auto p = make_attention_params(f.q, f.k, f.v, f.o, f.layouts, &f.mask, 0.125f, lse.data());
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(p->dtype, DType::kBF16);
  EXPECT_EQ(p->batch, 1);
  EXPECT_EQ(p->heads, 2);
  EXPECT_EQ(p->tokens, f.layouts.padded_tokens());
  EXPECT_EQ(p->head_dim, 64);
  EXPECT_EQ(p->q_row_stride, 64);
  EXPECT_EQ(p->k_head_stride, f.layouts.padded_tokens() * 64);
  EXPECT_EQ(p->o_batch_stride, 2 * f.layouts.padded_tokens() * 64);
  EXPECT_EQ(p->tile_size, 64);
  EXPECT_EQ(p->num_tiles, f.layouts.max_tiles());
  EXPECT_EQ(p->tile_valid, f.layouts.valid_table().data());
  EXPECT_EQ(p->mask_counts, f.mask.counts.data());
  EXPECT_EQ(p->mask_indices, f.mask.indices.data());
  EXPECT_EQ(p->max_k, f.mask.max_k);
  EXPECT_EQ(p->lse, lse.data());
  EXPECT_EQ(p->softmax_scale, 0.125f);
  EXPECT_TRUE(check_attention_params(*p).is_ok());

  auto dense = make_attention_params(f.q, f.k, f.v, f.o, f.layouts, nullptr, 0.125f);
  ASSERT_TRUE(dense.is_ok());
  EXPECT_EQ(dense->mask_counts, nullptr);
  EXPECT_EQ(dense->mask_indices, nullptr);
  EXPECT_EQ(dense->lse, nullptr);
}

TEST(AttentionParams, MakeRejectsMismatchedTensors) {
  Fixture f = make_fixture();
  const Shape shape = f.q.shape();
  Tensor wrong_tokens = random_tensor(DType::kF32, {1, 2, shape[2] - 64, 64}, 5);
  Tensor wrong_heads = random_tensor(DType::kF32, {1, 3, shape[2], 64}, 5);
  Tensor wrong_dtype = random_tensor(DType::kF16, shape, 5);
  Tensor rank3 = random_tensor(DType::kF32, {2, shape[2], 64}, 5);
  Tensor undefined;

  struct Bad {
    std::string what;
    std::function<Result<AttentionParams>()> make;
    std::string message_part;
  };
  const std::vector<Bad> bad = {
      {"k tokens", [&] { return make_attention_params(f.q, wrong_tokens, f.v, f.o, f.layouts, nullptr, 1.f); }, "shapes differ"},
      {"all tokens", [&] { Tensor o = wrong_tokens.clone(); return make_attention_params(wrong_tokens, wrong_tokens, wrong_tokens, o, f.layouts, nullptr, 1.f); }, "does not match the layouts"},
      {"heads", [&] { Tensor o = wrong_heads.clone(); return make_attention_params(wrong_heads, wrong_heads, wrong_heads, o, f.layouts, nullptr, 1.f); }, "does not match the layouts"},
      {"dtype", [&] { return make_attention_params(f.q, f.k, wrong_dtype, f.o, f.layouts, nullptr, 1.f); }, "dtypes differ"},
      {"rank", [&] { Tensor o = rank3.clone(); return make_attention_params(rank3, rank3, rank3, o, f.layouts, nullptr, 1.f); }, "rank-4"},
      {"undefined", [&] { return make_attention_params(f.q, f.k, f.v, undefined, f.layouts, nullptr, 1.f); }, "rank-4"},
      {"scale 0", [&] { return make_attention_params(f.q, f.k, f.v, f.o, f.layouts, nullptr, 0.f); }, "softmax_scale"},
      {"scale nan", [&] { return make_attention_params(f.q, f.k, f.v, f.o, f.layouts, nullptr, std::nanf("")); }, "softmax_scale"},
      {"mask batch", [&] { TileMask m = random_mask(2, f.layouts, 0.5, 1); return make_attention_params(f.q, f.k, f.v, f.o, f.layouts, &m, 1.f); }, "TileMask is"},
      {"mask storage", [&] { TileMask m = f.mask; m.counts.pop_back(); return make_attention_params(f.q, f.k, f.v, f.o, f.layouts, &m, 1.f); }, "storage"},
  };
  for (const Bad& b : bad) {
    auto result = b.make();
    ASSERT_FALSE(result.is_ok()) << b.what;
    EXPECT_EQ(result.status().code(), ErrorCode::kInvalidArgument) << b.what;
    EXPECT_NE(result.status().message().find(b.message_part), std::string::npos)
        << b.what << ": " << result.status().message();
  }
}

TEST(AttentionParams, CheckRejectsBadFields) {
  Fixture f = make_fixture();
  std::vector<float> lse(size_t(2 * f.layouts.padded_tokens()));
  auto made = make_attention_params(f.q, f.k, f.v, f.o, f.layouts, &f.mask, 0.125f, lse.data());
  ASSERT_TRUE(made.is_ok());
  const AttentionParams good = *made;
  std::vector<int32_t> bad_valid = f.layouts.valid_table();
  bad_valid[3] = 65;
  TileMask bad_count = f.mask, out_of_range = f.mask, descending = f.mask, duplicate = f.mask;
  bad_count.counts[2] = bad_count.max_k + 1;
  // A row with at least two entries, for the ordering cases.
  int row = 0;
  while (f.mask.counts[row] < 2) ++row;
  out_of_range.indices[size_t(row) * f.mask.max_k] = f.layouts.max_tiles();
  std::swap(descending.indices[size_t(row) * f.mask.max_k], descending.indices[size_t(row) * f.mask.max_k + 1]);
  duplicate.indices[size_t(row) * f.mask.max_k + 1] = duplicate.indices[size_t(row) * f.mask.max_k];

  struct Bad {
    std::string what;
    std::function<void(AttentionParams&)> edit;
    ErrorCode code;
    std::string message_part;
  };
  const ErrorCode kInvalid = ErrorCode::kInvalidArgument, kUnsupported = ErrorCode::kUnsupported;
  const std::vector<Bad> bad = {
      {"null q", [](AttentionParams& p) { p.q = nullptr; }, kInvalid, "non-null"},
      {"null o", [](AttentionParams& p) { p.o = nullptr; }, kInvalid, "non-null"},
      {"null tile_valid", [](AttentionParams& p) { p.tile_valid = nullptr; }, kInvalid, "tile_valid"},
      {"batch 0", [](AttentionParams& p) { p.batch = 0; }, kInvalid, "positive"},
      {"head_dim 0", [](AttentionParams& p) { p.head_dim = 0; }, kUnsupported, "head_dim"},
      {"head_dim 257", [](AttentionParams& p) { p.head_dim = 257; }, kUnsupported, "head_dim"},
      {"tile_size 96", [](AttentionParams& p) { p.tile_size = 96; }, kUnsupported, "tile_size"},
      {"tokens", [](AttentionParams& p) { p.tokens -= 1; }, kInvalid, "num_tiles"},
      {"num_tiles", [](AttentionParams& p) { p.num_tiles += 1; }, kInvalid, "num_tiles"},
      {"scale", [](AttentionParams& p) { p.softmax_scale = -1; }, kInvalid, "softmax_scale"},
      {"scale inf", [](AttentionParams& p) { p.softmax_scale = std::numeric_limits<float>::infinity(); }, kInvalid, "softmax_scale"},
      {"row stride", [](AttentionParams& p) { p.k_row_stride = 63; }, kInvalid, "row stride"},
      {"negative stride", [](AttentionParams& p) { p.v_head_stride = -1; }, kInvalid, "non-negative"},
      {"output head stride 0", [](AttentionParams& p) { p.o_head_stride = 0; }, kInvalid, "same output"},
      {"tile_valid", [&](AttentionParams& p) { p.tile_valid = bad_valid.data(); }, kInvalid, "tile_valid[head 0][tile 3]"},
      {"half mask", [](AttentionParams& p) { p.mask_counts = nullptr; }, kInvalid, "half a TileMask"},
      {"no indices", [](AttentionParams& p) { p.mask_indices = nullptr; }, kInvalid, "mask_indices is null"},
      {"max_k", [](AttentionParams& p) { p.max_k = p.num_tiles + 1; }, kInvalid, "max_k"},
      {"count", [&](AttentionParams& p) { p.mask_counts = bad_count.counts.data(); }, kInvalid, "has count"},
      {"index range", [&](AttentionParams& p) { p.mask_indices = out_of_range.indices.data(); }, kInvalid, "outside [0, num_tiles"},
      {"descending", [&](AttentionParams& p) { p.mask_indices = descending.indices.data(); }, kInvalid, "ascending"},
      {"duplicate", [&](AttentionParams& p) { p.mask_indices = duplicate.indices.data(); }, kInvalid, "ascending"},
  };
  for (const Bad& b : bad) {
    AttentionParams p = good;
    b.edit(p);
    const Status status = check_attention_params(p);
    ASSERT_FALSE(status.is_ok()) << b.what;
    EXPECT_EQ(status.code(), b.code) << b.what << ": " << status.to_string();
    EXPECT_NE(status.message().find(b.message_part), std::string::npos)
        << b.what << ": " << status.message();
    EXPECT_EQ(status.message().rfind("attention: ", 0), 0u) << b.what << ": " << status.message();

    // The backends refuse the same params and leave the output alone.
    fill_nan(f.o);
    EXPECT_EQ(attention_cpu(p).code(), b.code) << b.what;
    EXPECT_EQ(attention_reference(p).code(), b.code) << b.what;
    for (float x : to_f32_vector(f.o)) ASSERT_TRUE(std::isnan(x)) << b.what;
  }
}

}  // namespace
}  // namespace veda::test
