#include "calibrate/region_metrics.hpp"

#include <cmath>

namespace veda::detail {

std::vector<std::vector<bool>> region_filters(const HeadLayouts& layouts, QueryRegion region) {
  std::vector<std::vector<bool>> filters;
  for (int h = 0; h < layouts.heads(); ++h)
    filters.push_back(query_tiles_in_region(layouts.head(h), layouts.max_tiles(), region));
  return filters;
}

std::vector<HeadQuality> region_quality(const Tensor& mass, const TileMask& mask, const Tensor& out,
                                        const Tensor& ref, const HeadLayouts& layouts,
                                        const std::vector<std::vector<bool>>& in_region) {
  const int64_t batch = out.dim(0), heads = layouts.heads(), max_tiles = layouts.max_tiles();
  const int64_t dim = out.dim(3), volume = layouts.volume();
  std::vector<HeadQuality> result(static_cast<size_t>(heads));
  for (int64_t h = 0; h < heads; ++h) {
    const TileLayout& layout = layouts.head(int(h));
    double recall_sum = 0, weight_sum = 0, diff2 = 0, ref2 = 0, out2 = 0, dot = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const float* head_mass = mass.data_as<float>() + size_t((b * heads + h) * max_tiles * max_tiles);
      const size_t head_offset = size_t((b * heads + h) * max_tiles * volume * dim);
      for (int i = 0; i < layout.num_tiles(); ++i) {
        const int valid = layout.tile_valid()[i];
        if (valid == 0 || !in_region[h][i]) continue;
        const float* row = head_mass + size_t(i) * max_tiles;
        double total = 0, selected = 0;
        for (int j = 0; j < layout.num_tiles(); ++j) total += row[j];
        const int32_t* picked = mask.row(int(b), int(h), i);
        for (int e = 0; e < mask.count(int(b), int(h), i); ++e) selected += row[picked[e]];
        if (total > 0) {
          recall_sum += valid * selected / total;
          weight_sum += valid;
        }
        const float* o = out.data_as<float>() + head_offset + size_t(i) * volume * dim;
        const float* r = ref.data_as<float>() + head_offset + size_t(i) * volume * dim;
        for (int64_t e = 0; e < valid * dim; ++e) {
          const double d = double(o[e]) - r[e];
          diff2 += d * d, ref2 += double(r[e]) * r[e], out2 += double(o[e]) * o[e];
          dot += double(o[e]) * r[e];
        }
      }
    }
    result[h].recall = weight_sum > 0 ? recall_sum / weight_sum : 0;
    result[h].rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
    result[h].cosine = out2 > 0 && ref2 > 0 ? dot / std::sqrt(out2 * ref2) : 0;
    result[h].error2 = diff2;
    result[h].reference2 = ref2;
  }
  return result;
}

}  // namespace veda::detail
