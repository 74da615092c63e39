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

void ProducerTables::set_statistics(dit_cuda::TileProducerParams& p, float* const stats[6],
                                    bool query_extrema) {
  for (int i = 0; i < 2; ++i) {
    const bool extrema = stats && (i == 1 || query_extrema);
    p.t[i].mean = stats ? stats[3 * i] : nullptr;
    p.t[i].max = extrema ? stats[3 * i + 1] : nullptr;
    p.t[i].min = extrema ? stats[3 * i + 2] : nullptr;
  }
}

GpuTileStatsInput ProducerTables::given(float* const stats[6], bool query_extrema) const {
  GpuTileStatsInput g;
  g.q_mean = stats[0], g.k_mean = stats[3], g.k_max = stats[4], g.k_min = stats[5];
  if (query_extrema) g.q_max = stats[1], g.q_min = stats[2];
  g.heads = stat_heads_host;
  return g;
}

}  // namespace veda
