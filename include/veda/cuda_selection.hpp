// Tile selection on the GPU: tile statistics (optionally fused with the gather to tile order),
// tile scoring (mean, stats, or the fitted estimator) and per-row top-k into a TileMask, all on
// device memory. docs/selection-perf.md has the design and timings. The
// CPU reference it reproduces: gather_to_tiles + compute_tile_stats (tile_layout/scoring.hpp),
// score_tiles_mean / score_tiles_stats / score_tiles_estimated and select_tiles (kTopK).
//
// No CUDA headers here: streams are void* (a cudaStream_t; nullptr = the default stream), device
// memory is plain pointers. Everything returns a Status.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "veda/dtype.hpp"
#include "veda/estimator.hpp"
#include "veda/profile.hpp"
#include "veda/scoring.hpp"
#include "veda/selection.hpp"
#include "veda/status.hpp"
#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

enum class GpuScoreMethod {
  kMean,       // score_tiles_mean
  kStats,      // score_tiles_stats with `stats` options
  kEstimator,  // score_tiles_estimated with `estimator` (one parameter set per head)
};

// Arithmetic of the scoring GEMM. Both select the same mask: per row, the tiles the GEMM's
// rigorous error bound cannot place against the row's take-th logit are rescored from the f32
// features in a fixed order (double sums), so the mask is the top-k of these canonical logits
// (kernels/selection_topk.cuh derives the bound). The CPU's select_tiles (OpenBLAS f32 logits)
// agrees except where its own f32 rounding reorders a near-tie at the budget boundary.
//  kF32    f32 GEMM (SIMT), error below W 2^-24 |q| |k| (W: feature width).
//  kF16x3  FP16 tensor cores on features split into fp16 hi + lo (hi.hi + hi.lo + lo.hi, f32
//          output, error bound ~2e-4 |q| |k - c| for W = 256 with k centred by c): ~5x faster.
// Kept logits (keep_logits) are the GEMM's. A q or k feature that is NaN or infinite makes every
// logit of its tile NaN: numeric_error (stricter than select_tiles, which may drop -inf logits).
enum class GpuScorePrecision { kF32, kF16x3 };

struct GpuSelectorOptions {
  GpuScoreMethod method = GpuScoreMethod::kStats;
  StatsScoreOptions stats;                // kStats
  std::vector<EstimatorParams> estimator;  // kEstimator: size = heads
  float scale = 0;                         // softmax scale, > 0 (1/sqrt(D) for attention)
  GpuScorePrecision precision = GpuScorePrecision::kF16x3;
  // select() synchronises the stream at its end and returns numeric_error when a logit of an
  // existing pair was NaN or +inf (those rows get count 0). Off: fully asynchronous; call
  // check_numerics() later.
  bool check_numerics = true;
  // Debug/test outputs kept on the device after each select(), read with copy_*_to_host.
  bool keep_stats = false;   // q and k TileStats
  bool keep_logits = false;  // final logits [B, H, max_tiles, max_tiles]
  bool count_rescored = false;  // count the tiles rescored at the boundaries (slower)
};

// Tiles rescored (canonical logits) by the last select() with count_rescored.
struct GpuRescoreCounts {
  int64_t rows = 0;            // rows of existing query tiles
  int64_t boundary_tiles = 0;  // tiles rescored at those rows' budget boundaries
};

// Options reproducing a profile layer: kEstimator with its per-head parameters; `config`'s
// density and head_density are set from the profile's split of `density`. (Inline: the CUDA
// library does not link the calibration module that defines Profile.)
inline GpuSelectorOptions gpu_selector_options_from_profile(const Profile& profile,
                                                            const LayerProfile& layer,
                                                            double density, float scale,
                                                            SelectionConfig* config) {
  GpuSelectorOptions o;
  o.method = GpuScoreMethod::kEstimator;
  o.scale = scale;
  for (const HeadProfile& h : layer.heads) o.estimator.push_back(h.estimator);
  if (config) {
    config->density = density;
    config->head_density = profile.head_densities(layer, density);
  }
  return o;
}

// Milliseconds per stage of one select() (CUDA events; select() synchronises when asked for them).
struct GpuSelectStageTimes {
  float gather_stats_ms = 0;  // (gather to tile order +) statistics + scoring features
  float score_ms = 0;         // the batched scoring GEMM
  float select_ms = 0;        // logits epilogue + top-k (+ boundary rescoring) + mask write
  float total_ms() const { return gather_stats_ms + score_ms + select_ms; }
};

// Tile statistics computed outside the selector, by a producer that reads every q and k row
// anyway (the CUDA DiT's RMSNorm + RoPE kernel): f32 [batch, heads, max_tiles, head_dim] each,
// equal to what select_tiled computes itself from the tile-order q and k it receives (sums over
// the slots in order from 0, mean = sum * (1 / valid), max / min from -inf / +inf; the values of
// compute_tile_stats but for the sign of a zero mean and NaN in max / min). Heads with
// heads[h] == 0 are computed from the tile-order inputs as usual; the given heads' tile-order
// rows are not read. q_max and q_min may be null when the selector's reads_query_extrema() is
// false (a producer then need not compute them). Buffers are 16-byte aligned, and are read until
// the select's last kernel (the top-k rescores boundary tiles from them).
struct GpuTileStatsInput {
  const float* q_mean = nullptr;
  const float* q_max = nullptr;
  const float* q_min = nullptr;
  const float* k_mean = nullptr;
  const float* k_max = nullptr;
  const float* k_min = nullptr;
  std::vector<uint8_t> heads;  // [heads]: 1 = given

  // Whether the selector reads statistic i (0-5: q mean, max, min, then k's): every one but q
  // max and min, which only where its reads_query_extrema() (`query_extrema`) is true.
  static bool is_read(int i, bool query_extrema) { return i == 0 || i >= 3 || query_extrema; }
};

// Owns the device copies of the layouts (slot_token, tile_valid, per-head budgets and biases),
// the cuBLASLt handle and the scratch (grown on demand). Not thread-safe; one stream at a time.
class GpuSelector {
 public:
  // Errors: selection mode kMass (unsupported on the GPU), bad densities, estimator size mismatch
  // or non-finite parameters, non-positive scale, more tiles per head than the top-k kernel's
  // shared memory holds (about 28,000; fewer with a large distance-prior table), no CUDA device.
  static Result<GpuSelector> make(const HeadLayouts& layouts, const SelectionConfig& config,
                                  const GpuSelectorOptions& options);
  GpuSelector();
  ~GpuSelector();
  GpuSelector(GpuSelector&&) noexcept;
  GpuSelector& operator=(GpuSelector&&) noexcept;

  // The TileMask's row width: the same max_k select_tiles gives for these layouts and config.
  int max_k() const;
  int max_tiles() const;
  int heads() const;
  // Whether select_tiled reads given query maxima and minima (GpuTileStatsInput): the estimator
  // with a query_upper term, or keep_stats.
  bool reads_query_extrema() const;

  // q, k: [batch, heads, tokens, head_dim] contiguous in token order (dtype f16, bf16 or f32;
  // rows of 16 bytes times a power of two, at most 512 bytes, 16-byte aligned).
  // q_tiled, k_tiled: [batch, heads, padded_tokens, head_dim] of the same dtype in tile order,
  // padding slots zero; either may be null (statistics only).
  // counts: [batch, heads, max_tiles]; indices: [batch, heads, max_tiles, max_k], each row
  // ascending, unused entries -1. Asynchronous on `stream` unless check_numerics or `times`.
  Status select(const void* q, const void* k, DType dtype, int batch, int head_dim,
                void* q_tiled, void* k_tiled, int32_t* counts, int32_t* indices,
                void* stream = nullptr, GpuSelectStageTimes* times = nullptr);

  // The same from inputs already in tile order (a producer wrote them, as the attention reads
  // them): q_tiled, k_tiled [batch, heads, padded_tokens, head_dim]; padding slots are not read.
  // With `given`, the statistics of the heads it marks come from there.
  Status select_tiled(const void* q_tiled, const void* k_tiled, DType dtype, int batch,
                      int head_dim, int32_t* counts, int32_t* indices, void* stream = nullptr,
                      GpuSelectStageTimes* times = nullptr,
                      const GpuTileStatsInput* given = nullptr);

  // Gather alone (for v): x [batch, heads, tokens, head_dim] -> x_tiled in tile order.
  Status gather(const void* x, DType dtype, int batch, int head_dim, void* x_tiled,
                void* stream = nullptr);

  // Synchronises `stream`; numeric_error naming the first bad row if the last select() met a NaN
  // or +inf logit of an existing pair.
  Status check_numerics(void* stream = nullptr);

  // After a select() with keep_stats / keep_logits (synchronous copies).
  Status copy_stats_to_host(TileStats* q, TileStats* k) const;
  Result<Tensor> copy_logits_to_host() const;
  Result<GpuRescoreCounts> rescore_counts() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace veda
