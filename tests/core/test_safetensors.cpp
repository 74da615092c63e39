#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common/test_data.hpp"
#include "veda/safetensors.hpp"

namespace veda {
namespace {

namespace fs = std::filesystem;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xFF);
  return s;
}

// A file with the given header text and `data_bytes` random data bytes.
std::string raw_file(const std::string& dir, const std::string& name, const std::string& header,
                     size_t data_bytes) {
  std::mt19937 rng(uint32_t(data_bytes * 31 + header.size()));
  std::string data(data_bytes, '\0');
  for (char& c : data) c = char(rng());
  const std::string path = dir + "/" + name;
  write_bytes(path, u64_le(header.size()) + header + data);
  return path;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Opening must fail with a format error whose message names the file and mentions every `parts`.
void expect_open_fails(const std::string& path, std::vector<std::string> parts,
                       ErrorCode code = ErrorCode::kFormatError) {
  Result<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_FALSE(f.is_ok()) << path << " opened";
  EXPECT_EQ(f.status().code(), code) << f.status().to_string();
  const std::string& msg = f.status().message();
  EXPECT_TRUE(contains(msg, path)) << msg;
  for (const std::string& p : parts) EXPECT_TRUE(contains(msg, p)) << "'" << p << "' not in: " << msg;
}

void expect_same_bytes(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.dtype(), b.dtype());
  ASSERT_EQ(a.shape(), b.shape());
  ASSERT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0);
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::temp_dir(); }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string dir_;
};

TEST_F(SafetensorsTest, WriteReadRoundTrip) {
  std::vector<NamedTensor> tensors = {
      {"blocks.0.attn1.to_q.weight", test::random_tensor(DType::kBF16, {16, 24}, 1)},
      {"a_first", test::random_tensor(DType::kF32, {3, 5, 7}, 2)},
      {"odd_f16", test::random_tensor(DType::kF16, {1, 3}, 3)},  // 6 bytes: next one unaligned
      {"scalar", test::random_tensor(DType::kF32, {}, 4)},
      {"empty", Tensor::empty(DType::kF16, {0, 4})},
  };
  const std::map<std::string, std::string> meta = {{"grid", "[2, 3, 4]"}, {"note", "héllo \"x\""}};
  const std::string path = dir_ + "/model.safetensors";
  ASSERT_TRUE(write_safetensors(path, tensors, meta).is_ok());

  // Header padded with spaces to 8 bytes, so the data section starts aligned.
  const std::string bytes = read_bytes(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(bytes[8], '{');

  Result<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  EXPECT_EQ(file->path(), path);
  EXPECT_EQ(file->metadata(), meta);
  EXPECT_EQ(file->names(), (std::vector<std::string>{"a_first", "blocks.0.attn1.to_q.weight",
                                                      "empty", "odd_f16", "scalar"}));
  for (const NamedTensor& t : tensors) {
    ASSERT_TRUE(file->contains(t.name));
    const TensorInfo* info = file->info(t.name);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype_name, dtype_name(t.tensor.dtype()));
    EXPECT_EQ(info->shape, t.tensor.shape());
    EXPECT_EQ(info->end - info->begin, t.tensor.nbytes());
    Result<Tensor> got = file->get(t.name);
    ASSERT_TRUE(got.is_ok()) << got.status().to_string();
    expect_same_bytes(got.value(), t.tensor);
  }
  EXPECT_EQ(file->info("nope"), nullptr);
  Result<Tensor> missing = file->get("nope");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_TRUE(contains(missing.status().message(), "nope"));
}

// Views stay valid after the file object is gone (they keep the mapping alive), and writing
// through a view neither crashes nor changes the file.
TEST_F(SafetensorsTest, ViewsOutliveTheFileAndAreCopyOnWrite) {
  Tensor w = test::random_tensor(DType::kF32, {64, 33}, 5);
  const std::string path = dir_ + "/w.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"w", w}}).is_ok());
  Tensor view;
  {
    Result<SafetensorsFile> file = SafetensorsFile::open(path);
    ASSERT_TRUE(file.is_ok());
    Result<Tensor> got = file->get("w");
    ASSERT_TRUE(got.is_ok());
    view = got.value();
  }
  expect_same_bytes(view, w);
  view.data_as<float>()[0] += 1.0f;
  Result<SafetensorsFile> again = SafetensorsFile::open(path);
  ASSERT_TRUE(again.is_ok());
  expect_same_bytes(again->get("w").value(), w);
}

TEST_F(SafetensorsTest, OverwritesAnExistingFile) {
  const std::string path = dir_ + "/x.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"a", test::random_tensor(DType::kF32, {100}, 1)}}).is_ok());
  Tensor b = test::random_tensor(DType::kF16, {3}, 2);
  ASSERT_TRUE(write_safetensors(path, {{"b", b}}).is_ok());
  Result<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.is_ok());
  EXPECT_EQ(file->names(), std::vector<std::string>{"b"});
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);  // no temp left
}

TEST_F(SafetensorsTest, WriteRejectsBadInput) {
  Tensor t = test::random_tensor(DType::kF32, {2}, 1);
  EXPECT_FALSE(write_safetensors(dir_ + "/a.safetensors", {{"x", t}, {"x", t}}).is_ok());
  EXPECT_FALSE(write_safetensors(dir_ + "/b.safetensors", {{"", t}}).is_ok());
  EXPECT_FALSE(write_safetensors(dir_ + "/c.safetensors", {{"__metadata__", t}}).is_ok());
  Status no_dir = write_safetensors(dir_ + "/missing/dir/d.safetensors", {{"x", t}});
  EXPECT_EQ(no_dir.code(), ErrorCode::kIoError);
}

// Types valid in the format but not computed in by Veda: the file opens, get() says why not.
TEST_F(SafetensorsTest, UnsupportedDtypeOpensButGetFails) {
  const std::string path = raw_file(
      dir_, "ints.safetensors",
      R"({"ids":{"dtype":"I64","shape":[3],"data_offsets":[0,24]},)"
      R"("mask":{"dtype":"BOOL","shape":[2,2],"data_offsets":[24,28]},)"
      R"("f4":{"dtype":"F4","shape":[6],"data_offsets":[28,31]}})",
      31);
  Result<SafetensorsFile> file = SafetensorsFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  EXPECT_EQ(file->info("ids")->dtype_name, "I64");
  Result<Tensor> ids = file->get("ids");
  ASSERT_FALSE(ids.is_ok());
  EXPECT_EQ(ids.status().code(), ErrorCode::kUnsupported);
  EXPECT_TRUE(contains(ids.status().message(), "ids"));
  EXPECT_TRUE(contains(ids.status().message(), "I64"));
  EXPECT_TRUE(contains(ids.status().message(), "unsupported dtype"));
  EXPECT_FALSE(file->get("mask").is_ok());
}

TEST_F(SafetensorsTest, FileTooShortOrMissing) {
  write_bytes(dir_ + "/empty.safetensors", "");
  expect_open_fails(dir_ + "/empty.safetensors", {"shorter than"});
  write_bytes(dir_ + "/five.safetensors", std::string("\x05\x00\x00\x00\x00", 5));
  expect_open_fails(dir_ + "/five.safetensors", {"5 bytes"});
  expect_open_fails(dir_ + "/does_not_exist.safetensors", {"cannot open"}, ErrorCode::kIoError);
  expect_open_fails(dir_, {"not a regular file"}, ErrorCode::kIoError);
}

TEST_F(SafetensorsTest, BadHeaderLength) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  write_bytes(dir_ + "/beyond.safetensors", u64_le(header.size() + 100) + header + std::string(8, 'x'));
  expect_open_fails(dir_ + "/beyond.safetensors", {"header length", "exceeds"});
  write_bytes(dir_ + "/absurd.safetensors", u64_le(1ull << 40) + header);
  expect_open_fails(dir_ + "/absurd.safetensors", {"absurd"});
  write_bytes(dir_ + "/max.safetensors", u64_le(~0ull) + header);
  expect_open_fails(dir_ + "/max.safetensors", {"absurd"});
}

TEST_F(SafetensorsTest, TruncatedInHeaderAndInData) {
  const std::string path = dir_ + "/full.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"a", test::random_tensor(DType::kF32, {10, 10}, 1)},
                                       {"b", test::random_tensor(DType::kBF16, {7}, 2)}})
                  .is_ok());
  const std::string bytes = read_bytes(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint8_t(bytes[size_t(i)]);

  write_bytes(dir_ + "/cut_header.safetensors", bytes.substr(0, 8 + header_len / 2));
  expect_open_fails(dir_ + "/cut_header.safetensors", {"exceeds", "truncated"});
  write_bytes(dir_ + "/cut_data.safetensors", bytes.substr(0, bytes.size() - 3));
  expect_open_fails(dir_ + "/cut_data.safetensors", {"beyond the data section", "truncated"});

  // Every possible truncation fails cleanly.
  for (size_t len = 0; len < bytes.size(); ++len) {
    const std::string cut = dir_ + "/cut.safetensors";
    write_bytes(cut, bytes.substr(0, len));
    Result<SafetensorsFile> f = SafetensorsFile::open(cut);
    ASSERT_FALSE(f.is_ok()) << "opened a file cut at " << len << " of " << bytes.size();
    ASSERT_TRUE(contains(f.status().message(), cut)) << f.status().message();
  }
}

TEST_F(SafetensorsTest, InvalidJsonAndNonObjectHeader) {
  expect_open_fails(raw_file(dir_, "syntax.safetensors", R"({"a": {"dtype": "F32",)", 0),
                    {"not valid JSON"});
  expect_open_fails(raw_file(dir_, "garbage.safetensors", "\x01\x02\xff\xfe", 0), {"not valid JSON"});
  expect_open_fails(raw_file(dir_, "array.safetensors", "[1, 2, 3]", 0), {"array", "expected an object"});
  expect_open_fails(raw_file(dir_, "entry.safetensors", R"({"a": 5})", 0), {"'a'", "expected an object"});
}

TEST_F(SafetensorsTest, MissingEntryFields) {
  expect_open_fails(raw_file(dir_, "no_dtype.safetensors",
                             R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8),
                    {"'w'", "dtype"});
  expect_open_fails(raw_file(dir_, "no_shape.safetensors",
                             R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8),
                    {"'w'", "shape"});
  expect_open_fails(raw_file(dir_, "no_offsets.safetensors",
                             R"({"w":{"dtype":"F32","shape":[2]}})", 8),
                    {"'w'", "data_offsets"});
  expect_open_fails(raw_file(dir_, "dtype_number.safetensors",
                             R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", 8),
                    {"'w'", "dtype"});
}

TEST_F(SafetensorsTest, UnknownDtype) {
  expect_open_fails(raw_file(dir_, "f33.safetensors",
                             R"({"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8),
                    {"'w'", "unknown dtype", "F33"});
  // The spec's spelling is upper case.
  expect_open_fails(raw_file(dir_, "lower.safetensors",
                             R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8),
                    {"unknown dtype"});
}

TEST_F(SafetensorsTest, BadShapes) {
  expect_open_fails(raw_file(dir_, "neg.safetensors",
                             R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
                    {"'w'", "non-negative integer"});
  expect_open_fails(raw_file(dir_, "frac.safetensors",
                             R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,10]}})", 10),
                    {"'w'", "non-negative integer"});
  expect_open_fails(raw_file(dir_, "str.safetensors",
                             R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8),
                    {"'w'", "non-negative integer"});
  expect_open_fails(raw_file(dir_, "notarray.safetensors",
                             R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
                    {"'w'", "shape"});
  expect_open_fails(
      raw_file(dir_, "huge.safetensors",
               R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})", 8),
      {"'w'", "too many elements"});
}

TEST_F(SafetensorsTest, SizeMismatch) {
  expect_open_fails(raw_file(dir_, "size.safetensors",
                             R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 24),
                    {"'w'", "20 bytes", "24 bytes"});
  expect_open_fails(raw_file(dir_, "bf16.safetensors",
                             R"({"w":{"dtype":"BF16","shape":[4],"data_offsets":[0,16]}})", 16),
                    {"'w'", "needs 8 bytes"});
}

TEST_F(SafetensorsTest, OutOfRangeOffsets) {
  expect_open_fails(raw_file(dir_, "beyond.safetensors",
                             R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 16),
                    {"'w'", "beyond the data section"});
  expect_open_fails(raw_file(dir_, "reversed.safetensors",
                             R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 16),
                    {"'w'", "begin > end"});
  expect_open_fails(raw_file(dir_, "negative.safetensors",
                             R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 16),
                    {"'w'", "non-negative"});
  expect_open_fails(raw_file(dir_, "triple.safetensors",
                             R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}})", 16),
                    {"'w'", "data_offsets"});
}

TEST_F(SafetensorsTest, OverlappingOffsets) {
  expect_open_fails(raw_file(dir_, "overlap.safetensors",
                             R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                             R"("b":{"dtype":"F32","shape":[4],"data_offsets":[12,28]}})",
                             28),
                    {"'a'", "'b'", "overlap"});
  expect_open_fails(raw_file(dir_, "same.safetensors",
                             R"({"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                             8),
                    {"overlap"});
  // Empty tensors occupy no bytes and never overlap.
  const std::string ok = raw_file(dir_, "empty_ok.safetensors",
                                  R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                  R"("e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})",
                                  16);
  EXPECT_TRUE(SafetensorsFile::open(ok).is_ok());
}

TEST_F(SafetensorsTest, BadMetadata) {
  expect_open_fails(raw_file(dir_, "meta_array.safetensors", R"({"__metadata__":[1,2]})", 0),
                    {"__metadata__"});
  expect_open_fails(raw_file(dir_, "meta_value.safetensors",
                             R"({"__metadata__":{"step":15}})", 0),
                    {"__metadata__", "'step'", "expected a string"});
  const std::string ok = raw_file(dir_, "meta_ok.safetensors", R"({"__metadata__":{"k":"v"}})", 0);
  Result<SafetensorsFile> f = SafetensorsFile::open(ok);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->metadata().at("k"), "v");
  EXPECT_TRUE(f->names().empty());
}

// Random byte corruption of a valid header must never crash (it may or may not still parse).
TEST_F(SafetensorsTest, CorruptedHeadersNeverCrash) {
  const std::string path = dir_ + "/base.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"a", test::random_tensor(DType::kF32, {4, 4}, 1)},
                                       {"b", test::random_tensor(DType::kF16, {9}, 2)}},
                                {{"grid", "[1, 2, 3]"}})
                  .is_ok());
  const std::string bytes = read_bytes(path);
  std::mt19937 rng(1234);
  const std::string bad = dir_ + "/bad.safetensors";
  for (int trial = 0; trial < 400; ++trial) {
    std::string corrupt = bytes;
    const int flips = 1 + int(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      size_t pos = rng() % std::min<size_t>(corrupt.size(), 120);
      corrupt[pos] = char(rng());
    }
    write_bytes(bad, corrupt);
    Result<SafetensorsFile> file = SafetensorsFile::open(bad);
    if (!file.is_ok()) {
      ASSERT_FALSE(file.status().message().empty());
      continue;
    }
    for (const std::string& name : file->names()) {
      Result<Tensor> t = file->get(name);
      if (t.is_ok()) {
        ASSERT_LE(t->nbytes(), corrupt.size());
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------
// Checkpoints

class CheckpointTest : public SafetensorsTest {
 protected:
  // Two shards and a diffusers-style index naming all four tensors.
  void write_sharded(const std::string& dir) {
    a_ = test::random_tensor(DType::kBF16, {8, 4}, 11);
    b_ = test::random_tensor(DType::kF32, {5}, 12);
    c_ = test::random_tensor(DType::kF16, {2, 2, 3}, 13);
    d_ = test::random_tensor(DType::kBF16, {6}, 14);
    ASSERT_TRUE(write_safetensors(dir + "/model-00001-of-00002.safetensors",
                                  {{"blocks.0.a", a_}, {"blocks.0.b", b_}})
                    .is_ok());
    ASSERT_TRUE(write_safetensors(dir + "/model-00002-of-00002.safetensors",
                                  {{"blocks.1.c", c_}, {"scale_shift_table", d_}})
                    .is_ok());
    write_index(dir, {{"blocks.0.a", "model-00001-of-00002.safetensors"},
                      {"blocks.0.b", "model-00001-of-00002.safetensors"},
                      {"blocks.1.c", "model-00002-of-00002.safetensors"},
                      {"scale_shift_table", "model-00002-of-00002.safetensors"}});
  }
  static void write_index(const std::string& dir, const std::map<std::string, std::string>& map) {
    std::string entries;
    for (const auto& [name, shard] : map) {
      if (!entries.empty()) entries += ", ";
      entries += "\"" + name + "\": \"" + shard + "\"";
    }
    write_bytes(dir + "/" + kIndexName,
                R"({"metadata": {"total_size": 0}, "weight_map": {)" + entries + "}}");
  }
  static constexpr const char* kIndexName = "diffusion_pytorch_model.safetensors.index.json";
  Tensor a_, b_, c_, d_;
};

TEST_F(CheckpointTest, SingleFileAndDirectoryWithOneFile) {
  Tensor w = test::random_tensor(DType::kBF16, {3, 4}, 1);
  const std::string path = dir_ + "/diffusion_pytorch_model.safetensors";
  ASSERT_TRUE(write_safetensors(path, {{"w", w}, {"b", test::random_tensor(DType::kF32, {4}, 2)}}).is_ok());
  for (const std::string& p : {path, dir_}) {
    Result<Checkpoint> ckpt = Checkpoint::open(p);
    ASSERT_TRUE(ckpt.is_ok()) << ckpt.status().to_string();
    EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"b", "w"}));
    EXPECT_TRUE(ckpt->contains("w"));
    ASSERT_NE(ckpt->info("w"), nullptr);
    EXPECT_EQ(ckpt->info("w")->dtype_name, "BF16");
    expect_same_bytes(ckpt->get("w").value(), w);
    EXPECT_FALSE(ckpt->get("missing").is_ok());
    EXPECT_EQ(ckpt->info("missing"), nullptr);
  }
}

TEST_F(CheckpointTest, ShardedThroughIndex) {
  write_sharded(dir_);
  for (const std::string& p : {dir_, dir_ + "/" + kIndexName}) {
    Result<Checkpoint> ckpt = Checkpoint::open(p);
    ASSERT_TRUE(ckpt.is_ok()) << ckpt.status().to_string();
    EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"blocks.0.a", "blocks.0.b", "blocks.1.c",
                                                        "scale_shift_table"}));
    expect_same_bytes(ckpt->get("blocks.0.a").value(), a_);
    expect_same_bytes(ckpt->get("blocks.0.b").value(), b_);
    expect_same_bytes(ckpt->get("blocks.1.c").value(), c_);
    expect_same_bytes(ckpt->get("scale_shift_table").value(), d_);
    EXPECT_EQ(ckpt->info("blocks.1.c")->shape, (Shape{2, 2, 3}));
  }
}

TEST_F(CheckpointTest, IndexNamesTensorMissingFromShard) {
  write_sharded(dir_);
  write_index(dir_, {{"blocks.0.a", "model-00001-of-00002.safetensors"},
                     {"blocks.1.c", "model-00001-of-00002.safetensors"}});  // c is in shard 2
  Result<Checkpoint> ckpt = Checkpoint::open(dir_);
  ASSERT_FALSE(ckpt.is_ok());
  EXPECT_EQ(ckpt.status().code(), ErrorCode::kFormatError);
  EXPECT_TRUE(contains(ckpt.status().message(), "blocks.1.c")) << ckpt.status().message();
  EXPECT_TRUE(contains(ckpt.status().message(), "model-00001-of-00002")) << ckpt.status().message();
}

TEST_F(CheckpointTest, IndexNamesMissingShard) {
  write_sharded(dir_);
  write_index(dir_, {{"blocks.0.a", "model-00001-of-00002.safetensors"},
                     {"blocks.9.x", "model-00003-of-00002.safetensors"}});
  Result<Checkpoint> ckpt = Checkpoint::open(dir_);
  ASSERT_FALSE(ckpt.is_ok());
  EXPECT_EQ(ckpt.status().code(), ErrorCode::kIoError);
  EXPECT_TRUE(contains(ckpt.status().message(), "model-00003-of-00002.safetensors"))
      << ckpt.status().message();
  EXPECT_TRUE(contains(ckpt.status().message(), kIndexName)) << ckpt.status().message();
}

TEST_F(CheckpointTest, MalformedShardIsReported) {
  write_sharded(dir_);
  const std::string shard = dir_ + "/model-00002-of-00002.safetensors";
  const std::string bytes = read_bytes(shard);
  write_bytes(shard, bytes.substr(0, bytes.size() - 5));
  Result<Checkpoint> ckpt = Checkpoint::open(dir_);
  ASSERT_FALSE(ckpt.is_ok());
  EXPECT_TRUE(contains(ckpt.status().message(), shard)) << ckpt.status().message();
}

TEST_F(CheckpointTest, MalformedIndex) {
  write_sharded(dir_);
  write_bytes(dir_ + "/" + kIndexName, R"({"weight_map": {"a": )");
  Result<Checkpoint> syntax = Checkpoint::open(dir_);
  ASSERT_FALSE(syntax.is_ok());
  EXPECT_TRUE(contains(syntax.status().message(), "not valid JSON")) << syntax.status().message();

  write_bytes(dir_ + "/" + kIndexName, R"({"metadata": {}})");
  Result<Checkpoint> no_map = Checkpoint::open(dir_);
  ASSERT_FALSE(no_map.is_ok());
  EXPECT_TRUE(contains(no_map.status().message(), "weight_map")) << no_map.status().message();

  write_bytes(dir_ + "/" + kIndexName, R"({"weight_map": {"a": 3}})");
  Result<Checkpoint> bad_value = Checkpoint::open(dir_);
  ASSERT_FALSE(bad_value.is_ok());
  EXPECT_TRUE(contains(bad_value.status().message(), "'a'")) << bad_value.status().message();
}

TEST_F(CheckpointTest, AmbiguousOrEmptyDirectories) {
  Result<Checkpoint> empty = Checkpoint::open(dir_);
  ASSERT_FALSE(empty.is_ok());
  EXPECT_TRUE(contains(empty.status().message(), "no .safetensors")) << empty.status().message();

  Tensor t = test::random_tensor(DType::kF32, {2}, 1);
  ASSERT_TRUE(write_safetensors(dir_ + "/one.safetensors", {{"x", t}}).is_ok());
  ASSERT_TRUE(write_safetensors(dir_ + "/two.safetensors", {{"y", t}}).is_ok());
  Result<Checkpoint> two = Checkpoint::open(dir_);
  ASSERT_FALSE(two.is_ok());
  EXPECT_TRUE(contains(two.status().message(), "index")) << two.status().message();

  Result<Checkpoint> missing = Checkpoint::open(dir_ + "/nowhere");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), ErrorCode::kIoError);
}

}  // namespace
}  // namespace veda
