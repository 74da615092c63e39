// Building and validating AttentionParams, shared by every attention backend.
#include <cmath>
#include <string>

#include "veda/attention.hpp"

namespace veda {
namespace {

Status param_error(const std::string& message) { return invalid_argument("attention: " + message); }

std::string shape_of(const Tensor& t) { return shape_to_string(t.shape()); }

// The three strides of one operand: rows must not overlap, and the output may not write one
// element from two (batch, head) pairs.
Status check_strides(const char* name, int64_t batch_stride, int64_t head_stride,
                     int64_t row_stride, const AttentionParams& p, bool is_output) {
  if (batch_stride < 0 || head_stride < 0 || row_stride < 0) {
    return param_error(std::string(name) + " strides must be non-negative (got batch " +
                       std::to_string(batch_stride) + ", head " + std::to_string(head_stride) +
                       ", row " + std::to_string(row_stride) + ")");
  }
  if (row_stride < p.head_dim) {
    return param_error(std::string(name) + " row stride " + std::to_string(row_stride) +
                       " is smaller than head_dim " + std::to_string(p.head_dim) +
                       " (rows would overlap)");
  }
  if (is_output && ((p.batch > 1 && batch_stride == 0) || (p.heads > 1 && head_stride == 0))) {
    return param_error(std::string(name) +
                       " batch/head stride is 0: several heads would write the same output");
  }
  return Status::ok();
}

Status check_mask(const AttentionParams& p) {
  if (p.mask_counts == nullptr) {
    if (p.mask_indices != nullptr) {
      return param_error("mask_indices is set but mask_counts is null (half a TileMask)");
    }
    return Status::ok();  // dense
  }
  if (p.max_k < 0 || p.max_k > p.num_tiles) {
    return param_error("mask max_k " + std::to_string(p.max_k) + " is outside [0, num_tiles=" +
                       std::to_string(p.num_tiles) + "]");
  }
  if (p.max_k > 0 && p.mask_indices == nullptr) {
    return param_error("mask_counts is set but mask_indices is null");
  }
  // The kernels index memory with these values, so every row is checked, not trusted.
  const int64_t rows = p.batch * p.heads * p.num_tiles;
  for (int64_t row = 0; row < rows; ++row) {
    const int32_t count = p.mask_counts[row];
    const int64_t q_tile = row % p.num_tiles;
    const int64_t head = (row / p.num_tiles) % p.heads;
    const int64_t batch = row / (p.num_tiles * p.heads);
    const std::string where = "mask row (batch " + std::to_string(batch) + ", head " +
                              std::to_string(head) + ", query tile " + std::to_string(q_tile) + ")";
    if (count < 0 || count > p.max_k) {
      return param_error(where + " has count " + std::to_string(count) + " outside [0, max_k=" +
                         std::to_string(p.max_k) + "]");
    }
    const int32_t* indices = p.mask_indices + row * p.max_k;
    for (int32_t i = 0; i < count; ++i) {
      if (indices[i] < 0 || indices[i] >= p.num_tiles) {
        return param_error(where + " names key tile " + std::to_string(indices[i]) +
                           " outside [0, num_tiles=" + std::to_string(p.num_tiles) + ")");
      }
      if (i > 0 && indices[i] <= indices[i - 1]) {
        return param_error(where + " indices are not strictly ascending (" +
                           std::to_string(indices[i - 1]) + " then " + std::to_string(indices[i]) +
                           ")");
      }
    }
  }
  return Status::ok();
}

}  // namespace

Status check_attention_params(const AttentionParams& p) {
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr || p.o == nullptr) {
    return param_error("q, k, v and o must all be non-null");
  }
  if (p.tile_valid == nullptr) return param_error("tile_valid must be non-null");
  if (p.dtype != DType::kF32 && p.dtype != DType::kF16 && p.dtype != DType::kBF16) {
    return unsupported("attention: dtype must be F32, F16 or BF16");
  }
  if (p.batch <= 0 || p.heads <= 0 || p.tokens <= 0) {
    return param_error("batch, heads and tokens must be positive (got " + std::to_string(p.batch) +
                       ", " + std::to_string(p.heads) + ", " + std::to_string(p.tokens) + ")");
  }
  if (p.head_dim < 1 || p.head_dim > 256) {
    return unsupported("attention: head_dim " + std::to_string(p.head_dim) +
                       " is outside the supported range [1, 256]");
  }
  if (p.tile_size != 64 && p.tile_size != 128) {
    return unsupported("attention: tile_size " + std::to_string(p.tile_size) +
                       " is not supported (64 or 128)");
  }
  if (p.num_tiles <= 0 || p.tokens != int64_t(p.num_tiles) * p.tile_size) {
    return param_error("tokens (" + std::to_string(p.tokens) + ") must equal num_tiles (" +
                       std::to_string(p.num_tiles) + ") * tile_size (" +
                       std::to_string(p.tile_size) + ")");
  }
  if (!std::isfinite(p.softmax_scale) || p.softmax_scale <= 0) {
    return param_error("softmax_scale must be positive and finite (usually 1/sqrt(head_dim)), got " +
                       std::to_string(p.softmax_scale));
  }
  VEDA_RETURN_IF_ERROR(
      check_strides("q", p.q_batch_stride, p.q_head_stride, p.q_row_stride, p, false));
  VEDA_RETURN_IF_ERROR(
      check_strides("k", p.k_batch_stride, p.k_head_stride, p.k_row_stride, p, false));
  VEDA_RETURN_IF_ERROR(
      check_strides("v", p.v_batch_stride, p.v_head_stride, p.v_row_stride, p, false));
  VEDA_RETURN_IF_ERROR(
      check_strides("o", p.o_batch_stride, p.o_head_stride, p.o_row_stride, p, true));
  for (int64_t i = 0; i < p.heads * p.num_tiles; ++i) {
    if (p.tile_valid[i] < 0 || p.tile_valid[i] > p.tile_size) {
      return param_error("tile_valid[head " + std::to_string(i / p.num_tiles) + "][tile " +
                         std::to_string(i % p.num_tiles) + "] = " +
                         std::to_string(p.tile_valid[i]) + " is outside [0, tile_size=" +
                         std::to_string(p.tile_size) + "]");
    }
  }
  return check_mask(p);
}

Result<AttentionParams> make_attention_params(const Tensor& q, const Tensor& k, const Tensor& v,
                                              Tensor& o, const HeadLayouts& layouts,
                                              const TileMask* mask, float softmax_scale,
                                              float* lse) {
  for (const Tensor* t : {&q, &k, &v, static_cast<const Tensor*>(&o)}) {
    if (!t->defined() || t->rank() != 4) {
      return param_error("q, k, v, o must be defined rank-4 [batch, heads, tokens, head_dim] "
                         "tensors (got q " + shape_of(q) + ", k " + shape_of(k) + ", v " +
                         shape_of(v) + ", o " + shape_of(o) + ")");
    }
  }
  if (k.shape() != q.shape() || v.shape() != q.shape() || o.shape() != q.shape()) {
    return param_error("q, k, v, o shapes differ: q " + shape_of(q) + ", k " + shape_of(k) +
                       ", v " + shape_of(v) + ", o " + shape_of(o));
  }
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype() || o.dtype() != q.dtype()) {
    return param_error(std::string("q, k, v, o dtypes differ: ") + dtype_name(q.dtype()) + ", " +
                       dtype_name(k.dtype()) + ", " + dtype_name(v.dtype()) + ", " +
                       dtype_name(o.dtype()));
  }
  if (layouts.heads() <= 0) return param_error("layouts has no heads");
  if (q.dim(1) != layouts.heads() || q.dim(2) != layouts.padded_tokens()) {
    return param_error("tensor shape " + shape_of(q) + " does not match the layouts (" +
                       std::to_string(layouts.heads()) + " heads, " +
                       std::to_string(layouts.padded_tokens()) +
                       " padded tokens in tile order)");
  }
  AttentionParams p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.o = o.data();
  p.lse = lse;
  p.dtype = q.dtype();
  p.batch = q.dim(0);
  p.heads = q.dim(1);
  p.tokens = q.dim(2);
  p.head_dim = q.dim(3);
  p.set_contiguous_strides();
  p.tile_size = layouts.volume();
  p.num_tiles = layouts.max_tiles();
  p.tile_valid = layouts.valid_table().data();
  p.softmax_scale = softmax_scale;
  if (mask != nullptr) {
    if (mask->batch != p.batch || mask->heads != p.heads || mask->q_tiles != p.num_tiles ||
        mask->k_tiles != p.num_tiles) {
      return param_error("TileMask is [batch " + std::to_string(mask->batch) + ", heads " +
                         std::to_string(mask->heads) + ", q_tiles " +
                         std::to_string(mask->q_tiles) + ", k_tiles " +
                         std::to_string(mask->k_tiles) + "], expected [" +
                         std::to_string(p.batch) + ", " + std::to_string(p.heads) + ", " +
                         std::to_string(p.num_tiles) + ", " + std::to_string(p.num_tiles) + "]");
    }
    const size_t rows = size_t(p.batch * p.heads * p.num_tiles);
    if (mask->max_k < 0 || mask->counts.size() != rows ||
        mask->indices.size() != rows * size_t(mask->max_k)) {
      return param_error("TileMask storage does not match its sizes (counts " +
                         std::to_string(mask->counts.size()) + ", indices " +
                         std::to_string(mask->indices.size()) + ", max_k " +
                         std::to_string(mask->max_k) + ")");
    }
    p.mask_counts = mask->counts.data();
    p.mask_indices = mask->max_k > 0 ? mask->indices.data() : nullptr;
    p.max_k = mask->max_k;
  }
  VEDA_RETURN_IF_ERROR(check_attention_params(p));
  return p;
}

}  // namespace veda
