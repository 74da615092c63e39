// CUDA and cuBLASLt return codes as veda::Status, for the backend's host code.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <fmt/core.h>

#include "veda/status.hpp"

namespace veda {

inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::ok();
  return Status(ErrorCode::kCudaError,
                fmt::format("{}: {} ({})", what, cudaGetErrorString(err), cudaGetErrorName(err)));
}

inline Status cublas_status(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return Status::ok();
  return Status(ErrorCode::kCudaError,
                fmt::format("{}: {} ({})", what, cublasLtGetStatusString(st), int(st)));
}

}  // namespace veda

#define VEDA_CUDA_CHECK(expr) VEDA_RETURN_IF_ERROR(::veda::cuda_status((expr), #expr))
#define VEDA_CUBLAS_CHECK(expr) VEDA_RETURN_IF_ERROR(::veda::cublas_status((expr), #expr))
