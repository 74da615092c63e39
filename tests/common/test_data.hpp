// Shared test helpers (append-only: other suites rely on these).
#pragma once
#include <cstdint>
#include <string>

#include "veda/tensor.hpp"

namespace veda::test {

// Normal(0, scale^2) values from `seed`, converted to `dtype`.
Tensor random_tensor(DType dtype, Shape shape, uint64_t seed, float scale = 1.0f);
// A fresh, empty, uniquely named directory under /tmp (left behind for inspection on failure).
std::string temp_dir();
// The repo copy of the development capture: 1x3x7168x128 f16, grid [16, 16, 28], layer 6, step 15.
std::string shared_capture_path();

}  // namespace veda::test
