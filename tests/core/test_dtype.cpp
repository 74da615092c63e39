#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/test_data.hpp"
#include "veda/dtype.hpp"

namespace veda {
namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
bool half_is_nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0; }
bool bf16_is_nan(uint16_t b) { return (b & 0x7F80) == 0x7F80 && (b & 0x007F) != 0; }

TEST(DType, SizesNamesAndParsing) {
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    Result<DType> parsed = parse_dtype(dtype_name(dt));
    ASSERT_TRUE(parsed.is_ok()) << dtype_name(dt);
    EXPECT_EQ(*parsed, dt);
  }
  EXPECT_STREQ(dtype_name(DType::kBF16), "BF16");
  Result<DType> bad = parse_dtype("I64");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("I64"), std::string::npos);
}

TEST(DType, HalfKnownValues) {
  EXPECT_EQ(float_to_half(1.0f), 0x3C00);
  EXPECT_EQ(float_to_half(-2.0f), 0xC000);
  EXPECT_EQ(float_to_half(0.0f), 0x0000);
  EXPECT_EQ(float_to_half(-0.0f), 0x8000);
  EXPECT_EQ(float_to_half(65504.0f), 0x7BFF);  // largest finite
  EXPECT_EQ(float_to_half(65519.0f), 0x7BFF);  // rounds down to max
  EXPECT_EQ(float_to_half(65520.0f), 0x7C00);  // halfway to 2^16: ties to even = Inf
  EXPECT_EQ(float_to_half(1e10f), 0x7C00);
  EXPECT_EQ(float_to_half(-1e10f), 0xFC00);
  EXPECT_EQ(float_to_half(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(float_to_half(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_FLOAT_EQ(half_to_float(0x3555), 0.333251953125f);
}

TEST(DType, HalfNaNStaysNaN) {
  EXPECT_TRUE(half_is_nan(float_to_half(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload lives only in low mantissa bits must not collapse to Inf.
  EXPECT_TRUE(half_is_nan(float_to_half(from_bits(0x7F800001u))));
  EXPECT_TRUE(half_is_nan(float_to_half(from_bits(0xFF800001u))));
  EXPECT_TRUE(std::isnan(half_to_float(0x7E00)));
  EXPECT_TRUE(std::isnan(half_to_float(0x7C01)));
}

TEST(DType, HalfSubnormals) {
  const float min_sub = std::ldexp(1.0f, -24);
  EXPECT_EQ(float_to_half(min_sub), 0x0001);
  EXPECT_EQ(half_to_float(0x0001), min_sub);
  EXPECT_EQ(half_to_float(0x03FF), 1023 * min_sub);   // largest subnormal
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);  // tie: to even (zero)
  EXPECT_EQ(float_to_half(std::ldexp(3.0f, -26)), 0x0001);  // 0.75 ulp: up
  EXPECT_EQ(float_to_half(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp tie: to even (2)
  EXPECT_EQ(float_to_half(std::ldexp(5.0f, -25)), 0x0002);  // 2.5 ulp tie: to even (2)
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -30)), 0x0000);  // underflow
  EXPECT_EQ(float_to_half(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -130)), 0x0000);  // f32 subnormal
}

TEST(DType, HalfRoundsToNearestEven) {
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie, even below
  EXPECT_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie, even above
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3C01);
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -12)), 0x3C00);
  // Rounding up that carries into the exponent.
  EXPECT_EQ(float_to_half(2.0f - std::ldexp(1.0f, -12)), 0x4000);
}

TEST(DType, HalfEveryPatternRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = half_to_float(uint16_t(h));
    uint16_t back = float_to_half(f);
    if (half_is_nan(uint16_t(h))) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
      ASSERT_TRUE(half_is_nan(back)) << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(DType, Bf16KnownValuesAndRounding) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);      // tie, even below
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);  // tie, even above
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // overflow rounds to Inf
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_TRUE(bf16_is_nan(float_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(bf16_is_nan(float_to_bf16(from_bits(0x7F800001u))));  // low-bit payload NaN
  EXPECT_TRUE(bf16_is_nan(float_to_bf16(from_bits(0xFFFFFFFFu))));
  // f32 subnormals keep their top bits.
  EXPECT_EQ(float_to_bf16(from_bits(0x00010000u)), 0x0001);
  EXPECT_EQ(float_to_bf16(from_bits(0x00018000u)), 0x0002);  // tie to even
}

TEST(DType, Bf16EveryPatternRoundTrips) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    float f = bf16_to_float(uint16_t(b));
    EXPECT_EQ(to_bits(f), b << 16);
    uint16_t back = float_to_bf16(f);
    if (bf16_is_nan(uint16_t(b))) {
      ASSERT_TRUE(bf16_is_nan(back)) << std::hex << b;
    } else {
      ASSERT_EQ(back, b) << std::hex << b;
    }
  }
}

// The bulk paths (chunked over threads) must agree with the scalar conversions everywhere,
// including the tail of a length that does not divide into chunks.
TEST(DType, BulkConversionsMatchScalar) {
  const size_t n = (1u << 18) + 37;
  Tensor src = test::random_tensor(DType::kF32, {int64_t(n)}, 101, 3.0f);
  const float* x = src.data_as<float>();
  std::vector<uint16_t> half(n), bf(n);
  convert_from_f32(x, half.data(), DType::kF16, n);
  convert_from_f32(x, bf.data(), DType::kBF16, n);
  std::vector<float> half_back(n), bf_back(n), copy(n);
  convert_to_f32(half.data(), DType::kF16, half_back.data(), n);
  convert_to_f32(bf.data(), DType::kBF16, bf_back.data(), n);
  convert_to_f32(x, DType::kF32, copy.data(), n);
  std::vector<float> rounded(x, x + n);
  round_through(rounded.data(), n, DType::kF16);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(half[i], float_to_half(x[i])) << i;
    ASSERT_EQ(bf[i], float_to_bf16(x[i])) << i;
    ASSERT_EQ(half_back[i], half_to_float(half[i])) << i;
    ASSERT_EQ(bf_back[i], bf16_to_float(bf[i])) << i;
    ASSERT_EQ(copy[i], x[i]) << i;
    ASSERT_EQ(rounded[i], half_back[i]) << i;
    // Relative error bounds: half has 11 significant bits, bf16 has 8.
    ASSERT_LE(std::fabs(half_back[i] - x[i]), std::fabs(x[i]) * std::ldexp(1.0f, -11) + 1e-7f);
    ASSERT_LE(std::fabs(bf_back[i] - x[i]), std::fabs(x[i]) * std::ldexp(1.0f, -8));
  }
  std::vector<float> bf_rounded(x, x + n);
  round_through(bf_rounded.data(), n, DType::kBF16);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(bf_rounded[i], bf_back[i]) << i;
}

}  // namespace
}  // namespace veda
