#include "veda/selection.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "veda/thread_pool.hpp"

namespace veda {

int selection_budget(double density, int existing_tiles) {
  const int k = int(std::lround(density * existing_tiles));
  return std::clamp(k, 1, existing_tiles);
}

namespace {


Status check_density(double density, const char* what) {
  if (!(density > 0.0 && density <= 1.0)) {
    return invalid_argument(fmt::format("{} {} is not in (0, 1]", what, density));
  }
  return Status::ok();
}

}  // namespace

Result<SelectMode> parse_select_mode(std::string_view name) {
  if (name == "topk") return SelectMode::kTopK;
  if (name == "mass") return SelectMode::kMass;
  return invalid_argument(fmt::format("unknown selection mode '{}': expected topk or mass", name));
}

Result<TileMask> select_tiles(const Tensor& logits, const HeadLayouts& layouts,
                              const SelectionConfig& config) {
  const int64_t tiles = layouts.max_tiles();
  if (logits.dtype() != DType::kF32 || logits.rank() != 4 || logits.dim(1) != layouts.heads() ||
      logits.dim(2) != tiles || logits.dim(3) != tiles || logits.dim(0) <= 0) {
    return invalid_argument(fmt::format(
        "select_tiles: logits are {} {}, expected F32 [B, {}, {}, {}]", dtype_name(logits.dtype()),
        shape_to_string(logits.shape()), layouts.heads(), tiles, tiles));
  }
  VEDA_RETURN_IF_ERROR(check_density(config.density, "select_tiles: density"));
  if (!config.head_density.empty()) {
    if (int(config.head_density.size()) != layouts.heads()) {
      return invalid_argument(fmt::format("select_tiles: {} head densities for {} heads",
                                          config.head_density.size(), layouts.heads()));
    }
    for (double d : config.head_density) {
      VEDA_RETURN_IF_ERROR(check_density(d, "select_tiles: head density"));
    }
  }
  if (config.mode == SelectMode::kMass && !(config.mass > 0.0 && config.mass <= 1.0)) {
    return invalid_argument(fmt::format("select_tiles: mass {} is not in (0, 1]", config.mass));
  }

  const int batch = int(logits.dim(0)), heads = layouts.heads();
  // Per head: budget k and the row width max_k (an upper bound known before looking at logits,
  // so backends can size buffers from the layouts and config alone).
  std::vector<int> budget(heads);
  int max_k = 0;
  for (int h = 0; h < heads; ++h) {
    const TileLayout& layout = layouts.head(h);
    const int n = layout.num_tiles();
    const double density = config.head_density.empty() ? config.density : config.head_density[h];
    budget[h] = selection_budget(density, n);
    const int forced =
        (config.force_prefix ? layout.num_prefix_tiles() : 0) + (config.force_self ? 1 : 0);
    max_k = std::max(max_k, std::min(n, std::max(budget[h], forced)));
  }
  TileMask mask = TileMask::empty(batch, heads, int(tiles), int(tiles), max_k);
  const float* all_logits = logits.data_as<float>();

  // Lowest row (b, h, q) holding a NaN / +inf, so the error message is deterministic.
  std::atomic<int64_t> bad_row{std::numeric_limits<int64_t>::max()};

  parallel_for(0, int64_t(batch) * heads * tiles, [&](int64_t item) {
    const int q = int(item % tiles), h = int((item / tiles) % heads);
    const TileLayout& layout = layouts.head(h);
    const int n = layout.num_tiles();
    if (q >= n) return;  // no such query tile: count 0
    const float* row = all_logits + item * tiles;
    for (int j = 0; j < n; ++j) {
      if (std::isnan(row[j]) || row[j] == std::numeric_limits<float>::infinity()) {
        int64_t prev = bad_row.load();
        while (item < prev && !bad_row.compare_exchange_weak(prev, item)) {
        }
        return;
      }
    }

    thread_local std::vector<int32_t> chosen, candidates;
    thread_local std::vector<uint8_t> is_forced;
    chosen.clear();
    candidates.clear();
    is_forced.assign(size_t(n), 0);
    if (config.force_prefix) {
      for (int j = 0; j < layout.num_prefix_tiles(); ++j) is_forced[j] = 1;
    }
    if (config.force_self) is_forced[q] = 1;
    for (int j = 0; j < n; ++j) {
      if (is_forced[j]) {
        chosen.push_back(j);
      } else if (row[j] != -std::numeric_limits<float>::infinity()) {
        candidates.push_back(j);
      }
    }

    const int room = std::max(0, budget[h] - int(chosen.size()));
    const int take = std::min(room, int(candidates.size()));
    // Higher logit first, then lower index: a strict total order, so the choice is deterministic.
    auto better = [row](int32_t a, int32_t b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    };
    std::partial_sort(candidates.begin(), candidates.begin() + take, candidates.end(), better);

    if (config.mode == SelectMode::kTopK) {
      chosen.insert(chosen.end(), candidates.begin(), candidates.begin() + take);
    } else {
      // Softmax over every existing key tile of the row (-inf tiles hold no mass).
      float row_max = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < n; ++j) row_max = std::max(row_max, row[j]);
      double total = 0.0;
      if (row_max != -std::numeric_limits<float>::infinity()) {
        for (int j = 0; j < n; ++j) total += std::exp(double(row[j]) - row_max);
      }
      if (total > 0.0) {
        double covered = 0.0;
        for (int32_t j : chosen) covered += std::exp(double(row[j]) - row_max) / total;
        for (int i = 0; i < take && covered < config.mass; ++i) {
          chosen.push_back(candidates[i]);
          covered += std::exp(double(row[candidates[i]]) - row_max) / total;
        }
      }
    }
    std::sort(chosen.begin(), chosen.end());
    mask.counts[item] = int32_t(chosen.size());
    std::copy(chosen.begin(), chosen.end(), mask.indices.begin() + item * max_k);
  });

  if (bad_row.load() != std::numeric_limits<int64_t>::max()) {
    const int64_t item = bad_row.load();
    const int64_t q = item % tiles, h = (item / tiles) % heads, b = item / (tiles * heads);
    const float* row = all_logits + item * tiles;
    int64_t j = 0;
    while (!std::isnan(row[j]) && row[j] != std::numeric_limits<float>::infinity()) ++j;
    return numeric_error(fmt::format("select_tiles: logit (b={}, h={}, q tile={}, k tile={}) is {}",
                                     b, h, q, j, row[j]));
  }
  return mask;
}

}  // namespace veda
