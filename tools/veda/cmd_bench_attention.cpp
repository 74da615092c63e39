// veda bench attention: times the CUDA tile-skipping attention (dense = every tile selected) on
// random inputs drawn on the device, with random masks or masks from the selection path; median
// of many runs timed with CUDA events after a warm-up (by count and by time: the timed runs see the
// GPU's sustained clocks); optional check against the CPU references.
// Beside each sparse row, the GPU tile selection at that density (--select-method, default
// precision) and its share of the attention time, two ways: standalone (select_tiled on the
// problem's tile-order q and k: statistics, scoring, top-k) and as the DiT pays it (bf16 only):
// its q/k producer (RMSNorm + RoPE into tile order) timed with and without the tile statistics
// on random token-major rows (the median of the per-run differences), plus select_tiled given
// those statistics. The two columns select from different random rows.
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command.hpp"
#include "eval_output.hpp"
#include "table.hpp"
#include "veda/tile_layout.hpp"
#ifdef VEDA_HAS_CUDA
#include <cuda_runtime.h>

#include "cuda/attention_check.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/producer_tables.hpp"
#include "veda/cuda.hpp"
#include "veda/cuda_selection.hpp"
#include "veda/scoring.hpp"
#include "veda/selection.hpp"
#endif

namespace veda::cli {
namespace {

struct BenchOptions {
  std::string preset;
  int batch = 1, heads = 12, head_dim = 128;
  std::string grid = "21x30x52";
  std::string tile = "4x4x4";
  int prefix = 0;
  std::string densities = "1.0,0.10,0.05,0.03";
  std::string dtype = "bf16";
  std::string mask = "random";  // random | select
  std::string select_method = "veda";  // veda | veda-query-upper | stats
  int warmup = 5, runs = 30;
  double warmup_seconds = 1.0;
  bool verify = false;
  bool json = false;
  uint64_t seed = 1;
};

#ifdef VEDA_HAS_CUDA
// Selection-path mask: tile statistics of the problem's own q and k (copied back from the
// device), mean-pooled scores, top-k per query tile at `density`.
Result<TileMask> selected_mask(const cuda_check::DeviceProblem& pr, const HeadLayouts& layouts,
                               double density) {
  auto to_tensor = [&](const DeviceBuffer& buf) -> Result<Tensor> {
    Tensor t = Tensor::empty(DType::kF32, {pr.batch, pr.heads, pr.tokens, pr.head_dim});
    const size_t slice = size_t(pr.tokens) * pr.head_dim;
    for (int b = 0; b < pr.batch; ++b)
      for (int h = 0; h < pr.heads; ++h) {
        VEDA_ASSIGN_OR_RETURN(auto s, pr.slice_to_host(buf, b, h));
        std::copy(s.begin(), s.end(), t.data_as<float>() + (size_t(b) * pr.heads + h) * slice);
      }
    return t;
  };
  VEDA_ASSIGN_OR_RETURN(Tensor q, to_tensor(pr.q));
  VEDA_ASSIGN_OR_RETURN(Tensor k, to_tensor(pr.k));
  VEDA_ASSIGN_OR_RETURN(TileStats qs, compute_tile_stats(q, layouts));
  VEDA_ASSIGN_OR_RETURN(TileStats ks, compute_tile_stats(k, layouts));
  VEDA_ASSIGN_OR_RETURN(Tensor logits, score_tiles_mean(qs, ks, layouts, pr.scale));
  SelectionConfig config;
  config.density = density;
  return select_tiles(logits, layouts, config);
}

// The selection columns' selector: `veda`, the distilled estimator with every term `veda
// calibrate` fits by default (as the CUDA DiT runs such a profile), `veda-query-upper` with the
// query_upper term too (`calibrate --query-upper`: twice the scoring width), or `stats`, the
// uncalibrated scoring (the DiT's veda mode without a profile).
GpuSelectorOptions bench_selector_options(const std::string& method, int heads, float scale) {
  GpuSelectorOptions so;
  so.scale = scale;
  so.check_numerics = false;
  if (method != "stats") {
    so.method = GpuScoreMethod::kEstimator;
    so.estimator.assign(size_t(heads), EstimatorParams::every_term(method == "veda-query-upper"));
  }
  return so;
}

// Median milliseconds of GpuSelector::select_tiled on the problem's q and k (tile order) at
// `density`: the sum of its stage events (statistics, scoring, top-k).
Result<double> selection_ms(const cuda_check::DeviceProblem& pr, const HeadLayouts& layouts,
                            const GpuSelectorOptions& so, double density, int warmup, int runs) {
  SelectionConfig config;
  config.density = density;
  VEDA_ASSIGN_OR_RETURN(GpuSelector selector, GpuSelector::make(layouts, config, so));
  const size_t rows = size_t(pr.batch) * pr.heads * layouts.max_tiles();
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer counts, DeviceBuffer::allocate(rows * 4));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer indices,
                        DeviceBuffer::allocate(rows * std::max(1, selector.max_k()) * 4));
  std::vector<double> ms;
  for (int r = 0; r < warmup + runs; ++r) {
    GpuSelectStageTimes t;
    VEDA_RETURN_IF_ERROR(selector.select_tiled(pr.q.data(), pr.k.data(), pr.dtype, pr.batch,
                                               pr.head_dim, counts.as<int32_t>(),
                                               indices.as<int32_t>(), nullptr, &t));
    if (r >= warmup) ms.push_back(t.total_ms());
  }
  VEDA_RETURN_IF_ERROR(selector.check_numerics());
  return median(ms);
}

// The DiT's q/k producer on random token-major rows (bf16), its tile-order outputs and the
// statistics it gives the selector.
struct DitProducer {
  ProducerTables tables;
  DeviceBuffer x[2], dst[2], weight[2], rope, stats[6];
  float* stats_ptr[6] = {};
  dit_cuda::TileProducerParams params;

  static Result<std::unique_ptr<DitProducer>> make(int batch, const HeadLayouts& layouts,
                                                   int head_dim, uint64_t seed) {
    auto d = std::make_unique<DitProducer>();
    VEDA_ASSIGN_OR_RETURN(d->tables, ProducerTables::make(layouts));
    const size_t width = size_t(layouts.heads()) * head_dim;
    const size_t rows = size_t(batch) * layouts.tokens();
    const size_t tiled = size_t(batch) * layouts.heads() * layouts.padded_tokens() * head_dim;
    const size_t stat = size_t(batch) * layouts.heads() * layouts.max_tiles() * head_dim;
    for (int i = 0; i < 2; ++i) {
      VEDA_ASSIGN_OR_RETURN(d->x[i], DeviceBuffer::allocate(rows * width * 2));
      VEDA_RETURN_IF_ERROR(
          fill_device_uniform(d->x[i].data(), DType::kBF16, rows * width, seed + i, -1.5f, 1.5f));
      VEDA_ASSIGN_OR_RETURN(d->dst[i], DeviceBuffer::allocate(tiled * 2));
      VEDA_RETURN_IF_ERROR(fill_device_bytes(d->dst[i].data(), 0, tiled * 2));
      VEDA_ASSIGN_OR_RETURN(d->weight[i], DeviceBuffer::allocate(width * 4));
      VEDA_RETURN_IF_ERROR(
          fill_device_uniform(d->weight[i].data(), DType::kF32, width, seed + 2 + i, 0.5f, 1.5f));
    }
    // (cos, sin) pairs: any values time the same as a rotation.
    const size_t rope = size_t(layouts.tokens()) * head_dim;
    VEDA_ASSIGN_OR_RETURN(d->rope, DeviceBuffer::allocate(rope * 4));
    VEDA_RETURN_IF_ERROR(
        fill_device_uniform(d->rope.data(), DType::kF32, rope, seed + 4, -1.f, 1.f));
    for (int i = 0; i < 6; ++i) {
      VEDA_ASSIGN_OR_RETURN(d->stats[i], DeviceBuffer::allocate(stat * 4));
      d->stats_ptr[i] = d->stats[i].as<float>();
    }
    dit_cuda::TileProducerParams& p = d->params;
    p = {};
    for (int i = 0; i < 2; ++i)
      p.t[i] = {d->x[i].data(), d->dst[i].data(), d->weight[i].as<float>(), true};
    p.tensors = 2;
    d->tables.set_layout(p);
    p.head_dim = head_dim, p.eps = 1e-6f;
    p.rope = reinterpret_cast<const float2*>(d->rope.as<float>());
    return d;
  }

  Status run(bool with_stats, bool query_extrema, int batch) {
    ProducerTables::set_statistics(params, with_stats ? stats_ptr : nullptr, query_extrema);
    return cuda_status(dit_cuda::tile_producer(params, batch, nullptr), "tile_producer");
  }
};

// Medians (ms) of the q/k producer without and with the statistics (the two launches in turn, the
// order swapped every run), of their per-run difference, and of select_tiled given the
// statistics (its stage events: statistics of the heads not given, scoring, top-k). The DiT's
// selection costs the difference plus the select.
struct DitSelectionTimes {
  double producer = 0, producer_stats = 0, stats_cost = 0, select = 0;
  double stages[3] = {};  // select's: statistics and features, scoring GEMM, top-k
  double total() const { return stats_cost + select; }
};

Result<DitSelectionTimes> dit_selection_ms(DitProducer& d, int batch, int head_dim,
                                           const HeadLayouts& layouts, const GpuSelectorOptions& so,
                                           double density, int warmup, int runs) {
  SelectionConfig config;
  config.density = density;
  VEDA_ASSIGN_OR_RETURN(GpuSelector selector, GpuSelector::make(layouts, config, so));
  const size_t rows = size_t(batch) * layouts.heads() * layouts.max_tiles();
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer counts, DeviceBuffer::allocate(rows * 4));
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer indices,
                        DeviceBuffer::allocate(rows * std::max(1, selector.max_k()) * 4));
  cudaEvent_t ev[3] = {};
  for (auto& e : ev) VEDA_CUDA_CHECK(cudaEventCreate(&e));
  std::vector<double> plain, with_stats, cost, select, stages[3];
  Status st;
  const bool query_extrema = selector.reads_query_extrema();
  const GpuTileStatsInput given = d.tables.given(d.stats_ptr, query_extrema);
  for (int r = 0; r < warmup + runs && st.is_ok(); ++r) {
    // Both launches write the same q, k; the statistics stay from the one that computes them.
    const bool stats_first = r % 2 == 1;
    float first = 0, second = 0;
    st = cuda_status(cudaEventRecord(ev[0]), "cudaEventRecord");
    if (st.is_ok()) st = d.run(stats_first, query_extrema, batch);
    if (st.is_ok()) st = cuda_status(cudaEventRecord(ev[1]), "cudaEventRecord");
    if (st.is_ok()) st = d.run(!stats_first, query_extrema, batch);
    if (st.is_ok()) st = cuda_status(cudaEventRecord(ev[2]), "cudaEventRecord");
    GpuSelectStageTimes t;
    if (st.is_ok())
      st = selector.select_tiled(d.dst[0].data(), d.dst[1].data(), DType::kBF16, batch, head_dim,
                                 counts.as<int32_t>(), indices.as<int32_t>(), nullptr, &t, &given);
    if (st.is_ok())
      st = cuda_status(cudaEventElapsedTime(&first, ev[0], ev[1]), "cudaEventElapsedTime");
    if (st.is_ok())
      st = cuda_status(cudaEventElapsedTime(&second, ev[1], ev[2]), "cudaEventElapsedTime");
    if (st.is_ok() && r >= warmup) {
      const double a = stats_first ? second : first, b = stats_first ? first : second;
      plain.push_back(a), with_stats.push_back(b), cost.push_back(b - a);
      select.push_back(t.total_ms());
      stages[0].push_back(t.gather_stats_ms), stages[1].push_back(t.score_ms);
      stages[2].push_back(t.select_ms);
    }
  }
  for (auto& e : ev) cudaEventDestroy(e);
  VEDA_RETURN_IF_ERROR(st);
  VEDA_RETURN_IF_ERROR(selector.check_numerics());
  return DitSelectionTimes{median(plain), median(with_stats), median(cost), median(select),
                           {median(stages[0]), median(stages[1]), median(stages[2])}};
}

struct Flops {
  double actual = 0, dense = 0;
};
Flops count_flops(const cuda_check::DeviceProblem& pr, const HeadLayouts& layouts,
                  const TileMask* mask) {
  Flops f;
  for (int h = 0; h < pr.heads; ++h) {
    const auto& valid = layouts.head(h).tile_valid();
    double total_valid = 0;
    for (int32_t v : valid) total_valid += v;
    f.dense += pr.batch * 4.0 * total_valid * total_valid * pr.head_dim;
    for (int b = 0; b < pr.batch; ++b)
      for (int qt = 0; qt < int(valid.size()); ++qt) {
        if (!mask) {
          f.actual += 4.0 * valid[qt] * total_valid * pr.head_dim;
          continue;
        }
        const int c = mask->count(b, h, qt);
        const int32_t* row = mask->row(b, h, qt);
        double keys = 0;
        for (int i = 0; i < c; ++i) keys += valid[row[i]];
        f.actual += 4.0 * valid[qt] * keys * pr.head_dim;
      }
  }
  return f;
}

Status run_bench(const BenchOptions& opt) {
  if (!cuda_device_available()) return Status(ErrorCode::kCudaError, "no CUDA device found");
  BenchOptions o = opt;
  if (o.preset == "wan1.3b-480p") {
    o.heads = 12, o.grid = "21x30x52";
  } else if (o.preset == "wan14b-720p") {
    o.heads = 40, o.grid = "21x45x80";
  } else if (!o.preset.empty()) {
    return invalid_argument("unknown preset '" + o.preset + "' (wan1.3b-480p, wan14b-720p)");
  }
  VEDA_ASSIGN_OR_RETURN(const Grid video_grid, Grid::parse(o.grid));
  // "tokens": the layout of the DiT's dense mode (token order, kTokenBlock blocks).
  const bool token_order = o.tile == "tokens";
  VEDA_ASSIGN_OR_RETURN(const Grid grid,
                        token_order ? token_order_grid(video_grid) : Result<Grid>(video_grid));
  VEDA_ASSIGN_OR_RETURN(const TileShape shape,
                        token_order ? Result<TileShape>(kTokenBlock) : TileShape::parse(o.tile));
  const std::string tile_name = token_order ? o.tile : shape.str();
  VEDA_ASSIGN_OR_RETURN(DType dtype, parse_dtype(o.dtype == "bf16"  ? "BF16"
                                                 : o.dtype == "f16" ? "F16"
                                                                    : o.dtype));
  VEDA_ASSIGN_OR_RETURN(auto densities, parse_densities(o.densities));
  VEDA_ASSIGN_OR_RETURN(HeadLayouts layouts, HeadLayouts::uniform(grid, o.prefix, o.heads, shape));
  VEDA_ASSIGN_OR_RETURN(std::string device, cuda_device_description());
  // One set of inputs for every density; masks are rebuilt per density.
  VEDA_ASSIGN_OR_RETURN(auto base, cuda_check::DeviceProblem::make(
                                       o.batch, layouts, int(o.head_dim), dtype, nullptr, o.seed));
  Table table{{"B", "H", "grid", "tile", "D", "dtype", "mask", "density", "kernel", "ms (median)",
               "ms (min)", "TFLOP/s actual", "TFLOP/s dense-eq", "select ms", "select %",
               "DiT select ms", "DiT select %", "verify"},
              {}};
  std::unique_ptr<DitProducer> producer;  // made at the first sparse density (bf16 only)
  const GpuSelectorOptions select_options =
      bench_selector_options(o.select_method, o.heads, base.scale);
  nlohmann::json rows = nlohmann::json::array();
  for (double density : densities) {
    TileMask mask;
    const bool dense = density >= 1.0;
    if (!dense) {
      if (o.mask == "random") {
        mask = cuda_check::random_mask(o.batch, layouts, density, o.seed + 17);
      } else {
        VEDA_ASSIGN_OR_RETURN(mask, selected_mask(base, layouts, density));
      }
    }
    // Share q/k/v/o with `base`; only the mask buffers are per density.
    cuda_check::DeviceProblem& pr = base;
    DeviceBuffer counts, indices;
    pr.has_mask = !dense;
    if (!dense) {
      VEDA_ASSIGN_OR_RETURN(counts, DeviceBuffer::allocate(mask.counts.size() * 4));
      VEDA_ASSIGN_OR_RETURN(indices,
                            DeviceBuffer::allocate(std::max<size_t>(mask.indices.size(), 1) * 4));
      VEDA_RETURN_IF_ERROR(
          copy_to_device(counts.data(), mask.counts.data(), mask.counts.size() * 4));
      VEDA_RETURN_IF_ERROR(
          copy_to_device(indices.data(), mask.indices.data(), mask.indices.size() * 4));
      std::swap(pr.counts, counts);
      std::swap(pr.indices, indices);
      pr.mask_host = mask;
      pr.max_k = mask.max_k;
    }
    const AttentionParams params = pr.params();
    const std::string kernel = attention_cuda_kernel_name(params);
    VEDA_RETURN_IF_ERROR(pr.poison_outputs());
    VEDA_ASSIGN_OR_RETURN(auto times,
                          time_attention_cuda(params, o.warmup, o.warmup_seconds, o.runs));
    const double median_ms = median(std::vector<double>(times.begin(), times.end()));
    const double best = *std::min_element(times.begin(), times.end());
    const Flops flops = count_flops(pr, layouts, dense ? nullptr : &mask);
    const double actual_density = dense ? 1.0 : mask.density(layouts);
    std::string verdict = "-";
    nlohmann::json checks = nlohmann::json::array();
    if (o.verify) {
      bool all_pass = true;
      for (auto [b, h] : {std::pair{0, 0}, std::pair{o.batch - 1, o.heads - 1}}) {
        auto tiles = cuda_check::sample_tiles(layouts.head(h).num_tiles(), dense ? 8 : 24, 5 + h);
        VEDA_ASSIGN_OR_RETURN(auto res, cuda_check::check_slice(pr, b, h, tiles));
        all_pass = all_pass && res.pass();
        if (!o.json)
          fmt::print(stderr, "verify density {} (b {}, h {}): {}\n", density, b, h, res.summary());
        checks.push_back({{"b", b},
                          {"h", h},
                          {"pass", res.pass()},
                          {"err_gpu", res.err_gpu},
                          {"err_lowp", res.err_lowp},
                          {"err_lse", res.err_lse},
                          {"summary", res.summary()}});
      }
      verdict = all_pass ? "pass" : "FAIL";
    }
    if (!dense) {  // give the mask buffers back to the locals, freed at the end of the iteration
      std::swap(pr.counts, counts);
      std::swap(pr.indices, indices);
    }
    double select = -1;  // dense, or not timed
    if (!dense) {
      auto timed = selection_ms(pr, layouts, select_options, density, o.warmup, o.runs);
      if (timed.is_ok()) {
        select = *timed;
      } else {
        fmt::print(stderr, "selection not timed: {}\n", timed.status().to_string());
      }
    }
    DitSelectionTimes dit;
    bool dit_timed = false;
    if (!dense && dtype == DType::kBF16) {
      Status st = Status::ok();
      if (!producer) {
        auto made = DitProducer::make(o.batch, layouts, o.head_dim, o.seed + 101);
        if (made.is_ok()) {
          producer = std::move(*made);
        } else {
          st = made.status();
        }
      }
      if (st.is_ok()) {
        auto timed = dit_selection_ms(*producer, o.batch, o.head_dim, layouts, select_options,
                                      density, o.warmup, o.runs);
        if (timed.is_ok()) {
          dit = *timed, dit_timed = true;
        } else {
          st = timed.status();
        }
      }
      if (!st.is_ok()) fmt::print(stderr, "DiT selection not timed: {}\n", st.to_string());
    }
    // A DiT selection figure for the JSON row, null where it was not timed.
    const auto dit_json = [&](const auto& x) {
      return dit_timed ? nlohmann::json(x) : nlohmann::json();
    };
    const double tf_actual = flops.actual / (median_ms * 1e-3) / 1e12;
    const double tf_dense = flops.dense / (median_ms * 1e-3) / 1e12;
    table.rows.push_back({fmt::format("{}", o.batch), fmt::format("{}", o.heads), video_grid.str(),
                          tile_name,
                          fmt::format("{}", o.head_dim), o.dtype, dense ? "dense" : o.mask,
                          fmt::format("{:.4f}", actual_density), kernel,
                          fmt::format("{:.3f}", median_ms), fmt::format("{:.3f}", best),
                          fmt::format("{:.1f}", tf_actual), fmt::format("{:.1f}", tf_dense),
                          select < 0 ? "-" : fmt::format("{:.3f}", select),
                          select < 0 ? "-" : fmt::format("{:.1f}", 100.0 * select / median_ms),
                          dit_timed ? fmt::format("{:.3f}", dit.total()) : "-",
                          dit_timed ? fmt::format("{:.1f}", 100.0 * dit.total() / median_ms) : "-",
                          verdict});
    rows.push_back({{"device", device},
                    {"batch", o.batch},
                    {"heads", o.heads},
                    {"grid", video_grid.str()},
                    {"tile", tile_name},
                    {"head_dim", o.head_dim},
                    {"dtype", o.dtype},
                    {"mask", dense ? "dense" : o.mask},
                    {"density_requested", density},
                    {"density", actual_density},
                    {"kernel", kernel},
                    {"ms_median", median_ms},
                    {"ms_min", best},
                    {"runs", o.runs},
                    {"warmup_seconds", o.warmup_seconds},
                    {"flops_actual", flops.actual},
                    {"flops_dense", flops.dense},
                    {"tflops_actual", tf_actual},
                    {"tflops_dense_equiv", tf_dense},
                    {"select_method", o.select_method},
                    {"select_ms", select < 0 ? nlohmann::json() : nlohmann::json(select)},
                    {"dit_select_ms", dit_json(dit.total())},
                    {"dit_producer_ms", dit_json(dit.producer)},
                    {"dit_producer_stats_ms", dit_json(dit.producer_stats)},
                    {"dit_stats_cost_ms", dit_json(dit.stats_cost)},
                    {"dit_select_given_ms", dit_json(dit.select)},
                    {"dit_select_stages_ms", dit_json(dit.stages)},
                    {"verify", verdict},
                    {"checks", checks}});
    if (o.verify && verdict != "pass" && !o.json) fmt::print(stderr, "verification FAILED\n");
  }
  if (o.json) {
    fmt::print("{}\n", rows.dump(2));
  } else {
    fmt::print("device: {}\n{}", device, table.to_markdown());
  }
  for (const auto& r : rows)
    if (r["verify"] == "FAIL") return numeric_error("verification failed");
  return Status::ok();
}
#endif

RunFn setup_bench_attention(CLI::App& sub) {
  auto opt = std::make_shared<BenchOptions>();
  sub.add_option("--preset", opt->preset,
                 "wan1.3b-480p (1x12, 21x30x52) or wan14b-720p (1x40, 21x45x80)");
  sub.add_option("--batch", opt->batch, "batch size")->capture_default_str();
  sub.add_option("--heads", opt->heads, "heads")->capture_default_str();
  sub.add_option("--grid", opt->grid, "video grid TxHxW")->capture_default_str();
  sub.add_option("--head-dim", opt->head_dim, "64 or 128")->capture_default_str();
  sub.add_option("--tile", opt->tile,
                 "tile shape TxHxW (33-64 or 65-128 tokens: 64- or 128-slot tiles), or tokens: "
                 "token order in 128-token blocks "
                 "(the DiT's dense layout)")
      ->capture_default_str();
  sub.add_option("--prefix", opt->prefix, "prefix tokens before the video tokens")
      ->capture_default_str();
  sub.add_option("--density", opt->densities, "comma-separated densities; 1.0 = dense")
      ->capture_default_str();
  sub.add_option("--dtype", opt->dtype, "bf16 or f16")->capture_default_str();
  sub.add_option("--mask", opt->mask,
                 "random, or select (select_tiles on mean-pooled scores of q, k)")
      ->capture_default_str()
      ->check(CLI::IsMember({"random", "select"}));
  sub.add_option("--select-method", opt->select_method,
                 "scoring of the selection columns: veda (the distilled estimator, every term "
                 "veda calibrate fits by default), veda-query-upper (and calibrate --query-upper's "
                 "term) or stats (uncalibrated)")
      ->capture_default_str()
      ->check(CLI::IsMember({"veda", "veda-query-upper", "stats"}));
  sub.add_option("--warmup", opt->warmup, "untimed runs (at least)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  sub.add_option("--warmup-seconds", opt->warmup_seconds,
                 "untimed runs for at least this long, so that the timed ones see the GPU's "
                 "sustained (power-capped) clocks, not the higher ones of a GPU fresh from idle")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 600.0))
      ->check(CLI::Validator(  // Range lets NaN through (every comparison with it is false)
          [](std::string& s) {  // strtod: no exception on underflow (1e-400 is 0 seconds)
            return std::string(std::isnan(std::strtod(s.c_str(), nullptr)) ? "NaN" : "");
          },
          "", "not NaN"));
  sub.add_option("--runs", opt->runs, "timed runs (median reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  sub.add_option("--seed", opt->seed, "input seed")->capture_default_str();
  sub.add_flag("--verify", opt->verify, "check two (b, h) slices against the CPU references");
  sub.add_flag("--json", opt->json, "print JSON rows instead of a table");
  return [opt]() -> Status {
#ifdef VEDA_HAS_CUDA
    return run_bench(*opt);
#else
    (void)opt;
    return unsupported(
        "veda was built without CUDA (configure with -DVEDA_CUDA=ON on a machine with nvcc)");
#endif
  };
}

const bool kRegistered = register_command(
    {"bench attention", "time the CUDA tile-skipping attention kernel", setup_bench_attention});

}  // namespace
}  // namespace veda::cli
