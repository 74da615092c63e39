// TileMask: which key tiles each query tile attends to. The contract between selection and every
// attention backend (same layout as FlexAttention's kv_num_blocks/kv_indices and VSA's
// q2k_num/q2k_index).
#pragma once
#include <cstdint>
#include <vector>

#include "veda/status.hpp"

namespace veda {

class HeadLayouts;

struct TileMask {
  int batch = 0, heads = 0, q_tiles = 0, k_tiles = 0, max_k = 0;
  std::vector<int32_t> counts;   // [batch][heads][q_tiles]
  std::vector<int32_t> indices;  // [batch][heads][q_tiles][max_k]; [0, count) ascending, rest -1

  static TileMask empty(int batch, int heads, int q_tiles, int k_tiles, int max_k);
  // Every existing key tile for every existing query tile.
  static TileMask dense(int batch, const HeadLayouts& layouts);

  size_t row_offset(int b, int h, int q) const { return (size_t(b) * heads + h) * q_tiles + q; }
  int32_t count(int b, int h, int q) const { return counts[row_offset(b, h, q)]; }
  const int32_t* row(int b, int h, int q) const { return &indices[row_offset(b, h, q) * max_k]; }
  int32_t* row(int b, int h, int q) { return &indices[row_offset(b, h, q) * max_k]; }

  int64_t selected_pairs() const;
  // Selected (query tile, key tile) pairs over existing pairs (tiles with valid tokens).
  double density(const HeadLayouts& layouts) const;
  // Sizes consistent; counts in [0, max_k]; indices ascending, unique, naming existing key tiles.
  Status validate(const HeadLayouts& layouts) const;
};

}  // namespace veda
