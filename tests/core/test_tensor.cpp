#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "common/test_data.hpp"
#include "veda/tensor.hpp"

namespace veda {
namespace {

TEST(Tensor, ShapeHelpers) {
  EXPECT_EQ(shape_to_string({1, 3, 7168, 128}), "[1, 3, 7168, 128]");
  EXPECT_EQ(shape_to_string({}), "[]");
  EXPECT_EQ(shape_numel({2, 3, 4}), 24);
  EXPECT_EQ(shape_numel({}), 1);
  EXPECT_EQ(shape_numel({5, 0, 2}), 0);
}

TEST(Tensor, EmptyAndZeros) {
  Tensor t = Tensor::empty(DType::kBF16, {2, 3, 5});
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.dtype(), DType::kBF16);
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.dim(0), 2);
  EXPECT_EQ(t.dim(-1), 5);
  EXPECT_EQ(t.numel(), 30);
  EXPECT_EQ(t.nbytes(), 60u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);

  Tensor z = Tensor::zeros(DType::kF32, {7, 9});
  for (int64_t i = 0; i < z.numel(); ++i) ASSERT_EQ(z.data_as<float>()[i], 0.0f);
  EXPECT_FALSE(Tensor().defined());
}

TEST(Tensor, CopiesShareStorageClonesDoNot) {
  Tensor a = test::random_tensor(DType::kF32, {4, 6}, 7);
  Tensor shared = a;
  Tensor cloned = a.clone();
  ASSERT_EQ(std::memcmp(a.data(), cloned.data(), a.nbytes()), 0);
  EXPECT_NE(a.data(), cloned.data());
  const float before = cloned.data_as<float>()[3];
  a.data_as<float>()[3] += 1.0f;
  EXPECT_EQ(shared.data_as<float>()[3], a.data_as<float>()[3]);
  EXPECT_EQ(cloned.data_as<float>()[3], before);
}

TEST(Tensor, ConversionRoundTrips) {
  Tensor a = test::random_tensor(DType::kF32, {3, 129}, 11, 2.0f);
  for (DType dt : {DType::kF16, DType::kBF16}) {
    Tensor low = a.to(dt);
    EXPECT_EQ(low.dtype(), dt);
    EXPECT_EQ(low.shape(), a.shape());
    Tensor back = low.to(DType::kF32);
    const float tol = dt == DType::kF16 ? std::ldexp(1.0f, -11) : std::ldexp(1.0f, -8);
    for (int64_t i = 0; i < a.numel(); ++i) {
      float x = a.data_as<float>()[i], y = back.data_as<float>()[i];
      ASSERT_LE(std::fabs(x - y), std::fabs(x) * tol + 1e-7f) << i;
    }
    // Low precision -> low precision goes through f32 and is exact for values already rounded.
    Tensor other = low.to(dt == DType::kF16 ? DType::kBF16 : DType::kF16).to(dt);
    EXPECT_EQ(other.shape(), a.shape());
    // Random values from a helper in a low-precision dtype are representable exactly.
    Tensor r = test::random_tensor(dt, {50}, 12);
    EXPECT_EQ(r.dtype(), dt);
    ASSERT_EQ(std::memcmp(r.to(DType::kF32).to(dt).data(), r.data(), r.nbytes()), 0);
  }
}

TEST(Tensor, ReshapeKeepsStorage) {
  Tensor a = test::random_tensor(DType::kF16, {2, 3, 4}, 3);
  Result<Tensor> r = a.reshape({6, 4});
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->data(), a.data());
  EXPECT_EQ(r->shape(), (Shape{6, 4}));
  Result<Tensor> bad = a.reshape({5, 5});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), ErrorCode::kInvalidArgument);
}

TEST(Tensor, ViewKeepsOwnerAlive) {
  auto owner = std::make_shared<std::vector<float>>(12, 1.5f);
  std::weak_ptr<std::vector<float>> watch = owner;
  Tensor v = Tensor::view(DType::kF32, {3, 4}, owner->data(), owner);
  owner.reset();
  EXPECT_FALSE(watch.expired());
  EXPECT_EQ(v.data_as<float>()[11], 1.5f);
  v = Tensor();
  EXPECT_TRUE(watch.expired());
}

TEST(Tensor, CheckFiniteFindsNaNAndInf) {
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    Tensor a = test::random_tensor(DType::kF32, {10, 10}, 21);
    EXPECT_TRUE(a.to(dt).check_finite("a").is_ok());
    a.data_as<float>()[37] = std::numeric_limits<float>::quiet_NaN();
    Status s = a.to(dt).check_finite("activations");
    ASSERT_FALSE(s.is_ok());
    EXPECT_EQ(s.code(), ErrorCode::kNumericError);
    EXPECT_NE(s.message().find("activations"), std::string::npos);
    EXPECT_NE(s.message().find("NaN"), std::string::npos);
    EXPECT_NE(s.message().find("37"), std::string::npos);
    a.data_as<float>()[37] = 1.0f;
    a.data_as<float>()[80] = -std::numeric_limits<float>::infinity();
    Status inf = a.to(dt).check_finite("x");
    ASSERT_FALSE(inf.is_ok());
    EXPECT_NE(inf.message().find("Inf"), std::string::npos);
  }
}

TEST(Status, ValuesAndMacros) {
  Status ok = Status::ok();
  EXPECT_TRUE(ok.is_ok());
  Status err = format_error("bad header");
  EXPECT_FALSE(err.is_ok());
  EXPECT_EQ(err.code(), ErrorCode::kFormatError);
  EXPECT_NE(err.to_string().find("bad header"), std::string::npos);
  auto make = [](bool good) -> Result<int> {
    if (good) return 42;
    return invalid_argument("no");
  };
  auto use = [&](bool good) -> Result<int> {
    VEDA_ASSIGN_OR_RETURN(int v, make(good));
    return v + 1;
  };
  EXPECT_EQ(*use(true), 43);
  EXPECT_EQ(use(false).status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace veda
