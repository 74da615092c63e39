#include "veda/tile_mask.hpp"

#include <fmt/core.h>

#include "veda/tile_layout.hpp"

namespace veda {

TileMask TileMask::empty(int batch, int heads, int q_tiles, int k_tiles, int max_k) {
  TileMask mask;
  mask.batch = batch;
  mask.heads = heads;
  mask.q_tiles = q_tiles;
  mask.k_tiles = k_tiles;
  mask.max_k = max_k;
  const size_t rows = size_t(batch) * heads * q_tiles;
  mask.counts.assign(rows, 0);
  mask.indices.assign(rows * size_t(max_k), -1);
  return mask;
}

TileMask TileMask::dense(int batch, const HeadLayouts& layouts) {
  const int tiles = layouts.max_tiles();
  TileMask mask = empty(batch, layouts.heads(), tiles, tiles, tiles);
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < layouts.heads(); ++h) {
      // A head's existing tiles are exactly [0, num_tiles): every one holds a valid token.
      const int n = layouts.head(h).num_tiles();
      for (int q = 0; q < n; ++q) {
        mask.counts[mask.row_offset(b, h, q)] = n;
        int32_t* row = mask.row(b, h, q);
        for (int j = 0; j < n; ++j) row[j] = j;
      }
    }
  }
  return mask;
}

int64_t TileMask::selected_pairs() const {
  int64_t total = 0;
  for (int32_t c : counts) total += c;
  return total;
}

double TileMask::density(const HeadLayouts& layouts) const {
  int64_t existing = 0;
  for (int h = 0; h < layouts.heads(); ++h) {
    const int64_t n = layouts.head(h).num_tiles();
    existing += n * n;
  }
  existing *= batch;
  return existing > 0 ? double(selected_pairs()) / double(existing) : 0.0;
}

Status TileMask::validate(const HeadLayouts& layouts) const {
  if (batch <= 0 || heads != layouts.heads() || q_tiles != layouts.max_tiles() ||
      k_tiles != layouts.max_tiles() || max_k < 0 || max_k > k_tiles) {
    return invalid_argument(fmt::format(
        "TileMask sizes batch={} heads={} q_tiles={} k_tiles={} max_k={} do not fit layouts "
        "with {} heads and {} tiles",
        batch, heads, q_tiles, k_tiles, max_k, layouts.heads(), layouts.max_tiles()));
  }
  const size_t rows = size_t(batch) * heads * q_tiles;
  if (counts.size() != rows || indices.size() != rows * size_t(max_k)) {
    return invalid_argument(
        fmt::format("TileMask holds {} counts and {} indices, expected {} and {}", counts.size(),
                    indices.size(), rows, rows * size_t(max_k)));
  }
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      for (int q = 0; q < q_tiles; ++q) {
        const int32_t count = this->count(b, h, q);
        const int32_t* r = row(b, h, q);
        if (count < 0 || count > max_k) {
          return invalid_argument(
              fmt::format("TileMask row (b={}, h={}, q={}): count {} not in "
                          "[0, {}]",
                          b, h, q, count, max_k));
        }
        if (count > 0 && layouts.valid(h, q) == 0) {
          return invalid_argument(fmt::format(
              "TileMask row (b={}, h={}, q={}): query tile does not exist but count is {}", b, h, q,
              count));
        }
        for (int i = 0; i < count; ++i) {
          const int32_t k = r[i];
          if (k < 0 || k >= k_tiles || layouts.valid(h, k) == 0) {
            return invalid_argument(
                fmt::format("TileMask row (b={}, h={}, q={}): index {} names no existing key tile",
                            b, h, q, k));
          }
          if (i > 0 && k <= r[i - 1]) {
            return invalid_argument(fmt::format(
                "TileMask row (b={}, h={}, q={}): indices not ascending and unique ({} after {})",
                b, h, q, k, r[i - 1]));
          }
        }
        for (int i = count; i < max_k; ++i) {
          if (r[i] != -1) {
            return invalid_argument(fmt::format(
                "TileMask row (b={}, h={}, q={}): slot {} past count {} is {}, expected -1", b, h,
                q, i, count, r[i]));
          }
        }
      }
    }
  }
  return Status::ok();
}

}  // namespace veda
