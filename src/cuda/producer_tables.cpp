#include "cuda/producer_tables.hpp"

#include <algorithm>

namespace veda {

Result<ProducerTables> ProducerTables::make(const HeadLayouts& layouts) {
  ProducerTables t;
  t.heads = layouts.heads();
  t.tokens = layouts.tokens();
  t.padded = layouts.padded_tokens();
  t.volume = layouts.volume();
  t.max_tiles = layouts.max_tiles();
  std::vector<int32_t> token_slot(size_t(t.heads * t.tokens), 0);
  for (int h = 0; h < t.heads; ++h) {
    const std::vector<int32_t>& slots = layouts.head(h).slot_token();
    for (int64_t s = 0; s < int64_t(slots.size()); ++s)
      if (slots[s] >= 0) token_slot[size_t(h * t.tokens + slots[s])] = int32_t(s);
  }
  auto same = [&](int a, int b) {
    const TileLayout &x = layouts.head(a), &y = layouts.head(b);
    return x.shape() == y.shape() && x.prefix_tokens() == y.prefix_tokens();
  };
  int ref = 0, ref_count = 0;
  for (int h = 0; h < t.heads; ++h) {
    int n = 0;
    for (int g = 0; g < t.heads; ++g) n += same(h, g);
    if (n > ref_count) ref = h, ref_count = n;
  }
  for (int h = 0; h < t.heads; ++h) t.stat_heads_host.push_back(same(h, ref) ? 1 : 0);
  const TileLayout& r = layouts.head(ref);
  t.ref_tiles = r.num_tiles();
  VEDA_ASSIGN_OR_RETURN(t.token_slot, upload_to_device(token_slot));
  VEDA_ASSIGN_OR_RETURN(t.ref_slots, upload_to_device(r.slot_token()));
  VEDA_ASSIGN_OR_RETURN(t.ref_valid, upload_to_device(r.tile_valid()));
  VEDA_ASSIGN_OR_RETURN(t.stat_heads, upload_to_device(t.stat_heads_host));
  return Result<ProducerTables>(std::move(t));
}

void ProducerTables::set_layout(dit_cuda::TileProducerParams& p) const {
  p.tokens = tokens, p.dst_tokens = padded, p.heads = heads;
  p.token_slot = token_slot.as<int32_t>();
  p.tile_slots = ref_slots.as<int32_t>(), p.tile_valid = ref_valid.as<int32_t>();
  p.tiles = ref_tiles, p.volume = volume;
  p.stat_tiles = max_tiles, p.stat_heads = stat_heads.as<uint8_t>();
}

namespace {
// stats[i] where the producer writes statistic i (the selector reads it), else null.
float* used_statistic(float* const stats[6], int i, bool query_extrema) {
  return stats && GpuTileStatsInput::is_read(i, query_extrema) ? stats[i] : nullptr;
}
}  // namespace

void ProducerTables::set_statistics(dit_cuda::TileProducerParams& p, float* const stats[6],
                                    bool query_extrema) {
  for (int t = 0; t < 2; ++t) {
    p.t[t].mean = used_statistic(stats, 3 * t, query_extrema);
    p.t[t].max = used_statistic(stats, 3 * t + 1, query_extrema);
    p.t[t].min = used_statistic(stats, 3 * t + 2, query_extrema);
  }
}

GpuTileStatsInput ProducerTables::given(float* const stats[6], bool query_extrema) const {
  GpuTileStatsInput g;
  const float** fields[6] = {&g.q_mean, &g.q_max, &g.q_min, &g.k_mean, &g.k_max, &g.k_min};
  for (int i = 0; i < 6; ++i) *fields[i] = used_statistic(stats, i, query_extrema);
  g.heads = stat_heads_host;
  return g;
}

}  // namespace veda
