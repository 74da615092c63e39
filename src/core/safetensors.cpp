// Safetensors reading (memory-mapped, fully validated), writing, and sharded checkpoints.
//
// File layout: u64 little-endian header length n, n bytes of JSON header, then the data section.
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end)} (offsets relative to
// the data section) plus an optional "__metadata__" string->string map.
#include "veda/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace veda {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // a larger header is a corrupt length field
constexpr const char* kMetadataKey = "__metadata__";

// Element sizes in bits of every dtype the format defines (sub-byte types included so that
// valid files holding them still open; Veda just cannot compute in them).
std::optional<int> dtype_bits(const std::string& name) {
  static const std::map<std::string, int> kBits = {
      {"BOOL", 8},     {"U8", 8},       {"I8", 8},      {"F8_E5M2", 8}, {"F8_E4M3", 8},
      {"F8_E8M0", 8},  {"I16", 16},     {"U16", 16},    {"F16", 16},    {"BF16", 16},
      {"I32", 32},     {"U32", 32},     {"F32", 32},    {"I64", 64},    {"U64", 64},
      {"F64", 64},     {"C64", 64},     {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6},
  };
  auto it = kBits.find(name);
  if (it == kBits.end()) return std::nullopt;
  return it->second;
}

// Owns one read-only file mapping. Mapped copy-on-write so that writes through a tensor view
// touch private pages instead of faulting (and never reach the file).
struct FileMapping {
  void* addr = nullptr;
  size_t size = 0;
  FileMapping() = default;
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;
  ~FileMapping() {
    if (addr != nullptr) munmap(addr, size);
  }
};

Result<std::shared_ptr<FileMapping>> map_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return io_error(fmt::format("{}: cannot stat: {}", path, std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return io_error(fmt::format("{}: not a regular file", path));
  }
  auto mapping = std::make_shared<FileMapping>();
  mapping->size = size_t(st.st_size);
  if (mapping->size < 8) {
    ::close(fd);
    return format_error(fmt::format(
        "{}: file is {} bytes, shorter than the 8-byte header length field", path, mapping->size));
  }
  void* addr = mmap(nullptr, mapping->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  if (addr == MAP_FAILED) return io_error(fmt::format("{}: cannot mmap: {}", path, std::strerror(err)));
  mapping->addr = addr;
  return mapping;
}

uint64_t read_u64_le(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint64_t(p[i]);
  return v;
}

// A JSON number that is a non-negative integer (no fractional part, fits in u64).
std::optional<uint64_t> as_non_negative_integer(const json& j) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < 0) return std::nullopt;
    return uint64_t(v);
  }
  return std::nullopt;
}

Result<TensorInfo> parse_tensor_entry(const std::string& path, const std::string& name,
                                      const json& entry, uint64_t data_size) {
  auto fail = [&](const std::string& what) {
    return format_error(fmt::format("{}: tensor '{}': {}", path, name, what));
  };
  if (!entry.is_object()) return fail(fmt::format("entry is {}, expected an object", entry.type_name()));
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) return fail(fmt::format("entry has no '{}'", key));
  }
  TensorInfo info;
  info.name = name;

  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) return fail("'dtype' is not a string");
  info.dtype_name = dtype.get<std::string>();
  std::optional<int> bits = dtype_bits(info.dtype_name);
  if (!bits) return fail(fmt::format("unknown dtype '{}'", info.dtype_name));

  const json& shape = entry["shape"];
  if (!shape.is_array()) return fail("'shape' is not an array");
  // numel in 128-bit so that absurd shapes are reported, not wrapped around.
  unsigned __int128 numel = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    std::optional<uint64_t> d = as_non_negative_integer(shape[i]);
    if (!d || *d > uint64_t(std::numeric_limits<int64_t>::max())) {
      return fail(fmt::format("shape {} has entry {} = {}, expected a non-negative integer",
                              shape.dump(), i, shape[i].dump()));
    }
    info.shape.push_back(int64_t(*d));
    numel *= *d;
    if (numel > (unsigned __int128)(std::numeric_limits<int64_t>::max())) {
      return fail(fmt::format("shape {} has too many elements", shape.dump()));
    }
  }

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) return fail("'data_offsets' is not a [begin, end] pair");
  std::optional<uint64_t> begin = as_non_negative_integer(offsets[0]);
  std::optional<uint64_t> end = as_non_negative_integer(offsets[1]);
  if (!begin || !end) {
    return fail(fmt::format("data_offsets {} are not non-negative integers", offsets.dump()));
  }
  if (*begin > *end) return fail(fmt::format("data_offsets {}: begin > end", offsets.dump()));
  if (*end > data_size) {
    return fail(fmt::format("data_offsets {} end beyond the data section ({} bytes); file truncated?",
                            offsets.dump(), data_size));
  }
  unsigned __int128 bits_total = numel * unsigned(*bits);
  if (bits_total % 8 != 0) {
    return fail(fmt::format("{} elements of {} do not fill whole bytes", uint64_t(numel), info.dtype_name));
  }
  uint64_t expected_bytes = uint64_t(bits_total / 8);
  if (*end - *begin != expected_bytes) {
    return fail(fmt::format("data_offsets {} span {} bytes, but {} x {} needs {} bytes", offsets.dump(),
                            *end - *begin, info.dtype_name, shape_to_string(info.shape),
                            expected_bytes));
  }
  info.begin = size_t(*begin);
  info.end = size_t(*end);
  return info;
}

Result<std::map<std::string, std::string>> parse_metadata(const std::string& path, const json& m) {
  if (!m.is_object()) {
    return format_error(fmt::format("{}: __metadata__ is {}, expected a string->string map", path,
                                    m.type_name()));
  }
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : m.items()) {
    if (!value.is_string()) {
      return format_error(fmt::format("{}: __metadata__ '{}' is {}, expected a string", path, key,
                                      value.type_name()));
    }
    out[key] = value.get<std::string>();
  }
  return out;
}

// Overlapping byte ranges would alias two tensors; empty tensors occupy nothing.
Status check_no_overlap(const std::string& path, const std::map<std::string, TensorInfo>& infos) {
  std::vector<const TensorInfo*> ranges;
  for (const auto& [name, info] : infos) {
    if (info.end > info.begin) ranges.push_back(&info);
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const TensorInfo& prev = *ranges[i - 1];
    const TensorInfo& cur = *ranges[i];
    if (cur.begin < prev.end) {
      return format_error(fmt::format("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", path,
                                      prev.name, prev.begin, prev.end, cur.name, cur.begin, cur.end));
    }
  }
  return Status::ok();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  VEDA_ASSIGN_OR_RETURN(std::shared_ptr<FileMapping> mapping, map_file(path));
  const auto* bytes = static_cast<const std::byte*>(mapping->addr);
  const uint64_t file_size = mapping->size;

  const uint64_t header_len = read_u64_le(bytes);
  if (header_len > kMaxHeaderBytes) {
    return format_error(fmt::format("{}: header length {} is absurd (limit {} bytes); not a "
                                    "safetensors file or corrupt",
                                    path, header_len, kMaxHeaderBytes));
  }
  if (header_len > file_size - 8) {
    return format_error(fmt::format("{}: header length {} exceeds the {} bytes after the length "
                                    "field; file truncated?",
                                    path, header_len, file_size - 8));
  }

  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(bytes + 8),
                         reinterpret_cast<const char*>(bytes + 8 + header_len));
  } catch (const json::exception& e) {
    return format_error(fmt::format("{}: header is not valid JSON: {}", path, e.what()));
  }
  if (!header.is_object()) {
    return format_error(fmt::format("{}: header is a JSON {}, expected an object", path, header.type_name()));
  }

  SafetensorsFile file;
  file.path_ = path;
  const uint64_t data_size = file_size - 8 - header_len;
  try {
    for (const auto& [name, entry] : header.items()) {
      if (name == kMetadataKey) {
        VEDA_ASSIGN_OR_RETURN(file.metadata_, parse_metadata(path, entry));
        continue;
      }
      VEDA_ASSIGN_OR_RETURN(TensorInfo info, parse_tensor_entry(path, name, entry, data_size));
      file.infos_.emplace(name, std::move(info));
    }
  } catch (const json::exception& e) {  // defensive: the checks above should pre-empt these
    return format_error(fmt::format("{}: malformed header: {}", path, e.what()));
  }
  VEDA_RETURN_IF_ERROR(check_no_overlap(path, file.infos_));

  file.data_ = bytes + 8 + header_len;
  file.mapping_ = std::move(mapping);
  return file;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(infos_.size());
  for (const auto& [name, info] : infos_) out.push_back(name);
  return out;
}

const TensorInfo* SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  return it == infos_.end() ? nullptr : &it->second;
}

Result<Tensor> SafetensorsFile::get(const std::string& name) const {
  const TensorInfo* ti = info(name);
  if (ti == nullptr) return invalid_argument(fmt::format("{}: no tensor named '{}'", path_, name));
  Result<DType> dtype = parse_dtype(ti->dtype_name);
  if (!dtype.is_ok()) {
    return unsupported(fmt::format("{}: tensor '{}' has unsupported dtype {} (Veda computes in "
                                   "F32, F16 and BF16 only)",
                                   path_, name, ti->dtype_name));
  }
  // The writer may not align tensors; an unaligned view would be undefined behaviour to read
  // as float, so copy those (rare) ones instead.
  auto* data = const_cast<std::byte*>(data_ + ti->begin);
  Tensor view = Tensor::view(*dtype, ti->shape, data, mapping_);
  if (reinterpret_cast<uintptr_t>(data) % dtype_size(*dtype) != 0) return view.clone();
  return view;
}

// ---------------------------------------------------------------------------------------------
// Writing

Status write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<const NamedTensor*> sorted;
  for (const NamedTensor& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const NamedTensor* a, const NamedTensor* b) { return a->name < b->name; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    const NamedTensor& t = *sorted[i];
    if (t.name.empty() || t.name == kMetadataKey) {
      return invalid_argument(fmt::format("{}: invalid tensor name '{}'", path, t.name));
    }
    if (i > 0 && sorted[i - 1]->name == t.name) {
      return invalid_argument(fmt::format("{}: tensor name '{}' given twice", path, t.name));
    }
    if (t.tensor.data() == nullptr && t.tensor.numel() != 0) {
      return invalid_argument(fmt::format("{}: tensor '{}' has no data", path, t.name));
    }
  }

  // Metadata first, then tensors by name (ordered_json keeps insertion order).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header[kMetadataKey] = std::move(m);
  }
  size_t offset = 0;
  for (const NamedTensor* t : sorted) {
    size_t n = t->tensor.nbytes();
    header[t->name] = {{"dtype", dtype_name(t->tensor.dtype())},
                       {"shape", t->tensor.shape()},
                       {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. invalid UTF-8 in a name or metadata
    return invalid_argument(fmt::format("{}: cannot encode header: {}", path, e.what()));
  }
  // Pad with spaces so the data section starts 8-byte aligned (as the reference writer does).
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  // Write next to the target and rename, so a failed write never leaves a truncated file behind.
  const std::string tmp_path = fmt::format("{}.tmp.{}", path, ::getpid());
  {
    std::ofstream out(tmp_path, std::ios::binary | std::ios::trunc);
    if (!out) return io_error(fmt::format("{}: cannot open for writing: {}", tmp_path, std::strerror(errno)));
    unsigned char len_bytes[8];
    uint64_t len = header_text.size();
    for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(len >> (8 * i));
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(header_text.data(), std::streamsize(header_text.size()));
    for (const NamedTensor* t : sorted) {
      out.write(static_cast<const char*>(t->tensor.data()), std::streamsize(t->tensor.nbytes()));
    }
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp_path, ec);
      return io_error(fmt::format("{}: write failed", path));
    }
  }
  std::error_code ec;
  fs::rename(tmp_path, path, ec);
  if (ec) {
    fs::remove(tmp_path, ec);
    return io_error(fmt::format("{}: cannot move the written file into place: {}", path, ec.message()));
  }
  return Status::ok();
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

namespace {

// Reads `weight_map` {tensor name: shard file name} from an index; shard names are relative to
// the index's directory.
Result<std::map<std::string, std::string>> read_weight_map(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) return io_error(fmt::format("{}: cannot open: {}", index_path, std::strerror(errno)));
  json index;
  try {
    index = json::parse(in);
  } catch (const json::exception& e) {
    return format_error(fmt::format("{}: not valid JSON: {}", index_path, e.what()));
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return format_error(fmt::format("{}: expected an object with a 'weight_map' object", index_path));
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string() || shard.get<std::string>().empty()) {
      return format_error(fmt::format("{}: weight_map['{}'] is not a shard file name", index_path, name));
    }
    weight_map[name] = shard.get<std::string>();
  }
  if (weight_map.empty()) return format_error(fmt::format("{}: weight_map is empty", index_path));
  return weight_map;
}

}  // namespace

Result<Checkpoint> Checkpoint::open(const std::string& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return io_error(fmt::format("{}: no such file or directory", path));

  std::string index_path;
  std::string single_path;
  if (fs::is_directory(st)) {
    std::vector<std::string> indexes, files;
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      if (!entry.is_regular_file(ec)) continue;
      std::string name = entry.path().filename().string();
      if (ends_with(name, ".safetensors.index.json")) indexes.push_back(entry.path().string());
      else if (ends_with(name, ".safetensors")) files.push_back(entry.path().string());
    }
    if (ec) return io_error(fmt::format("{}: cannot list directory: {}", path, ec.message()));
    std::sort(indexes.begin(), indexes.end());
    std::sort(files.begin(), files.end());
    if (indexes.size() > 1) {
      return format_error(fmt::format("{}: {} *.safetensors.index.json files ({}); pass one of them",
                                      path, indexes.size(), fmt::join(indexes, ", ")));
    }
    if (indexes.size() == 1) {
      index_path = indexes[0];
    } else if (files.size() == 1) {
      single_path = files[0];
    } else if (files.empty()) {
      return io_error(fmt::format("{}: directory holds no .safetensors file", path));
    } else {
      return format_error(fmt::format("{}: {} .safetensors files but no *.safetensors.index.json "
                                      "to say which holds what",
                                      path, files.size()));
    }
  } else if (ends_with(path, ".json")) {
    index_path = path;
  } else {
    single_path = path;
  }

  Checkpoint ckpt;
  if (!single_path.empty()) {
    VEDA_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(single_path));
    for (const std::string& name : file.names()) ckpt.shard_of_[name] = 0;
    ckpt.shards_.push_back(std::move(file));
    return ckpt;
  }

  VEDA_ASSIGN_OR_RETURN(auto weight_map, read_weight_map(index_path));
  const fs::path dir = fs::path(index_path).parent_path();
  std::map<std::string, size_t> shard_index;  // shard file name -> position in shards_
  for (const auto& [name, shard] : weight_map) {
    auto it = shard_index.find(shard);
    if (it == shard_index.end()) {
      const std::string shard_path = (dir / shard).string();
      Result<SafetensorsFile> file = SafetensorsFile::open(shard_path);
      if (!file.is_ok()) {
        return Status(file.status().code(), fmt::format("{} (shard named by {})",
                                                        file.status().message(), index_path));
      }
      it = shard_index.emplace(shard, ckpt.shards_.size()).first;
      ckpt.shards_.push_back(std::move(file).value());
    }
    const SafetensorsFile& file = ckpt.shards_[it->second];
    if (!file.contains(name)) {
      return format_error(fmt::format("{}: maps '{}' to shard {}, which has no such tensor",
                                      index_path, name, file.path()));
    }
    ckpt.shard_of_[name] = it->second;
  }
  return ckpt;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(shard_of_.size());
  for (const auto& [name, shard] : shard_of_) out.push_back(name);
  return out;
}

const TensorInfo* Checkpoint::info(const std::string& name) const {
  auto it = shard_of_.find(name);
  return it == shard_of_.end() ? nullptr : shards_[it->second].info(name);
}

Result<Tensor> Checkpoint::get(const std::string& name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) return invalid_argument(fmt::format("checkpoint has no tensor named '{}'", name));
  return shards_[it->second].get(name);
}

}  // namespace veda
