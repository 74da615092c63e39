// Internal interface between the selection host code (selection_cuda.cpp, plain C++) and its
// kernel translation unit (selection_kernels.cu). No Status or fmt here (nvcc and fmt's consteval
// format strings do not mix): launchers return cudaError_t.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace veda::cuda::sel {

enum class Elem { kF16, kBF16, kF32 };

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

struct GatherStatsParams {
  const void* x;           // [B, H, tokens, D] token order
  void* x_tiled;           // [B, H, max_tiles * volume, D] tile order, same dtype; may be null
  int64_t tokens;
  int heads, max_tiles, volume, head_dim;
  const int32_t* slot_token;  // [H][max_tiles * volume], -1 = padding
  const int32_t* valid;       // [H][max_tiles]
  float* mean;                // [B, H, max_tiles, D] each; all three null or all set
  float* max;
  float* min;
  FeatureKind feature = FeatureKind::kNone;
  float* features;             // [B, H, max_tiles, width]
  int width;
  float q_scale;               // kQ*: multiplies every query feature
  const float* head_weights;   // kK*: [H][4] = P, KU, KL, QU
};

struct HeadSelectInfo {
  int n;            // the head's tiles
  int num_prefix;   // prefix tiles
  int budget;       // clamp(round(density * n), 1, n)
  int tiles_h, tiles_w;  // video tiles along h and w (for the distance prior)
};

inline constexpr int kDistanceTableSize = 3 * 11;  // [axis][bin], EstimatorParams::distance

struct TopkParams {
  float* logits;                  // [B, H, T, T]: raw GEMM scores in; final logits out if write_back
  bool write_back;
  int max_tiles, heads;
  const HeadSelectInfo* info;     // [H]
  const float* key_bias;          // [H][T] or null
  const float* distance;          // [H][kDistanceTableSize] or null
  bool force_prefix, force_self;
  int max_k;
  int32_t* counts;                // [B, H, T]
  int32_t* indices;               // [B, H, T, max_k]
  unsigned long long* bad_row;    // atomicMin of the row index (b*H + h)*T + q; preset to ~0
};

cudaError_t launch_gather_stats(const GatherStatsParams& p, Elem elem, int batch,
                                cudaStream_t stream);
cudaError_t launch_topk(const TopkParams& p, int batch, cudaStream_t stream);

}  // namespace veda::cuda::sel
