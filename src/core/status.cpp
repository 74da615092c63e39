#include "veda/status.hpp"

namespace veda {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kIoError: return "I/O error";
    case ErrorCode::kFormatError: return "format error";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kNumericError: return "numeric error";
    case ErrorCode::kCudaError: return "CUDA error";
    case ErrorCode::kInternal: return "internal error";
  }
  return "unknown error";
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  return std::string(error_code_name(code_)) + ": " + message_;
}

}  // namespace veda
