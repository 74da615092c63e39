// Internal interface between the selection host code (selection_cuda.cpp, plain C++) and its
// kernel translation unit (selection_kernels.cu). No Status or fmt here (nvcc and fmt's consteval
// format strings do not mix): launchers return cudaError_t.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace veda::cuda::sel {

enum class Elem { kF16, kBF16, kF32 };

// 16-byte chunks a row may have: a tile's lanes of the statistics kernel share one warp.
inline constexpr int kMaxRowChunks = 32;

// What the gather/statistics kernel writes as scoring features ([B, H, max_tiles, width] f32).
enum class FeatureKind {
  kNone,      // gather (and statistics) only
  kQMean,     // [s*mean]                                   width D
  kQSplit,    // [s*mean+, s*mean-]                         width 2D
  kQSplit4,   // [s*mean+, s*mean-, s*max, s*min]           width 4D
  kKMean,     // [mean]                                     width D
  kKBlend,    // [P mean + KU max + KL min, P mean + KU min + KL max]            width 2D
  kKBlend4,   // kKBlend then [QU mean+, QU mean-]                               width 4D
};

// The feature kinds of a scoring `planes` feature planes wide (1, 2 or 4; width = planes * D).
constexpr FeatureKind query_kind_of(int planes) {
  return planes == 1 ? FeatureKind::kQMean : planes == 2 ? FeatureKind::kQSplit
                                                         : FeatureKind::kQSplit4;
}
constexpr FeatureKind key_kind_of(int planes) {
  return planes == 1 ? FeatureKind::kKMean : planes == 2 ? FeatureKind::kKBlend
                                                         : FeatureKind::kKBlend4;
}

// Whether the features of `kind` read the tile maxima and minima.
constexpr bool uses_extrema(FeatureKind kind) {
  return kind == FeatureKind::kQSplit4 || kind == FeatureKind::kKBlend ||
         kind == FeatureKind::kKBlend4;
}

// One tensor's tile statistics, [B, H, max_tiles, D] f32 each; max and min are both set or both
// null (not needed).
struct TileStatsView {
  const float* mean = nullptr;
  const float* max = nullptr;
  const float* min = nullptr;
};

// One tensor (q, k or v) of the gather/statistics kernel.
struct GatherStatsParams {
  const void* x;              // [B, H, rows, D]: token order (slot_token set) or tile order
  void* x_tiled;              // [B, H, max_tiles * volume, D] tile order, same dtype; may be null
  int64_t rows;               // rows of x per (b, h): tokens, or max_tiles * volume in tile order
  int heads, max_tiles, volume, head_dim;
  const int32_t* slot_token;  // [H][max_tiles * volume] token of each slot; null: x in tile order
  const int32_t* valid;       // [H][max_tiles]
  // Statistics out, [B, H, max_tiles, D] f32 each, or null: mean, and max and min (both or
  // neither); for the heads not given, and for the given ones too with stats_of_given.
  float* mean;
  float* max;
  float* min;
  bool stats_of_given;
  FeatureKind feature = FeatureKind::kNone;
  int width;                  // feature width (D, 2D or 4D)
  float q_scale;              // kQ*: multiplies every query feature
  const float* head_weights;  // kK*: [H][4] = P, KU, KL, QU
  float* features;            // [B, H, max_tiles, width] f32 for the f32 GEMM, or null
  float* norm;                // [B, H, max_tiles]: |feature row| (uncentred), or null
  unsigned* norm_max;         // [B, H]: atomicMax of the bits of |feature row| (preset 0), or null
  // FP16x3 scoring (all null otherwise): split rows x * 2^-a = hi + lo (fp16 each), 3 * width
  // halves a row: [lo | hi | hi] for q (lo_slot 0), [hi | lo | hi] for k (lo_slot 1), so that one
  // GEMM over 3 * width sums lo.hi + hi.lo + hi.hi, the small products first (the error bound in
  // selection_topk.cuh counts on it).
  const float* center;        // [B, H, width]: subtracted from the features of non-empty tiles
  void* features16;           // [B, H, split_rows, 3 * width] __half
  int64_t split_rows;         // >= max_tiles (the GEMM's padded rows, zero)
  int lo_slot;
  float* row_scale;           // [B, H, max_tiles]: 2^a, the factor that undoes the row's scaling
  unsigned* norm_max_centred; // [B, H]: as norm_max, of the centred rows (k), or null
  // Statistics a producer computed (GpuTileStatsInput): used instead of reading x for the heads
  // with given_heads[h] != 0 (null: none given). max / min may be null when neither the features
  // nor the statistics out need them.
  TileStatsView given;
  const uint8_t* given_heads;  // [H]
};

// The gather/statistics launch: one tensor, or q and k together (one grid, no second tail).
struct GatherStatsLaunch {
  GatherStatsParams t[2];
  int tensors;  // 1 or 2
};

struct HeadSelectInfo {
  int n;            // the head's tiles
  int num_prefix;   // prefix tiles
  int budget;       // clamp(round(density * n), 1, n)
  float bias_abs;   // >= |key bias| + |distance prior| of any key tile (the error bound's B_h)
  int prior_extent[3];  // with a distance prior: the head's video tiles along t, h, w
};

inline constexpr int kDistanceTableSize = 3 * 11;  // [axis][bin], EstimatorParams::distance

struct TopkParams {
  const float* logits;            // [B, H, logits_rows, logits_stride] raw GEMM scores
  int64_t logits_rows, logits_stride;  // (FP16x3: of the scaled rows); both >= T
  float* logits_out;              // [B, H, T, T] final logits (debug), or null
  int max_tiles, heads;
  const HeadSelectInfo* info;     // [H]
  const float* key_bias;          // [H][T] or null
  const float* distance;          // [H][kDistanceTableSize] or null
  // [H][T] with distance: a video key tile's two entries in the row's prior table (topk
  // kernel), (1 + t E_h + h) << 16 | (1 + E_t E_h + w) with E = the head's prior_extent
  // (HeadSelectInfo); 0 for a prefix tile (entry 0 holds 0: no prior).
  const uint32_t* key_coords;
  int prior_entries;              // with distance: the largest prior_table_entries of a head
  bool force_prefix, force_self;
  int max_k;
  int32_t* counts;                // [B, H, T]
  int32_t* indices;               // [B, H, T, max_k]
  unsigned long long* bad_row;    // atomicMin of the row index (b*H + h)*T + q; preset to ~0
  // The exact-boundary data (selection_topk.cuh): the tile statistics the canonical rescoring
  // computes the feature rows from (those of head h from the given ones where given_heads[h]),
  // with the kinds of its width (query_kind_of / key_kind_of), the row norms and the error-bound
  // coefficient.
  TileStatsView q_stats, k_stats, q_given, k_given;
  const uint8_t* given_heads;     // [H] or null
  float q_feature_scale;          // GatherStatsParams::q_scale
  const float* head_weights;      // [H][4] (kKBlend*)
  int width, head_dim;            // width: head_dim (kQMean, kKMean), 2 or 4 head_dim
  const float* q_norm;            // [B, H, T] |q feature row|
  const unsigned* k_norm;         // [B, H] float bits: largest |k feature row|, uncentred
  const unsigned* k_norm_filter;  // [B, H]: the same for the rows the GEMM saw (centred: FP16x3)
  float err_rel;                  // the GEMM's error coefficient (times |q| k_norm_filter)
  // FP16x3 scoring only (null for f32): raw scores are of the scaled rows.
  const float* q_scale;           // [B, H, T]
  const float* k_scale;           // [B, H, T]
  const float* center;            // [B, H, width] (only for logits_out)
  unsigned long long* rescored;   // debug, or null: tiles rescored at the boundaries
};

cudaError_t launch_gather_stats(const GatherStatsLaunch& launch, Elem elem, int batch,
                                cudaStream_t stream);
// center[b, h] = mean k features of a few evenly spaced tiles of head h (p: the k tensor).
cudaError_t launch_center(const GatherStatsParams& p, const HeadSelectInfo* info, float* center,
                          Elem elem, int batch, cudaStream_t stream);
// Entries of a row's distance prior table for a head with video tiles `extent` (t, h, w): the
// zero entry, the (t, h) table, the w table.
inline int prior_table_entries(const int extent[3]) {
  return 1 + extent[0] * extent[1] + extent[2];
}
// Shared memory the top-k kernel needs per row (one CTA a row); 0 if it is too large.
// prior_entries: prior_table_entries (0 without a distance prior).
size_t topk_smem_per_row(int max_tiles, int prior_entries);
cudaError_t launch_topk(const TopkParams& p, int batch, cudaStream_t stream);

}  // namespace veda::cuda::sel
