// A host tensor: dtype, shape, contiguous row-major storage. Storage is shared (copies are cheap
// views); it may be owned memory or a view into a memory-mapped file that it keeps alive.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "veda/dtype.hpp"
#include "veda/status.hpp"

namespace veda {

using Shape = std::vector<int64_t>;
std::string shape_to_string(const Shape& shape);  // "[1, 3, 7168, 128]"
int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised storage.
  static Tensor empty(DType dtype, Shape shape);
  static Tensor zeros(DType dtype, Shape shape);
  // A view of external memory; `keep_alive` owns it (e.g. a file mapping).
  static Tensor view(DType dtype, Shape shape, void* data, std::shared_ptr<void> keep_alive);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return int(shape_.size()); }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }

  void* data() { return data_; }
  const void* data() const { return data_; }
  template <class T> T* data_as() { return static_cast<T*>(data_); }
  template <class T> const T* data_as() const { return static_cast<const T*>(data_); }

  // Converting deep copy (same dtype: plain copy).
  Tensor to(DType dtype) const;
  Tensor clone() const { return to(dtype_); }
  // Same storage, new shape with the same element count.
  Result<Tensor> reshape(Shape shape) const;
  // First NaN/Inf found, as an error naming `what`; ok if all finite.
  Status check_finite(const std::string& what) const;

 private:
  DType dtype_ = DType::kF32;
  Shape shape_;
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
};

}  // namespace veda
