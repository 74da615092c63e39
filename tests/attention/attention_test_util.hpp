// Helpers for the attention tests: random masks, poisoning, a brute-force fp64 attention and the
// tolerance rule of DESIGN.md.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "veda/attention.hpp"
#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"
#include "veda/tile_mask.hpp"

namespace veda::test {

// The dtype's NaN bit pattern written into every element of `t`.
void fill_nan(Tensor& t);
// Element `index` (flat) of `t` set to NaN.
void set_nan(Tensor& t, int64_t index);
// Padding slots (tile_valid <= slot) of a [B, H, padded, D] tensor set to NaN, so a kernel that
// reads them shows it.
void poison_padding(Tensor& t, const HeadLayouts& layouts);

// Per (b, h, query tile): a random subset of the head's existing key tiles of about `density` of
// them (at least one), ascending; with density < 1 about `empty_fraction` of the rows are empty.
// density >= 1 selects every existing tile.
TileMask random_mask(int batch, const HeadLayouts& layouts, double density, uint64_t seed,
                     double empty_fraction = 0.1);

// Brute-force attention in fp64 on f32 copies of q, k, v ([B, H, padded, D], tile order): each
// valid query row over the valid keys of its selected key tiles (mask null: all). Rows with no key
// get 0 and lse -inf.
struct ExpectedAttention {
  std::vector<double> out;  // [B, H, padded, D]
  std::vector<double> lse;  // [B, H, padded]
};
ExpectedAttention brute_force_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const HeadLayouts& layouts, const TileMask* mask,
                                        double softmax_scale);

// err(actual) <= 2 * err(expected rounded to the output dtype) + atol, max norms over all
// elements (FlashAttention's rule, DESIGN.md). atol = rel_atol * max|expected|. NaN never passes.
struct ToleranceCheck {
  double max_err = 0, max_err_lowp = 0, max_ref = 0, allowed = 0;
  int64_t non_finite = 0;
  int64_t worst_index = -1;
  bool passed() const { return non_finite == 0 && max_err <= allowed; }
  std::string describe() const;
};
ToleranceCheck check_against(const Tensor& actual, const std::vector<double>& expected,
                             double rel_atol);

// Max |a - b| / max|b| over all elements; NaN/Inf give +inf.
double max_rel_error(const Tensor& a, const Tensor& b);

inline std::vector<float> to_f32_vector(const Tensor& t) {
  Tensor f = t.to(DType::kF32);
  return std::vector<float>(f.data_as<float>(), f.data_as<float>() + f.numel());
}

}  // namespace veda::test
