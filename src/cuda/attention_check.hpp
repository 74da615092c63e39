// Checking the CUDA attention against references on the CPU, shared by tests/gpu and
// `veda bench attention --verify`. Plain C++ (no CUDA headers).
//
// The rule (DESIGN.md, FlashAttention's): on the same rounded inputs, against an fp64 reference,
// err_gpu <= 2 * err_lowp + atol, where err_lowp is the error of a CPU computation that rounds
// what the kernel rounds (P to the input type before P.V, the output to the input type). NaN
// never passes; padding rows must be exactly zero; every output element is poisoned before the
// run, so unwritten elements show.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "veda/attention.hpp"
#include "veda/cuda.hpp"
#include "veda/tile_layout.hpp"
#include "veda/tile_mask.hpp"

namespace veda::cuda_check {

// A random TileMask: per existing query tile, k = clamp(round(density * existing key tiles), 1,
// existing) distinct existing key tiles, ascending. `empty_rows`: share of rows given count 0.
TileMask random_mask(int batch, const HeadLayouts& layouts, double density, uint64_t seed,
                     double empty_rows = 0.0);

// Device-resident inputs and outputs of one attention call, in tile order [B, H, padded, D].
struct DeviceProblem {
  int batch = 0, heads = 0, head_dim = 0, tile_size = 0, num_tiles = 0, max_k = 0;
  int64_t tokens = 0;  // padded
  DType dtype = DType::kBF16;
  float scale = 0;
  bool has_mask = false;
  std::vector<int32_t> valid_host;  // [heads][num_tiles]
  TileMask mask_host;               // empty when dense
  DeviceBuffer q, k, v, o, lse, valid, counts, indices;

  // Random q, k (uniform in [-qk_range, qk_range)) and v (in [-1, 1)) drawn on the device.
  static Result<DeviceProblem> make(int batch, const HeadLayouts& layouts, int head_dim,
                                    DType dtype, const TileMask* mask, uint64_t seed,
                                    float qk_range = 1.5f);
  AttentionParams params() const;
  Status poison_outputs();  // o = 0xFFFF (NaN), lse = NaN
  // Host copies (as f32) of one (b, h) slice [tokens][D].
  Result<std::vector<float>> slice_to_host(const DeviceBuffer& buf, int b, int h) const;
  Result<std::vector<float>> lse_to_host(int b, int h) const;
  int64_t elements() const { return int64_t(batch) * heads * tokens * head_dim; }
};

struct CheckResult {
  double err_gpu = 0;       // max |gpu - ref64| over checked valid rows
  double err_lowp = 0;      // max |lowp - ref64|
  double err_lse = 0;       // max |lse_gpu - lse64| over checked valid rows of non-empty tiles
  double max_ref = 0;       // max |ref64|
  int64_t nonfinite = 0;    // NaN/Inf in valid rows of the whole slice
  int64_t bad_padding = 0;  // padding-row elements of the whole slice that are not exactly 0
  int64_t bad_lse = 0;      // lse of padding rows / empty tiles not -inf, or NaN anywhere
  int checked_tiles = 0;
  double atol = 1e-4;
  bool pass() const;
  std::string summary() const;
};

// Checks slice (b, h) of a run that has completed: every row for NaN / padding, and the listed
// query tiles (all when empty) against the fp64 and low-precision references (threads: 0 = all).
Result<CheckResult> check_slice(const DeviceProblem& problem, int b, int h,
                                const std::vector<int>& q_tiles, int threads = 0);

// Query tiles to check: `n` spread over the head's tiles, always the first and the last (ragged).
std::vector<int> sample_tiles(int num_tiles, int n, uint64_t seed);

}  // namespace veda::cuda_check
