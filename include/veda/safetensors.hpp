// Safetensors files (https://huggingface.co/docs/safetensors): memory-mapped reading with full
// header validation, writing, and sharded checkpoints through `*.safetensors.index.json`.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "veda/status.hpp"
#include "veda/tensor.hpp"

namespace veda {

struct TensorInfo {
  std::string name;
  std::string dtype_name;  // as written in the header ("F32", "BF16", "I64", ...)
  Shape shape;
  size_t begin = 0, end = 0;  // byte offsets within the data section
};

class SafetensorsFile {
 public:
  // Maps the file and validates the header: JSON syntax, dtypes known to the format, shapes,
  // offsets inside the data section, byte sizes matching dtype x shape, no overlapping ranges.
  static Result<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return infos_.count(name) != 0; }
  const TensorInfo* info(const std::string& name) const;
  // Zero-copy view (keeps the mapping alive). Errors for a missing name or a dtype Veda does not
  // compute in (only F32/F16/BF16).
  Result<Tensor> get(const std::string& name) const;

 private:
  std::string path_;
  std::shared_ptr<void> mapping_;
  const std::byte* data_ = nullptr;  // start of the data section
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

struct NamedTensor {
  std::string name;
  Tensor tensor;
};
Status write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

// A checkpoint: a single .safetensors file, a directory holding one, or a directory (or index
// file) with `*.safetensors.index.json` mapping tensor names to shards.
class Checkpoint {
 public:
  static Result<Checkpoint> open(const std::string& path);
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return shard_of_.count(name) != 0; }
  const TensorInfo* info(const std::string& name) const;
  Result<Tensor> get(const std::string& name) const;

 private:
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, size_t> shard_of_;
};

}  // namespace veda
