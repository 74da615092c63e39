// Tile-skipping attention forward on Hopper, warp-specialised (FlashAttention-3 structure): one
// producer warp streams K/V key blocks with TMA into a ring of shared-memory stages guarded by
// mbarriers (full: the TMA bytes landed; empty: every consumer warp released the stage), and two
// consumer warpgroups each run the online softmax of one 64-row query block with wgmma
// (attend_key_block, shared with the one-warpgroup kernel in attention_sm90.cuh). The producer is
// warp 8, after the consumer warpgroups so that they stay warpgroup-aligned; 288 threads leave
// 224 registers a thread, so no setmaxnreg is needed.
//
// A CTA owns query blocks 2x and 2x+1 of one (b, h): the halves of a 128-token tile, or two
// neighbouring 64-token tiles. The producer walks the union of their key lists (both ascending:
// the TileMask contract) and tags each stage with the consumers that need it, so a key block in
// both lists (dense mode, 128-token tiles, overlapping neighbours) is loaded once for 128 rows,
// and a block in one list once for 64. A stage's tag and valid-key count sit in shared memory
// beside it: the producer's lane writes them before its arrival on the full barrier (release),
// and in each consumer warp only lane 0 reads them after the wait (acquire) and passes them on by
// shuffle, so the lane that later releases the stage is the one that read them (racecheck sees
// every access ordered by the barrier of the thread that made it).
//
// TMA loads whole 64-row blocks: padding rows of ragged key tiles are read as stored. Their
// scores are masked to -inf and their probabilities are exactly zero, so any finite padding is
// harmless; the layout's gather writes zeros there (attention_cuda documents the requirement).
//
// Tried and dropped (docs/perf-notes.md): FA3's intra-warpgroup overlap (S of the next block
// issued before P V of this one) ran 5-15% slower here; consumers walking the union themselves
// instead of reading tags put dependent global loads on their critical path (25% slower).
#pragma once
#include <cuda.h>

#include "attention_sm90.cuh"
#include "sm90_async.cuh"

namespace veda::cuda {

template <int D>
struct WsConfig {
  static constexpr int kTileBytes = 64 * D * 2;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K + V
  static constexpr int kStages = D == 128 ? 6 : 8;     // 192 KB / 128 KB of ring
  static constexpr int kRingBytes = kStages * kStageBytes;
  static constexpr int kSmemBytes = kRingBytes + 1024 + kStages * 24;  // + align, barriers, tags
  static constexpr int kConsumerWarps = 8;
  static constexpr uint32_t kEnd = 0x80000000u;  // tag of the stage that ends the stream
};

// The union of two ascending key lists (null list = every tile; count 0 = none), one listed tile
// at a time; `need` says which of the two query blocks lists it (bit 0, bit 1).
struct KeyListUnion {
  static constexpr int kNone = 0x7fffffff;
  const int32_t* list[2];
  int count[2];
  int i[2] = {0, 0};

  __device__ __forceinline__ int head(int c) const {
    return i[c] < count[c] ? (list[c] ? __ldg(list[c] + i[c]) : i[c]) : kNone;
  }
  // The next tile, or kNone at the end.
  __device__ __forceinline__ int next(uint32_t& need) {
    const int t0 = head(0), t1 = head(1);
    const int tile = min(t0, t1);
    need = (t0 == tile ? 1u : 0u) | (t1 == tile ? 2u : 0u);
    i[0] += t0 == tile;
    i[1] += t1 == tile;
    return tile;
  }
};

template <int D, class T>
__global__ void __launch_bounds__(288, 1)
    attention_fwd_sm90_ws_kernel(const __grid_constant__ FwdParams p,
                                 const __grid_constant__ CUtensorMap tm_k,
                                 const __grid_constant__ CUtensorMap tm_v) {
  using C = WsConfig<D>;
  extern __shared__ __align__(128) unsigned char smem_ws[];
  const uint32_t ring = (smem_u32(smem_ws) + 1023u) & ~1023u;
  const uint32_t full_bar = ring + C::kRingBytes;  // [kStages] x 8 bytes
  const uint32_t empty_bar = full_bar + C::kStages * 8;
  uint32_t* tags = reinterpret_cast<uint32_t*>(smem_ws + (empty_bar + C::kStages * 8 -
                                                          smem_u32(smem_ws)));
  int32_t* valids = reinterpret_cast<int32_t*>(tags + C::kStages);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int h = blockIdx.y, b = blockIdx.z;
  const int32_t* valid_h = p.tile_valid + int64_t(h) * p.num_tiles;

  if (threadIdx.x == 0) {
    for (int s = 0; s < C::kStages; ++s) {
      mbar_init(full_bar + 8 * s, 1);
      mbar_init(empty_bar + 8 * s, C::kConsumerWarps);
    }
    mbar_init_fence();
  }
  __syncthreads();

  // Query blocks of this CTA and their key lists (count 0 when the block holds no tokens).
  int q_valid[2];
  KeyListUnion keys{};
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const int qb = blockIdx.x * 2 + c;
    q_valid[c] = 0, keys.count[c] = 0, keys.list[c] = nullptr;
    if (qb < p.num_q_blocks) q_valid[c] = query_block_valid(p, valid_h, qb);
    if (q_valid[c] > 0) {
      keys.count[c] = p.num_tiles;
      if (p.mask_counts) {
        const int64_t r = (int64_t(b) * p.heads + h) * p.num_tiles + qb / p.subs;
        keys.count[c] = __ldg(p.mask_counts + r);
        keys.list[c] = p.mask_indices + r * p.max_k;
      }
    }
  }

  if (warp == 8) {  // producer: one thread issues everything
    if (lane != 0) return;
    tma_prefetch_descriptor(&tm_k);
    tma_prefetch_descriptor(&tm_v);
    int stage = 0;
    uint32_t phase = 0;
    uint32_t need;
    for (int tile = keys.next(need); tile != KeyListUnion::kNone; tile = keys.next(need)) {
      const int tile_valid = __ldg(valid_h + tile);
      for (int sub = 0; sub < p.subs && tile_valid > sub * 64; ++sub) {
        mbar_wait(empty_bar + 8 * stage, phase ^ 1);
        tags[stage] = need;
        valids[stage] = block_valid(tile_valid, sub);
        const uint32_t bar = full_bar + 8 * stage;
        mbar_arrive_expect_tx(bar, C::kStageBytes);
        const uint32_t dst = ring + stage * C::kStageBytes;
        const int row = tile * p.tile_size + sub * 64;
#pragma unroll
        for (int cb = 0; cb < D / 64; ++cb) {
          tma_load_4d(dst + cb * 8192, &tm_k, bar, cb * 64, row, h, b);
          tma_load_4d(dst + C::kTileBytes + cb * 8192, &tm_v, bar, cb * 64, row, h, b);
        }
        if (++stage == C::kStages) stage = 0, phase ^= 1;
      }
    }
    mbar_wait(empty_bar + 8 * stage, phase ^ 1);
    tags[stage] = C::kEnd;
    mbar_arrive(full_bar + 8 * stage);
    return;
  }

  // Consumers: warpgroup 0 or 1 -> query block 2x or 2x+1.
  const int c = warp >> 2;
  const uint32_t my_bit = 1u << c;
  const int my_qb = blockIdx.x * 2 + c;
  const int my_valid = c ? q_valid[1] : q_valid[0];
  float acc[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) acc[i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};
  float s[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) s[i] = 0.f;
  uint32_t qf[D / 16][4];
  const T* q_bh = static_cast<const T*>(p.q) + b * p.q_bs + h * p.q_hs;
  load_q_fragments<D, T>(qf, q_bh + int64_t(my_qb) * 64 * p.q_rs, p.q_rs, my_valid, warp & 3, lane);

  int stage = 0;
  uint32_t phase = 0;
  while (true) {
    mbar_wait(full_bar + 8 * stage, phase);
    uint32_t tag = 0;
    int valid = 0;
    if (lane == 0) tag = tags[stage], valid = valids[stage];
    tag = __shfl_sync(0xffffffffu, tag, 0);
    valid = __shfl_sync(0xffffffffu, valid, 0);
    if (tag & C::kEnd) break;
    if (tag & my_bit) {
      const uint32_t k_tile = ring + stage * C::kStageBytes;
      attend_key_block<D, T>(acc, s, row_max, row_sum, qf, k_tile, k_tile + C::kTileBytes, valid,
                             p.scale_log2, lane);
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(empty_bar + 8 * stage);
    if (++stage == C::kStages) stage = 0, phase ^= 1;
  }

  if (my_qb >= p.num_q_blocks) return;
  T* o_bh = static_cast<T*>(p.o) + b * p.o_bs + h * p.o_hs;
  float* lse_bh = p.lse ? p.lse + (int64_t(b) * p.heads + h) * p.tokens : nullptr;
  const int64_t token0 = int64_t(my_qb) * 64;
  store_rows<D, T>(o_bh + token0 * p.o_rs, p.o_rs, lse_bh ? lse_bh + token0 : nullptr, acc,
                   row_max, row_sum, my_valid, p.scale, warp & 3, lane);
}

}  // namespace veda::cuda
