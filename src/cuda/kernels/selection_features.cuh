// The scoring feature planes of a run of channels, from the tile statistics (FeatureKind): one
// definition for the statistics kernel (the rows the GEMM reads) and the top-k kernel's boundary
// rescoring (which recomputes them for a few tiles a row), so that both see the same f32 values.
// The products and sums are explicit (__fmul_rn, __fmaf_rn) so that the compiler cannot contract
// them differently in the two kernels.
#pragma once
#include <cfloat>

#include "cuda/selection_launch.hpp"

namespace veda::cuda::sel {

// Any NaN or infinity in a feature becomes NaN, so that every logit of the tile is NaN (the top-k
// kernel reports the row) in both precisions: an infinity could otherwise give -inf logits, which
// drop out silently, or be lost in the FP16x3 split.
__device__ __forceinline__ float nan_if_not_finite(float x) {
  return fabsf(x) <= FLT_MAX ? x : __int_as_float(0x7fffffff);
}

// f[plane][e] for E channels of kind kKind with statistics mean / hi (max) / lo (min); planes
// past the kind's width are 0. q_scale multiplies the query features; w = the head's
// {P, KU, KL, QU} (read by kKBlend*). kFiniteOrNaN: non-finite features become NaN (off where the
// caller knows them finite: the same values).
template <FeatureKind kKind, int E, bool kFiniteOrNaN = true>
__device__ __forceinline__ void kind_features(float q_scale, float4 w, const float* mean,
                                              const float* hi, const float* lo,
                                              float (&f)[4][E]) {
#pragma unroll
  for (int e = 0; e < E; ++e) {
    f[0][e] = f[1][e] = f[2][e] = f[3][e] = 0.f;
    // max(mean, 0) and min(mean, 0) as std::max / std::min on the CPU: a NaN mean stays NaN
    // (fmaxf / fminf would drop it, and with it the row's numeric error).
    const float pos = mean[e] < 0.f ? 0.f : mean[e], neg = 0.f < mean[e] ? 0.f : mean[e];
    if constexpr (kKind == FeatureKind::kQMean) f[0][e] = __fmul_rn(q_scale, mean[e]);
    if constexpr (kKind == FeatureKind::kQSplit || kKind == FeatureKind::kQSplit4) {
      f[0][e] = __fmul_rn(q_scale, pos);
      f[1][e] = __fmul_rn(q_scale, neg);
    }
    if constexpr (kKind == FeatureKind::kQSplit4) {
      f[2][e] = __fmul_rn(q_scale, hi[e]);
      f[3][e] = __fmul_rn(q_scale, lo[e]);
    }
    if constexpr (kKind == FeatureKind::kKMean) f[0][e] = mean[e];
    if constexpr (kKind == FeatureKind::kKBlend || kKind == FeatureKind::kKBlend4) {
      const float pooled = __fmul_rn(w.x, mean[e]);  // P KU KL = w.x w.y w.z
      f[0][e] = __fmaf_rn(w.z, lo[e], __fmaf_rn(w.y, hi[e], pooled));
      f[1][e] = __fmaf_rn(w.z, hi[e], __fmaf_rn(w.y, lo[e], pooled));
    }
    if constexpr (kKind == FeatureKind::kKBlend4) {
      f[2][e] = __fmul_rn(w.w, pos);  // QU
      f[3][e] = __fmul_rn(w.w, neg);
    }
    if constexpr (kFiniteOrNaN) {
#pragma unroll
      for (int k = 0; k < 4; ++k) f[k][e] = nan_if_not_finite(f[k][e]);
    }
  }
}

// The same for a kind known at run time; head_weights [H][4] (kKBlend*: head h's are read).
template <int E>
__device__ __forceinline__ void tile_features(FeatureKind kind, float q_scale,
                                              const float* head_weights, int h, const float* mean,
                                              const float* hi, const float* lo, float (&f)[4][E]) {
  float4 w = make_float4(0.f, 0.f, 0.f, 0.f);
  if (kind == FeatureKind::kKBlend || kind == FeatureKind::kKBlend4)
    w = *reinterpret_cast<const float4*>(head_weights + 4 * h);
  switch (kind) {
    case FeatureKind::kQMean:
      return kind_features<FeatureKind::kQMean, E>(q_scale, w, mean, hi, lo, f);
    case FeatureKind::kQSplit:
      return kind_features<FeatureKind::kQSplit, E>(q_scale, w, mean, hi, lo, f);
    case FeatureKind::kQSplit4:
      return kind_features<FeatureKind::kQSplit4, E>(q_scale, w, mean, hi, lo, f);
    case FeatureKind::kKMean:
      return kind_features<FeatureKind::kKMean, E>(q_scale, w, mean, hi, lo, f);
    case FeatureKind::kKBlend:
      return kind_features<FeatureKind::kKBlend, E>(q_scale, w, mean, hi, lo, f);
    case FeatureKind::kKBlend4:
      return kind_features<FeatureKind::kKBlend4, E>(q_scale, w, mean, hi, lo, f);
    case FeatureKind::kNone:
      return kind_features<FeatureKind::kNone, E>(q_scale, w, mean, hi, lo, f);
  }
}

}  // namespace veda::cuda::sel
