// The CUDA backend's public API. No CUDA headers here (flashinfer's rule): streams are passed as
// void* (a cudaStream_t; nullptr = the default stream) and device memory is plain pointers.
// Everything returns a Status; nothing here exits or aborts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "veda/attention.hpp"
#include "veda/status.hpp"

namespace veda {

// True when the CUDA runtime reports at least one device (false without a driver, never throws).
bool cuda_device_available();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)"; an error when no device is present.
Result<std::string> cuda_device_description();

// Tile-skipping attention forward on the GPU. `p` is the struct the CPU path consumes; every
// pointer in it (q, k, v, o, lse, tile_valid, mask_counts, mask_indices) is a DEVICE pointer.
// dtype f16 or bf16; head_dim 64 or 128; tile_size 64 or 128; the last dimension contiguous and
// rows 16-byte aligned. mask null = dense. Output rows of padding slots and of query tiles with no
// selected key tile are zero (lse -inf). Padding slots of k and v must hold finite values (the
// layout's gather writes zeros): the Hopper kernel reads whole 64-token blocks and multiplies
// padding rows by zero probabilities. Asynchronous on `stream`; launch errors are returned.
Status attention_cuda(const AttentionParams& p, void* stream = nullptr);

// Which kernel attention_cuda would run for `p` on the current device and its 64-row query
// blocks per CTA: "sm90ws" (warp-specialised Hopper kernel), "sm90-qb1", "sm80-qb2", ...
std::string attention_cuda_kernel_name(const AttentionParams& p);

// Times attention_cuda with CUDA events: untimed warm-up runs, at least `warmup` of them and for
// at least `warmup_seconds` (a GPU fresh from idle runs above its sustained, power-capped clocks
// for a while: wan14b-720p at 5% ran ~10% faster after one warm-up run than after 100 on an H100),
// then `runs` timed ones; returns each run's milliseconds (in order). Synchronous.
Result<std::vector<float>> time_attention_cuda(const AttentionParams& p, int warmup,
                                               double warmup_seconds, int runs,
                                               void* stream = nullptr);

// Move-only owner of a device allocation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Result<DeviceBuffer> allocate(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

Status copy_to_device(void* dst, const void* src, size_t bytes);
Status copy_to_host(void* dst, const void* src, size_t bytes);

// A device copy of a host vector (empty: an empty buffer).
template <class T>
Result<DeviceBuffer> upload_to_device(const std::vector<T>& v) {
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(sizeof(T) * v.size()));
  if (!v.empty()) VEDA_RETURN_IF_ERROR(copy_to_device(buf.data(), v.data(), sizeof(T) * v.size()));
  return Result<DeviceBuffer>(std::move(buf));
}
// Fill with a byte pattern (0xFF in f16/bf16 is NaN: the poison for outputs).
Status fill_device_bytes(void* dst, int byte, size_t bytes);
// n values of `dtype` (f16/bf16/f32), uniform in [lo, hi), from a counter-based hash of `seed`.
Status fill_device_uniform(void* dst, DType dtype, size_t n, uint64_t seed, float lo, float hi);
Status cuda_synchronize();

}  // namespace veda
