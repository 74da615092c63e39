// Host side of the CUDA attention backend: argument checks, AttentionParams -> FwdParams, kernel
// choice, timing and small device-memory helpers. Plain C++ (the kernels live in
// attention_kernels.cu). Every CUDA call is checked and turned into a Status.
#include <cuda_runtime.h>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "cuda/cuda_check.hpp"
#include "cuda/attention_launch.hpp"
#include "veda/cuda.hpp"

namespace veda {
namespace {


bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

Status check_cuda_params(const AttentionParams& p) {
  if (p.dtype != DType::kF16 && p.dtype != DType::kBF16)
    return unsupported(
        fmt::format("attention_cuda: dtype {} (f16 and bf16 only)", dtype_name(p.dtype)));
  if (p.head_dim != 64 && p.head_dim != 128)
    return unsupported(fmt::format("attention_cuda: head_dim {} (64 and 128 only)", p.head_dim));
  if (p.tile_size != 64 && p.tile_size != 128)
    return unsupported(fmt::format("attention_cuda: tile_size {} (64 and 128 only)", p.tile_size));
  if (!p.q || !p.k || !p.v || !p.o || !p.tile_valid)
    return invalid_argument("attention_cuda: q, k, v, o and tile_valid must be set");
  if (p.batch <= 0 || p.heads <= 0 || p.num_tiles <= 0)
    return invalid_argument(fmt::format("attention_cuda: batch {}, heads {}, num_tiles {}", p.batch,
                                        p.heads, p.num_tiles));
  if (p.batch > 65535 || p.heads > 65535)
    return unsupported("attention_cuda: batch and heads must each be <= 65535");
  if ((int64_t(p.num_tiles) * (p.tile_size / 64) + 1) / 2 * p.heads * p.batch > INT32_MAX / 2)
    return unsupported("attention_cuda: more than 2^30 pairs of 64-row query blocks");
  if (p.tokens != int64_t(p.num_tiles) * p.tile_size)
    return invalid_argument(fmt::format("attention_cuda: tokens {} != num_tiles {} * tile_size {}",
                                        p.tokens, p.num_tiles, p.tile_size));
  if (!(p.softmax_scale > 0.f) || !std::isfinite(p.softmax_scale))
    return invalid_argument("attention_cuda: softmax_scale must be positive and finite");
  if ((p.mask_counts == nullptr) != (p.mask_indices == nullptr))
    return invalid_argument("attention_cuda: mask_counts and mask_indices go together");
  if (p.mask_counts && (p.max_k < 0 || p.max_k > p.num_tiles))
    return invalid_argument(
        fmt::format("attention_cuda: max_k {} not in [0, num_tiles {}]", p.max_k, p.num_tiles));
  for (const void* ptr : {p.q, p.k, p.v, static_cast<const void*>(p.o)})
    if (!aligned16(ptr)) return invalid_argument("attention_cuda: q/k/v/o must be 16-byte aligned");
  for (int64_t s : {p.q_batch_stride, p.q_head_stride, p.q_row_stride, p.k_batch_stride,
                    p.k_head_stride, p.k_row_stride, p.v_batch_stride, p.v_head_stride,
                    p.v_row_stride, p.o_batch_stride, p.o_head_stride, p.o_row_stride})
    if (s % 8 != 0)
      return invalid_argument("attention_cuda: strides must be multiples of 8 elements");
  if (p.q_row_stride < p.head_dim || p.k_row_stride < p.head_dim || p.v_row_stride < p.head_dim ||
      p.o_row_stride < p.head_dim)
    return invalid_argument("attention_cuda: row strides must be >= head_dim (D contiguous)");
  return Status::ok();
}

cuda::FwdParams to_fwd_params(const AttentionParams& p) {
  cuda::FwdParams f{};
  f.q = p.q;
  f.k = p.k;
  f.v = p.v;
  f.o = p.o;
  f.lse = p.lse;
  f.q_bs = p.q_batch_stride, f.q_hs = p.q_head_stride, f.q_rs = p.q_row_stride;
  f.k_bs = p.k_batch_stride, f.k_hs = p.k_head_stride, f.k_rs = p.k_row_stride;
  f.v_bs = p.v_batch_stride, f.v_hs = p.v_head_stride, f.v_rs = p.v_row_stride;
  f.o_bs = p.o_batch_stride, f.o_hs = p.o_head_stride, f.o_rs = p.o_row_stride;
  f.tokens = p.tokens;
  f.heads = int(p.heads);
  f.num_tiles = p.num_tiles;
  f.tile_size = p.tile_size;
  f.subs = p.tile_size / 64;
  f.num_q_blocks = p.num_tiles * f.subs;
  f.max_k = p.max_k;
  f.tile_valid = p.tile_valid;
  f.mask_counts = p.mask_counts;
  f.mask_indices = p.mask_indices;
  f.scale = p.softmax_scale;
  f.scale_log2 = p.softmax_scale * 1.4426950408889634f;
  return f;
}

struct DeviceInfo {
  int major = 0, minor = 0, sms = 0;
};
Result<DeviceInfo> current_device_info() {
  int dev = 0;
  VEDA_CUDA_CHECK(cudaGetDevice(&dev));
  DeviceInfo info;
  VEDA_CUDA_CHECK(cudaDeviceGetAttribute(&info.major, cudaDevAttrComputeCapabilityMajor, dev));
  VEDA_CUDA_CHECK(cudaDeviceGetAttribute(&info.minor, cudaDevAttrComputeCapabilityMinor, dev));
  VEDA_CUDA_CHECK(cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, dev));
  return info;
}

// Which kernel runs: the warp-specialised Hopper kernel by default on compute capability 9.0
// (when the binary holds sm_90a code), the one-warpgroup Hopper kernel and the mma.sync kernel on
// request (VEDA_ATTN_KERNEL=sm90 | sm80: tests, comparisons), the mma.sync kernel elsewhere.
enum class Kernel { kSm80, kSm90, kSm90Ws };
Kernel choose_kernel(const DeviceInfo& info) {
  const char* env = std::getenv("VEDA_ATTN_KERNEL");
  const std::string want = env ? env : "";
  if (want == "sm80" || info.major != 9 || !cuda::sm90_kernel_available()) return Kernel::kSm80;
  return want == "sm90" ? Kernel::kSm90 : Kernel::kSm90Ws;
}

// 64-row query blocks per CTA for the sm90 / sm80 kernels (the warp-specialised one always pairs
// two and loads each key block once for both when their lists share it). Two blocks share a CTA
// when they share a key list (the halves of a 128-token tile, or neighbours in dense mode);
// VEDA_ATTN_QB=1|2 overrides (tuning, tests). See docs/perf-notes.md.
int query_blocks(const AttentionParams& p) {
  const bool shared_list = p.tile_size == 128 || p.mask_counts == nullptr;
  int qb = shared_list ? 2 : 1;
  if (const char* env = std::getenv("VEDA_ATTN_QB")) {
    const int v = std::atoi(env);
    if (v == 1 || (v == 2 && shared_list)) qb = v;
  }
  return qb;
}

// CTAs of the warp-specialised kernel's persistent grid: one an SM; VEDA_ATTN_CTAS sets it (tests
// run many items a CTA on small shapes), at most 2^16 (the last round's split sizes its scratch
// and its merge grid by it).
int ws_ctas(const DeviceInfo& info) {
  if (const char* env = std::getenv("VEDA_ATTN_CTAS"))
    return std::clamp(std::atoi(env), 1, 1 << 16);
  return info.sms;
}

}  // namespace

bool cuda_device_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return false;
  }
  return n > 0;
}

Result<std::string> cuda_device_description() {
  if (!cuda_device_available()) return Status(ErrorCode::kCudaError, "no CUDA device");
  int dev = 0;
  VEDA_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  VEDA_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  return fmt::format("{} (sm_{}{}, {} SMs)", prop.name, prop.major, prop.minor,
                     prop.multiProcessorCount);
}

std::string attention_cuda_kernel_name(const AttentionParams& p) {
  auto info = current_device_info();
  if (!info) return "none";
  switch (choose_kernel(*info)) {
    case Kernel::kSm90Ws:
      return "sm90ws";
    case Kernel::kSm90:
      return fmt::format("sm90-qb{}", query_blocks(p));
    case Kernel::kSm80:
      break;
  }
  return fmt::format("sm80-qb{}", query_blocks(p));
}

Status attention_cuda(const AttentionParams& p, void* stream_ptr) {
  VEDA_RETURN_IF_ERROR(check_cuda_params(p));
  VEDA_ASSIGN_OR_RETURN(DeviceInfo info, current_device_info());
  if (info.major < 8)
    return unsupported(fmt::format("attention_cuda: compute capability {}.{} (needs 8.0+)",
                                   info.major, info.minor));
  const cuda::FwdParams f = to_fwd_params(p);
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  const auto elem = p.dtype == DType::kF16 ? cuda::Elem::kF16 : cuda::Elem::kBF16;
  const int batch = int(p.batch), head_dim = int(p.head_dim);
  switch (choose_kernel(info)) {
    case Kernel::kSm90Ws: {
      const cudaError_t err = cuda::launch_attention_sm90_ws(f, elem, head_dim, batch,
                                                             ws_ctas(info), stream);
      if (err != cudaErrorNotSupported) {  // else: strides TMA cannot describe; one-warpgroup kernel
        VEDA_CUDA_CHECK(err);
        return Status::ok();
      }
      [[fallthrough]];
    }
    case Kernel::kSm90:
      VEDA_CUDA_CHECK(
          cuda::launch_attention_sm90(f, elem, head_dim, query_blocks(p), batch, stream));
      return Status::ok();
    case Kernel::kSm80:
      break;
  }
  VEDA_CUDA_CHECK(cuda::launch_attention_sm80(f, elem, head_dim, query_blocks(p), batch, stream));
  return Status::ok();
}

Result<std::vector<float>> time_attention_cuda(const AttentionParams& p, int warmup,
                                               double warmup_seconds, int runs, void* stream_ptr) {
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed_s = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  for (int i = 0; i < warmup || elapsed_s() < warmup_seconds; ++i) {
    VEDA_RETURN_IF_ERROR(attention_cuda(p, stream_ptr));
    // Past the counted runs, one at a time, so that the clock above measures device time.
    if (i + 1 >= warmup) VEDA_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  std::vector<cudaEvent_t> events(size_t(runs) + 1, nullptr);
  std::vector<float> ms(size_t(runs), 0.f);
  auto timed = [&]() -> Status {
    for (auto& e : events) VEDA_CUDA_CHECK(cudaEventCreate(&e));
    VEDA_CUDA_CHECK(cudaEventRecord(events[0], stream));
    for (int i = 0; i < runs; ++i) {
      VEDA_RETURN_IF_ERROR(attention_cuda(p, stream_ptr));
      VEDA_CUDA_CHECK(cudaEventRecord(events[i + 1], stream));
    }
    VEDA_CUDA_CHECK(cudaEventSynchronize(events[runs]));
    for (int i = 0; i < runs; ++i)
      VEDA_CUDA_CHECK(cudaEventElapsedTime(&ms[i], events[i], events[i + 1]));
    return Status::ok();
  };
  const Status st = timed();
  for (auto& e : events)
    if (e) cudaEventDestroy(e);
  if (!st.is_ok()) return st;
  return ms;
}

// ---- device memory helpers ----

Result<DeviceBuffer> DeviceBuffer::allocate(size_t bytes) {
  DeviceBuffer buf;
  if (bytes == 0) return Result<DeviceBuffer>(std::move(buf));
  VEDA_CUDA_CHECK(cudaMalloc(&buf.ptr_, bytes));
  buf.bytes_ = bytes;
  return Result<DeviceBuffer>(std::move(buf));
}
DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

Status copy_to_device(void* dst, const void* src, size_t bytes) {
  VEDA_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  return Status::ok();
}
Status copy_to_host(void* dst, const void* src, size_t bytes) {
  VEDA_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return Status::ok();
}
Status fill_device_bytes(void* dst, int byte, size_t bytes) {
  VEDA_CUDA_CHECK(cudaMemset(dst, byte, bytes));
  return Status::ok();
}
Status cuda_synchronize() {
  VEDA_CUDA_CHECK(cudaDeviceSynchronize());
  return Status::ok();
}

Status fill_device_uniform(void* dst, DType dtype, size_t n, uint64_t seed, float lo, float hi) {
  const auto elem = dtype == DType::kF32   ? cuda::Elem::kF32
                    : dtype == DType::kF16 ? cuda::Elem::kF16
                                           : cuda::Elem::kBF16;
  VEDA_CUDA_CHECK(cuda::launch_fill_uniform(dst, elem, n, seed, lo, hi));
  return Status::ok();
}

}  // namespace veda
