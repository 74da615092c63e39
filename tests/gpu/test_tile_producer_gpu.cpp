// The CUDA DiT's q/k/v producer (dit_cuda::tile_producer): RMSNorm + RoPE into each head's tile
// order with the tile statistics of the reference layout's heads, against a CPU computation of the
// same (double sums), and its statistics against compute_tile_stats of its own output (bit for
// bit); then the selector with those statistics given (GpuTileStatsInput) selects the mask it
// selects from the rows. Fresh random inputs each run (seed printed), outputs poisoned with NaN;
// uniform and per-head tile shapes (ProducerTables picks the reference), ragged grid, batch 2,
// D 64 and 128. Skips without a GPU.
#include <gtest/gtest.h>

#include <fmt/core.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "cuda/dit_launch.hpp"
#include "cuda/producer_tables.hpp"
#include "veda/cuda.hpp"
#include "veda/cuda_selection.hpp"
#include "veda/scoring.hpp"
#include "veda/tile_layout.hpp"

namespace veda {
namespace {

struct ProducerCase {
  const char* name;
  Grid grid;
  int head_dim;
  std::vector<TileShape> shapes;  // per head
  int ref_head;                   // the first head of the shape most heads use
};

std::vector<uint16_t> random_bf16(size_t n, std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<float> f(n);
  for (float& v : f) v = normal(rng);
  std::vector<uint16_t> out(n);
  convert_from_f32(f.data(), out.data(), DType::kBF16, n);
  return out;
}

class TileProducerGpu : public ::testing::TestWithParam<ProducerCase> {};

TEST_P(TileProducerGpu, MatchesCpuAndGivesTheSelectorItsStatistics) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const ProducerCase& pc = GetParam();
  const uint64_t seed =
      uint64_t(std::chrono::high_resolution_clock::now().time_since_epoch().count());
  SCOPED_TRACE(fmt::format("{} seed {}", pc.name, seed));
  std::mt19937_64 rng(seed);
  const int B = 2, H = int(pc.shapes.size()), D = pc.head_dim, width = H * D;
  const int64_t N = pc.grid.tokens();
  const float eps = 1e-6f;
  auto layouts = HeadLayouts::make(pc.grid, 0, pc.shapes);
  ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
  const int64_t padded = layouts->padded_tokens();
  const int T = layouts->max_tiles();

  // Inputs: q, k, v token-major with per-channel scales (so RMSNorm matters), weights, RoPE table.
  std::vector<uint16_t> x[3];
  for (auto& t : x) t = random_bf16(size_t(B * N * width), rng, 1.5f);
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  std::vector<float> weight[2];
  for (auto& w : weight) {
    w.resize(size_t(width));
    for (float& v : w) v = 0.5f + uni(rng);
  }
  std::vector<float> rope(size_t(N * D));  // [N][D/2] (cos, sin)
  for (size_t i = 0; i < rope.size(); i += 2) {
    const float a = 6.2831853f * uni(rng);
    rope[i] = std::cos(a), rope[i + 1] = std::sin(a);
  }
  auto tables = ProducerTables::make(*layouts);
  ASSERT_TRUE(tables.is_ok()) << tables.status().to_string();
  const std::vector<uint8_t>& stat_heads = tables->stat_heads_host;
  std::vector<int32_t> token_slot(size_t(H * N));
  ASSERT_TRUE(
      copy_to_host(token_slot.data(), tables->token_slot.data(), token_slot.size() * 4).is_ok());
  const TileLayout& ref = layouts->head(pc.ref_head);
  for (int h = 0; h < H; ++h) {
    EXPECT_EQ(stat_heads[size_t(h)], pc.shapes[size_t(h)] == pc.shapes[size_t(pc.ref_head)]);
    const auto& slots = layouts->head(h).slot_token();
    for (int64_t s = 0; s < int64_t(slots.size()); ++s)
      if (slots[s] >= 0) {
        ASSERT_EQ(token_slot[size_t(h * N + slots[s])], s) << "head " << h;
      }
  }

  auto up = [](const auto& v) { return upload_to_device(v).value(); };
  DeviceBuffer dx[3] = {up(x[0]), up(x[1]), up(x[2])};
  DeviceBuffer dw[2] = {up(weight[0]), up(weight[1])};
  DeviceBuffer drope = up(rope);
  const size_t tiled_bytes = size_t(B * H * padded * D) * 2, stat_bytes = size_t(B * H * T * D) * 4;
  DeviceBuffer ddst[3], dstats[6];
  for (auto& d : ddst) {
    d = DeviceBuffer::allocate(tiled_bytes).value();
    ASSERT_TRUE(fill_device_bytes(d.data(), 0xFF, tiled_bytes).is_ok());  // NaN
  }
  for (auto& d : dstats) {
    d = DeviceBuffer::allocate(stat_bytes).value();
    ASSERT_TRUE(fill_device_bytes(d.data(), 0xFF, stat_bytes).is_ok());
  }

  float* stats[6];
  for (int i = 0; i < 6; ++i) stats[i] = dstats[i].as<float>();
  dit_cuda::TileProducerParams p{};
  for (int i = 0; i < 3; ++i)
    p.t[i] = {dx[i].data(), ddst[i].data(), i < 2 ? dw[i].as<float>() : nullptr, i < 2};
  p.tensors = 3;
  tables->set_layout(p);
  ProducerTables::set_statistics(p, stats, true);
  p.head_dim = D, p.eps = eps;
  p.rope = reinterpret_cast<const float2*>(drope.as<float>());
  ASSERT_EQ(dit_cuda::tile_producer(p, B, nullptr), cudaSuccess);
  ASSERT_TRUE(cuda_synchronize().is_ok());

  // Outputs against the CPU: q, k within bf16 rounding of the double-precision result; v exact.
  Tensor out[3];
  for (int i = 0; i < 3; ++i) {
    Tensor raw = Tensor::empty(DType::kBF16, {B, H, padded, D});
    ASSERT_TRUE(copy_to_host(raw.data(), ddst[i].data(), tiled_bytes).is_ok());
    out[i] = raw.to(DType::kF32);
  }
  std::vector<float> xf(static_cast<size_t>(width));
  int64_t bad = 0, checked = 0;
  double worst = 0;
  for (int i = 0; i < 3; ++i) {
    const float* o = out[i].data_as<float>();
    for (int b = 0; b < B; ++b) {
      for (int64_t n = 0; n < N; ++n) {
        convert_to_f32(x[i].data() + (b * N + n) * width, DType::kBF16, xf.data(), size_t(width));
        double ss = 0;
        for (float v : xf) ss += double(v) * v;
        const double rstd = 1.0 / std::sqrt(ss / width + eps);
        for (int h = 0; h < H; ++h) {
          const float* row =
              o + ((int64_t(b) * H + h) * padded + token_slot[size_t(h * N + n)]) * D;
          for (int d = 0; d < D; d += 2) {
            const int c = h * D + d;
            double y1 = xf[size_t(c)], y2 = xf[size_t(c + 1)];
            if (i < 2) {
              y1 *= rstd * weight[i][size_t(c)], y2 *= rstd * weight[i][size_t(c + 1)];
              const double cs = rope[size_t(n * D + d)], sn = rope[size_t(n * D + d + 1)];
              const double r1 = y1 * cs - y2 * sn, r2 = y1 * sn + y2 * cs;
              y1 = r1, y2 = r2;
            }
            for (auto [got, want] : {std::pair{row[d], y1}, std::pair{row[d + 1], y2}}) {
              ++checked;
              const double err = std::fabs(double(got) - want);
              const double tol = i < 2 ? std::ldexp(std::fabs(want), -8) + 1e-6 : 0.0;
              if (!(err <= tol)) ++bad;  // NaN (an unwritten slot) fails
              if (i < 2 && std::isfinite(err))
                worst = std::max(worst, err / (std::fabs(want) + 1e-6));
            }
          }
        }
      }
    }
  }
  fmt::print("  {}: {} values, {} out of tolerance, largest relative error {:.2e}\n", pc.name,
             checked, bad, worst);
  EXPECT_EQ(bad, 0);

  // Statistics: those of the reference layout's heads equal compute_tile_stats of the output bit
  // for bit; the other heads' rows are left as they were (the selector computes them).
  for (int i = 0; i < 2; ++i) {
    auto cpu = compute_tile_stats(out[i], *layouts);
    ASSERT_TRUE(cpu.is_ok()) << cpu.status().to_string();
    const Tensor* want[3] = {&cpu->mean, &cpu->max, &cpu->min};
    for (int s = 0; s < 3; ++s) {
      std::vector<float> got(stat_bytes / 4);
      ASSERT_TRUE(copy_to_host(got.data(), dstats[3 * i + s].data(), stat_bytes).is_ok());
      const float* w = want[s]->data_as<float>();
      int64_t differ = 0, touched = 0;
      for (int64_t r = 0; r < int64_t(B) * H * T; ++r) {
        const int h = int(r / T % H), tile = int(r % T);
        for (int d = 0; d < D; ++d) {
          const uint32_t g = std::bit_cast<uint32_t>(got[size_t(r * D + d)]);
          if (stat_heads[size_t(h)] && tile < ref.num_tiles()) {
            if (g != std::bit_cast<uint32_t>(w[r * D + d])) ++differ;
          } else if (g != 0xFFFFFFFFu) {
            ++touched;
          }
        }
      }
      EXPECT_EQ(differ, 0) << "tensor " << i << " statistic " << s;
      EXPECT_EQ(touched, 0) << "tensor " << i << " statistic " << s << " written outside its heads";
    }
  }

  // Without query extrema the producer leaves the q max / min buffers alone and writes the rest
  // as before.
  std::vector<uint8_t> before[6];
  for (int s = 0; s < 6; ++s) {
    if (s == 1 || s == 2) {
      ASSERT_TRUE(fill_device_bytes(stats[s], 0xFF, stat_bytes).is_ok());
    }
    before[s].resize(stat_bytes);
    ASSERT_TRUE(copy_to_host(before[s].data(), stats[s], stat_bytes).is_ok());
  }
  ProducerTables::set_statistics(p, stats, false);
  ASSERT_EQ(dit_cuda::tile_producer(p, B, nullptr), cudaSuccess);
  for (int s = 0; s < 6; ++s) {
    std::vector<uint8_t> after(stat_bytes);
    ASSERT_TRUE(copy_to_host(after.data(), stats[s], stat_bytes).is_ok());
    EXPECT_TRUE(after == before[s]) << "statistic " << s << " changed without query extrema";
  }

  // The selector with the producer's statistics selects what it selects from the rows alone:
  // stats scoring (the query means only) and the estimator with every term (four feature planes,
  // the query extrema), neither keeping its statistics, so that the boundary rescoring of the
  // given heads reads the producer's buffers.
  ProducerTables::set_statistics(p, stats, true);
  ASSERT_EQ(dit_cuda::tile_producer(p, B, nullptr), cudaSuccess);
  SelectionConfig config;
  config.density = 0.2;
  for (const bool estimator : {false, true}) {
    GpuSelectorOptions so;
    so.scale = 1.f / std::sqrt(float(D));
    if (estimator) {
      so.method = GpuScoreMethod::kEstimator;
      so.estimator.assign(size_t(H), EstimatorParams::every_term(true));
    }
    auto selector = GpuSelector::make(*layouts, config, so);
    ASSERT_TRUE(selector.is_ok()) << selector.status().to_string();
    EXPECT_EQ(selector->reads_query_extrema(), estimator);
    const GpuTileStatsInput given = tables->given(stats, selector->reads_query_extrema());
    const size_t rows = size_t(B) * H * T, max_k = size_t(selector->max_k());
    std::vector<int32_t> counts[2], indices[2];
    for (int run = 0; run < 2; ++run) {
      DeviceBuffer dc = DeviceBuffer::allocate(rows * 4).value();
      DeviceBuffer di = DeviceBuffer::allocate(rows * max_k * 4).value();
      const Status st = selector->select_tiled(ddst[0].data(), ddst[1].data(), DType::kBF16, B, D,
                                               dc.as<int32_t>(), di.as<int32_t>(), nullptr,
                                               nullptr, run == 1 ? &given : nullptr);
      ASSERT_TRUE(st.is_ok()) << st.to_string();
      counts[run].resize(rows), indices[run].resize(rows * max_k);
      ASSERT_TRUE(copy_to_host(counts[run].data(), dc.data(), rows * 4).is_ok());
      ASSERT_TRUE(copy_to_host(indices[run].data(), di.data(), rows * max_k * 4).is_ok());
    }
    EXPECT_TRUE(counts[0] == counts[1] && indices[0] == indices[1])
        << (estimator ? "estimator" : "stats") << ": the given statistics change the mask";
  }
}

// Bad parameters are refused before any launch (so this runs without a GPU too).
TEST(TileProducer, RejectsBadParameters) {
  int32_t table = 0;
  uint16_t row[8] = {};
  float stat = 0;
  uint8_t mark = 1;
  const dit_cuda::TileProducerParams good = [&] {
    dit_cuda::TileProducerParams p{};
    p.t[0] = {row, row, nullptr, false};
    p.tensors = 1;
    p.tokens = p.dst_tokens = 1;
    p.heads = 1, p.head_dim = 8;
    p.token_slot = p.tile_slots = p.tile_valid = &table;
    p.tiles = 1, p.volume = 1, p.stat_tiles = 1;
    p.stat_heads = &mark;
    return p;
  }();
  // Batch 0: the checks run, then nothing launches (the buffers here are host memory).
  auto refused = [](const dit_cuda::TileProducerParams& p, int64_t batch = 0) {
    return dit_cuda::tile_producer(p, batch, nullptr) == cudaErrorInvalidValue;
  };
  EXPECT_EQ(dit_cuda::tile_producer(good, 0, nullptr), cudaSuccess);
  dit_cuda::TileProducerParams p = good;
  p.t[0].mean = p.t[0].max = p.t[0].min = &stat;
  EXPECT_EQ(dit_cuda::tile_producer(p, 0, nullptr), cudaSuccess);
  p = good, p.t[0].mean = &stat;  // the mean alone
  EXPECT_EQ(dit_cuda::tile_producer(p, 0, nullptr), cudaSuccess);
  p = good;
  p.head_dim = 12;
  EXPECT_TRUE(refused(p));  // not a multiple of 8
  p = good, p.heads = 41, p.head_dim = 128;
  EXPECT_TRUE(refused(p));  // 656 chunks a row > 640 threads
  p = good, p.heads = 0;
  EXPECT_TRUE(refused(p));
  EXPECT_TRUE(refused(good, 65536));  // grid y
  p = good, p.tensors = 4;
  EXPECT_TRUE(refused(p));
  p = good, p.token_slot = nullptr;
  EXPECT_TRUE(refused(p));
  p = good, p.t[0].x = nullptr;
  EXPECT_TRUE(refused(p));
  p = good, p.t[0].rope = true;  // no table
  EXPECT_TRUE(refused(p));
  p = good, p.t[0].mean = p.t[0].max = &stat;  // min missing
  EXPECT_TRUE(refused(p));
  p = good, p.t[0].max = p.t[0].min = &stat;  // mean missing
  EXPECT_TRUE(refused(p));
  p = good, p.t[0].mean = p.t[0].max = p.t[0].min = &stat, p.stat_tiles = 0;
  EXPECT_TRUE(refused(p));
}

const TileShape k444{4, 4, 4}, k248{2, 4, 8}, k188{1, 8, 8};

INSTANTIATE_TEST_SUITE_P(
    Shapes, TileProducerGpu,
    ::testing::Values(ProducerCase{"uniform_4x4x4_d128", Grid{5, 9, 14}, 128, {k444, k444, k444}, 0},
                      ProducerCase{"mixed_d128", Grid{5, 9, 14}, 128, {k188, k444, k248, k444}, 1},
                      ProducerCase{"mixed_d64", Grid{6, 10, 12}, 64, {k248, k444, k248}, 0}),
    [](const ::testing::TestParamInfo<ProducerCase>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace veda
