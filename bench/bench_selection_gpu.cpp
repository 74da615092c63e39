// GPU tile selection benchmark: GpuSelector (statistics + scoring + top-k) on a preset shape,
// timed with CUDA events (warm-up, then the median of many runs), per stage and in total, for
// each scoring precision and input path: token order writing the tile-order copies, token order
// statistics only, and tile-order input (select_tiled, the path where a producer writes tile
// order); how many boundary tiles each precision rescores; whether the two precisions' masks agree
// (they should on every row); the tile-sparse attention at the selected mask for the ratio; and the
// same agreement on the shared capture.
// Output: markdown tables; a last line `summary | ...` per precision for scripts.
//
//   bench_selection_gpu [--preset wan14b-720p|wan1.3b-480p] [--density 0.05] [--runs 50]
//                       [--method stats|mean|estimator] [--no-attention] [--capture PATH]
#include <cuda_runtime.h>

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "veda/attention.hpp"
#include "veda/capture.hpp"
#include "veda/cuda.hpp"
#include "veda/cuda_selection.hpp"

namespace veda {
namespace {

struct Options {
  std::string preset = "wan14b-720p";
  double density = 0.05;
  int runs = 50, warmup = 5;
  std::string method = "stats";
  bool attention = true;
  std::string capture = VEDA_DATA_DIR "/captures/dev_p3_s101_l6_t15.safetensors";
};

float median(std::vector<float> v) {
  if (v.empty()) return 0.f;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

#define BENCH_CUDA(expr)                                                                 \
  do {                                                                                   \
    cudaError_t _e = (expr);                                                             \
    if (_e != cudaSuccess)                                                               \
      return Status(ErrorCode::kCudaError, fmt::format("{}: {}", #expr, cudaGetErrorString(_e))); \
  } while (0)

Result<GpuScoreMethod> parse_method(const std::string& m) {
  if (m == "mean") return GpuScoreMethod::kMean;
  if (m == "stats") return GpuScoreMethod::kStats;
  if (m == "estimator") return GpuScoreMethod::kEstimator;
  return invalid_argument("--method must be mean, stats or estimator");
}

const char* precision_name(GpuScorePrecision p) { return p == GpuScorePrecision::kF32 ? "f32" : "f16x3"; }

constexpr GpuScorePrecision kPrecisions[] = {GpuScorePrecision::kF32, GpuScorePrecision::kF16x3};

GpuSelectorOptions make_options(GpuScoreMethod method, int heads, float scale,
                                GpuScorePrecision precision) {
  GpuSelectorOptions o;
  o.method = method;
  o.scale = scale;
  o.precision = precision;
  o.check_numerics = false;
  if (method == GpuScoreMethod::kEstimator)
    o.estimator.assign(size_t(heads), EstimatorParams::every_term(/*query_upper=*/true));
  return o;
}

Status run(const Options& opt) {
  if (!cuda_device_available()) return Status(ErrorCode::kCudaError, "no CUDA device");
  VEDA_ASSIGN_OR_RETURN(std::string device, cuda_device_description());
  int heads = 40;
  Grid grid{21, 45, 80};
  if (opt.preset == "wan1.3b-480p") {
    heads = 12, grid = Grid{21, 30, 52};
  } else if (opt.preset != "wan14b-720p") {
    return invalid_argument("unknown preset " + opt.preset);
  }
  VEDA_ASSIGN_OR_RETURN(GpuScoreMethod method, parse_method(opt.method));
  const int batch = 1, dim = 128;
  const DType dtype = DType::kBF16;
  const float scale = 1.0f / std::sqrt(float(dim));
  VEDA_ASSIGN_OR_RETURN(HeadLayouts layouts, HeadLayouts::uniform(grid, 0, heads, TileShape{4, 4, 4}));
  SelectionConfig config;
  config.density = opt.density;

  const size_t tokens = size_t(layouts.tokens()), padded = size_t(layouts.padded_tokens());
  const size_t in_elems = size_t(batch) * heads * tokens * dim;
  const size_t tiled_elems = size_t(batch) * heads * padded * dim;
  const size_t rows = size_t(batch) * heads * layouts.max_tiles();
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer q, DeviceBuffer::allocate(in_elems * 2));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer k, DeviceBuffer::allocate(in_elems * 2));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer v, DeviceBuffer::allocate(in_elems * 2));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer qt, DeviceBuffer::allocate(tiled_elems * 2));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer kt, DeviceBuffer::allocate(tiled_elems * 2));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer vt, DeviceBuffer::allocate(tiled_elems * 2));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer ot, DeviceBuffer::allocate(tiled_elems * 2));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer counts, DeviceBuffer::allocate(rows * 4));
  VEDA_RETURN_IF_ERROR(fill_device_uniform(q.data(), dtype, in_elems, 11, -2.f, 2.f));
  VEDA_RETURN_IF_ERROR(fill_device_uniform(k.data(), dtype, in_elems, 12, -2.f, 2.f));
  VEDA_RETURN_IF_ERROR(fill_device_uniform(v.data(), dtype, in_elems, 13, -1.f, 1.f));

  fmt::print("## GPU tile selection, {} ({} heads x {} tokens, D {}, bf16, B {}), {} tiles/head, "
             "density {}, method {}\n\ndevice: {}\n\n",
             opt.preset, heads, tokens, dim, batch, layouts.max_tiles(), opt.density, opt.method,
             device);
  fmt::print("| precision | input | gather+stats ms | score GEMM ms | top-k ms | total ms "
             "(median of {}) | GB/s (q, k read) |\n|---|---|---|---|---|---|---|\n", opt.runs);

  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  DeviceBuffer indices;
  int max_k = 0;
  // Tile-order inputs for select_tiled (and the attention): the gathers of q, k and v.
  {
    VEDA_ASSIGN_OR_RETURN(GpuSelector g, GpuSelector::make(layouts, config,
                          make_options(method, heads, scale, GpuScorePrecision::kF32)));
    VEDA_RETURN_IF_ERROR(g.gather(q.data(), dtype, batch, dim, qt.data()));
    VEDA_RETURN_IF_ERROR(g.gather(k.data(), dtype, batch, dim, kt.data()));
    VEDA_RETURN_IF_ERROR(g.gather(v.data(), dtype, batch, dim, vt.data()));
  }
  enum class Input { kTokensCopies, kTokens, kTiles };
  const char* input_names[] = {"tokens, writes q/k tile order", "tokens, stats only",
                               "tile order (select_tiled)"};
  const double read_bytes = 2.0 * 2.0 * double(in_elems);  // q and k, bf16
  float total_ms[2][3] = {};
  std::vector<int32_t> masks[2];  // each precision's last mask (tile-order input)
  for (int pi = 0; pi < 2; ++pi) {
    const GpuScorePrecision precision = kPrecisions[pi];
    VEDA_ASSIGN_OR_RETURN(GpuSelector selector,
                          GpuSelector::make(layouts, config, make_options(method, heads, scale, precision)));
    max_k = selector.max_k();
    if (!indices.data()) {
      VEDA_ASSIGN_OR_RETURN(indices, DeviceBuffer::allocate(rows * size_t(max_k) * 4));
    }
    for (Input input : {Input::kTokensCopies, Input::kTokens, Input::kTiles}) {
      auto run_once = [&](GpuSelectStageTimes* t) {
        if (input == Input::kTiles)
          return selector.select_tiled(qt.data(), kt.data(), dtype, batch, dim, counts.as<int32_t>(),
                                       indices.as<int32_t>(), nullptr, t);
        const bool copies = input == Input::kTokensCopies;
        return selector.select(q.data(), k.data(), dtype, batch, dim, copies ? qt.data() : nullptr,
                               copies ? kt.data() : nullptr, counts.as<int32_t>(),
                               indices.as<int32_t>(), nullptr, t);
      };
      std::vector<float> stage[3], total;
      for (int r = 0; r < opt.warmup + opt.runs; ++r) {
        GpuSelectStageTimes t;
        VEDA_RETURN_IF_ERROR(run_once(&t));
        if (r < opt.warmup) continue;
        stage[0].push_back(t.gather_stats_ms), stage[1].push_back(t.score_ms),
            stage[2].push_back(t.select_ms);
      }
      for (int r = 0; r < opt.warmup + opt.runs; ++r) {  // end to end, no stage events
        BENCH_CUDA(cudaEventRecord(e0));
        VEDA_RETURN_IF_ERROR(run_once(nullptr));
        BENCH_CUDA(cudaEventRecord(e1));
        BENCH_CUDA(cudaEventSynchronize(e1));
        float ms = 0;
        BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= opt.warmup) total.push_back(ms);
      }
      VEDA_RETURN_IF_ERROR(selector.check_numerics());
      const float tot = median(total);
      total_ms[pi][int(input)] = tot;
      fmt::print("| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.0f} |\n",
                 precision_name(precision), input_names[int(input)], median(stage[0]),
                 median(stage[1]), median(stage[2]), tot, read_bytes / (median(stage[0]) * 1e6));
    }
    masks[pi].resize(rows * size_t(max_k));
    VEDA_RETURN_IF_ERROR(copy_to_host(masks[pi].data(), indices.data(), masks[pi].size() * 4));
  }
  size_t same_rows = 0;
  for (size_t r = 0; r < rows; ++r)
    same_rows += std::equal(&masks[0][r * max_k], &masks[0][(r + 1) * max_k], &masks[1][r * max_k]);
  fmt::print("\nf16x3 and f32 masks identical on {} of {} rows\n", same_rows, rows);
  // The mask left in device memory is FP16x3's on tile-order input (the same as f32's). How many
  // boundary tiles each precision rescored (separate, counting runs).
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer c2, DeviceBuffer::allocate(rows * 4));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer i2, DeviceBuffer::allocate(rows * size_t(max_k) * 4));
  for (GpuScorePrecision precision : kPrecisions) {
    GpuSelectorOptions o = make_options(method, heads, scale, precision);
    o.count_rescored = true;
    VEDA_ASSIGN_OR_RETURN(GpuSelector s, GpuSelector::make(layouts, config, o));
    VEDA_RETURN_IF_ERROR(s.select_tiled(qt.data(), kt.data(), dtype, batch, dim, c2.as<int32_t>(),
                                        i2.as<int32_t>()));
    VEDA_ASSIGN_OR_RETURN(GpuRescoreCounts rc, s.rescore_counts());
    fmt::print("\n{} scoring rescored {:.2f} tiles a row ({} rows)\n", precision_name(precision),
               double(rc.boundary_tiles) / std::max<int64_t>(1, rc.rows), rc.rows);
  }
  {
    VEDA_ASSIGN_OR_RETURN(GpuSelector selector, GpuSelector::make(layouts, config,
                          make_options(method, heads, scale, GpuScorePrecision::kF32)));
    std::vector<float> gms;
    for (int r = 0; r < opt.warmup + opt.runs; ++r) {
      BENCH_CUDA(cudaEventRecord(e0));
      VEDA_RETURN_IF_ERROR(selector.gather(v.data(), dtype, batch, dim, vt.data()));
      BENCH_CUDA(cudaEventRecord(e1));
      BENCH_CUDA(cudaEventSynchronize(e1));
      float ms = 0;
      BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
      if (r >= opt.warmup) gms.push_back(ms);
    }
    const double bytes = 2.0 * (double(in_elems) + double(tiled_elems)) * 1.0;
    fmt::print("\ngather of v alone (tile-order copy, no statistics): {:.3f} ms, {:.0f} GB/s\n",
               median(gms), bytes / (median(gms) * 1e6));
    BENCH_CUDA(cudaDeviceSynchronize());
  }
  float attention_ms = 0;
  if (opt.attention) {
    VEDA_ASSIGN_OR_RETURN(DeviceBuffer valid, DeviceBuffer::allocate(layouts.valid_table().size() * 4));
    VEDA_RETURN_IF_ERROR(copy_to_device(valid.data(), layouts.valid_table().data(),
                                        layouts.valid_table().size() * 4));
    AttentionParams p;
    p.q = qt.data(), p.k = kt.data(), p.v = vt.data(), p.o = ot.data();
    p.dtype = dtype;
    p.batch = batch, p.heads = heads, p.tokens = int64_t(padded), p.head_dim = dim;
    p.set_contiguous_strides();
    p.tile_size = layouts.volume();
    p.num_tiles = layouts.max_tiles();
    p.tile_valid = valid.as<int32_t>();
    p.mask_counts = counts.as<int32_t>();
    p.mask_indices = indices.as<int32_t>();
    p.max_k = max_k;
    p.softmax_scale = scale;
    VEDA_ASSIGN_OR_RETURN(std::vector<float> ms,
                          time_attention_cuda(p, 3, /*warmup_seconds=*/1.0,
                                              std::max(10, opt.runs / 2)));
    attention_ms = median(ms);
    fmt::print("\ntile-sparse attention at the selected mask (density {}, max_k {}): {:.3f} ms "
               "({}); selection f16x3 on tile-order input = {:.1f}% of it, f32 writing the tile-order "
               "copies {:.1f}% (target <= 5%)\n",
               opt.density, max_k, attention_ms, attention_cuda_kernel_name(p),
               100.0 * total_ms[1][2] / attention_ms, 100.0 * total_ms[0][0] / attention_ms);
  }
  BENCH_CUDA(cudaEventDestroy(e0));
  BENCH_CUDA(cudaEventDestroy(e1));
  for (int pi = 0; pi < 2; ++pi)
    fmt::print("\nsummary | {} | {} | {} | copies {:.3f} | stats-only {:.3f} | tile-order {:.3f} | "
               "attention {:.3f} ms",
               opt.preset, opt.method, precision_name(kPrecisions[pi]), total_ms[pi][0],
               total_ms[pi][1], total_ms[pi][2], attention_ms);
  fmt::print("\n");

  // Mask agreement of FP16x3 with f32, on the shared capture.
  auto capture = load_capture(opt.capture);
  if (!capture) {
    fmt::print("\n(capture {} not loaded: {})\n", opt.capture, capture.status().to_string());
    return Status::ok();
  }
  const int ch = int(capture->q.dim(1)), cd = int(capture->q.dim(3));
  VEDA_ASSIGN_OR_RETURN(HeadLayouts cl, HeadLayouts::uniform(capture->grid, capture->prefix_tokens,
                                                             ch, TileShape{4, 4, 4}));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer cq, DeviceBuffer::allocate(capture->q.nbytes()));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer ck, DeviceBuffer::allocate(capture->k.nbytes()));
  VEDA_RETURN_IF_ERROR(copy_to_device(cq.data(), capture->q.data(), capture->q.nbytes()));
  VEDA_RETURN_IF_ERROR(copy_to_device(ck.data(), capture->k.data(), capture->k.nbytes()));
  const size_t crows = size_t(ch) * cl.max_tiles();
  fmt::print("\nFP16x3 scoring against f32 on {} ({} heads, {} tiles/head, method {}):\n\n"
             "| density | selected tiles in common | rows identical | tiles rescored a row: f32, "
             "FP16x3 |\n|---|---|---|---|\n",
             opt.capture, ch, cl.max_tiles(), opt.method);
  for (double density : {0.05, 0.1}) {
    SelectionConfig cc;
    cc.density = density;
    std::vector<std::vector<int32_t>> masks;
    int ck_max = 0;
    double rescored[2] = {};
    for (GpuScorePrecision precision : kPrecisions) {
      GpuSelectorOptions o = make_options(method, ch, 1.0f / std::sqrt(float(cd)), precision);
      o.count_rescored = true;
      VEDA_ASSIGN_OR_RETURN(GpuSelector s, GpuSelector::make(cl, cc, o));
      ck_max = s.max_k();
      VEDA_ASSIGN_OR_RETURN(DeviceBuffer c, DeviceBuffer::allocate(crows * 4));
      VEDA_ASSIGN_OR_RETURN(DeviceBuffer ix, DeviceBuffer::allocate(crows * ck_max * 4));
      VEDA_RETURN_IF_ERROR(s.select(cq.data(), ck.data(), capture->q.dtype(), 1, cd, nullptr,
                                    nullptr, c.as<int32_t>(), ix.as<int32_t>()));
      std::vector<int32_t> host(crows * ck_max);
      VEDA_RETURN_IF_ERROR(copy_to_host(host.data(), ix.data(), host.size() * 4));
      masks.push_back(std::move(host));
      VEDA_ASSIGN_OR_RETURN(GpuRescoreCounts rc, s.rescore_counts());
      rescored[masks.size() - 1] = double(rc.boundary_tiles) / std::max<int64_t>(1, rc.rows);
    }
    int64_t common = 0, total = 0, same_rows = 0;
    for (size_t r = 0; r < crows; ++r) {
      const int32_t* a = &masks[0][r * ck_max];
      const int32_t* b = &masks[1][r * ck_max];
      same_rows += std::equal(a, a + ck_max, b);
      for (int m = 0; m < ck_max && a[m] >= 0; ++m, ++total)
        common += std::find(b, b + ck_max, a[m]) != b + ck_max;
    }
    fmt::print("| {} | {:.4f} | {:.4f} | {:.2f}, {:.2f} |\n", density,
               double(common) / std::max<int64_t>(1, total), double(same_rows) / crows, rescored[0],
               rescored[1]);
  }
  return Status::ok();
}

}  // namespace
}  // namespace veda

int main(int argc, char** argv) {
  veda::Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--preset") opt.preset = next();
    else if (a == "--density") opt.density = std::atof(next().c_str());
    else if (a == "--runs") opt.runs = std::max(1, std::atoi(next().c_str()));
    else if (a == "--method") opt.method = next();
    else if (a == "--no-attention") opt.attention = false;
    else if (a == "--capture") opt.capture = next();
    else {
      fmt::print(stderr, "unknown argument {}\n", a);
      return 2;
    }
  }
  const veda::Status st = veda::run(opt);
  if (!st.is_ok()) {
    fmt::print(stderr, "bench_selection_gpu: {}\n", st.to_string());
    return 1;
  }
  return 0;
}
