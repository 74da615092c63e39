// Quality metrics of a sparse selection and its output against dense attention.
#pragma once
#include <cstddef>
#include <vector>

#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"
#include "veda/tile_mask.hpp"

namespace veda {

// Per head: selected true mass / total mass, averaging query tiles weighted by their valid
// queries, and over the batch. `mass` is oracle_tile_mass's output.
std::vector<double> tile_mass_recall(const Tensor& mass, const TileMask& mask,
                                     const HeadLayouts& layouts);

struct OutputError {
  double rel_l2 = 0;  // ||out - ref|| / ||ref||
  double cosine = 0;  // <out, ref> / (||out|| ||ref||)
};
// Per head, over valid tokens only, of [B, H, padded, D] f32 tensors in tile order. NaN in `out`
// gives NaN, never a passing number.
std::vector<OutputError> compare_per_head(const Tensor& out, const Tensor& ref,
                                          const HeadLayouts& layouts);
OutputError compare(const float* out, const float* ref, size_t n);

}  // namespace veda
