// CUDA attention vs the CPU references (src/cuda/attention_check.hpp): fresh random inputs per
// case, outputs poisoned before each run, err_gpu <= 2 * err_lowp + atol against fp64 on the
// same rounded inputs, padding rows exactly zero, NaN never passes. Skips without a GPU.
#include <fmt/core.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/attention_check.hpp"
#include "cuda/attention_launch.hpp"
#include "veda/attention.hpp"
#include "veda/cuda.hpp"

namespace veda {
namespace {

using cuda_check::DeviceProblem;

#define SKIP_WITHOUT_GPU()                                          \
  do {                                                              \
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

struct Case {
  Grid grid;
  int head_dim;
  DType dtype;
  int batch;
  double density;  // 1.0 = dense (mask null)
  double empty_rows = 0.0;
  int heads = 2;
  int check_tiles = 0;  // query tiles checked a slice; 0: 10 dense, 40 sparse
};

std::string case_name(const Case& c) {
  return fmt::format("g{}x{}x{}_d{}_{}_b{}_dens{}{}", c.grid.t, c.grid.h, c.grid.w, c.head_dim,
                     c.dtype == DType::kBF16 ? "bf16" : "f16", c.batch, int(c.density * 100 + 0.5),
                     c.empty_rows > 0 ? "_empty" : "");
}

// Runs one case through attention_cuda and checks two (b, h) slices; `kernel` forces a path.
void run_case(const Case& c, const HeadLayouts& layouts, uint64_t seed, const char* kernel) {
  if (kernel) setenv("VEDA_ATTN_KERNEL", kernel, 1);
  TileMask mask;
  const bool sparse = c.density < 1.0 || c.empty_rows > 0;
  if (sparse) mask = cuda_check::random_mask(c.batch, layouts, c.density, seed, c.empty_rows);
  auto problem =
      DeviceProblem::make(c.batch, layouts, c.head_dim, c.dtype, sparse ? &mask : nullptr, seed);
  ASSERT_TRUE(problem.is_ok()) << problem.status().to_string();
  ASSERT_TRUE(problem->poison_outputs().is_ok());
  const AttentionParams p = problem->params();
  const Status st = attention_cuda(p);
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  ASSERT_TRUE(cuda_synchronize().is_ok());
  const int n_check = c.check_tiles > 0 ? c.check_tiles : c.density >= 1.0 ? 10 : 40;
  for (auto [b, h] : {std::pair{0, 0}, std::pair{c.batch - 1, c.heads - 1}}) {
    auto tiles = cuda_check::sample_tiles(layouts.head(h).num_tiles(), n_check, seed + b * 7 + h);
    auto res = cuda_check::check_slice(*problem, b, h, tiles);
    ASSERT_TRUE(res.is_ok()) << res.status().to_string();
    const std::string what =
        fmt::format("{} kernel {} (b {}, h {})", case_name(c), attention_cuda_kernel_name(p), b, h);
    EXPECT_TRUE(res->pass()) << what << ": " << res->summary();
    fmt::print("  {}: {}\n", what, res->summary());
  }
  if (kernel) unsetenv("VEDA_ATTN_KERNEL");
}

class AttentionGpu : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionGpu, MatchesReference) {
  SKIP_WITHOUT_GPU();
  const Case& c = GetParam();
  auto layouts = HeadLayouts::uniform(c.grid, 0, c.heads, TileShape{4, 4, 4});
  ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
  // Default kernel (the warp-specialised one on Hopper), the one-warpgroup wgmma kernel and the
  // mma.sync one; in dense mode the last two also with one and two 64-row blocks per CTA.
  run_case(c, *layouts, 1234 + uint64_t(c.head_dim) * 31 + c.batch, nullptr);
  run_case(c, *layouts, 2345 + uint64_t(c.head_dim) * 31 + c.batch, "sm90");
  run_case(c, *layouts, 4321 + uint64_t(c.head_dim) * 31 + c.batch, "sm80");
  if (c.density >= 1.0) {
    for (const char* qb : {"1", "2"}) {
      setenv("VEDA_ATTN_QB", qb, 1);
      run_case(c, *layouts, 777 + c.batch, "sm90");
      run_case(c, *layouts, 778 + c.batch, "sm80");
      unsetenv("VEDA_ATTN_QB");
    }
  }
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (Grid g : {Grid{21, 30, 52}, Grid{16, 16, 28}})
    for (int d : {64, 128})
      for (DType dt : {DType::kBF16, DType::kF16})
        for (int b : {1, 2})
          for (double dens : {1.0, 0.1, 0.05})
            cases.push_back(Case{g, d, dt, b, dens, dens == 0.05 ? 0.15 : 0.0});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionGpu, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) { return case_name(info.param); });

// 128-token tiles with prefix tokens, both density regimes, both kernels' paths.
TEST(AttentionGpuLayouts, Volume128WithPrefix) {
  SKIP_WITHOUT_GPU();
  auto layouts = HeadLayouts::uniform(Grid{16, 16, 28}, 77, 2, TileShape{4, 4, 8});
  ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
  for (double dens : {1.0, 0.1})
    for (const char* qb : {"1", "2"})
      for (const char* kernel : {static_cast<const char*>(nullptr), "sm90", "sm80"}) {
        setenv("VEDA_ATTN_QB", qb, 1);
        run_case(Case{Grid{16, 16, 28}, 128, DType::kBF16, 2, dens, 0.1}, *layouts, 99, kernel);
        unsetenv("VEDA_ATTN_QB");
      }
}

// 128-token tiles at D = 64 and in fp16 (the warp-specialised kernel's other instantiations for
// them), default kernel.
TEST(AttentionGpuLayouts, Volume128HeadDim64AndF16) {
  SKIP_WITHOUT_GPU();
  auto layouts = HeadLayouts::uniform(Grid{16, 16, 28}, 77, 2, TileShape{4, 4, 8});
  ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
  for (const auto& [dim, dtype] : {std::pair{64, DType::kBF16}, std::pair{64, DType::kF16},
                                   std::pair{128, DType::kF16}})
    for (double dens : {1.0, 0.1})
      run_case(Case{Grid{16, 16, 28}, dim, dtype, 1, dens, 0.1}, *layouts, 17, nullptr);
}

// The DiT's dense layout: token order in 128-token blocks, the last one ragged (16x16x28 = 7,168
// tokens = 56 full blocks; 15x16x28 = 6,720 leaves 64 tokens in the last).
TEST(AttentionGpuLayouts, TokenOrderBlocks) {
  SKIP_WITHOUT_GPU();
  for (const Grid video : {Grid{16, 16, 28}, Grid{15, 16, 28}}) {
    auto flat = token_order_grid(video);
    ASSERT_TRUE(flat.is_ok()) << flat.status().to_string();
    const Grid grid = *flat;
    auto layouts = HeadLayouts::uniform(grid, 0, 2, kTokenBlock);
    ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
    for (double dens : {1.0, 0.1})
      for (const char* kernel : {static_cast<const char*>(nullptr), "sm90", "sm80"})
        run_case(Case{grid, 128, DType::kBF16, 2, dens, 0.0}, *layouts, 41, kernel);
  }
}

// Heads with different tile shapes have different tile counts: tiles past a head's own count are
// empty (valid 0) and must come out as zeros.
TEST(AttentionGpuLayouts, PerHeadShapes) {
  SKIP_WITHOUT_GPU();
  auto layouts = HeadLayouts::make(Grid{16, 16, 28}, 5,
                                   {TileShape{4, 4, 4}, TileShape{16, 2, 2}, TileShape{1, 8, 8}});
  ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
  for (double dens : {1.0, 0.05})
    for (const char* kernel : {static_cast<const char*>(nullptr), "sm90", "sm80"})
      run_case(Case{Grid{16, 16, 28}, 64, DType::kF16, 1, dens, 0.0, 3}, *layouts, 7, kernel);
}

// Shapes with fewer tokens than slots (60 of 64, 120 of 128): every tile is ragged, 4 or 8
// padding slots each; 6x10x12 fits 3x5x4 exactly.
TEST(AttentionGpuLayouts, FewerTokensThanSlots) {
  SKIP_WITHOUT_GPU();
  const Grid grid{6, 10, 12};
  for (const TileShape shape : {TileShape{3, 5, 4}, TileShape{3, 5, 8}}) {
    auto layouts = HeadLayouts::make(grid, 0, {shape, shape});
    ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
    for (double dens : {1.0, 0.1})
      for (const char* kernel : {static_cast<const char*>(nullptr), "sm90", "sm80"})
        run_case(Case{grid, 128, DType::kBF16, 2, dens, 0.0}, *layouts, 23, kernel);
  }
}

// The warp-specialised kernel's grid is persistent (a CTA an SM takes item after item); capped at
// two CTAs, small shapes run many items a CTA: 64-token tiles with empty rows, 128-token tiles
// with prefix tokens (the overlap schedule), and per-head shapes whose shorter heads leave whole
// items empty. `Tiny` is small enough for racecheck.
struct TwoCtas {
  TwoCtas() { setenv("VEDA_ATTN_CTAS", "2", 1); }
  ~TwoCtas() { unsetenv("VEDA_ATTN_CTAS"); }
};

// Only the warp-specialised kernel has a persistent grid (elsewhere the tests would run the
// mma.sync kernel and test nothing new).
#define SKIP_WITHOUT_WS_KERNEL()                                              \
  do {                                                                        \
    SKIP_WITHOUT_GPU();                                                       \
    if (attention_cuda_kernel_name(AttentionParams{}) != "sm90ws")            \
      GTEST_SKIP() << "the warp-specialised kernel does not run on this GPU"; \
  } while (0)

TEST(AttentionGpuLayouts, PersistentGridTiny) {
  SKIP_WITHOUT_WS_KERNEL();
  const TwoCtas two_ctas;
  for (const TileShape shape : {TileShape{4, 4, 4}, TileShape{4, 4, 8}}) {
    auto layouts = HeadLayouts::uniform(Grid{4, 8, 16}, 0, 2, shape);
    ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
    for (double dens : {1.0, 0.5})
      run_case(Case{Grid{4, 8, 16}, 128, DType::kBF16, 2, dens, dens < 1.0 ? 0.25 : 0.0},
               *layouts, 31, nullptr);
    // D = 64 in fp16, the other instantiations (with 4x4x8 tiles: the overlapped steps).
    run_case(Case{Grid{4, 8, 16}, 64, DType::kF16, 2, 1.0, 0.0}, *layouts, 32, nullptr);
  }
}

TEST(AttentionGpuLayouts, PersistentGrid) {
  SKIP_WITHOUT_WS_KERNEL();
  const TwoCtas two_ctas;
  auto cubes = HeadLayouts::uniform(Grid{16, 16, 28}, 0, 2, TileShape{4, 4, 4});
  auto halves = HeadLayouts::uniform(Grid{16, 16, 28}, 77, 2, TileShape{4, 4, 8});
  auto mixed = HeadLayouts::make(Grid{16, 16, 28}, 5,
                                 {TileShape{4, 4, 4}, TileShape{16, 2, 2}, TileShape{1, 8, 8}});
  ASSERT_TRUE(cubes.is_ok() && halves.is_ok() && mixed.is_ok());
  run_case(Case{Grid{16, 16, 28}, 128, DType::kBF16, 2, 0.05, 0.15}, *cubes, 51, nullptr);
  for (double dens : {1.0, 0.1})
    run_case(Case{Grid{16, 16, 28}, 128, DType::kBF16, 2, dens, 0.1}, *halves, 52, nullptr);
  for (double dens : {1.0, 0.05})
    run_case(Case{Grid{16, 16, 28}, 64, DType::kF16, 1, dens, 0.0, 3}, *mixed, 53, nullptr);
}

// The last round's items run as parts over their key tiles, merged by log-sum-exp
// (plan_tail_split). Runs without a GPU: the rule alone.
TEST(AttentionTailSplit, Plan) {
  const auto plan = [](int items, int ctas, int key_blocks) {
    const cuda::TailSplit t = cuda::plan_tail_split(items, ctas, key_blocks);
    return std::pair{t.whole, t.parts};
  };
  // wan1.3b-480p in token order, 132 SMs: 3,072 items leave 36 for a 24th round, 3 parts each.
  EXPECT_EQ(plan(3072, 132, 512), (std::pair{3036, 3}));
  // wan14b-720p: 23,640 items leave 12; 11 parts would fit, at most 8 are taken.
  EXPECT_EQ(plan(23640, 132, 1182), (std::pair{23628, 8}));
  // Fewer items than CTAs: every item is split.
  EXPECT_EQ(plan(40, 132, 512), (std::pair{0, 3}));
  // A full last round, and one too full to split, run whole.
  EXPECT_EQ(plan(264, 132, 512), (std::pair{264, 1}));
  EXPECT_EQ(plan(200, 132, 512), (std::pair{200, 1}));
  // A part keeps at least 8 key blocks.
  EXPECT_EQ(plan(10, 132, 16), (std::pair{0, 2}));
  EXPECT_EQ(plan(10, 132, 15), (std::pair{10, 1}));
  EXPECT_EQ(plan(0, 132, 512), (std::pair{0, 1}));
}

// The split on a GPU (dense mode). Each case's CTA cap is chosen so that the split happens (its
// part count is asserted from the rule), and every tile of the last (b, h), where the split items
// are, is checked (outputs and log-sum-exp). 16x16x28 in 4x4x4 tiles: 56 items a head, the last 2
// or 12 of 112 as 2, 4 or 8 parts; also D = 64 in fp16. 128-token tiles with 77 prefix tokens
// (the overlap schedule, a prefix tile, half-empty edge tiles): 65 tiles a head, 130 items, the
// last 10 at 40 CTAs as 4 parts. 12x12x26 in 4x4x4 tiles: 63 tiles, an odd count (the last item
// holds one query block) with 32-token edge tiles, B = 1 and 2. A sparse case runs unsplit.
TEST(AttentionGpuLayouts, TailSplit) {
  SKIP_WITHOUT_WS_KERNEL();
  auto cubes = HeadLayouts::uniform(Grid{16, 16, 28}, 0, 2, TileShape{4, 4, 4});
  auto halves = HeadLayouts::uniform(Grid{16, 16, 28}, 77, 2, TileShape{4, 4, 8});
  auto odd = HeadLayouts::uniform(Grid{12, 12, 26}, 0, 2, TileShape{4, 4, 4});
  ASSERT_TRUE(cubes.is_ok() && halves.is_ok() && odd.is_ok());
  struct SplitCase {
    Case c;
    const HeadLayouts* layouts;
    int ctas, parts;  // the CTA cap and the part count it must give
  };
  constexpr int kAll = 1 << 20;
  const Grid g16{16, 16, 28}, g12{12, 12, 26};
  const SplitCase cases[] = {
      {Case{g16, 128, DType::kBF16, 1, 1.0, 0.0, 2, kAll}, &*cubes, 5, 2},
      {Case{g16, 128, DType::kBF16, 1, 1.0, 0.0, 2, kAll}, &*cubes, 50, 4},
      {Case{g16, 128, DType::kBF16, 1, 1.0, 0.0, 2, kAll}, &*cubes, 100, 8},
      {Case{g16, 64, DType::kF16, 1, 1.0, 0.0, 2, kAll}, &*cubes, 50, 4},
      {Case{g16, 128, DType::kBF16, 1, 1.0, 0.0, 2, kAll}, &*halves, 40, 4},
      {Case{g12, 128, DType::kBF16, 1, 1.0, 0.0, 2, kAll}, &*odd, 30, 7},
      {Case{g12, 64, DType::kF16, 2, 1.0, 0.0, 2, kAll}, &*odd, 30, 3},
      {Case{g16, 128, DType::kBF16, 1, 0.5, 0.15, 2, kAll}, &*cubes, 50, 1},  // sparse: unsplit
  };
  for (const SplitCase& sc : cases) {
    const int blocks = sc.layouts->max_tiles() * (sc.layouts->volume() / 64);
    const int items = cuda::ws_item_count(blocks, sc.layouts->heads(), sc.c.batch);
    const int parts = sc.c.density < 1.0 ? 1 : cuda::plan_tail_split(items, sc.ctas, blocks).parts;
    ASSERT_EQ(parts, sc.parts) << case_name(sc.c) << " at " << sc.ctas << " CTAs";
    setenv("VEDA_ATTN_CTAS", std::to_string(sc.ctas).c_str(), 1);
    run_case(sc.c, *sc.layouts, 61 + sc.ctas, nullptr);
    unsetenv("VEDA_ATTN_CTAS");
  }
}

// Small enough for racecheck: 16 items on 3 CTAs, the last one as 2 parts.
TEST(AttentionGpuLayouts, TailSplitTiny) {
  SKIP_WITHOUT_WS_KERNEL();
  auto layouts = HeadLayouts::uniform(Grid{8, 8, 16}, 0, 2, TileShape{4, 4, 4});
  ASSERT_TRUE(layouts.is_ok()) << layouts.status().to_string();
  ASSERT_EQ(cuda::plan_tail_split(16, 3, 16).parts, 2);
  setenv("VEDA_ATTN_CTAS", "3", 1);
  run_case(Case{Grid{8, 8, 16}, 128, DType::kBF16, 1, 1.0, 0.0, 2, 1 << 20}, *layouts, 71,
           nullptr);
  unsetenv("VEDA_ATTN_CTAS");
}

TEST(AttentionGpuLayouts, AllRowsEmpty) {
  SKIP_WITHOUT_GPU();
  auto layouts = HeadLayouts::uniform(Grid{4, 8, 8}, 0, 1, TileShape{4, 4, 4});
  ASSERT_TRUE(layouts.is_ok());
  run_case(Case{Grid{4, 8, 8}, 128, DType::kBF16, 1, 0.5, 1.0, 1}, *layouts, 3, nullptr);
}

// Repeated runs on the same inputs give bit-identical outputs (no races, no reads of unwritten
// memory).
TEST(AttentionGpuLayouts, Deterministic) {
  SKIP_WITHOUT_GPU();
  auto layouts = HeadLayouts::uniform(Grid{16, 16, 28}, 0, 2, TileShape{4, 4, 4});
  ASSERT_TRUE(layouts.is_ok());
  TileMask mask = cuda_check::random_mask(1, *layouts, 0.1, 5);
  auto problem = DeviceProblem::make(1, *layouts, 128, DType::kBF16, &mask, 11);
  ASSERT_TRUE(problem.is_ok());
  std::vector<float> first;
  for (int run = 0; run < 3; ++run) {
    ASSERT_TRUE(problem->poison_outputs().is_ok());
    ASSERT_TRUE(attention_cuda(problem->params()).is_ok());
    auto o = problem->slice_to_host(problem->o, 0, 1);
    ASSERT_TRUE(o.is_ok());
    if (run == 0)
      first = *o;
    else
      ASSERT_EQ(0, std::memcmp(first.data(), o->data(), first.size() * 4));
  }
}

TEST(AttentionGpuErrors, RejectsUnsupported) {
  SKIP_WITHOUT_GPU();
  auto layouts = HeadLayouts::uniform(Grid{4, 8, 8}, 0, 1, TileShape{4, 4, 4});
  ASSERT_TRUE(layouts.is_ok());
  auto problem = DeviceProblem::make(1, *layouts, 64, DType::kBF16, nullptr, 1);
  ASSERT_TRUE(problem.is_ok());
  AttentionParams p = problem->params();
  p.head_dim = 96;
  EXPECT_EQ(attention_cuda(p).code(), ErrorCode::kUnsupported);
  p = problem->params();
  p.dtype = DType::kF32;
  EXPECT_EQ(attention_cuda(p).code(), ErrorCode::kUnsupported);
  p = problem->params();
  p.tokens += 1;
  EXPECT_EQ(attention_cuda(p).code(), ErrorCode::kInvalidArgument);
  p = problem->params();
  p.q = static_cast<const char*>(p.q) + 2;
  EXPECT_EQ(attention_cuda(p).code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace veda
