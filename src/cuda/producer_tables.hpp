// Device tables of the self-attention operands' producer (dit_cuda::tile_producer) for one
// HeadLayouts: each head's token -> slot map, the reference layout the producer walks (the tile
// shape most heads use; the first such head's) and which heads share it (their tile statistics
// come out of the producer). Used by the CUDA DiT and by `veda bench attention`.
#pragma once
#include <cstdint>
#include <vector>

#include "cuda/dit_launch.hpp"
#include "veda/cuda.hpp"
#include "veda/cuda_selection.hpp"
#include "veda/status.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

struct ProducerTables {
  DeviceBuffer token_slot;  // [heads][tokens] int32: the slot of each token in its head's layout
  DeviceBuffer ref_slots;   // [ref_tiles][volume] int32: the reference layout's slot -> token
  DeviceBuffer ref_valid;   // [ref_tiles] int32
  DeviceBuffer stat_heads;  // [heads] uint8: 1 = the head's layout is the reference one
  std::vector<uint8_t> stat_heads_host;
  int ref_tiles = 0, volume = 0, heads = 0, max_tiles = 0;
  int64_t tokens = 0, padded = 0;

  static Result<ProducerTables> make(const HeadLayouts& layouts);

  // p's layout fields (tokens, dst_tokens, heads, tables, tiles, volume, stat_tiles).
  void set_layout(dit_cuda::TileProducerParams& p) const;

  // Statistics buffers, [batch, heads, max_tiles, head_dim] f32 each: q mean, max, min, then k's;
  // the producer writes those the selector reads (GpuTileStatsInput::is_read: q max and min only
  // with `query_extrema`, GpuSelector::reads_query_extrema). set_statistics points p.t[0] (q) and
  // p.t[1] (k) at them (stats null: no statistics); given() is the selector's view of what the
  // producer wrote there.
  static void set_statistics(dit_cuda::TileProducerParams& p, float* const stats[6],
                             bool query_extrema);
  GpuTileStatsInput given(float* const stats[6], bool query_extrema) const;
};

}  // namespace veda
