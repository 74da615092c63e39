// Captured self-attention inputs (calibration and evaluation data) and a procedural workload.
#pragma once
#include <string>
#include <vector>

#include "veda/status.hpp"
#include "veda/tensor.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

// q, k, v: [B, H, N, D], post-norm and post-RoPE; N = prefix_tokens + grid.tokens().
struct Capture {
  Tensor q, k, v;
  Grid grid;
  int prefix_tokens = 0;
  int layer = -1, step = -1;  // -1 when unknown
  std::string source;          // file path or a description
};

// Safetensors with q, k, v (f16/bf16/f32) and metadata grid = JSON [T, H, W], prefix_tokens,
// layer, step. Rejects missing tensors, shape mismatches and a grid that does not match N.
Result<Capture> load_capture(const std::string& path);
Status save_capture(const std::string& path, const Capture& capture);

// Video-like attention inputs: a mix of 3D-local heads, temporal heads (attend along t at the
// same position) and diffuse heads; deterministic for a seed. head_kinds cycles over heads:
// "local", "temporal", "diffuse".
struct ProceduralSpec {
  Grid grid{8, 16, 16};
  int prefix_tokens = 0;
  int batch = 1, heads = 3, head_dim = 64;
  uint64_t seed = 1;
  std::vector<std::string> head_kinds{"local", "temporal", "diffuse"};
};
Result<Capture> make_procedural_capture(const ProceduralSpec& spec);

}  // namespace veda
