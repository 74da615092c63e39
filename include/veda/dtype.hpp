// Element types and their CPU conversions. f16/bf16 are stored as raw 16-bit patterns.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "veda/status.hpp"

namespace veda {

enum class DType { kF32, kF16, kBF16 };

size_t dtype_size(DType dt);
// Safetensors spelling: "F32", "F16", "BF16".
const char* dtype_name(DType dt);
Result<DType> parse_dtype(std::string_view name);

// Round-to-nearest-even conversions; NaN stays NaN, overflow becomes Inf.
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);
uint16_t float_to_bf16(float f);
inline float bf16_to_float(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Bulk conversions (multi-threaded for large n).
void convert_to_f32(const void* src, DType src_dtype, float* dst, size_t n);
void convert_from_f32(const float* src, void* dst, DType dst_dtype, size_t n);
// Round f32 values through a low-precision type and back (to build references on rounded inputs).
void round_through(float* data, size_t n, DType dt);

}  // namespace veda
