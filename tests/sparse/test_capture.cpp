#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/test_data.hpp"
#include "veda/capture.hpp"
#include "veda/safetensors.hpp"

namespace veda {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class CaptureTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::temp_dir(); }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string dir_;
};

void expect_dev_capture(const Capture& cap, const std::string& path) {
  EXPECT_EQ(cap.q.shape(), (Shape{1, 3, 7168, 128}));
  EXPECT_EQ(cap.q.dtype(), DType::kF16);
  EXPECT_EQ(cap.k.shape(), cap.q.shape());
  EXPECT_EQ(cap.v.shape(), cap.q.shape());
  EXPECT_EQ(cap.grid, (Grid{16, 16, 28}));
  EXPECT_EQ(cap.prefix_tokens, 0);
  EXPECT_EQ(cap.layer, 6);
  EXPECT_EQ(cap.step, 15);
  EXPECT_EQ(cap.source, path);
  EXPECT_TRUE(cap.q.check_finite("q").is_ok());
  EXPECT_TRUE(cap.k.check_finite("k").is_ok());
  EXPECT_TRUE(cap.v.check_finite("v").is_ok());
}

TEST_F(CaptureTest, LoadsTheRepoCapture) {
  Result<Capture> cap = load_capture(test::shared_capture_path());
  ASSERT_TRUE(cap.is_ok()) << cap.status().to_string();
  expect_dev_capture(*cap, test::shared_capture_path());
}

TEST_F(CaptureTest, LoadsTheSharedCapture) {
  const std::string path = VEDA_SHARED_DIR "/data/captures/dev_p3_s101_l6_t15.safetensors";
  if (!fs::exists(path)) GTEST_SKIP() << path << " not present";
  Result<Capture> cap = load_capture(path);
  ASSERT_TRUE(cap.is_ok()) << cap.status().to_string();
  expect_dev_capture(*cap, path);
}

TEST_F(CaptureTest, SaveLoadRoundTrip) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    Capture cap;
    cap.grid = {2, 3, 5};
    cap.prefix_tokens = 4;
    cap.layer = 12;
    cap.step = 3;
    const Shape shape{2, 3, 4 + 30, 16};
    cap.q = test::random_tensor(dt, shape, 1);
    cap.k = test::random_tensor(dt, shape, 2);
    cap.v = test::random_tensor(dt, shape, 3);
    const std::string path = dir_ + "/cap.safetensors";
    ASSERT_TRUE(save_capture(path, cap).is_ok());
    Result<Capture> back = load_capture(path);
    ASSERT_TRUE(back.is_ok()) << back.status().to_string();
    EXPECT_EQ(back->grid, cap.grid);
    EXPECT_EQ(back->prefix_tokens, 4);
    EXPECT_EQ(back->layer, 12);
    EXPECT_EQ(back->step, 3);
    for (auto [a, b] : {std::pair{&cap.q, &back->q}, {&cap.k, &back->k}, {&cap.v, &back->v}}) {
      ASSERT_EQ(a->dtype(), b->dtype());
      ASSERT_EQ(a->shape(), b->shape());
      ASSERT_EQ(std::memcmp(a->data(), b->data(), a->nbytes()), 0);
    }
  }
}

TEST_F(CaptureTest, UnknownLayerAndStepStayUnknown) {
  Capture cap;
  cap.grid = {1, 2, 2};
  cap.q = test::random_tensor(DType::kF32, {1, 1, 4, 8}, 1);
  cap.k = test::random_tensor(DType::kF32, {1, 1, 4, 8}, 2);
  cap.v = test::random_tensor(DType::kF32, {1, 1, 4, 8}, 3);
  ASSERT_TRUE(save_capture(dir_ + "/c.safetensors", cap).is_ok());
  Result<Capture> back = load_capture(dir_ + "/c.safetensors");
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->layer, -1);
  EXPECT_EQ(back->step, -1);
  EXPECT_EQ(back->prefix_tokens, 0);
}

TEST_F(CaptureTest, SaveRejectsInconsistentCaptures) {
  Capture cap;
  cap.grid = {2, 2, 2};
  cap.q = test::random_tensor(DType::kF32, {1, 2, 9, 8}, 1);
  cap.k = test::random_tensor(DType::kF32, {1, 2, 9, 8}, 2);
  cap.v = test::random_tensor(DType::kF32, {1, 2, 9, 8}, 3);
  Status grid = save_capture(dir_ + "/a.safetensors", cap);  // 9 != 0 + 8
  EXPECT_EQ(grid.code(), ErrorCode::kInvalidArgument);
  cap.prefix_tokens = 1;
  EXPECT_TRUE(save_capture(dir_ + "/b.safetensors", cap).is_ok());
  cap.v = Tensor();
  EXPECT_FALSE(save_capture(dir_ + "/c.safetensors", cap).is_ok());
}

// Writes q/k/v of `shape` (v only if with_v) with the given metadata.
std::string write_raw_capture(const std::string& path, const Shape& shape,
                              const std::map<std::string, std::string>& meta, bool with_v = true,
                              Shape k_shape = {}) {
  std::vector<NamedTensor> tensors{{"q", test::random_tensor(DType::kF16, shape, 1)},
                                   {"k", test::random_tensor(DType::kF16, k_shape.empty() ? shape : k_shape, 2)}};
  if (with_v) tensors.push_back({"v", test::random_tensor(DType::kF16, shape, 3)});
  EXPECT_TRUE(write_safetensors(path, tensors, meta).is_ok());
  return path;
}

void expect_load_fails(const std::string& path, const std::vector<std::string>& parts) {
  Result<Capture> cap = load_capture(path);
  ASSERT_FALSE(cap.is_ok()) << path;
  const std::string& msg = cap.status().message();
  EXPECT_TRUE(contains(msg, path)) << msg;
  for (const auto& p : parts) EXPECT_TRUE(contains(msg, p)) << "'" << p << "' not in: " << msg;
}

TEST_F(CaptureTest, MalformedCaptures) {
  const Shape shape{1, 2, 24, 8};
  expect_load_fails(write_raw_capture(dir_ + "/grid.safetensors", shape, {{"grid", "[2, 3, 5]"}}),
                    {"N = 24", "30"});
  expect_load_fails(write_raw_capture(dir_ + "/prefix.safetensors", shape,
                                      {{"grid", "[2, 3, 4]"}, {"prefix_tokens", "2"}}),
                    {"prefix_tokens 2"});
  expect_load_fails(write_raw_capture(dir_ + "/no_v.safetensors", shape, {{"grid", "[2, 3, 4]"}}, false),
                    {"'v'"});
  expect_load_fails(write_raw_capture(dir_ + "/no_grid.safetensors", shape, {}), {"grid"});
  expect_load_fails(write_raw_capture(dir_ + "/grid_text.safetensors", shape, {{"grid", "2x3x4"}}),
                    {"grid", "2x3x4"});
  expect_load_fails(write_raw_capture(dir_ + "/grid_two.safetensors", shape, {{"grid", "[6, 4]"}}),
                    {"grid"});
  expect_load_fails(write_raw_capture(dir_ + "/grid_zero.safetensors", shape, {{"grid", "[0, 3, 4]"}}),
                    {"grid"});
  expect_load_fails(write_raw_capture(dir_ + "/grid_frac.safetensors", shape, {{"grid", "[2.5, 3, 4]"}}),
                    {"grid"});
  expect_load_fails(write_raw_capture(dir_ + "/prefix_text.safetensors", shape,
                                      {{"grid", "[2, 3, 4]"}, {"prefix_tokens", "two"}}),
                    {"prefix_tokens", "two"});
  expect_load_fails(write_raw_capture(dir_ + "/prefix_neg.safetensors", shape,
                                      {{"grid", "[2, 3, 4]"}, {"prefix_tokens", "-1"}}),
                    {"prefix_tokens"});
  expect_load_fails(write_raw_capture(dir_ + "/layer.safetensors", shape,
                                      {{"grid", "[2, 3, 4]"}, {"layer", "6.5"}}),
                    {"layer"});
  expect_load_fails(write_raw_capture(dir_ + "/k_shape.safetensors", shape, {{"grid", "[2, 3, 4]"}},
                                      true, {1, 2, 24, 16}),
                    {"shapes differ"});
  expect_load_fails(write_raw_capture(dir_ + "/rank3.safetensors", {2, 24, 8}, {{"grid", "[2, 3, 4]"}}),
                    {"[B, H, N, D]"});
  // Not a safetensors file at all.
  const std::string junk = dir_ + "/junk.safetensors";
  { std::ofstream(junk) << "hello"; }
  expect_load_fails(junk, {});
  Result<Capture> missing = load_capture(dir_ + "/missing.safetensors");
  EXPECT_EQ(missing.status().code(), ErrorCode::kIoError);
}

// ----------------------------------------------------------------------------------------------
// Procedural workload

TEST(ProceduralCapture, DeterministicForASeed) {
  ProceduralSpec spec;
  spec.grid = {4, 6, 8};
  spec.prefix_tokens = 5;
  spec.batch = 2;
  spec.heads = 4;
  spec.head_dim = 32;
  spec.seed = 77;
  Result<Capture> a = make_procedural_capture(spec);
  Result<Capture> b = make_procedural_capture(spec);
  ASSERT_TRUE(a.is_ok() && b.is_ok()) << a.status().to_string();
  EXPECT_EQ(a->q.shape(), (Shape{2, 4, 5 + 4 * 6 * 8, 32}));
  EXPECT_EQ(a->q.dtype(), DType::kF32);
  EXPECT_EQ(a->grid, spec.grid);
  EXPECT_EQ(a->prefix_tokens, 5);
  for (auto [x, y] : {std::pair{&a->q, &b->q}, {&a->k, &b->k}, {&a->v, &b->v}}) {
    ASSERT_EQ(std::memcmp(x->data(), y->data(), x->nbytes()), 0);
    EXPECT_TRUE(x->check_finite("procedural").is_ok());
  }
  spec.seed = 78;
  Result<Capture> c = make_procedural_capture(spec);
  ASSERT_TRUE(c.is_ok());
  for (auto [x, y] : {std::pair{&a->q, &c->q}, {&a->k, &c->k}, {&a->v, &c->v}}) {
    int64_t same = 0;
    for (int64_t i = 0; i < x->numel(); ++i) same += x->data_as<float>()[i] == y->data_as<float>()[i];
    EXPECT_LT(same, x->numel() / 100);
  }
  // Batches differ from each other (independent noise), heads too.
  const int64_t per_head = a->q.dim(2) * a->q.dim(3);
  const float* q = a->q.data_as<float>();
  EXPECT_NE(std::memcmp(q, q + 4 * per_head, size_t(per_head) * 4), 0);
}

TEST(ProceduralCapture, RejectsBadSpecs) {
  ProceduralSpec spec;
  spec.head_kinds = {"local", "sideways"};
  Result<Capture> kind = make_procedural_capture(spec);
  ASSERT_FALSE(kind.is_ok());
  EXPECT_TRUE(contains(kind.status().message(), "sideways"));
  spec = {};
  spec.grid = {0, 4, 4};
  EXPECT_FALSE(make_procedural_capture(spec).is_ok());
  spec = {};
  spec.head_dim = 0;
  EXPECT_FALSE(make_procedural_capture(spec).is_ok());
  spec = {};
  spec.head_kinds.clear();
  EXPECT_FALSE(make_procedural_capture(spec).is_ok());
  spec = {};
  spec.prefix_tokens = -1;
  EXPECT_FALSE(make_procedural_capture(spec).is_ok());
}

// softmax(q_i . k / sqrt(d)) over all keys of one (batch 0, head).
std::vector<double> attention_row(const Capture& cap, int head, int64_t query) {
  const int64_t n = cap.q.dim(2), d = cap.q.dim(3);
  const float* q = cap.q.data_as<float>() + (head * n + query) * d;
  const float* k = cap.k.data_as<float>() + head * n * d;
  std::vector<double> p(static_cast<size_t>(n));
  double max_logit = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += double(q[c]) * k[j * d + c];
    p[size_t(j)] = s / std::sqrt(double(d));
    max_logit = std::max(max_logit, p[size_t(j)]);
  }
  double sum = 0;
  for (double& x : p) sum += (x = std::exp(x - max_logit));
  for (double& x : p) x /= sum;
  return p;
}

// The three head kinds have the attention geometry they are named for.
TEST(ProceduralCapture, HeadKindsHaveTheirStructure) {
  ProceduralSpec spec;
  spec.grid = {8, 12, 12};
  spec.prefix_tokens = 3;
  spec.heads = 3;  // local, temporal, diffuse
  spec.head_dim = 64;
  spec.seed = 5;
  Result<Capture> cap = make_procedural_capture(spec);
  ASSERT_TRUE(cap.is_ok()) << cap.status().to_string();
  const Grid g = spec.grid;
  const int64_t n = cap->q.dim(2);
  auto coords = [&](int64_t token) {
    int64_t v = token - spec.prefix_tokens;
    return std::array<int64_t, 3>{v / (g.h * g.w), (v / g.w) % g.h, v % g.w};
  };

  double local_mass = 0, temporal_mass = 0, diffuse_max = 0, diffuse_entropy = 0;
  const int kQueries = 24;
  for (int s = 0; s < kQueries; ++s) {
    const int64_t query = spec.prefix_tokens + (s * 7919) % g.tokens();
    const auto qc = coords(query);
    std::vector<double> local = attention_row(*cap, 0, query);
    std::vector<double> temporal = attention_row(*cap, 1, query);
    std::vector<double> diffuse = attention_row(*cap, 2, query);
    for (int64_t j = spec.prefix_tokens; j < n; ++j) {
      const auto kc = coords(j);
      const int64_t dt = std::abs(kc[0] - qc[0]), dh = std::abs(kc[1] - qc[1]),
                    dw = std::abs(kc[2] - qc[2]);
      if (std::max({dt, dh, dw}) <= 3) local_mass += local[size_t(j)];
      if (dh <= 1 && dw <= 1) temporal_mass += temporal[size_t(j)];
    }
    std::vector<double> sorted = diffuse;
    std::sort(sorted.rbegin(), sorted.rend());
    diffuse_max += sorted[4];  // beyond the sinks
    for (double p : diffuse) diffuse_entropy -= p > 0 ? p * std::log(p) : 0;
  }
  local_mass /= kQueries;
  temporal_mass /= kQueries;
  diffuse_max /= kQueries;
  diffuse_entropy /= kQueries;
  // Local heads: most mass within the 7x7x7 neighbourhood (a flat distribution would put at
  // most 343/1155 there, less at borders).
  EXPECT_GT(local_mass, 0.8);
  // Temporal heads: most mass on the same spatial position (+-1) across all frames, which is
  // at most 9*8/1152 = 6% of tokens.
  EXPECT_GT(temporal_mass, 0.7);
  // Diffuse heads: flat beyond a few sinks (uniform would be 1/1155) and high entropy.
  EXPECT_LT(diffuse_max, 10.0 / double(n));
  EXPECT_GT(diffuse_entropy, 0.6 * std::log(double(n)));
  // Local attention is not one-hot either: it spreads over the neighbourhood.
  std::vector<double> row = attention_row(*cap, 0, spec.prefix_tokens + 500);
  EXPECT_LT(*std::max_element(row.begin(), row.end()), 0.3);
}

TEST(ProceduralCapture, DiffuseHeadsHaveSinks) {
  ProceduralSpec spec;
  spec.grid = {4, 16, 16};
  spec.heads = 1;
  spec.head_kinds = {"diffuse"};
  spec.seed = 9;
  Result<Capture> cap = make_procedural_capture(spec);
  ASSERT_TRUE(cap.is_ok());
  const int64_t n = cap->q.dim(2);
  std::vector<double> total(size_t(n), 0.0);
  for (int64_t query = 0; query < n; query += 97) {
    std::vector<double> row = attention_row(*cap, 0, query);
    for (int64_t j = 0; j < n; ++j) total[size_t(j)] += row[size_t(j)];
  }
  std::vector<double> sorted = total;
  std::sort(sorted.rbegin(), sorted.rend());
  double sum = 0;
  for (double x : total) sum += x;
  double top4 = sorted[0] + sorted[1] + sorted[2] + sorted[3];
  EXPECT_GT(top4 / sum, 0.08);  // a handful of keys draw a real share of attention
  EXPECT_LT(top4 / sum, 0.5);
  EXPECT_GT(sorted[3], 6 * sorted[10]);  // and they stand out from the rest
}

}  // namespace
}  // namespace veda
