#include "veda/tensor.hpp"

#include <cmath>
#include <cstdlib>
#include <new>

namespace veda {

std::string shape_to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor Tensor::empty(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  size_t bytes = std::max<size_t>(t.nbytes(), 1);
  // 64-byte alignment for vector loads.
  void* p = ::operator new(bytes, std::align_val_t(64));
  t.storage_ = std::shared_ptr<void>(p, [](void* q) { ::operator delete(q, std::align_val_t(64)); });
  t.data_ = p;
  return t;
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t = empty(dtype, std::move(shape));
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::view(DType dtype, Shape shape, void* data, std::shared_ptr<void> keep_alive) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.storage_ = std::move(keep_alive);
  t.data_ = data;
  return t;
}

Tensor Tensor::to(DType dtype) const {
  Tensor out = empty(dtype, shape_);
  size_t n = size_t(numel());
  if (dtype == dtype_) {
    std::memcpy(out.data_, data_, nbytes());
  } else if (dtype == DType::kF32) {
    convert_to_f32(data_, dtype_, out.data_as<float>(), n);
  } else if (dtype_ == DType::kF32) {
    convert_from_f32(data_as<float>(), out.data_, dtype, n);
  } else {
    Tensor f32 = to(DType::kF32);
    convert_from_f32(f32.data_as<float>(), out.data_, dtype, n);
  }
  return out;
}

Result<Tensor> Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel())
    return invalid_argument("cannot reshape " + shape_to_string(shape_) + " to " +
                            shape_to_string(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Status Tensor::check_finite(const std::string& what) const {
  size_t n = size_t(numel());
  for (size_t i = 0; i < n; ++i) {
    float x;
    switch (dtype_) {
      case DType::kF32: x = data_as<float>()[i]; break;
      case DType::kF16: x = half_to_float(data_as<uint16_t>()[i]); break;
      default: x = bf16_to_float(data_as<uint16_t>()[i]); break;
    }
    if (!std::isfinite(x))
      return numeric_error(what + " holds " + (std::isnan(x) ? "NaN" : "Inf") + " at flat index " +
                           std::to_string(i) + " of shape " + shape_to_string(shape_));
  }
  return Status::ok();
}

}  // namespace veda
