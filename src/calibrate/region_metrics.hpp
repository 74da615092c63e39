// Recall and output error restricted to a set of query tiles (internal to calibrate and eval).
// Over all query tiles these equal tile_mass_recall and compare_per_head.
#pragma once
#include <vector>

#include "veda/calibrate.hpp"
#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"
#include "veda/tile_mask.hpp"

namespace veda::detail {

struct HeadQuality {
  double recall = 0, rel_l2 = 0, cosine = 0;
  double error2 = 0, reference2 = 0;  // sum of squared errors and of squared reference values
};

// Per head. `in_region[h][tile]` selects the query tiles (see query_tiles_in_region). Recall is
// averaged over the selected query tiles weighted by their valid queries; rel-L2 and cosine are
// over the valid tokens of those tiles, pooled over the batch. `out`/`ref` are f32 in tile order.
std::vector<HeadQuality> region_quality(const Tensor& mass, const TileMask& mask, const Tensor& out,
                                        const Tensor& ref, const HeadLayouts& layouts,
                                        const std::vector<std::vector<bool>>& in_region);

std::vector<std::vector<bool>> region_filters(const HeadLayouts& layouts, QueryRegion region);

}  // namespace veda::detail
