// Tile selection: from tile logits and a density budget to a TileMask.
#pragma once
#include <string_view>
#include <vector>

#include "veda/status.hpp"
#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"
#include "veda/tile_mask.hpp"

namespace veda {

enum class SelectMode {
  kTopK,  // the budget's k highest-scoring tiles per query tile
  kMass,  // highest first until the softmax of the logits reaches `mass`, at most the budget
};
Result<SelectMode> parse_select_mode(std::string_view name);  // "topk", "mass"

struct SelectionConfig {
  double density = 0.05;  // share of a query tile's existing key tiles, in (0, 1]
  SelectMode mode = SelectMode::kTopK;
  double mass = 0.9;      // target for kMass
  bool force_prefix = true;  // prefix (text) tiles are always kept
  bool force_self = true;    // a query tile's own tile is always kept
  // Optional per-head densities (size = heads) overriding `density`.
  std::vector<double> head_density;
};

// Budget per query tile: k = clamp(round(density * existing key tiles), 1, existing key tiles).
// Forced tiles count against the budget (if they alone exceed it, all are kept). Ties: higher
// logit first, then lower tile index. Indices in each row are written ascending.
// Tiles with logit -inf are never selected unless forced; a NaN or +inf logit of an existing
// (query, key) pair is a numeric_error. Rows of query tiles that do not exist get count 0.
// The mask's max_k is the largest budget (or forced count) over heads, not the largest count.
// The budget rule above: clamp(round(density * existing_tiles), 1, existing_tiles).
int selection_budget(double density, int existing_tiles);

Result<TileMask> select_tiles(const Tensor& logits, const HeadLayouts& layouts,
                              const SelectionConfig& config);

}  // namespace veda
