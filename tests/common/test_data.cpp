#include "common/test_data.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <vector>

namespace veda::test {

Tensor random_tensor(DType dtype, Shape shape, uint64_t seed, float scale) {
  Tensor values = Tensor::empty(DType::kF32, std::move(shape));
  std::mt19937_64 engine(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  float* p = values.data_as<float>();
  for (int64_t i = 0; i < values.numel(); ++i) p[i] = normal(engine);
  return dtype == DType::kF32 ? values : values.to(dtype);
}

std::string temp_dir() {
  static std::atomic<uint64_t> counter{0};
  const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
  for (;;) {
    std::filesystem::path dir = std::filesystem::path("/tmp") /
                                ("veda_test_" + std::to_string(::getpid()) + "_" +
                                 std::to_string(ticks) + "_" + std::to_string(counter++));
    if (std::filesystem::create_directories(dir)) return dir.string();
  }
}

std::string shared_capture_path() { return VEDA_DATA_DIR "/captures/dev_p3_s101_l6_t15.safetensors"; }

}  // namespace veda::test
