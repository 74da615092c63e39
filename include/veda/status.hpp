// Errors are values: the library never exits or aborts; callers decide what to do.
#pragma once
#include <string>
#include <utility>
#include <variant>

namespace veda {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // bad shapes, sizes, options
  kIoError,          // cannot open/read/write a file
  kFormatError,      // malformed or truncated file, bad header, version mismatch
  kUnsupported,      // valid request we do not implement (dtype, head dim, ...)
  kNumericError,     // NaN/Inf in inputs or outputs
  kCudaError,        // a CUDA runtime/driver/cuBLAS call failed
  kInternal,
};

const char* error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok() { return {}; }

  bool is_ok() const { return code_ == ErrorCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "format error: <message>"
  std::string to_string() const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
inline Status io_error(std::string m) { return {ErrorCode::kIoError, std::move(m)}; }
inline Status format_error(std::string m) { return {ErrorCode::kFormatError, std::move(m)}; }
inline Status unsupported(std::string m) { return {ErrorCode::kUnsupported, std::move(m)}; }
inline Status numeric_error(std::string m) { return {ErrorCode::kNumericError, std::move(m)}; }

// A value or the error that prevented it.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}                                // NOLINT
  Result(Status status) : v_(std::move(status)) {}                         // NOLINT
  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const {
    static const Status kOk;
    return is_ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace veda

// Propagate an error Status / Result from the current function.
#define VEDA_RETURN_IF_ERROR(expr)            \
  do {                                        \
    ::veda::Status _veda_st = (expr);         \
    if (!_veda_st.is_ok()) return _veda_st;   \
  } while (0)

#define VEDA_CONCAT_INNER(a, b) a##b
#define VEDA_CONCAT(a, b) VEDA_CONCAT_INNER(a, b)
// VEDA_ASSIGN_OR_RETURN(auto x, make_x());
#define VEDA_ASSIGN_OR_RETURN(lhs, expr) \
  VEDA_ASSIGN_OR_RETURN_IMPL(VEDA_CONCAT(_veda_res_, __LINE__), lhs, expr)
#define VEDA_ASSIGN_OR_RETURN_IMPL(res, lhs, expr) \
  auto res = (expr);                               \
  if (!res.is_ok()) return res.status();           \
  lhs = std::move(res).value()
