// Internal interface between the host code (attention_cuda.cpp, plain C++) and the kernel
// translation unit (attention_kernels.cu): the device-side parameter block and the launchers.
// No Status or fmt here: nvcc's front end and fmt's consteval format strings do not mix.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace veda::cuda {

// Device-side view of AttentionParams (strides in elements). Built by attention_cuda.cu.
struct FwdParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;  // optional [B][H][tokens]
  int64_t q_bs, q_hs, q_rs;
  int64_t k_bs, k_hs, k_rs;
  int64_t v_bs, v_hs, v_rs;
  int64_t o_bs, o_hs, o_rs;
  int64_t tokens;  // padded tokens per (b, h) = num_tiles * tile_size
  int heads;
  int num_tiles;
  int tile_size;     // 64 or 128
  int subs;          // tile_size / 64: 64-row blocks per tile
  int num_q_blocks;  // num_tiles * subs
  int max_k;
  const int32_t* tile_valid;    // [heads][num_tiles]
  const int32_t* mask_counts;   // [B][H][num_tiles] or null (dense)
  const int32_t* mask_indices;  // [B][H][num_tiles][max_k]
  float scale;                  // softmax scale
  float scale_log2;             // scale * log2(e)
};

enum class Elem { kF16, kBF16, kF32 };

// Mma.sync kernel (any sm_80+ device). qb = 64-row query blocks per CTA (1 or 2).
cudaError_t launch_attention_sm80(const FwdParams& f, Elem elem, int head_dim, int qb, int batch,
                                  cudaStream_t stream);
// Hopper wgmma kernel: available when this binary holds its sm_90a code and the current device
// runs it (compute capability 9.0). qb as for sm80.
bool sm90_kernel_available();
cudaError_t launch_attention_sm90(const FwdParams& f, Elem elem, int head_dim, int qb, int batch,
                                  cudaStream_t stream);
// The warp-specialised kernel's last round in dense mode. Its items (a 128-row query tile each)
// are then of equal size, so items % ctas of them would run while the other SMs idle (wan1.3b-480p:
// 3,072 items on 132 SMs, a 24th round for 36 items, 3% of the time). Instead those last items
// run as `parts` units each, every unit over an equal run of the item's key tiles; the units
// write fp32 partial outputs with their log-sum-exp, merged afterwards. Items below `whole` run
// whole.
struct TailSplit {
  int whole;
  int parts;  // 1: no split
};
inline constexpr int kMaxTailParts = 8;
inline constexpr int kMinTailPartBlocks = 8;  // 64-key blocks a part keeps at least (4 steps)
// The kernel's items: pairs of 64-row query blocks of each (b, h).
constexpr int ws_item_count(int num_q_blocks, int heads, int batch) {
  return (num_q_blocks + 1) / 2 * heads * batch;
}
// `key_blocks`: the 64-key blocks of an item's key list (in dense mode, the query blocks).
constexpr TailSplit plan_tail_split(int items, int ctas, int key_blocks) {
  if (items <= 0 || ctas <= 0) return {items, 1};
  const int last = items % ctas;  // all of them when items < ctas
  if (last == 0) return {items, 1};
  const int parts = std::min({ctas / last, kMaxTailParts, key_blocks / kMinTailPartBlocks});
  if (parts < 2) return {items, 1};
  return {items - last, parts};
}

// Warp-specialised Hopper kernel (TMA producer + two wgmma consumer warpgroups; same availability
// as the sm90 kernel), a persistent grid of at most `ctas` CTAs (one an SM fills the GPU), with
// plan_tail_split's last round. cudaErrorNotSupported when TMA cannot describe q/k/v/o's strides.
cudaError_t launch_attention_sm90_ws(const FwdParams& f, Elem elem, int head_dim, int batch,
                                     int ctas, cudaStream_t stream);
cudaError_t launch_fill_uniform(void* dst, Elem elem, size_t n, uint64_t seed, float lo, float hi);

}  // namespace veda::cuda
