#include "veda/dtype.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "veda/thread_pool.hpp"

namespace veda {

size_t dtype_size(DType dt) { return dt == DType::kF32 ? 4 : 2; }

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
  }
  return "?";
}

Result<DType> parse_dtype(std::string_view name) {
  if (name == "F32" || name == "f32" || name == "float32") return DType::kF32;
  if (name == "F16" || name == "f16" || name == "float16" || name == "fp16") return DType::kF16;
  if (name == "BF16" || name == "bf16" || name == "bfloat16") return DType::kBF16;
  return unsupported("dtype '" + std::string(name) + "' (Veda computes in F32, F16 and BF16)");
}

static uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                          // round to nearest even
  return uint16_t(u >> 16);
}

uint16_t float_to_half(float f) {
  uint32_t u = float_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: Inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): scale into the subnormal range and let the FPU round.
    float scaled = bits_float(abs) * 16777216.0f;  // 2^24: one half-subnormal unit becomes 1
    return uint16_t(sign | uint32_t(std::nearbyint(scaled)));
  }
  uint32_t mant_round = abs + 0xfffu + ((abs >> 13) & 1u);  // round to nearest even at bit 13
  return uint16_t(sign | ((mant_round - 0x38000000u) >> 13));
}

float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    float v = float(mant) * (1.0f / 16777216.0f);  // subnormal: mant * 2^-24
    return sign ? -v : v;
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

// Bulk f16 decoding through a 256 KiB table: a load instead of a branchy decode per element.
static const float* half_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = half_to_float(uint16_t(h));
    return t;
  }();
  return table.data();
}

static constexpr size_t kParallelThreshold = 1 << 16;
static constexpr int64_t kChunk = 1 << 14;

template <class Fn>
static void for_chunks(size_t n, Fn fn) {
  if (n < kParallelThreshold) {
    fn(size_t(0), n);
    return;
  }
  int64_t chunks = int64_t((n + kChunk - 1) / kChunk);
  parallel_for(0, chunks, [&](int64_t c) {
    size_t begin = size_t(c) * kChunk;
    fn(begin, std::min(n, begin + kChunk));
  });
}

void convert_to_f32(const void* src, DType src_dtype, float* dst, size_t n) {
  for_chunks(n, [&](size_t begin, size_t end) {
    switch (src_dtype) {
      case DType::kF32:
        std::memcpy(dst + begin, static_cast<const float*>(src) + begin, (end - begin) * 4);
        break;
      case DType::kF16: {
        auto* s = static_cast<const uint16_t*>(src);
        const float* table = half_table();
        for (size_t i = begin; i < end; ++i) dst[i] = table[s[i]];
        break;
      }
      case DType::kBF16: {
        auto* s = static_cast<const uint16_t*>(src);
        for (size_t i = begin; i < end; ++i) dst[i] = bf16_to_float(s[i]);
        break;
      }
    }
  });
}

void convert_from_f32(const float* src, void* dst, DType dst_dtype, size_t n) {
  for_chunks(n, [&](size_t begin, size_t end) {
    switch (dst_dtype) {
      case DType::kF32:
        std::memcpy(static_cast<float*>(dst) + begin, src + begin, (end - begin) * 4);
        break;
      case DType::kF16: {
        auto* d = static_cast<uint16_t*>(dst);
        for (size_t i = begin; i < end; ++i) d[i] = float_to_half(src[i]);
        break;
      }
      case DType::kBF16: {
        auto* d = static_cast<uint16_t*>(dst);
        for (size_t i = begin; i < end; ++i) d[i] = float_to_bf16(src[i]);
        break;
      }
    }
  });
}

void round_through(float* data, size_t n, DType dt) {
  if (dt == DType::kF32) return;
  for_chunks(n, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i)
      data[i] = dt == DType::kF16 ? half_to_float(float_to_half(data[i]))
                                  : bf16_to_float(float_to_bf16(data[i]));
  });
}

}  // namespace veda
