// GPU tile selection (GpuSelector) vs the CPU reference: gather_to_tiles, compute_tile_stats,
// score_tiles_{mean,stats,estimated} and select_tiles, for both scoring precisions (f32 and FP16x3
// GEMMs, each row's boundary rescored canonically) and both input orders (token order with
// the tile-order copies, and tile order). Fresh random inputs each run (the seed is printed), outputs
// poisoned before each run; tiled copies, statistics and max/min exact, means and f32 logits
// within float tolerance (FP16x3 logits within 1% of the row's largest), masks identical on every
// row whose budget boundary is not an f32 near-tie (and near-tied rows must be rare); exact ties
// go to the lower index; both precisions select one mask (also at the wan14b-720p scale). NaN and
// infinities never pass. Skips without a GPU.
#include <gtest/gtest.h>

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/test_data.hpp"
#include "veda/capture.hpp"
#include "veda/cuda.hpp"
#include "veda/cuda_selection.hpp"
#include "veda/estimator.hpp"
#include "veda/scoring.hpp"
#include "veda/selection.hpp"

namespace veda {
namespace {

#define SKIP_WITHOUT_GPU()                                           \
  do {                                                               \
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

uint64_t fresh_seed() {
  return uint64_t(std::chrono::high_resolution_clock::now().time_since_epoch().count());
}

// Token-order inputs [B, H, N, D] with spatial structure (smooth per-channel waves over the grid
// plus noise), so tile means carry signal and rows are not flat.
Tensor structured_input(DType dtype, int batch, int heads, Grid grid, int prefix, int dim,
                        uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  const int64_t tokens = prefix + grid.tokens();
  Tensor x = Tensor::empty(DType::kF32, {batch, heads, tokens, dim});
  float* p = x.data_as<float>();
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      std::vector<float> ft(dim), fh(dim), fw(dim), ph(dim), amp(dim);
      for (int d = 0; d < dim; ++d) {
        ft[d] = 0.6f * uni(rng), fh[d] = 0.5f * uni(rng), fw[d] = 0.4f * uni(rng);
        ph[d] = 6.283f * uni(rng), amp[d] = 2.f * uni(rng);
      }
      for (int64_t n = 0; n < tokens; ++n) {
        float* row = p + ((int64_t(b) * heads + h) * tokens + n) * dim;
        int t = 0, hh = 0, w = 0;
        if (n >= prefix) {
          const int64_t v = n - prefix;
          t = int(v / (int64_t(grid.h) * grid.w)), hh = int((v / grid.w) % grid.h),
          w = int(v % grid.w);
        }
        for (int d = 0; d < dim; ++d) {
          const float wave =
              n < prefix ? 1.5f : amp[d] * std::sin(ft[d] * t + fh[d] * hh + fw[d] * w + ph[d]);
          row[d] = wave + normal(rng);
        }
      }
    }
  }
  return dtype == DType::kF32 ? x : x.to(dtype);
}

struct Method {
  GpuScoreMethod method = GpuScoreMethod::kStats;
  StatsScoreOptions stats;
  bool estimator_query_upper = true;
};

std::vector<EstimatorParams> random_estimator(int heads, uint64_t seed, bool query_upper) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<EstimatorParams> out(heads);
  for (auto& p : out) {
    p.pooled = 1.0 + 0.3 * u(rng);
    p.key_upper = 0.4 + 0.2 * u(rng);
    p.key_lower = 0.1 * u(rng);
    p.query_upper = query_upper ? 0.2 + 0.1 * u(rng) : 0.0;
    p.log_valid = 1.0 + 0.2 * u(rng);
    p.prefix_bias = 0.5 * u(rng);
    for (int axis = 0; axis < 3; ++axis)
      for (int bin = 1; bin < kDistanceBins; ++bin) p.distance[axis][bin] = -0.1 * bin + 0.05 * u(rng);
  }
  return out;
}

float row_max_abs(const float* row, int n) {
  float m = 0.f;
  for (int j = 0; j < n; ++j)
    if (std::isfinite(row[j])) m = std::max(m, std::fabs(row[j]));
  return m;
}

// Row tolerance for logits: fp32 GEMM rounding relative to the row's largest magnitude (it also
// decides which boundaries are near-ties).
float row_tolerance(const float* row, int n) { return 2e-5f * row_max_abs(row, n) + 1e-5f; }

const char* precision_name(GpuScorePrecision p) { return p == GpuScorePrecision::kF32 ? "f32" : "f16x3"; }

struct CompareReport {
  int64_t rows = 0, near_tied = 0, mismatched = 0, logit_bad = 0;
  float max_logit_err = 0;
};

// Full check of one select() against the CPU pipeline.
void run_and_compare(const Tensor& q, const Tensor& k, const HeadLayouts& layouts,
                     const SelectionConfig& config, const GpuSelectorOptions& opt,
                     const std::string& what, double max_near_tied_share = 0.02) {
  const int batch = int(q.dim(0)), heads = layouts.heads(), dim = int(q.dim(3));
  const int T = layouts.max_tiles();
  const DType dtype = q.dtype();

  // CPU reference.
  auto q_tiled_cpu = gather_to_tiles(q, layouts);
  auto k_tiled_cpu = gather_to_tiles(k, layouts);
  ASSERT_TRUE(q_tiled_cpu.is_ok() && k_tiled_cpu.is_ok());
  auto q_stats = compute_tile_stats(*q_tiled_cpu, layouts);
  auto k_stats = compute_tile_stats(*k_tiled_cpu, layouts);
  ASSERT_TRUE(q_stats.is_ok() && k_stats.is_ok());
  Result<Tensor> logits_cpu = Status(ErrorCode::kInternal, "unset");
  switch (opt.method) {
    case GpuScoreMethod::kMean:
      logits_cpu = score_tiles_mean(*q_stats, *k_stats, layouts, opt.scale);
      break;
    case GpuScoreMethod::kStats:
      logits_cpu = score_tiles_stats(*q_stats, *k_stats, layouts, opt.scale, opt.stats);
      break;
    case GpuScoreMethod::kEstimator:
      logits_cpu = score_tiles_estimated(*q_stats, *k_stats, layouts, opt.scale, opt.estimator);
      break;
  }
  ASSERT_TRUE(logits_cpu.is_ok()) << logits_cpu.status().to_string();
  auto mask_cpu = select_tiles(*logits_cpu, layouts, config);
  ASSERT_TRUE(mask_cpu.is_ok()) << mask_cpu.status().to_string();

  // GPU.
  GpuSelectorOptions o = opt;
  o.keep_stats = o.keep_logits = true;
  o.count_rescored = true;  // printed below
  auto selector = GpuSelector::make(layouts, config, o);
  ASSERT_TRUE(selector.is_ok()) << selector.status().to_string();
  ASSERT_EQ(selector->max_k(), mask_cpu->max_k) << what;
  const int max_k = selector->max_k();
  const size_t tiled_bytes = size_t(batch) * heads * layouts.padded_tokens() * dim * dtype_size(dtype);
  const size_t rows = size_t(batch) * heads * T;
  auto dq = DeviceBuffer::allocate(q.nbytes());
  auto dk = DeviceBuffer::allocate(k.nbytes());
  auto dqt = DeviceBuffer::allocate(tiled_bytes);
  auto dkt = DeviceBuffer::allocate(tiled_bytes);
  auto dcounts = DeviceBuffer::allocate(rows * sizeof(int32_t));
  auto dindices = DeviceBuffer::allocate(rows * max_k * sizeof(int32_t));
  ASSERT_TRUE(dq.is_ok() && dk.is_ok() && dqt.is_ok() && dkt.is_ok() && dcounts.is_ok() &&
              dindices.is_ok());
  ASSERT_TRUE(copy_to_device(dq->data(), q.data(), q.nbytes()).is_ok());
  ASSERT_TRUE(copy_to_device(dk->data(), k.data(), k.nbytes()).is_ok());
  // Poison: NaN in the tiled copies, 0x7f7f7f7f (not -1, not a tile) in the mask.
  ASSERT_TRUE(fill_device_bytes(dqt->data(), 0xFF, tiled_bytes).is_ok());
  ASSERT_TRUE(fill_device_bytes(dkt->data(), 0xFF, tiled_bytes).is_ok());
  ASSERT_TRUE(fill_device_bytes(dcounts->data(), 0x7F, dcounts->size()).is_ok());
  ASSERT_TRUE(fill_device_bytes(dindices->data(), 0x7F, dindices->size()).is_ok());
  const Status st = selector->select(dq->data(), dk->data(), dtype, batch, dim, dqt->data(),
                                     dkt->data(), dcounts->as<int32_t>(), dindices->as<int32_t>());
  ASSERT_TRUE(st.is_ok()) << what << ": " << st.to_string();
  ASSERT_TRUE(cuda_synchronize().is_ok());

  // Tiled copies: exact (the same values, converted identically).
  for (auto [dev, cpu] : {std::pair{&*dqt, &*q_tiled_cpu}, std::pair{&*dkt, &*k_tiled_cpu}}) {
    Tensor gpu = Tensor::empty(dtype, cpu->shape());
    ASSERT_TRUE(copy_to_host(gpu.data(), dev->data(), tiled_bytes).is_ok());
    Tensor gpu32 = gpu.to(DType::kF32);
    const float* a = gpu32.data_as<float>();
    const float* b = cpu->data_as<float>();
    int64_t bad = 0;
    for (int64_t i = 0; i < gpu32.numel(); ++i)
      if (!(a[i] == b[i])) ++bad;  // NaN (poison) fails
    EXPECT_EQ(bad, 0) << what << ": tiled copy differs in " << bad << " elements";
  }

  // Statistics: max/min exact, mean within float rounding.
  TileStats gq, gk;
  ASSERT_TRUE(selector->copy_stats_to_host(&gq, &gk).is_ok());
  for (auto [g, c] : {std::pair{&gq, &*q_stats}, std::pair{&gk, &*k_stats}}) {
    const float* gm = g->mean.data_as<float>();
    const float* cm = c->mean.data_as<float>();
    const float* gx = g->max.data_as<float>();
    const float* cx = c->max.data_as<float>();
    const float* gn = g->min.data_as<float>();
    const float* cn = c->min.data_as<float>();
    int64_t bad = 0;
    for (int64_t i = 0; i < g->mean.numel(); ++i) {
      if (!(std::fabs(gm[i] - cm[i]) <= 1e-5f * (1.f + std::fabs(cm[i])))) ++bad;
      if (!(gx[i] == cx[i]) || !(gn[i] == cn[i])) ++bad;
    }
    EXPECT_EQ(bad, 0) << what << ": " << bad << " statistics differ";
  }

  // Logits and masks.
  auto logits_gpu = selector->copy_logits_to_host();
  ASSERT_TRUE(logits_gpu.is_ok()) << logits_gpu.status().to_string();
  std::vector<int32_t> counts(rows), indices(rows * max_k);
  ASSERT_TRUE(copy_to_host(counts.data(), dcounts->data(), counts.size() * 4).is_ok());
  ASSERT_TRUE(copy_to_host(indices.data(), dindices->data(), indices.size() * 4).is_ok());
  TileMask mask_gpu = TileMask::empty(batch, heads, T, T, max_k);
  mask_gpu.counts = counts;
  mask_gpu.indices = indices;
  const Status valid = mask_gpu.validate(layouts);
  EXPECT_TRUE(valid.is_ok()) << what << ": " << valid.to_string();

  CompareReport rep;
  const float* lc = logits_cpu->data_as<float>();
  const float* lg = logits_gpu->data_as<float>();
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      const TileLayout& layout = layouts.head(h);
      const int n = layout.num_tiles();
      const double density = config.head_density.empty() ? config.density : config.head_density[h];
      const int budget = std::clamp(int(std::lround(density * n)), 1, n);
      for (int i = 0; i < T; ++i) {
        const size_t r = mask_cpu->row_offset(b, h, i);
        const float* rc = lc + r * T;
        const float* rg = lg + r * T;
        const float tol = row_tolerance(rc, T);
        // FP16x3 logits (kept for debugging; the boundary is rescored in f32) are within the
        // kernel's error bound, far below 1% of the row's largest logit on these inputs.
        const float logit_tol =
            opt.precision == GpuScorePrecision::kF32 ? tol : 1e-2f * row_max_abs(rc, T) + 1e-5f;
        for (int j = 0; j < T; ++j) {
          const bool ok = std::isinf(rc[j]) ? rg[j] == rc[j]
                                            : std::fabs(rg[j] - rc[j]) <= logit_tol;  // NaN fails
          if (!ok) ++rep.logit_bad;
          if (std::isfinite(rc[j]) && std::isfinite(rg[j]))
            rep.max_logit_err = std::max(rep.max_logit_err, std::fabs(rg[j] - rc[j]) / logit_tol);
        }
        ++rep.rows;
        EXPECT_EQ(counts[r], mask_cpu->counts[r]) << what << " row " << r;
        bool same = counts[r] == mask_cpu->counts[r];
        for (int m = 0; m < max_k && same; ++m)
          same = indices[r * max_k + m] == mask_cpu->indices[r * max_k + m];
        if (same) continue;
        // A boundary near-tie (the budget's last and first-left-out candidates within tolerance)
        // may legitimately order differently; anything else is a mismatch.
        bool near_tie = false;
        if (i < n) {
          std::vector<float> cand;
          int forced = 0;
          for (int j = 0; j < n; ++j) {
            const bool f = (config.force_prefix && layout.is_prefix_tile(j)) ||
                           (config.force_self && j == i);
            if (f) {
              ++forced;
            } else if (std::isfinite(rc[j])) {
              cand.push_back(rc[j]);
            }
          }
          const int take = std::min(std::max(0, budget - forced), int(cand.size()));
          std::sort(cand.begin(), cand.end(), std::greater<>());
          if (take > 0 && take < int(cand.size()))
            near_tie = cand[take - 1] - cand[take] <= 2 * tol;
        }
        if (near_tie) {
          ++rep.near_tied;
        } else {
          ++rep.mismatched;
        }
      }
    }
  }
  auto rc = selector->rescore_counts();
  ASSERT_TRUE(rc.is_ok()) << rc.status().to_string();
  const std::string rescored = fmt::format(
      ", rescored {:.2f} tiles a row", double(rc->boundary_tiles) / std::max<int64_t>(1, rc->rows));
  fmt::print("  {}: {} rows, {} mask mismatches, {} near-tied boundary rows, {} logits out of "
             "tolerance, max logit err {:.3f} x tol{}\n",
             what, rep.rows, rep.mismatched, rep.near_tied, rep.logit_bad, rep.max_logit_err,
             rescored);
  EXPECT_EQ(rep.logit_bad, 0) << what;
  EXPECT_EQ(rep.mismatched, 0) << what;
  EXPECT_LE(double(rep.near_tied), max_near_tied_share * double(rep.rows)) << what;

  // Tile-order inputs (the CPU's tiled copies) give the same statistics and the same mask: the
  // sums run over the same slots in the same order.
  {
    Tensor qt = q_tiled_cpu->to(dtype), kt = k_tiled_cpu->to(dtype);
    ASSERT_TRUE(copy_to_device(dqt->data(), qt.data(), tiled_bytes).is_ok());
    ASSERT_TRUE(copy_to_device(dkt->data(), kt.data(), tiled_bytes).is_ok());
    ASSERT_TRUE(fill_device_bytes(dcounts->data(), 0x7F, dcounts->size()).is_ok());
    ASSERT_TRUE(fill_device_bytes(dindices->data(), 0x7F, dindices->size()).is_ok());
    const Status st2 = selector->select_tiled(dqt->data(), dkt->data(), dtype, batch, dim,
                                              dcounts->as<int32_t>(), dindices->as<int32_t>());
    ASSERT_TRUE(st2.is_ok()) << what << " (tile order): " << st2.to_string();
    std::vector<int32_t> counts2(rows), indices2(rows * max_k);
    ASSERT_TRUE(copy_to_host(counts2.data(), dcounts->data(), counts2.size() * 4).is_ok());
    ASSERT_TRUE(copy_to_host(indices2.data(), dindices->data(), indices2.size() * 4).is_ok());
    EXPECT_TRUE(counts2 == counts && indices2 == indices) << what << ": tile-order mask differs";
    TileStats tq, tk;
    ASSERT_TRUE(selector->copy_stats_to_host(&tq, &tk).is_ok());
    for (auto [a, b] : {std::pair{&tq, &gq}, std::pair{&tk, &gk}})
      for (auto [x, y] : {std::pair{&a->mean, &b->mean}, std::pair{&a->max, &b->max},
                          std::pair{&a->min, &b->min}})
        EXPECT_EQ(std::memcmp(x->data(), y->data(), x->nbytes()), 0) << what << ": tile-order stats";

    // Statistics given for every other head (GpuTileStatsInput, as the DiT's producer gives
    // them): the same mask, and those heads' rows are not read (they now hold NaN).
    std::vector<uint8_t> marks(static_cast<size_t>(heads));
    for (int h = 0; h < heads; h += 2) marks[size_t(h)] = 1;
    const size_t head_bytes = size_t(layouts.padded_tokens()) * dim * dtype_size(dtype);
    for (int b = 0; b < batch; ++b)
      for (int h = 0; h < heads; h += 2)
        for (DeviceBuffer* t : {&*dqt, &*dkt})
          ASSERT_TRUE(fill_device_bytes(t->as<uint8_t>() + (size_t(b) * heads + h) * head_bytes,
                                        0xFF, head_bytes).is_ok());
    const Tensor* src[6] = {&gq.mean, &gq.max, &gq.min, &gk.mean, &gk.max, &gk.min};
    std::vector<DeviceBuffer> given_bufs;
    for (const Tensor* t : src) {
      auto buf = DeviceBuffer::allocate(t->nbytes());
      ASSERT_TRUE(buf.is_ok() && copy_to_device(buf->data(), t->data(), t->nbytes()).is_ok());
      given_bufs.push_back(std::move(*buf));
    }
    GpuTileStatsInput given;
    given.q_mean = given_bufs[0].as<float>(), given.q_max = given_bufs[1].as<float>();
    given.q_min = given_bufs[2].as<float>(), given.k_mean = given_bufs[3].as<float>();
    given.k_max = given_bufs[4].as<float>(), given.k_min = given_bufs[5].as<float>();
    given.heads = marks;
    ASSERT_TRUE(fill_device_bytes(dcounts->data(), 0x7F, dcounts->size()).is_ok());
    ASSERT_TRUE(fill_device_bytes(dindices->data(), 0x7F, dindices->size()).is_ok());
    const Status st3 = selector->select_tiled(dqt->data(), dkt->data(), dtype, batch, dim,
                                              dcounts->as<int32_t>(), dindices->as<int32_t>(),
                                              nullptr, nullptr, &given);
    ASSERT_TRUE(st3.is_ok()) << what << " (given statistics): " << st3.to_string();
    ASSERT_TRUE(copy_to_host(counts2.data(), dcounts->data(), counts2.size() * 4).is_ok());
    ASSERT_TRUE(copy_to_host(indices2.data(), dindices->data(), indices2.size() * 4).is_ok());
    EXPECT_TRUE(counts2 == counts && indices2 == indices)
        << what << ": mask with given stats differs";
  }

  // Gather alone (the v path) gives the same tiled copy.
  ASSERT_TRUE(fill_device_bytes(dqt->data(), 0xFF, tiled_bytes).is_ok());
  ASSERT_TRUE(selector->gather(dq->data(), dtype, batch, dim, dqt->data()).is_ok());
  Tensor gathered = Tensor::empty(dtype, q_tiled_cpu->shape());
  ASSERT_TRUE(copy_to_host(gathered.data(), dqt->data(), tiled_bytes).is_ok());
  Tensor g32 = gathered.to(DType::kF32);
  EXPECT_EQ(std::memcmp(g32.data(), q_tiled_cpu->data(), g32.nbytes()), 0) << what << ": gather";
}

struct RandomCase {
  std::string name;
  Grid grid;
  int prefix;
  std::vector<TileShape> shapes;  // one per head
  DType dtype;
  int batch, dim;
  double density;
  GpuScoreMethod method;
  bool force_prefix = true, force_self = true;
  bool head_densities = false;
  float key_alpha = 0.4f;
  bool log_valid_bias = false;
  float head0_q_scale = 1.f;  // head 0's q features far outside fp16's range (scaled rows)
};

class SelectionGpuRandom
    : public ::testing::TestWithParam<std::tuple<RandomCase, GpuScorePrecision>> {};

TEST_P(SelectionGpuRandom, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const RandomCase& c = std::get<0>(GetParam());
  const GpuScorePrecision precision = std::get<1>(GetParam());
  const uint64_t seed = fresh_seed();
  const int heads = int(c.shapes.size());
  auto layouts = HeadLayouts::make(c.grid, c.prefix, c.shapes);
  ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
  Tensor q = structured_input(DType::kF32, c.batch, heads, c.grid, c.prefix, c.dim, seed);
  Tensor k = structured_input(c.dtype, c.batch, heads, c.grid, c.prefix, c.dim, seed + 1);
  if (c.head0_q_scale != 1.f) {
    const int64_t slice = q.dim(2) * q.dim(3);
    for (int b = 0; b < c.batch; ++b)
      for (int64_t e = 0; e < slice; ++e) q.data_as<float>()[b * heads * slice + e] *= c.head0_q_scale;
  }
  if (c.dtype != DType::kF32) q = q.to(c.dtype);
  SelectionConfig config;
  config.density = c.density;
  config.force_prefix = c.force_prefix;
  config.force_self = c.force_self;
  if (c.head_densities)
    for (int h = 0; h < heads; ++h) config.head_density.push_back(c.density * (0.5 + h));
  GpuSelectorOptions opt;
  opt.method = c.method;
  opt.precision = precision;
  opt.scale = 1.0f / std::sqrt(float(c.dim));
  opt.stats.key_alpha = c.key_alpha;
  opt.stats.log_valid_bias = c.log_valid_bias;
  if (c.method == GpuScoreMethod::kEstimator)
    opt.estimator = random_estimator(heads, seed + 2, c.name.find("noqu") == std::string::npos);
  run_and_compare(q, k, *layouts, config, opt,
                  fmt::format("{} {} seed {}", c.name, precision_name(precision), seed));
}

const TileShape k444{4, 4, 4}, k1622{16, 2, 2}, k188{1, 8, 8}, k248{2, 4, 8}, k488{4, 4, 8};

INSTANTIATE_TEST_SUITE_P(
    Cases, SelectionGpuRandom,
    ::testing::Combine(::testing::Values(
        RandomCase{"mean_bf16", {9, 30, 45}, 0, {k444, k444}, DType::kBF16, 2, 128, 0.05,
                   GpuScoreMethod::kMean},
        RandomCase{"stats_bf16_prefix_mixed", {9, 30, 45}, 100, {k444, k1622, k188}, DType::kBF16,
                   1, 128, 0.05, GpuScoreMethod::kStats},
        RandomCase{"stats_f16_d64_b2", {13, 22, 37}, 0, {k248, k444}, DType::kF16, 2, 64, 0.1,
                   GpuScoreMethod::kStats},
        RandomCase{"stats_f32_noforce_logvalid", {13, 22, 37}, 70, {k444, k1622}, DType::kF32, 1,
                   128, 0.07, GpuScoreMethod::kStats, false, false, false, 0.4f, true},
        RandomCase{"stats_alpha0", {9, 30, 45}, 0, {k444}, DType::kBF16, 1, 128, 0.05,
                   GpuScoreMethod::kStats, true, true, false, 0.0f},
        RandomCase{"estimator_bf16_prefix_headdens", {9, 30, 45}, 130, {k444, k1622, k188},
                   DType::kBF16, 1, 128, 0.05, GpuScoreMethod::kEstimator, true, true, true},
        RandomCase{"estimator_noqu_vol128", {10, 24, 40}, 0, {k488, k488}, DType::kBF16, 1, 128,
                   0.1, GpuScoreMethod::kEstimator},
        RandomCase{"dense_budget", {5, 12, 16}, 0, {k444, k248}, DType::kBF16, 1, 128, 1.0,
                   GpuScoreMethod::kStats},
        RandomCase{"stats_f32_d32", {6, 20, 28}, 0, {k444, k248}, DType::kF32, 1, 32, 0.1,
                   GpuScoreMethod::kStats},
        RandomCase{"stats_bf16_head0_huge", {9, 30, 45}, 40, {k444, k1622}, DType::kBF16, 1, 128,
                   0.05, GpuScoreMethod::kStats, true, true, false, 0.4f, false, 1e4f},
        RandomCase{"estimator_f16_head0_huge", {9, 30, 45}, 0, {k444, k188}, DType::kF16, 1, 64,
                   0.05, GpuScoreMethod::kEstimator, true, true, false, 0.4f, false, 3e3f},
        RandomCase{"mean_bf16_head0_tiny", {9, 30, 45}, 0, {k444, k444}, DType::kBF16, 1, 128,
                   0.05, GpuScoreMethod::kMean, true, true, false, 0.4f, false, 1e-6f},
        // 2,560 tiles a head: more than the top-k's 64 threads list in one round of 32 each.
        RandomCase{"stats_bf16_2560_tiles", {40, 64, 64}, 0, {k188, k444}, DType::kBF16, 1, 64,
                   0.03, GpuScoreMethod::kStats}),
        ::testing::Values(GpuScorePrecision::kF32, GpuScorePrecision::kF16x3)),
    [](const auto& info) {
      return std::get<0>(info.param).name + "_" + precision_name(std::get<1>(info.param));
    });

TEST(SelectionGpu, SharedCapture) {
  SKIP_WITHOUT_GPU();
  auto capture = load_capture(test::shared_capture_path());
  ASSERT_TRUE(capture.is_ok()) << capture.status().to_string();
  const int heads = int(capture->q.dim(1)), dim = int(capture->q.dim(3));
  const float scale = 1.0f / std::sqrt(float(dim));
  for (const auto& shapes :
       {std::vector<TileShape>(heads, k444), std::vector<TileShape>{k1622, k188, k248}}) {
    if (int(shapes.size()) != heads) continue;
    auto layouts = HeadLayouts::make(capture->grid, capture->prefix_tokens, shapes);
    ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
    for (double density : {0.05, 0.1}) {
      for (GpuScoreMethod method : {GpuScoreMethod::kMean, GpuScoreMethod::kStats}) {
        for (GpuScorePrecision precision : {GpuScorePrecision::kF32, GpuScorePrecision::kF16x3}) {
          SelectionConfig config;
          config.density = density;
          GpuSelectorOptions opt;
          opt.method = method;
          opt.precision = precision;
          opt.scale = scale;
          run_and_compare(capture->q, capture->k, *layouts, config, opt,
                          fmt::format("capture {} {} {} d{}", shapes[0].str(),
                                      method == GpuScoreMethod::kMean ? "mean" : "stats",
                                      precision_name(precision), density),
                          0.01);
        }
      }
    }
  }
}

TEST(SelectionGpu, NanIsReported) {
  SKIP_WITHOUT_GPU();
  const Grid grid{4, 8, 8};
  auto layouts = HeadLayouts::uniform(grid, 0, 2, k444);
  ASSERT_TRUE(layouts.is_ok());
  const size_t rows = size_t(2) * layouts->max_tiles();
  for (GpuScorePrecision precision : {GpuScorePrecision::kF32, GpuScorePrecision::kF16x3}) {
    for (bool in_k : {true, false}) {  // in k of head 1, or in q of head 0
      // bf16 NaN, +inf (k) / -inf (q), and a negative NaN in q (fmaxf(NaN, 0) would hide it).
      for (uint16_t bits : {uint16_t(in_k ? 0x7fc0 : 0xffc0), uint16_t(in_k ? 0x7f80 : 0xff80)}) {
        const std::string what = fmt::format("{} {} 0x{:04x}", precision_name(precision),
                                             in_k ? "k" : "q", bits);
        Tensor q = structured_input(DType::kBF16, 1, 2, grid, 0, 64, fresh_seed());
        Tensor k = structured_input(DType::kBF16, 1, 2, grid, 0, 64, fresh_seed() + 1);
        if (in_k) {
          k.data_as<uint16_t>()[int64_t(2 * grid.tokens() - 5) * 64 + 3] = bits;
        } else {
          q.data_as<uint16_t>()[int64_t(grid.tokens() / 2) * 64 + 7] = bits;
        }
        SelectionConfig config;
        GpuSelectorOptions opt;
        opt.scale = 0.125f;
        opt.precision = precision;
        auto selector = GpuSelector::make(*layouts, config, opt);
        ASSERT_TRUE(selector.is_ok());
        auto dq = DeviceBuffer::allocate(q.nbytes());
        auto dk = DeviceBuffer::allocate(k.nbytes());
        auto dc = DeviceBuffer::allocate(rows * 4);
        auto di = DeviceBuffer::allocate(rows * selector->max_k() * 4);
        ASSERT_TRUE(dq.is_ok() && dk.is_ok() && dc.is_ok() && di.is_ok());
        ASSERT_TRUE(copy_to_device(dq->data(), q.data(), q.nbytes()).is_ok());
        ASSERT_TRUE(copy_to_device(dk->data(), k.data(), k.nbytes()).is_ok());
        const Status st = selector->select(dq->data(), dk->data(), DType::kBF16, 1, 64, nullptr,
                                           nullptr, dc->as<int32_t>(), di->as<int32_t>());
        EXPECT_EQ(st.code(), ErrorCode::kNumericError) << what << ": " << st.to_string();
        EXPECT_NE(st.message().find(in_k ? "h=1" : "h=0"), std::string::npos)
            << what << ": " << st.to_string();
      }
    }
  }
}

// Every key tile has the same features (constant k, no ragged tiles, blend weights 1/2) and all
// products and sums are exact, so each row's logits tie exactly: the lowest indices must win.
TEST(SelectionGpu, TiesGoToLowerIndex) {
  SKIP_WITHOUT_GPU();
  const Grid grid{8, 16, 16};
  const int heads = 2, dim = 64;
  auto layouts = HeadLayouts::uniform(grid, 0, heads, k444);
  ASSERT_TRUE(layouts.is_ok());
  std::mt19937_64 rng(fresh_seed());
  std::uniform_int_distribution<int> half_steps(-2, 2);
  Tensor q = Tensor::empty(DType::kF32, {1, heads, grid.tokens(), dim});
  Tensor k = Tensor::empty(DType::kF32, {1, heads, grid.tokens(), dim});
  for (int64_t e = 0; e < q.numel(); ++e) {
    q.data_as<float>()[e] = 0.5f * float(half_steps(rng));
    k.data_as<float>()[e] = 0.25f;
  }
  q = q.to(DType::kBF16), k = k.to(DType::kBF16);
  SelectionConfig config;
  config.density = 0.25;
  for (GpuScorePrecision precision : {GpuScorePrecision::kF32, GpuScorePrecision::kF16x3}) {
    GpuSelectorOptions opt;
    opt.scale = 0.125f;
    opt.stats.key_alpha = 0.5f;
    opt.precision = precision;
    auto selector = GpuSelector::make(*layouts, config, opt);
    ASSERT_TRUE(selector.is_ok());
    const int T = layouts->max_tiles(), max_k = selector->max_k();
    const size_t rows = size_t(heads) * T;
    auto dq = DeviceBuffer::allocate(q.nbytes());
    auto dk = DeviceBuffer::allocate(k.nbytes());
    auto dc = DeviceBuffer::allocate(rows * 4);
    auto di = DeviceBuffer::allocate(rows * max_k * 4);
    ASSERT_TRUE(dq.is_ok() && dk.is_ok() && dc.is_ok() && di.is_ok());
    ASSERT_TRUE(copy_to_device(dq->data(), q.data(), q.nbytes()).is_ok());
    ASSERT_TRUE(copy_to_device(dk->data(), k.data(), k.nbytes()).is_ok());
    ASSERT_TRUE(fill_device_bytes(di->data(), 0x7F, di->size()).is_ok());
    ASSERT_TRUE(selector->select(dq->data(), dk->data(), DType::kBF16, 1, dim, nullptr, nullptr,
                                 dc->as<int32_t>(), di->as<int32_t>())
                    .is_ok());
    std::vector<int32_t> counts(rows), indices(rows * max_k);
    ASSERT_TRUE(copy_to_host(counts.data(), dc->data(), counts.size() * 4).is_ok());
    ASSERT_TRUE(copy_to_host(indices.data(), di->data(), indices.size() * 4).is_ok());
    const int budget = selection_budget(config.density, T);
    int64_t wrong = 0;
    for (size_t r = 0; r < rows; ++r) {
      const int i = int(r % T);
      std::vector<int32_t> expected;  // self (forced), then the lowest other indices
      for (int j = 0; j < T && int(expected.size()) < budget - 1; ++j)
        if (j != i) expected.push_back(j);
      expected.push_back(i);
      std::sort(expected.begin(), expected.end());
      expected.resize(max_k, -1);
      wrong += counts[r] != budget ||
               !std::equal(expected.begin(), expected.end(), indices.begin() + r * max_k);
    }
    EXPECT_EQ(wrong, 0) << precision_name(precision) << ": rows not taking the lowest tied indices";
  }
}

// Both precisions select the same mask (the top-k of the canonical logits) on every row: on the
// bench's wan14b-720p inputs (uniform; FP16x3 choosing its boundary from its own f32 rescoring once
// differed from the f32 GEMM's mask on 46 of these 57,600 rows) and on structured inputs with
// prefix tokens and mixed tile shapes, for each method.
TEST(SelectionGpu, PrecisionsSelectOneMask) {
  SKIP_WITHOUT_GPU();
  struct Case {
    const char* name;
    Grid grid;
    int prefix;
    std::vector<TileShape> shapes;
    bool uniform;  // device-side uniform inputs in [-2, 2] (as the bench), else structured
  };
  const Case cases[] = {
      {"wan14b-720p uniform", {21, 45, 80}, 0, std::vector<TileShape>(40, k444), true},
      {"structured, prefix, mixed shapes", {21, 30, 52}, 40, {k444, k1622, k188, k248}, false},
  };
  const int dim = 128;
  for (const Case& c : cases) {
    auto layouts = HeadLayouts::make(c.grid, c.prefix, c.shapes);
    ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
    const int heads = layouts->heads();
    const size_t rows = size_t(heads) * layouts->max_tiles();
    const size_t elems = size_t(heads) * layouts->tokens() * dim;
    auto dq = DeviceBuffer::allocate(elems * 2);
    auto dk = DeviceBuffer::allocate(elems * 2);
    ASSERT_TRUE(dq.is_ok() && dk.is_ok());
    const uint64_t seed = fresh_seed();
    if (c.uniform) {
      ASSERT_TRUE(fill_device_uniform(dq->data(), DType::kBF16, elems, seed, -2.f, 2.f).is_ok());
      ASSERT_TRUE(fill_device_uniform(dk->data(), DType::kBF16, elems, seed + 1, -2.f, 2.f).is_ok());
    } else {
      const Tensor q = structured_input(DType::kBF16, 1, heads, c.grid, c.prefix, dim, seed);
      const Tensor k = structured_input(DType::kBF16, 1, heads, c.grid, c.prefix, dim, seed + 1);
      ASSERT_TRUE(copy_to_device(dq->data(), q.data(), q.nbytes()).is_ok());
      ASSERT_TRUE(copy_to_device(dk->data(), k.data(), k.nbytes()).is_ok());
    }
    for (GpuScoreMethod method :
         {GpuScoreMethod::kStats, GpuScoreMethod::kMean, GpuScoreMethod::kEstimator}) {
      SelectionConfig config;
      config.density = 0.05;
      std::vector<int32_t> counts[2], indices[2];
      std::string rescored;
      int max_k = 0;
      for (int pi = 0; pi < 2; ++pi) {
        GpuSelectorOptions opt;
        opt.method = method;
        opt.precision = pi == 0 ? GpuScorePrecision::kF32 : GpuScorePrecision::kF16x3;
        opt.scale = 1.0f / std::sqrt(float(dim));
        opt.count_rescored = true;
        if (method == GpuScoreMethod::kEstimator) opt.estimator = random_estimator(heads, seed + 2, true);
        auto selector = GpuSelector::make(*layouts, config, opt);
        ASSERT_TRUE(selector.is_ok()) << selector.status().to_string();
        max_k = selector->max_k();
        auto dc = DeviceBuffer::allocate(rows * 4);
        auto di = DeviceBuffer::allocate(rows * max_k * 4);
        ASSERT_TRUE(dc.is_ok() && di.is_ok());
        const Status st = selector->select(dq->data(), dk->data(), DType::kBF16, 1, dim, nullptr,
                                           nullptr, dc->as<int32_t>(), di->as<int32_t>());
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        counts[pi].resize(rows), indices[pi].resize(rows * max_k);
        ASSERT_TRUE(copy_to_host(counts[pi].data(), dc->data(), rows * 4).is_ok());
        ASSERT_TRUE(copy_to_host(indices[pi].data(), di->data(), indices[pi].size() * 4).is_ok());
        auto rc = selector->rescore_counts();
        ASSERT_TRUE(rc.is_ok()) << rc.status().to_string();
        rescored += fmt::format(" {} {:.2f}", precision_name(opt.precision),
                                double(rc->boundary_tiles) / std::max<int64_t>(1, rc->rows));
      }
      int64_t differ = 0;
      for (size_t r = 0; r < rows; ++r)
        differ += counts[0][r] != counts[1][r] ||
                  !std::equal(&indices[0][r * max_k], &indices[0][(r + 1) * max_k], &indices[1][r * max_k]);
      const char* method_name = method == GpuScoreMethod::kStats ? "stats"
                                : method == GpuScoreMethod::kMean ? "mean" : "estimator";
      fmt::print("  {} {} seed {}: {} rows, {} differ between f32 and f16x3; tiles rescored a row:{}\n",
                 c.name, method_name, seed, rows, differ, rescored);
      EXPECT_EQ(differ, 0) << c.name << " " << method_name << " seed " << seed;
    }
  }
}

TEST(SelectionGpu, RejectsUnsupported) {
  SKIP_WITHOUT_GPU();
  auto layouts = HeadLayouts::uniform({4, 8, 8}, 0, 2, k444);
  ASSERT_TRUE(layouts.is_ok());
  GpuSelectorOptions opt;
  opt.scale = 0.125f;
  SelectionConfig mass;
  mass.mode = SelectMode::kMass;
  EXPECT_EQ(GpuSelector::make(*layouts, mass, opt).status().code(), ErrorCode::kUnsupported);
  SelectionConfig bad;
  bad.density = 0;
  EXPECT_EQ(GpuSelector::make(*layouts, bad, opt).status().code(), ErrorCode::kInvalidArgument);
  GpuSelectorOptions est = opt;
  est.method = GpuScoreMethod::kEstimator;  // no parameter sets
  EXPECT_EQ(GpuSelector::make(*layouts, SelectionConfig{}, est).status().code(),
            ErrorCode::kInvalidArgument);
  auto selector = GpuSelector::make(*layouts, SelectionConfig{}, opt);
  ASSERT_TRUE(selector.is_ok());
  int32_t dummy = 0;
  EXPECT_EQ(selector->select(nullptr, nullptr, DType::kBF16, 1, 64, nullptr, nullptr, &dummy, &dummy)
                .code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(selector->select(&dummy, &dummy, DType::kBF16, 1, 12, nullptr, nullptr, &dummy, &dummy)
                .code(),
            ErrorCode::kUnsupported);
  EXPECT_EQ(selector->select(&dummy, &dummy, DType::kF32, 1, 256, nullptr, nullptr, &dummy, &dummy)
                .code(),
            ErrorCode::kUnsupported);  // 1 KB rows
  // Given statistics must mark every head and name every buffer.
  auto x = DeviceBuffer::allocate(size_t(2) * 256 * 64 * 2);
  auto out = DeviceBuffer::allocate(size_t(2) * 4 * 64 * 4);
  ASSERT_TRUE(x.is_ok() && out.is_ok());
  GpuTileStatsInput given;
  given.heads = {1};
  auto select_given = [&] {
    return selector->select_tiled(x->data(), x->data(), DType::kBF16, 1, 64, out->as<int32_t>(),
                                  out->as<int32_t>(), nullptr, nullptr, &given);
  };
  EXPECT_EQ(select_given().code(), ErrorCode::kInvalidArgument);  // one mark for two heads
  given.heads = {1, 0};
  EXPECT_EQ(select_given().code(), ErrorCode::kInvalidArgument);  // null buffers
  const float* stat = out->as<float>();
  given.q_mean = given.q_max = given.q_min = given.k_mean = given.k_max = given.k_min = stat;
  given.k_min = stat + 1;  // 4-byte aligned only
  EXPECT_EQ(select_given().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace veda
