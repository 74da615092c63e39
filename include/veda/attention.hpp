// Attention over tile-ordered q, k, v: the params struct every backend consumes (the idea of
// FlashAttention-3's flash.h: plain pointers, strides and sizes, no framework types).
#pragma once
#include <cstdint>

#include "veda/dtype.hpp"
#include "veda/status.hpp"
#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"
#include "veda/tile_mask.hpp"

namespace veda {

struct AttentionParams {
  // q, k, v, o: [batch][heads][tokens][head_dim] in tile order, strides in elements.
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;  // optional [batch][heads][tokens]: natural-log sum of exp(scaled scores)
  DType dtype = DType::kF32;  // of q, k, v and o
  int64_t batch = 0, heads = 0, tokens = 0, head_dim = 0;  // tokens = num_tiles * tile_size
  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;
  int64_t o_batch_stride = 0, o_head_stride = 0, o_row_stride = 0;
  int tile_size = kDefaultTileVolume;
  int num_tiles = 0;
  const int32_t* tile_valid = nullptr;  // [heads][num_tiles] valid tokens per tile
  // The TileMask ([batch][heads][num_tiles] counts, [..][max_k] indices); null = dense.
  const int32_t* mask_counts = nullptr;
  const int32_t* mask_indices = nullptr;
  int max_k = 0;
  float softmax_scale = 0;

  // Every stride for contiguous [batch][heads][tokens][head_dim] q, k, v and o (from heads,
  // tokens and head_dim).
  void set_contiguous_strides() {
    const int64_t row = head_dim, head = tokens * row, b = heads * head;
    q_batch_stride = k_batch_stride = v_batch_stride = o_batch_stride = b;
    q_head_stride = k_head_stride = v_head_stride = o_head_stride = head;
    q_row_stride = k_row_stride = v_row_stride = o_row_stride = row;
  }
};

// Params for contiguous [B, H, padded, D] tensors of one dtype; `mask` may be null (dense).
// The params point into the arguments, which must outlive them.
Result<AttentionParams> make_attention_params(const Tensor& q, const Tensor& k, const Tensor& v,
                                              Tensor& o, const HeadLayouts& layouts,
                                              const TileMask* mask, float softmax_scale,
                                              float* lse = nullptr);
Status check_attention_params(const AttentionParams& p);

// Tile-sparse (or dense, mask null) attention on the CPU: f32 arithmetic, multi-threaded.
// Output rows of padding slots and of query tiles with no selected key tile are zero (lse -inf).
// NaN/Inf inputs are not screened: they propagate visibly to the outputs they affect.
Status attention_cpu(const AttentionParams& p);
// Dense reference over every valid key with fp64 accumulation; ignores the mask.
Status attention_reference(const AttentionParams& p);

}  // namespace veda
