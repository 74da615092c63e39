// Tile-skipping attention forward on Hopper, warp-specialised (FlashAttention-3 structure): one
// producer thread streams K/V key blocks with TMA into a ring of shared-memory stages guarded by
// mbarriers (full: the TMA bytes landed; empty: every consumer warp released the stage), and two
// consumer warpgroups each run the online softmax of one 64-row query block with wgmma (the
// step's pieces are shared with the one-warpgroup kernel in attention_sm90.cuh). 384 threads:
// the producer is warpgroup 2, after the consumer warpgroups, and hands registers to them with
// setmaxnreg (24 vs 240 a thread; at 288 threads with a lone producer warp every thread was capped
// at 168, because the register file is split among the SM's four sub-partitions).
//
// Steps: a consumer takes its key blocks two at a time when two consecutive stages (ring order,
// wrapping) are both its own: S for both 64-key blocks in one commit group, one softmax over the
// 128 columns (each block masked past its own valid keys), one rescale of O, P V over both V
// tiles, both stages released together. The ring keeps its K tiles by column block, so two
// consecutive stages' K rows are one operand: with 128-token tiles (kOverlap) S over a pair is
// one m64n128k16 chain, which reads Q from shared memory once instead of twice (SS at N = 64
// needs all of the shared-memory bandwidth: issue_s), and there the producer pairs no stage
// across the ring's wrap (1.03-1.09x dense, 1.03-1.05x at 5% and 3%, H100, fourteenth session).
// The producer, which knows the next stage when it tags this one, marks the pair in the tag, so a
// consumer never waits for a stage it does not use; otherwise (the next stage is not its own, or
// ends the stream) it takes one block. A step's P V is never waited for at its end: with 128-token
// tiles it is issued after the next step's S and runs under that step's softmax (FA3's
// intra-warpgroup overlap, Q in shared memory); with 64-token tiles the next S queues behind it
// (kOverlap, see the consumer loop).
//
// The grid is persistent, one CTA an SM, and takes work items dynamically (an atomic counter): an
// item is query blocks 2x and 2x+1 of one (b, h), the halves of a 128-token tile, or two
// neighbouring 64-token tiles. The producer streams one item's stages after another, so the next
// item's first K/V loads run under this one's last steps and output stores (no CTA launch, Q load
// or pipeline fill between items): 1.04-1.08x at wan14b in token order, 1.00x at 4x4x4 (H200).
// The last round (plan_tail_split): where items % CTAs of equal items (dense mode) would leave
// SMs idle (wan1.3b-480p: 36 items on 132 SMs, 3% of the time), those items run as 2-8 units
// each over a run of their key tiles; the units store fp32 rows with their log-sum-exp and
// merge_tail_parts_kernel combines them. Only the producer's key stream and the consumers' output
// address differ for a unit.
// Outputs: the stage that ends an item (kEnd) carries no K / V, so the consumers keep it until
// their rows are out: each warpgroup normalises its 64 rows into one of its tiles (warpgroup 0
// the V tile, 1 the K tile; stmatrix), and one of its threads stores them with TMA (one bulk copy
// per 64 columns instead of 32 four-byte stores a thread, which the next item's Q copy queued
// behind: v24, 1.03-1.04x at wan14b-720p 5%, dense level, an H100 and an H200). With the slot
// no longer needed for them, the next item's Q copy starts as soon as the item's last S is done
// and runs under its last P V and output store (v25: 1.02-1.03x at wan14b 5%, 1.03-1.05x at 3%,
// dense 0.99x, H100); that P V is issued before the next item's setup and Q copy (v26: 5% 1.03x
// median of five rounds, 3% 1.03-1.05x, dense level) (fifteenth session).
// For each item the producer walks the union of the two blocks' key lists (both ascending: the
// TileMask contract) and tags each stage with the consumers that need it, so a key block in
// both lists (dense mode, 128-token tiles, overlapping neighbours) is loaded once for 128 rows,
// and a block in one list once for 64. A stage's word (its tag, its valid-key count and the next
// stage's) sits in shared memory beside it: the producer's lane writes it before its arrival on
// the full barrier (release), and in each consumer warp only lane 0 reads it after the wait
// (acquire) and passes it on by a warp reduction, so the lane that later releases the stage is the
// one that read it (racecheck sees every access ordered by the barrier of the thread that made
// it). The second stage of a 128-key step is waited for but not read: the first one's word holds
// its valid count, so a step has one shared-memory read on its critical path, not three.
//
// TMA loads whole 64-row blocks: padding rows of ragged key tiles are read as stored. Their
// scores are masked to -inf and their probabilities are exactly zero, so any finite padding is
// harmless (attention_cuda documents the requirement).
//
// Tried and dropped (docs/perf-notes.md): FA3's intra-warpgroup overlap with Q in registers
// (too few registers: 0.88-1.01x; with Q in shared memory it is kept for 128-token tiles, and
// ran 0.93x at 64-token tiles); consumers walking the union themselves instead
// of reading tags put dependent global loads on their critical path (25% slower); FA3's ping-pong
// with the turns at the tensor cores (a turn from one step's P V to the next step's S) ran 9-11%
// slower dense (turns around the softmax instead, SoftmaxTurn, are kept); a 7-stage ring (224 KB)
// instead of 6: 0.95-1.0x; a static persistent split (item n, n + gridDim.x, ...): 0.95-1.03x of
// one item a CTA, where the dynamic schedule is 1.00-1.10x; a quarter of the exponentials as a
// polynomial on the FMA pipes (FlashAttention-4): 0.98x dense, the MUFU unit is not the bound;
// the last wave's items as 64-row halves with the key list split between the warpgroups (a half
// took 0.68 of an item), and Q loaded by the producer's TMA (0.94-0.96x dense): both reassigned
// the consumer's registers and slowed whole items; two Q slots a warpgroup with a 5-stage ring
// (0.80x dense) (tenth session); the next item's Q copied as soon as the item's last S is done,
// under its last P V and O stores (level at 5%: the wait moved to the item's end; 0.97x dense)
// (eleventh session); an empty stage before an item that would start at an odd stage, so that
// no 128-key step meets the ring's wrap (level with v23); Q in registers for the overlapped
// steps too, S as an m64n128k16 chain with A from registers (0.96-1.01x) (fourteenth session);
// the next item's Q by TMA, issued by the thread that stores O once the store has read the slot,
// in place of the consumers' copy (0.93-0.99x of the TMA output store alone) (fifteenth session);
// the next item's Q loaded by the producer's TMA into the item's end stage and moved from there
// into the slot (5% 1.015x, dense 0.99x: the reassigned registers); each unit's walk of a
// shared key list rotated by its index modulo the grid, so that the running CTAs visit the same
// keys at once (L2 hit 67% -> 70% at wan14b 5%, no fewer cycles); on top of the first, items
// overlapped (an item's last P V issued in the next item's first step, after its S, and the rows
// stored once it is done): 5% 0.91-0.95x, dense 0.93-0.94x (sixteenth session).
#pragma once
#include <cuda.h>

#include <cassert>
#include <type_traits>

#include "attention_sm90.cuh"
#include "sm90_async.cuh"

namespace veda::cuda {

template <int D>
struct WsConfig {
  static constexpr int kTileBytes = 64 * D * 2;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K + V
  // The ring's K tiles by column block, [D / 64][kStages][64 rows][128 bytes], so that two
  // consecutive stages' K rows are one 128-row operand (S over a 128-key step in one N = 128
  // wgmma chain: issue_s's kPair); then its V tiles, [kStages][tile].
  static constexpr int kStages = D == 128 ? 6 : 8;     // 192 KB / 128 KB of ring
  static constexpr int kBlockBytes = 64 * 128;  // 64 rows of one 64-column block
  static constexpr int kKChunkBytes = kStages * kBlockBytes;
  static constexpr int kVOffset = kStages * kTileBytes;
  static_assert(kStages >= 2, "a 128-key step holds two stages");
  static constexpr int kRingBytes = kStages * kStageBytes;
  static constexpr int kQBytes = 2 * kTileBytes;  // both query blocks, same layout as a K tile
  // + alignment slack, barriers, words (D = 128: 230,520 of the 232,448 bytes an H100 CTA may use)
  static constexpr int kSmemBytes = kRingBytes + kQBytes + 1024 + kStages * 20;
  static constexpr int kConsumerWarps = 8;
  // 384 threads: two consumer warpgroups and a producer warpgroup (one thread of it issues). The
  // producer gives registers back so that the consumers get 240 each: two S accumulators, O, and
  // P of the step whose P V still runs while the next S is issued, plus Q's A fragments without
  // kOverlap or the next P with it (at 232, ptxas serialized every wgmma: C7512). The pool is
  // what the launch gave the CTA, 168 a thread, and setmaxnreg.inc waits until its registers are
  // free: 128 * 24 + 256 * 240 <= 384 * 168 (with 32 for the producer the consumers waited
  // forever).
  static constexpr int kThreads = 384;
  static constexpr uint32_t kProducerRegs = 24, kConsumerRegs = 240;
  static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= kThreads * 168, "register pool");
  // A stage's word. Its tag: bit c, consumer warpgroup c needs it; bit 2 + c, c starts a step
  // here and takes the next stage too, as one 128-key step; kTurn, both start a step of the same
  // length here and take their softmaxes in turn (SoftmaxTurn). Then the stage's valid keys
  // (1..64) and, where some consumer pairs it with the next stage, the next one's (0..64). kEnd:
  // the item ends here, the low 31 bits hold the next unit (at most num_units).
  static constexpr uint32_t kPairShift = 2;
  static constexpr uint32_t kTurn = 1u << 4;
  static constexpr uint32_t kValidShift = 16, kNextValidShift = 24;  // 7 bits each
  static constexpr uint32_t kEnd = 0x80000000u;
};

// FlashAttention-3's ping-pong, applied to the softmax: on a step that both consumer warpgroups
// start at the same stage with the same length, warpgroup 0 runs its softmax, then warpgroup 1,
// then warpgroup 0 its next one, and so on, so that the two softmaxes do not compete for the
// sub-partitions' issue slots and exp units and one warpgroup's products can run under the other's
// softmax. Measured against no turns (H100, same call): +0-6% (wan14b token order: dense +3.7%,
// 3% +6%; wan1.3b dense 0%). Named barrier 1 lets warpgroup 0 start, barrier 2 warpgroup 1
// (256 threads: one warpgroup syncs, the other arrives).
struct SoftmaxTurn {
  bool on;
  int c;
  __device__ __forceinline__ void begin() const {
    if (on) named_bar_sync(1 + c, 256);
  }
  __device__ __forceinline__ void end() const {
    if (on) named_bar_arrive(2 - c, 256);
  }
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
  // Keeps part `part` of `parts` of the key tiles (plan_tail_split; dense mode, where a block's
  // list is every tile or, past the valid rows, none): equal runs, together every tile once.
  __device__ __forceinline__ void keep_part(int part, int parts) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      i[c] = part * count[c] / parts;
      count[c] = (part + 1) * count[c] / parts;
    }
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

// The producer's stages in order: the 64-key blocks with valid keys of the tiles in the union
// (`need` 0 past the end). Copyable, so that the producer can look one stage ahead.
struct KeyBlockStream {
  KeyListUnion keys;
  const int32_t* valid_h;
  int subs;
  int tile = 0, sub = 0, tile_valid = 0;
  uint32_t need = 0;

  __device__ __forceinline__ void advance() {
    if (need && ++sub < subs && tile_valid > sub * 64) return;
    sub = 0;
    do {
      tile = keys.next(need);
      if (tile == KeyListUnion::kNone) {
        need = 0;
        return;
      }
      tile_valid = __ldg(valid_h + tile);
    } while (tile_valid == 0);
  }
};

// A position in the stage ring: stage index and the parity of its barriers' current phase.
template <int kStages>
struct RingPos {
  int stage = 0;
  uint32_t phase = 0;
  __device__ __forceinline__ void advance() {
    if (++stage == kStages) stage = 0, phase ^= 1;
  }
};

// A work item: query blocks 2x and 2x+1 of one (b, h), with their valid rows and key lists (count
// 0 when a block holds no tokens). Items are numbered x fastest, then heads, then batch, the order
// of a non-persistent grid, so that the CTAs running at one time share their heads' K/V in L2.
struct WsItemPos {
  int x, h, b;
};
__device__ __forceinline__ WsItemPos ws_item_pos(const FwdParams& p, int w) {
  const int gx = (p.num_q_blocks + 1) / 2;
  return {w % gx, (w / gx) % p.heads, w / gx / p.heads};
}
// The item's first Q row (its query block 2x's).
template <class T>
__device__ __forceinline__ const T* ws_item_q(const FwdParams& p, WsItemPos pos) {
  return static_cast<const T*>(p.q) + pos.b * p.q_bs + pos.h * p.q_hs +
         int64_t(pos.x) * 128 * p.q_rs;
}
struct WsItem : WsItemPos {
  int q_valid[2];
  KeyListUnion keys;
};
// The schedule's units (plan_tail_split): items below `whole`, then `parts` units for each later
// item, each over a part of its key tiles, writing fp32 rows and their log-sum-exp to scratch
// (unit whole + k: rows [k * 128, k * 128 + 128)) for merge_tail_parts_kernel.
struct WsTail {
  int whole, parts;
  float* o;    // [units - whole][128][D]
  float* lse;  // [units - whole][128]
};
struct WsUnit {
  int item;
  int part;  // -1: the whole item
};
__device__ __forceinline__ WsUnit ws_unit(const WsTail& tail, int w) {
  if (w < tail.whole) return {w, -1};
  return {tail.whole + (w - tail.whole) / tail.parts, (w - tail.whole) % tail.parts};
}
__device__ __forceinline__ WsItem ws_item(const FwdParams& p, int w) {
  WsItem it{};
  static_cast<WsItemPos&>(it) = ws_item_pos(p, w);
  const int32_t* valid_h = p.tile_valid + int64_t(it.h) * p.num_tiles;
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const int qb = it.x * 2 + c;
    it.q_valid[c] = qb < p.num_q_blocks ? query_block_valid(p, valid_h, qb) : 0;
    it.keys.count[c] = 0, it.keys.list[c] = nullptr;
    if (it.q_valid[c] > 0) {
      it.keys.count[c] = p.num_tiles;
      if (p.mask_counts) {
        const int64_t r = (int64_t(it.b) * p.heads + it.h) * p.num_tiles + qb / p.subs;
        it.keys.count[c] = __ldg(p.mask_counts + r);
        it.keys.list[c] = p.mask_indices + r * p.max_k;
      }
    }
  }
  return it;
}

// This warpgroup's 64 output rows, normalised by finish_rows' scales, into a 64-row tile of shared
// memory in the K / V tiles' layout (D / 64 column blocks `block_stride` bytes apart, each [64
// rows][128 bytes] in the 128-byte swizzle: the TMA maps' boxes), from which TMA stores them: 8
// stmatrix a thread (four 8x8 blocks each: two column chunks of both of its rows) instead of 32
// four-byte global stores.
template <int D, class T>
__device__ __forceinline__ void stage_rows(uint32_t tile, uint32_t block_stride,
                                           const float (&acc)[D / 2], const float (&inv)[2],
                                           int warp_in_group, int lane) {
  // Lane l addresses row l & 15 of the warp's 16 in stmatrix_x4's matrix k = l / 8, which holds
  // rows 8 (k & 1) to 8 (k & 1) + 7 of column chunk c + k / 2.
  const uint32_t row_addr = tile + uint32_t(warp_in_group * 16 + (lane & 15)) * 128;
  const int second_chunk = lane >> 4;
#pragma unroll
  for (int c = 0; c < D / 8; c += 2) {
    uint32_t r[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int j = (c + k / 2) * 4 + 2 * (k & 1);
      r[k] = ElemTraits<T>::pack(acc[j] * inv[k & 1], acc[j + 1] * inv[k & 1]);
    }
    stmatrix_x4(row_addr + (c >> 3) * block_stride + ((((c & 7) | second_chunk) ^ (lane & 7)) << 4),
                r);
  }
}

// kOverlap: FlashAttention-3's intra-warpgroup overlap with Q in shared memory (128-token tiles,
// where a warpgroup's steps mostly follow each other); otherwise Q stays in registers and a step
// issues its own P V at its end (64-token tiles: the two query blocks' lists interleave, so a step
// is rarely followed by another of the same warpgroup, and S with both operands in shared memory
// at N = 64 needs the full shared-memory bandwidth: 0.93x at 4x4x4 with the overlap).
template <int D, class T, bool kOverlap>
__global__ void __launch_bounds__(384, 1)
    attention_fwd_sm90_ws_kernel(const __grid_constant__ FwdParams p,
                                 const __grid_constant__ CUtensorMap tm_k,
                                 const __grid_constant__ CUtensorMap tm_v,
                                 const __grid_constant__ CUtensorMap tm_o, int num_units,
                                 unsigned* units_taken, const WsTail tail) {
  using C = WsConfig<D>;
  using Ring = RingPos<C::kStages>;
  extern __shared__ __align__(128) unsigned char smem_ws[];
  const uint32_t ring = (smem_u32(smem_ws) + 1023u) & ~1023u;
  static_assert(C::kThreads == 384, "launch bounds");
  const uint32_t q_smem = ring + C::kRingBytes;     // [2][tile]: the consumers' Q blocks
  const uint32_t full_bar = q_smem + C::kQBytes;     // [kStages] x 8 bytes
  const uint32_t empty_bar = full_bar + C::kStages * 8;
  uint32_t* words = reinterpret_cast<uint32_t*>(smem_ws + (empty_bar + C::kStages * 8 -
                                                           smem_u32(smem_ws)));

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  if (threadIdx.x == 0) {
    for (int s = 0; s < C::kStages; ++s) {
      mbar_init(full_bar + 8 * s, 1);
      mbar_init(empty_bar + 8 * s, C::kConsumerWarps);
    }
    mbar_init_fence();
  }
  __syncthreads();

  // The grid is persistent with a dynamic schedule: CTA n starts with unit n; the units past the
  // grid go to whichever CTA asks first (`units_taken`, zeroed before the launch), so an SM that
  // runs faster takes more of them. The producer asks when it starts a unit, streams the units
  // back to back and ends each with a kEnd stage that carries the next unit's index to the
  // consumers (and, until they release it, their output rows), so the next unit's K/V loads run
  // under this one's last steps and output stores.
  if (warp >= 8) {  // producer warpgroup: one thread issues everything
    setmaxnreg_dec<C::kProducerRegs>();
    if (warp != 8 || lane != 0) return;
    tma_prefetch_descriptor(&tm_k);
    tma_prefetch_descriptor(&tm_v);
    Ring at;
    // The next unit's index waits in shared memory: the producer's 24 registers hold no more.
    __shared__ int next_unit;
    for (int w = blockIdx.x; w < num_units; w = next_unit) {
      next_unit = int(gridDim.x + atomicAdd(units_taken, 1u));
      // The next item's Q rows into L2 (when contiguous), so that the consumers' copy of them at
      // this item's end does not wait on device memory.
      if (next_unit < num_units && p.q_rs == D) {
        const WsItemPos pos = ws_item_pos(p, ws_unit(tail, next_unit).item);
        const int rows = min(128, (p.num_q_blocks - 2 * pos.x) * 64);
        prefetch_l2(ws_item_q<T>(p, pos), uint32_t(rows * D * sizeof(T)),
                    kL2EvictFirst);  // read once, soon
      }
      const WsUnit unit = ws_unit(tail, w);
      WsItem it = ws_item(p, unit.item);
      if (unit.part >= 0) it.keys.keep_part(unit.part, tail.parts);
      const int32_t* valid_h = p.tile_valid + int64_t(it.h) * p.num_tiles;
      KeyBlockStream cur{it.keys, valid_h, p.subs};
      cur.advance();
      KeyBlockStream next = cur;
      next.advance();
      uint32_t second = 0;  // bit c: this stage is the second of consumer c's 128-key step
      for (; cur.need; cur = next, next.advance()) {
        mbar_wait(empty_bar + 8 * at.stage, at.phase ^ 1);
        const uint32_t start = cur.need & ~second;  // consumers whose step starts here
        // ... and takes the next stage too (with kOverlap, not across the ring's wrap: S over a
        // pair needs its K rows adjacent)
        const uint32_t pair = kOverlap && at.stage == C::kStages - 1 ? 0u : start & next.need;
        const bool turn = start == 3u && (pair == 0u || pair == 3u);
        const uint32_t next_valid = pair ? uint32_t(block_valid(next.tile_valid, next.sub)) : 0u;
        words[at.stage] = cur.need | pair << C::kPairShift | (turn ? C::kTurn : 0u) |
                          uint32_t(block_valid(cur.tile_valid, cur.sub)) << C::kValidShift |
                          next_valid << C::kNextValidShift;
        second = pair;
        const uint32_t bar = full_bar + 8 * at.stage;
        mbar_arrive_expect_tx(bar, C::kStageBytes);
        const uint32_t k_dst = ring + at.stage * C::kBlockBytes,
                       v_dst = ring + C::kVOffset + at.stage * C::kTileBytes;
        const int row = cur.tile * p.tile_size + cur.sub * 64;
        // K and V at normal L2 priority: with Q and O streaming past L2, evict_last on them
        // timed the same (0.99-1.01x, seventh session) and kept its priority after the kernel.
#pragma unroll
        for (int cb = 0; cb < D / 64; ++cb) {
          tma_load_4d(k_dst + cb * C::kKChunkBytes, &tm_k, bar, cb * 64, row, it.h, it.b,
                      kL2EvictNormal);
          tma_load_4d(v_dst + cb * C::kBlockBytes, &tm_v, bar, cb * 64, row, it.h, it.b,
                      kL2EvictNormal);
        }
        at.advance();
      }
      mbar_wait(empty_bar + 8 * at.stage, at.phase ^ 1);
      words[at.stage] = C::kEnd | uint32_t(min(next_unit, num_units));
      mbar_arrive(full_bar + 8 * at.stage);
      at.advance();
    }
    return;
  }

  // Consumers: warpgroup 0 or 1 -> query block 2x or 2x+1 of each item.
  // Broadcast from lane 0: the compiler then knows it is warp-uniform, so values built from it
  // (descriptors) can live in uniform registers.
  const int c = __shfl_sync(0xffffffffu, warp >> 2, 0);
  const uint32_t my_bit = 1u << c;
  const uint32_t my_slot = q_smem + c * C::kTileBytes;  // its Q block (kOverlap)
  const bool o_storer = (threadIdx.x & 127) == 0;        // issues the warpgroup's O stores
  float acc[D / 2];
  float row_max[2], row_sum[2];
  setmaxnreg_inc<C::kConsumerRegs>();
  uint32_t q_frag[kOverlap ? 1 : D / 16][4];  // without the overlap: Q as wgmma A fragments
  // Descriptors as adds to stage 0's K descriptor, not each rebuilt from its tile's address
  // (masks, shifts; ptxas also rebuilt Q's every step): the start-address field (bits 0-13,
  // shared address / 16) of Q's and of stage s's K and V tiles is stage 0's plus an offset
  // (s * kBlockBytes / 16 for K, s * kTileBytes / 16 for V: one uniform add a stage), and V's
  // leading byte offset (bits 16-29) is 8192 where K's is 16. Shared addresses stay below 2^18,
  // so no field carries into the next.
  const uint64_t k_desc0 = k_tile_desc(ring);
  const uint64_t v_desc0 = desc_advance16(k_desc0, C::kVOffset / 16 + ((8192 - 16) >> 4 << 16));
  const uint64_t q_desc = desc_advance16(k_desc0, (C::kRingBytes + c * C::kTileBytes) / 16);
  // The low word of stage `stage`'s K or V descriptor, and a descriptor from such a word. The
  // opaque move keeps the compiler from adding the k-steps' offsets to the base before the
  // stage's (ptxas then rebuilt three of those sums every step).
  const auto stage_lo = [](uint64_t desc0, int stage, uint32_t stage_bytes) {
    uint32_t lo;
    asm("mov.b32 %0, %1;" : "=r"(lo) : "r"(uint32_t(desc0) + uint32_t(stage) * (stage_bytes / 16)));
    return lo;
  };
  const auto k_stage_lo = [&](int stage) { return stage_lo(k_desc0, stage, C::kBlockBytes); };
  const auto v_stage_lo = [&](int stage) { return stage_lo(v_desc0, stage, C::kTileBytes); };
  const auto with_lo = [](uint64_t desc0, uint32_t lo) { return desc0 >> 32 << 32 | lo; };

  // A stage as this warp sees it: wait until it is full, then lane 0 reads its word and shares it
  // (a reduction with the other lanes' zeros: its result lands in a uniform register, where a
  // shuffle's would need an R2UR after it); lane 0 also releases it (release()).
  const auto wait_full = [&](const Ring& at) { mbar_wait(full_bar + 8 * at.stage, at.phase); };
  const auto look = [&](const Ring& at) {
    wait_full(at);
    return __reduce_or_sync(0xffffffffu, lane == 0 ? words[at.stage] : 0u);
  };
  const auto release = [&](const Ring& at) {
    __syncwarp();
    if (lane == 0) mbar_arrive(empty_bar + 8 * at.stage);
  };

  // FlashAttention-3's intra-warpgroup overlap: a step issues its S and then the previous step's
  // P V, waits for the S only, and runs its softmax while that P V is on the tensor cores; O is
  // rescaled once the P V is done. So P V of step j is issued in step j + 1 (or at a stage that
  // is not this warpgroup's, or at the end), and its stages (`held`) are released after it.
  // Registers: S (64), P of the previous and of this step (32 each), O (64); Q is read from
  // shared memory. Without kOverlap a step issues its own P V at its end instead.
  // Deadlock bound: a warpgroup waits on stages at most 4 past its first held one (kOverlap: a held
  // pair a, a+1, a+2 not its own, then a pair a+3, a+4), 3 without kOverlap; the producer can fill
  // up to kStages - 1 past it. (With 128-token tiles both query blocks share one key list, so a
  // stage that is not a warpgroup's own only comes to one whose block holds no tokens.) At an
  // item's end a warpgroup holds the kEnd stage (and its last step's, until that P V is done)
  // while it stores its rows, and waits on no stage until it has released it.
  static_assert(C::kStages >= (kOverlap ? 5 : 4),
                "held stages and the next step's fit in the ring");
  uint32_t p_prev[2][4][4];  // P of the step whose P V is not issued yet
  uint32_t v_prev[2] = {0, 0};  // ... and its V tiles (v_stage_lo)
  int nb_prev = 0;
  Ring at, held;
  const auto release_held = [&](int stages) {  // `stages` (1 or 2) from `held` on
    release(held);
    if (stages > 1) {
      Ring second = held;
      second.advance();
      release(second);
    }
  };
  // A P V issued and left to run (`in_flight` of its stages held from `held`): without kOverlap
  // every step's own, with it the previous step's at a stage that is not this warpgroup's. It is
  // waited for at the next step's S wait or at the next stage that is not this warpgroup's.
  int in_flight = 0;
  const auto settle_in_flight = [&]() {  // after a wait that covers the in-flight P V
    fence_operands(acc);
    if (in_flight > 0) release_held(in_flight);
    in_flight = 0;
  };
  const auto issue_prev_pv = [&]() {
    if (nb_prev == 0) return;
    const uint64_t v_desc[2] = {with_lo(v_desc0, v_prev[0]), with_lo(v_desc0, v_prev[1])};
    if (nb_prev == 2) {
      issue_pv<D, T, 2>(acc, p_prev, v_desc);
    } else {
      issue_pv<D, T, 1>(acc, reinterpret_cast<uint32_t(&)[1][4][4]>(p_prev),
                        reinterpret_cast<const uint64_t(&)[1]>(v_desc));
    }
    in_flight = nb_prev, nb_prev = 0;
  };
  const auto not_my_stage = [&]() {
    if (nb_prev > 0) {
      issue_prev_pv();
    } else if (in_flight > 0) {
      wgmma_wait<0>();
      settle_in_flight();
    }
  };
  // One step of NB blocks starting at stage `first` (ring stages `stage`), with the previous
  // step's NBP blocks of P V (0: none). Instantiated per (NB, NBP), so that every path is
  // straight-line from the S issue to the last wait and ends with no wgmma in flight (ptxas
  // serialized every wgmma, C7518 / C7520, when paths with different groups in flight met).
  const auto step = [&]<int NB, int NBP>(std::integral_constant<int, NB>,
                                         std::integral_constant<int, NBP>, const Ring& first,
                                         const int(&stage)[NB], const int(&valid)[NB],
                                         const SoftmaxTurn& turn) {
    float s[NB][32];
    uint64_t k_desc[NB];
#pragma unroll
    for (int i = 0; i < NB; ++i) k_desc[i] = with_lo(k_desc0, k_stage_lo(stage[i]));
    if constexpr (kOverlap) {  // a pair's stages are adjacent (the producer never pairs the wrap)
      issue_s<D, T, NB, C::kKChunkBytes, NB == 2>(s, q_desc, k_desc);
    } else {
      issue_s<D, T, NB, C::kKChunkBytes>(s, q_frag, k_desc);
    }
    if constexpr (NBP > 0) {
      uint64_t v_desc[NBP];
#pragma unroll
      for (int i = 0; i < NBP; ++i) v_desc[i] = with_lo(v_desc0, v_prev[i]);
      issue_pv<D, T, NBP>(acc, reinterpret_cast<uint32_t(&)[NBP][4][4]>(p_prev), v_desc);
      wgmma_wait<1>();  // the S group (the older one) is done; the P V runs on
    } else {
      wgmma_wait<0>();  // also any P V left in flight at a stage that was not ours
      settle_in_flight();
    }
#pragma unroll
    for (int i = 0; i < NB; ++i) fence_operands(s[i]);
    uint32_t p_cur[NB][4][4];
    float alpha[2];
    turn.begin();
    softmax_blocks<NB, T>(s, row_max, row_sum, p_cur, alpha, valid, p.scale_log2, lane);
    turn.end();
    if constexpr (NBP > 0) {
      wgmma_wait<0>();
      fence_operands(acc);
      fence_operands(reinterpret_cast<uint32_t(&)[NBP * 4][4]>(p_prev));
      release_held(NBP);
    }
    if (warp_needs_rescale(alpha)) rescale<D>(acc, alpha);
#pragma unroll
    for (int i = 0; i < NB; ++i) {
#pragma unroll
      for (int t = 0; t < 4; ++t)
#pragma unroll
        for (int r = 0; r < 4; ++r) p_prev[i][t][r] = p_cur[i][t][r];
      v_prev[i] = v_stage_lo(stage[i]);
    }
    nb_prev = NB;
    held = first;
    if constexpr (!kOverlap) issue_prev_pv();  // this step's P V, left in flight
  };
  const auto step_after = [&]<int NB>(std::integral_constant<int, NB> nb, const Ring& first,
                                      const int(&stage)[NB], const int(&valid)[NB],
                                      const SoftmaxTurn& turn) {
    if constexpr (kOverlap) {
      if (nb_prev == 2) {
        step(nb, std::integral_constant<int, 2>{}, first, stage, valid, turn);
        return;
      }
      if (nb_prev == 1) {
        step(nb, std::integral_constant<int, 1>{}, first, stage, valid, turn);
        return;
      }
    }
    step(nb, std::integral_constant<int, 0>{}, first, stage, valid, turn);
  };

  // The softmax turns alternate between the warpgroups across items (a turn stage is a step of
  // both), so they are opened once, before the first item, and closed after the last: per item,
  // a warpgroup could run whole short items ahead of the other and arrive twice on barrier 1.
  if (c == 1) named_bar_arrive(1, 256);  // warpgroup 0 takes the first softmax turn
  // With kOverlap, this warpgroup's Q block of an item goes into its slot (rows past the valid
  // count zero-filled) by its 128 threads: the first item's here, each next one's as soon as the
  // last S of the item before it is done (its output rows do not need the slot: they are staged
  // in the item's end stage), so the copy runs under that item's last P V and output store.
  // Visible to wgmma after the wait, the async-proxy fence and the warpgroup barrier at the item's
  // start.
  const auto copy_q = [&](const WsItem& item) {
    const T* q = ws_item_q<T>(p, item) + int64_t(c) * 64 * p.q_rs;
    const CopyPlan90<D, 128> plan(threadIdx.x & 127);
    plan.template load<64>(my_slot, q, p.q_rs, c ? item.q_valid[1] : item.q_valid[0], 0);
    cp_async_commit();
  };
  WsItem it = ws_item(p, ws_unit(tail, blockIdx.x).item);
  if constexpr (kOverlap) copy_q(it);
  for (int w = blockIdx.x, next_w = num_units; w < num_units; w = next_w) {
    const int my_qb = it.x * 2 + c;
    const int my_valid = c ? it.q_valid[1] : it.q_valid[0];
    if constexpr (!kOverlap) {
      const T* my_q = ws_item_q<T>(p, it) + int64_t(c) * 64 * p.q_rs;
      load_q_fragments<D, T>(q_frag, my_q, p.q_rs, my_valid, warp & 3, lane);
    } else {
      cp_async_wait<0>();
      fence_proxy_async_smem();
      named_bar_sync(3 + c, 128);
    }
#pragma unroll
    for (int i = 0; i < D / 2; ++i) acc[i] = 0.f;
    row_max[0] = row_max[1] = -INFINITY;
    row_sum[0] = row_sum[1] = 0.f;

    Ring end;  // the item's last stage: no K / V, held for the output rows until they are stored
    while (true) {
      const uint32_t word = look(at);
      if (word & C::kEnd) {  // the next unit's index
        next_w = int(word & ~C::kEnd);
        end = at;
        at.advance();
        break;
      }
      if (word & my_bit) {
        const SoftmaxTurn turn{(word & C::kTurn) != 0, c};
        const int valid = int(word >> C::kValidShift) & 0x7f;
        if (word & my_bit << C::kPairShift) {
          // One 128-key step with the next stage (its valid count is in this stage's word).
          // Holding this stage while waiting for that one cannot deadlock: the producer fills
          // stages in ring order, and the next one needs only stages that every consumer released
          // before this one.
          assert(!kOverlap || at.stage != C::kStages - 1);  // kPair: adjacent K rows
          Ring nx = at;
          nx.advance();
          wait_full(nx);
          step_after(std::integral_constant<int, 2>{}, at, {at.stage, nx.stage},
                     {valid, int(word >> C::kNextValidShift)}, turn);
          at = nx;
        } else {
          step_after(std::integral_constant<int, 1>{}, at, {at.stage}, {valid}, turn);
        }
      } else {
        not_my_stage();
        release(at);
      }
      at.advance();
    }
    issue_prev_pv();  // first: it needs no Q, and the next item's setup runs under it
    const WsItem item = it;  // `it` becomes the next item below
    if (next_w < num_units) {
      it = ws_item(p, ws_unit(tail, next_w).item);
      if constexpr (kOverlap) {  // every warp's S has read Q (a warp's wait covers its own
                                 // wgmmas only; the barrier, all of them)
        named_bar_sync(3 + c, 128);
        copy_q(it);
      }
    }
    wgmma_wait<0>();
    settle_in_flight();

    if (my_qb < p.num_q_blocks && w < tail.whole) {
      // O through the end stage (warpgroup 0 in its V tile, 1 in its K tile) and a TMA store.
      const uint32_t tile = c ? ring + end.stage * C::kBlockBytes
                              : ring + C::kVOffset + end.stage * C::kTileBytes;
      const uint32_t block_stride = c ? C::kKChunkBytes : C::kBlockBytes;
      float* lse_bh =
          p.lse ? p.lse + (int64_t(item.b) * p.heads + item.h) * p.tokens : nullptr;
      float inv[2];
      finish_rows(inv, lse_bh ? lse_bh + int64_t(my_qb) * 64 : nullptr, row_max, row_sum,
                  my_valid, p.scale, warp & 3, lane);
      stage_rows<D, T>(tile, block_stride, acc, inv, warp & 3, lane);
      fence_proxy_async_smem();
      named_bar_sync(3 + c, 128);
      if (o_storer) {
#pragma unroll
        for (int cb = 0; cb < D / 64; ++cb)
          tma_store_4d(&tm_o, tile + cb * block_stride, cb * 64, my_qb * 64, item.h, item.b,
                       kL2EvictFirst);  // not read again: K / V keep L2
        bulk_commit_group();
        bulk_wait_group_read<0>();  // before the stage goes back to the producer
      }
      named_bar_sync(3 + c, 128);
    } else if (my_qb < p.num_q_blocks) {  // a part of a tail item: fp32 rows for the merge
      const int64_t row0 = int64_t(w - tail.whole) * 128 + c * 64;
      store_rows<D, float>(tail.o + row0 * D, D, tail.lse + row0, acc, row_max, row_sum,
                           my_valid, p.scale, warp & 3, lane);
    }
    release(end);
  }
  if (c == 0) named_bar_sync(1, 256);  // warpgroup 1's arrival after the last turn
}

// The tail items' outputs from their parts: per row, lse = log sum_i e^lse_i and O = sum_i
// e^(lse_i - lse) O_i (a row no part saw, every lse_i -inf: O 0 and lse -inf, as the whole item
// writes it; NaN in a part's O propagates), written where the whole item would have written it.
// A warp a row, each lane D / 32 consecutive columns.
template <int D, class T>
__global__ void __launch_bounds__(256) merge_tail_parts_kernel(const FwdParams p,
                                                              const WsTail tail, int items) {
  constexpr int kCols = D / 32;
  const int row = int(blockIdx.x) * 8 + int(threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= items * 128) return;
  const int k = row / 128, r = row % 128;  // tail item k, its row r
  const WsItemPos pos = ws_item_pos(p, tail.whole + k);
  if (pos.x * 2 + r / 64 >= p.num_q_blocks) return;
  const int64_t part0 = int64_t(k) * tail.parts * 128 + r;  // part i's row: part0 + i * 128
  float m = -INFINITY;
  for (int i = 0; i < tail.parts; ++i) m = fmaxf(m, tail.lse[part0 + i * 128]);
  float o[kCols] = {}, sum = 0.f;
  for (int i = 0; i < tail.parts; ++i) {
    const float weight = m == -INFINITY ? 0.f : expf(tail.lse[part0 + i * 128] - m);
    sum += weight;
    const float* src = tail.o + (part0 + i * 128) * D + lane * kCols;
#pragma unroll
    for (int j = 0; j < kCols; ++j) o[j] += weight * src[j];
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  T* dst = static_cast<T*>(p.o) + pos.b * p.o_bs + pos.h * p.o_hs +
           (int64_t(pos.x) * 128 + r) * p.o_rs + lane * kCols;
#pragma unroll
  for (int j = 0; j < kCols; j += 2)
    *reinterpret_cast<uint32_t*>(dst + j) = ElemTraits<T>::pack(o[j] * inv, o[j + 1] * inv);
  if (p.lse && lane == 0)
    p.lse[(int64_t(pos.b) * p.heads + pos.h) * p.tokens + int64_t(pos.x) * 128 + r] =
        sum > 0.f ? m + logf(sum) : -INFINITY;
}

}  // namespace veda::cuda
