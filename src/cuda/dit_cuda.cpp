// Host side of the CUDA Wan DiT forward (include/veda/dit_cuda.hpp): weights upload (bf16),
// cuBLASLt linears with a bias epilogue, the block sequence of the CPU forward
// (src/dit/wan_model.cpp) on device buffers, per-part CUDA-event timing. Kernels live in
// dit_kernels.cu. Everything runs on the default stream; every CUDA / cuBLASLt call is checked.
//
// Precision: weights and activations bf16, GEMMs accumulate in f32; the residual stream, the
// conditioning vectors (temb, modulation) and the final projection are f32.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda/cuda_check.hpp"
#include "dit/wan_ops.hpp"
#include "cuda/dit_launch.hpp"
#include "cuda/producer_tables.hpp"
#include "veda/attention.hpp"
#include "veda/cuda.hpp"
#include "veda/cuda_selection.hpp"
#include "veda/dit_cuda.hpp"
#include "veda/safetensors.hpp"

namespace veda {
namespace {


// nn.Linear on the device: weight bf16 [out, in], bias [out] in the output's dtype.
struct DevLinear {
  DeviceBuffer weight, bias;
  int64_t in = 0, out = 0;
  bool f32_out = false;
};
struct DevAttention {
  DevLinear q, k, v, o;
  DeviceBuffer norm_q, norm_k;  // f32 [dim]
};
struct DevBlock {
  DevAttention attn1, attn2;
  DeviceBuffer norm2_weight, norm2_bias;  // f32 [dim]
  DevLinear ffn_in, ffn_out;
  DeviceBuffer table;  // f32 [6 * dim]
};
struct DevWeights {
  DevLinear patch, time1, time2, time_proj, text1, text2, proj_out;
  std::vector<DevBlock> blocks;
  DeviceBuffer out_table;  // f32 [2 * dim]
  size_t bytes = 0;
};

// Fills a weight set either from a checkpoint or with random values.
class WeightSource {
 public:
  explicit WeightSource(const Checkpoint* ckpt, uint64_t seed) : ckpt_(ckpt), seed_(seed) {}

  // `shape` is the checkpoint shape; `lo`, `hi` the random range.
  Result<DeviceBuffer> tensor(const std::string& name, const Shape& shape, DType dtype, float lo,
                              float hi, size_t* bytes) {
    const int64_t n = shape_numel(shape);
    VEDA_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(size_t(n) * dtype_size(dtype)));
    *bytes += buf.size();
    if (ckpt_ == nullptr) {
      VEDA_RETURN_IF_ERROR(fill_device_uniform(buf.data(), dtype, size_t(n), seed_++, lo, hi));
      return Result<DeviceBuffer>(std::move(buf));
    }
    const TensorInfo* info = ckpt_->info(name);
    if (info == nullptr) {
      return format_error(fmt::format("missing tensor '{}' (expected shape {})", name,
                                      shape_to_string(shape)));
    }
    if (info->shape != shape) {
      return format_error(fmt::format("tensor '{}' has shape {}, expected {} for this config", name,
                                      shape_to_string(info->shape), shape_to_string(shape)));
    }
    VEDA_ASSIGN_OR_RETURN(Tensor t, ckpt_->get(name));
    Tensor f32 = t.to(DType::kF32);
    if (dtype == DType::kF32) {
      VEDA_RETURN_IF_ERROR(copy_to_device(buf.data(), f32.data(), buf.size()));
    } else {
      std::vector<uint16_t> host(static_cast<size_t>(n));
      convert_from_f32(f32.data_as<float>(), host.data(), dtype, size_t(n));
      VEDA_RETURN_IF_ERROR(copy_to_device(buf.data(), host.data(), buf.size()));
    }
    return Result<DeviceBuffer>(std::move(buf));
  }

  Result<DevLinear> linear(const std::string& prefix, int64_t out, int64_t in, bool f32_out,
                           size_t* bytes, const Shape& weight_shape = {}) {
    DevLinear l;
    l.in = in;
    l.out = out;
    l.f32_out = f32_out;
    const float a = 1.0f / std::sqrt(float(in));
    VEDA_ASSIGN_OR_RETURN(l.weight, tensor(prefix + ".weight",
                                           weight_shape.empty() ? Shape{out, in} : weight_shape,
                                           DType::kBF16, -a, a, bytes));
    VEDA_ASSIGN_OR_RETURN(l.bias, tensor(prefix + ".bias", {out},
                                         f32_out ? DType::kF32 : DType::kBF16, -0.02f, 0.02f, bytes));
    return Result<DevLinear>(std::move(l));
  }

 private:
  const Checkpoint* ckpt_;
  uint64_t seed_;
};

Result<DevWeights> make_weights(const WanConfig& c, int layers, const Checkpoint* ckpt,
                                uint64_t seed) {
  WeightSource src(ckpt, seed);
  DevWeights w;
  size_t* bytes = &w.bytes;
  const int64_t dim = c.dim();
  VEDA_ASSIGN_OR_RETURN(w.patch, src.linear("patch_embedding", dim,
                                            int64_t(c.in_channels) * c.patch_volume(), true, bytes,
                                            {dim, c.in_channels, c.patch_t, c.patch_h, c.patch_w}));
  VEDA_ASSIGN_OR_RETURN(w.time1, src.linear("condition_embedder.time_embedder.linear_1", dim,
                                            c.freq_dim, true, bytes));
  VEDA_ASSIGN_OR_RETURN(w.time2, src.linear("condition_embedder.time_embedder.linear_2", dim, dim,
                                            true, bytes));
  VEDA_ASSIGN_OR_RETURN(w.time_proj, src.linear("condition_embedder.time_proj", 6 * dim, dim, true,
                                                bytes));
  VEDA_ASSIGN_OR_RETURN(w.text1, src.linear("condition_embedder.text_embedder.linear_1", dim,
                                            c.text_dim, false, bytes));
  VEDA_ASSIGN_OR_RETURN(w.text2, src.linear("condition_embedder.text_embedder.linear_2", dim, dim,
                                            false, bytes));
  for (int i = 0; i < layers; ++i) {
    const std::string b = fmt::format("blocks.{}.", i);
    DevBlock blk;
    for (int which = 0; which < 2; ++which) {
      const std::string a = b + (which == 0 ? "attn1" : "attn2");
      DevAttention& at = which == 0 ? blk.attn1 : blk.attn2;
      VEDA_ASSIGN_OR_RETURN(at.q, src.linear(a + ".to_q", dim, dim, false, bytes));
      VEDA_ASSIGN_OR_RETURN(at.k, src.linear(a + ".to_k", dim, dim, false, bytes));
      VEDA_ASSIGN_OR_RETURN(at.v, src.linear(a + ".to_v", dim, dim, false, bytes));
      VEDA_ASSIGN_OR_RETURN(at.o, src.linear(a + ".to_out.0", dim, dim, false, bytes));
      VEDA_ASSIGN_OR_RETURN(at.norm_q, src.tensor(a + ".norm_q.weight", {dim}, DType::kF32, 0.9f,
                                                  1.1f, bytes));
      VEDA_ASSIGN_OR_RETURN(at.norm_k, src.tensor(a + ".norm_k.weight", {dim}, DType::kF32, 0.9f,
                                                  1.1f, bytes));
    }
    if (c.cross_attn_norm) {
      VEDA_ASSIGN_OR_RETURN(blk.norm2_weight, src.tensor(b + "norm2.weight", {dim}, DType::kF32,
                                                         0.9f, 1.1f, bytes));
      VEDA_ASSIGN_OR_RETURN(blk.norm2_bias, src.tensor(b + "norm2.bias", {dim}, DType::kF32,
                                                       -0.02f, 0.02f, bytes));
    }
    VEDA_ASSIGN_OR_RETURN(blk.ffn_in, src.linear(b + "ffn.net.0.proj", c.ffn_dim, dim, false, bytes));
    VEDA_ASSIGN_OR_RETURN(blk.ffn_out, src.linear(b + "ffn.net.2", dim, c.ffn_dim, false, bytes));
    VEDA_ASSIGN_OR_RETURN(blk.table, src.tensor(b + "scale_shift_table", {1, 6, dim}, DType::kF32,
                                                -0.1f, 0.1f, bytes));
    w.blocks.push_back(std::move(blk));
  }
  VEDA_ASSIGN_OR_RETURN(w.out_table, src.tensor("scale_shift_table", {1, 2, dim}, DType::kF32,
                                                -0.1f, 0.1f, bytes));
  VEDA_ASSIGN_OR_RETURN(w.proj_out, src.linear("proj_out", int64_t(c.out_channels) * c.patch_volume(),
                                               dim, true, bytes));
  VEDA_CUDA_CHECK(cudaDeviceSynchronize());
  return Result<DevWeights>(std::move(w));
}

// cuBLASLt y[rows, out] = x[rows, in] W^T + b: column-major D[out x rows] = op(W)[out x in] *
// X[in x rows] with W viewed as [in x out] (ld in) and transposed, bias epilogue.
class GemmRunner {
 public:
  GemmRunner() = default;
  ~GemmRunner() {
    for (auto& [key, plan] : plans_) plan.destroy();
    if (lt_) cublasLtDestroy(lt_);
  }
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  Status init() {
    VEDA_CUBLAS_CHECK(cublasLtCreate(&lt_));
    VEDA_ASSIGN_OR_RETURN(workspace_, DeviceBuffer::allocate(kWorkspace));
    return Status::ok();
  }

  Status linear(const DevLinear& l, const void* x, int64_t rows, void* y, cudaStream_t stream) {
    if (rows <= 0) return Status::ok();
    const auto key = std::make_tuple(l.out, rows, l.in, l.f32_out);
    auto it = plans_.find(key);
    if (it == plans_.end()) {
      Plan plan;
      Status st = make_plan(l, rows, &plan);
      if (!st.is_ok()) {
        plan.destroy();
        return st;
      }
      it = plans_.emplace(key, plan).first;
    }
    Plan& p = it->second;
    const void* bias = l.bias.data();
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                    sizeof(bias)));
    const float alpha = 1.f, beta = 0.f;
    VEDA_CUBLAS_CHECK(cublasLtMatmul(lt_, p.op, &alpha, l.weight.data(), p.a, x, p.b, &beta, y, p.d,
                                    y, p.d, &p.algo, workspace_.data(), kWorkspace, stream));
    return Status::ok();
  }

 private:
  static constexpr size_t kWorkspace = 32u << 20;
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    void destroy() {
      if (a) cublasLtMatrixLayoutDestroy(a);
      if (b) cublasLtMatrixLayoutDestroy(b);
      if (d) cublasLtMatrixLayoutDestroy(d);
      if (op) cublasLtMatmulDescDestroy(op);
      a = b = d = nullptr;
      op = nullptr;
    }
  };

  Status make_plan(const DevLinear& l, int64_t rows, Plan* p) {
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    const void* bias = l.bias.data();
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                    sizeof(bias)));
    const cudaDataType_t out_type = l.f32_out ? CUDA_R_32F : CUDA_R_16BF;
    VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, uint64_t(l.in), uint64_t(l.out), l.in));
    VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, uint64_t(l.in), uint64_t(rows), l.in));
    VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->d, out_type, uint64_t(l.out), uint64_t(rows), l.out));
    cublasLtMatmulPreference_t pref = nullptr;
    VEDA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = kWorkspace;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    cublasLtMatmulHeuristicResult_t heur{};
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS) {
      st = cublasLtMatmulAlgoGetHeuristic(lt_, p->op, p->a, p->b, p->d, p->d, pref, 1, &heur, &found);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    VEDA_CUBLAS_CHECK(st);
    if (found == 0) {
      return unsupported(fmt::format("cuBLASLt has no algorithm for the linear [{} x {}] x [{} x {}]^T",
                                     rows, l.in, l.out, l.in));
    }
    p->algo = heur.algo;
    return Status::ok();
  }

  cublasLtHandle_t lt_ = nullptr;
  DeviceBuffer workspace_;
  std::map<std::tuple<int64_t, int64_t, int64_t, bool>, Plan> plans_;
};

enum Part { kSelf = 0, kCross = 1, kGemm = 2, kOther = 3 };

// CUDA events at every part boundary; the interval after a mark belongs to that mark's part.
class PartTimer {
 public:
  ~PartTimer() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  Status start(bool per_part) {
    per_part_ = per_part;
    used_ = 0;
    parts_.clear();
    return record(kOther);
  }
  Status mark(Part part) {
    if (!per_part_) return Status::ok();
    return record(part);
  }
  // Records the final event, synchronises and sums the intervals.
  Status finish(WanCudaTimings* t) {
    VEDA_RETURN_IF_ERROR(record(kOther));
    VEDA_CUDA_CHECK(cudaEventSynchronize(events_[used_ - 1]));
    double sums[4] = {0, 0, 0, 0};
    for (size_t i = 0; i + 1 < used_; ++i) {
      float ms = 0;
      VEDA_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
      sums[parts_[i]] += ms;
    }
    float total = 0;
    VEDA_CUDA_CHECK(cudaEventElapsedTime(&total, events_[0], events_[used_ - 1]));
    if (t) {
      t->total_ms = total;
      if (per_part_) {
        t->self_attention_ms = sums[kSelf];
        t->cross_attention_ms = sums[kCross];
        t->gemm_ms = sums[kGemm];
        t->other_ms = sums[kOther];
      }
    }
    return Status::ok();
  }

 private:
  Status record(Part part) {
    if (used_ == events_.size()) {
      cudaEvent_t e = nullptr;
      VEDA_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    VEDA_CUDA_CHECK(cudaEventRecord(events_[used_], nullptr));
    parts_.push_back(part);
    ++used_;
    return Status::ok();
  }
  bool per_part_ = true;
  std::vector<cudaEvent_t> events_;
  std::vector<int> parts_;
  size_t used_ = 0;
};

// Wan's 3D RoPE table (the CPU path's) interleaved for the kernel: [tokens][head_dim / 2] (cos, sin).
std::vector<float> rope_table(Grid grid, int head_dim) {
  const wan_ops::RopeTable rope = wan_ops::make_rope_table(grid, head_dim);
  std::vector<float> table(rope.cos.size() * 2);
  for (size_t i = 0; i < rope.cos.size(); ++i) {
    table[2 * i] = rope.cos[i];
    table[2 * i + 1] = rope.sin[i];
  }
  return table;
}

Result<DeviceBuffer> zeros(size_t bytes) {
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(bytes));
  VEDA_CUDA_CHECK(cudaMemset(buf.data(), 0, bytes));
  return Result<DeviceBuffer>(std::move(buf));
}

}  // namespace

// The self-attention tiling of the layers that share it: the default (one tile shape, --score)
// or a profile layer's (per-head shapes, densities, estimator).
struct AttentionPlan {
  HeadLayouts layouts;
  int64_t padded = 0;  // tile order rows per (b, h)
  int max_tiles = 0, max_k = 0;
  DeviceBuffer tile_valid;
  ProducerTables producer;  // token -> slot maps; the heads whose statistics the producer gives
  GpuTileStatsInput given;  // veda mode: the producer's statistics in ForwardBuffers::tile_stats
  GpuSelector selector;     // veda mode
};

// Device buffers for one (batch, grid, text length, tile shape, attention mode, profile).
struct ForwardBuffers {
  int64_t batch = 0, text_tokens = 0;
  Grid grid;
  TileShape shape;
  SelfAttentionMode mode = SelfAttentionMode::kDense;
  double density = 0;
  ScoreMethod score = ScoreMethod::kStats;
  const Profile* profile = nullptr;

  int64_t tokens = 0, rows = 0;
  int64_t cross_padded = 0;                  // ceil(tokens / 64) * 64
  bool cross_tiled = false;                  // cross-attention through attention_cuda
  DeviceBuffer x, patches, hidden, norm, q, k, v, attn, proj, ffn;
  DeviceBuffer text_in, text_hidden, context, ctx_k, ctx_v;
  DeviceBuffer sinusoid, time_h, time_hb, temb, temb_act, time_mod, modulation, out_mod;
  DeviceBuffer projected, out;
  // Tile-order and mask buffers, sized for the largest plan.
  DeviceBuffer q_tiled, k_tiled, v_tiled, o_tiled;
  DeviceBuffer rope, mask_counts, mask_indices;
  DeviceBuffer cross_valid, cross_counts, cross_indices;
  DeviceBuffer capture;  // q, k, v head-major bf16 of a captured layer (allocated on first use)
  // veda mode: q mean/max/min, k mean/max/min [B, H, tiles, D] f32 (q max / min only if a plan
  // reads them)
  DeviceBuffer tile_stats[6];
  int cross_tiles = 0, cross_k_tiles = 0;
  std::vector<AttentionPlan> plans;
  std::vector<int> layer_plan;  // [layer] -> index into plans
};

struct WanCudaModel::Impl {
  WanConfig config;
  int layers = 0;
  DevWeights weights;
  GemmRunner gemm;
  PartTimer timer;
  std::unique_ptr<ForwardBuffers> buffers;

  Status prepare(int64_t batch, Grid grid, int64_t text_tokens, const WanCudaOptions& o);
  Status self_attention(ForwardBuffers& fb, const DevBlock& blk, int layer);
  Status capture(ForwardBuffers& fb, const DevBlock& blk, int layer, const WanCudaOptions& o);
  Status run(const std::vector<float>& timesteps, const WanCudaOptions& o, WanCudaTimings* t);
};

namespace {

Status check_config(const WanConfig& c) {
  if (c.head_dim != 64 && c.head_dim != 128)
    return unsupported(fmt::format("CUDA DiT: head_dim {} (64 and 128 only)", c.head_dim));
  if (c.dim() % 8 != 0 || c.ffn_dim % 8 != 0 || c.text_dim % 8 != 0)
    return unsupported("CUDA DiT: dim, ffn_dim and text_dim must be multiples of 8");
  if (c.dim() / 8 > dit_cuda::kTileProducerMaxThreads)
    return unsupported(fmt::format("CUDA DiT: dim {} is wider than the q/k/v producer's {}",
                                   c.dim(), 8 * dit_cuda::kTileProducerMaxThreads));
  if (!cuda_device_available()) return Status(ErrorCode::kCudaError, "CUDA DiT: no CUDA device");
  return Status::ok();
}

// The tiling of `per_head` shapes; with `selection` (veda mode) the selector scoring with `so`.
Result<AttentionPlan> make_attention_plan(Grid grid, const std::vector<TileShape>& per_head,
                                          const SelectionConfig* selection,
                                          const GpuSelectorOptions& so) {
  AttentionPlan plan;
  VEDA_ASSIGN_OR_RETURN(plan.layouts, HeadLayouts::make(grid, 0, per_head));
  const HeadLayouts& lay = plan.layouts;
  plan.padded = lay.padded_tokens();
  plan.max_tiles = lay.max_tiles();
  VEDA_ASSIGN_OR_RETURN(plan.producer, ProducerTables::make(lay));
  VEDA_ASSIGN_OR_RETURN(plan.tile_valid, upload_to_device(lay.valid_table()));
  if (selection) {
    VEDA_ASSIGN_OR_RETURN(plan.selector, GpuSelector::make(lay, *selection, so));
    plan.max_k = plan.selector.max_k();
  }
  return Result<AttentionPlan>(std::move(plan));
}

}  // namespace

Result<DeviceMemoryUse> cuda_device_memory_use() {
  size_t free_bytes = 0, total = 0;
  VEDA_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  return DeviceMemoryUse{total - free_bytes, total};
}

WanCudaModel::WanCudaModel() = default;
WanCudaModel::~WanCudaModel() = default;
WanCudaModel::WanCudaModel(WanCudaModel&&) noexcept = default;
WanCudaModel& WanCudaModel::operator=(WanCudaModel&&) noexcept = default;

const WanConfig& WanCudaModel::config() const {
  static const WanConfig kEmpty;
  return impl_ ? impl_->config : kEmpty;
}
int WanCudaModel::layers() const { return impl_ ? impl_->layers : 0; }
size_t WanCudaModel::weight_bytes() const { return impl_ ? impl_->weights.bytes : 0; }

Result<WanCudaModel> WanCudaModel::load(const WanConfig& config,
                                        const std::string& checkpoint_path) {
  VEDA_RETURN_IF_ERROR(check_config(config));
  VEDA_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::open(checkpoint_path));
  WanCudaModel model;
  model.impl_ = std::make_unique<Impl>();
  model.impl_->config = config;
  model.impl_->layers = config.num_layers;
  Result<DevWeights> w = make_weights(config, config.num_layers, &ckpt, 0);
  if (!w.is_ok()) {
    return Status(w.status().code(), fmt::format("{}: {}", checkpoint_path, w.status().message()));
  }
  model.impl_->weights = std::move(w).value();
  VEDA_RETURN_IF_ERROR(model.impl_->gemm.init());
  return Result<WanCudaModel>(std::move(model));
}

Result<WanCudaModel> WanCudaModel::random(const WanConfig& config, uint64_t seed, int layers) {
  VEDA_RETURN_IF_ERROR(check_config(config));
  if (layers < 0 || layers > config.num_layers) layers = config.num_layers;
  WanCudaModel model;
  model.impl_ = std::make_unique<Impl>();
  model.impl_->config = config;
  model.impl_->layers = layers;
  VEDA_ASSIGN_OR_RETURN(model.impl_->weights, make_weights(config, layers, nullptr, seed));
  VEDA_RETURN_IF_ERROR(model.impl_->gemm.init());
  return Result<WanCudaModel>(std::move(model));
}

Status WanCudaModel::Impl::prepare(int64_t batch, Grid grid, int64_t text_tokens,
                                   const WanCudaOptions& o) {
  ForwardBuffers* cur = buffers.get();
  if (cur && cur->batch == batch && cur->grid == grid && cur->text_tokens == text_tokens &&
      cur->mode == o.attention &&
      (o.attention == SelfAttentionMode::kDense ||  // dense: token order, no tile shape
       (cur->shape == o.tile_shape && cur->density == o.density && cur->score == o.score &&
        cur->profile == o.profile.get()))) {
    return Status::ok();
  }
  buffers.reset();  // free the old set first (memory)
  auto fb = std::make_unique<ForwardBuffers>();
  const WanConfig& c = config;
  const int64_t dim = c.dim(), H = c.num_heads, D = c.head_dim;
  fb->batch = batch;
  fb->grid = grid;
  fb->text_tokens = text_tokens;
  fb->shape = o.tile_shape;
  fb->mode = o.attention;
  fb->density = o.density;
  fb->score = o.score;
  fb->profile = o.profile.get();
  fb->tokens = grid.tokens();
  fb->rows = batch * fb->tokens;
  const int64_t rows = fb->rows, L = text_tokens;
  fb->cross_padded = (fb->tokens + 63) / 64 * 64;
  fb->cross_tiled = L % 64 == 0 && fb->tokens >= L;

  // Self-attention plans: the default for every layer, then one per profile layer (veda mode).
  const bool veda = o.attention == SelfAttentionMode::kVeda;
  GpuSelectorOptions so;
  so.scale = 1.0f / std::sqrt(float(D));
  so.check_numerics = false;
  SelectionConfig sel;
  sel.density = o.density;
  if (veda) {
    if (o.score != ScoreMethod::kStats && o.score != ScoreMethod::kMean)
      return unsupported("CUDA DiT: veda mode scores with 'stats' or 'mean' only");
    so.method = o.score == ScoreMethod::kMean ? GpuScoreMethod::kMean : GpuScoreMethod::kStats;
  }
  // Dense mode: tokens in their own order (kTokenBlock), veda mode: tiles of o.tile_shape.
  VEDA_ASSIGN_OR_RETURN(const Grid token_grid, token_order_grid(grid));
  VEDA_ASSIGN_OR_RETURN(AttentionPlan base,
                        make_attention_plan(veda ? grid : token_grid,
                                            std::vector<TileShape>(size_t(H), veda ? o.tile_shape
                                                                                   : kTokenBlock),
                                            veda ? &sel : nullptr, so));
  fb->plans.push_back(std::move(base));
  fb->layer_plan.assign(size_t(layers), 0);
  if (veda && o.profile) {
    for (const LayerProfile& lp : o.profile->layers) {
      if (lp.layer < 0 || lp.layer >= layers) continue;  // e.g. captures without a layer
      VEDA_ASSIGN_OR_RETURN(const LayerProfile* checked, o.profile->layer_for(lp.layer, int(H)));
      SelectionConfig layer_sel;
      GpuSelectorOptions layer_so =
          gpu_selector_options_from_profile(*o.profile, *checked, o.density, so.scale, &layer_sel);
      layer_so.check_numerics = false;
      std::vector<TileShape> shapes;
      for (const HeadProfile& h : checked->heads) shapes.push_back(h.tile);
      Result<AttentionPlan> plan = make_attention_plan(grid, shapes, &layer_sel, layer_so);
      if (!plan.is_ok()) {
        return Status(plan.status().code(),
                      fmt::format("profile layer {}: {}", lp.layer, plan.status().message()));
      }
      fb->layer_plan[size_t(lp.layer)] = int(fb->plans.size());
      fb->plans.push_back(std::move(plan).value());
    }
  }
  int64_t padded = 0, mask_rows = 0, mask_width = 1;
  for (const AttentionPlan& plan : fb->plans) {
    padded = std::max(padded, plan.padded);
    mask_rows = std::max<int64_t>(mask_rows, plan.max_tiles);
    mask_width = std::max(mask_width, int64_t(plan.max_k));
  }

  auto alloc = [](DeviceBuffer& b, size_t bytes) -> Status {
    VEDA_ASSIGN_OR_RETURN(b, DeviceBuffer::allocate(bytes));
    return Status::ok();
  };
  const size_t bf = 2, f4 = 4;
  const int64_t pf = int64_t(c.in_channels) * c.patch_volume();
  const int64_t of = int64_t(c.out_channels) * c.patch_volume();
  const int64_t slack = 64;  // rows past the end that the cross-attention kernel may read
  VEDA_RETURN_IF_ERROR(alloc(fb->x, size_t(rows * pf) * f4));
  VEDA_RETURN_IF_ERROR(alloc(fb->patches, size_t(rows * pf) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->hidden, size_t(rows * dim) * f4));
  VEDA_RETURN_IF_ERROR(alloc(fb->norm, size_t(rows * dim) * bf));
  VEDA_ASSIGN_OR_RETURN(fb->q, zeros(size_t((rows + slack) * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->k, size_t(rows * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->v, size_t(rows * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->attn, size_t(std::max(rows, batch * fb->cross_padded) * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->proj, size_t(rows * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->ffn, size_t(rows * c.ffn_dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->text_in, size_t(batch * L * c.text_dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->text_hidden, size_t(batch * L * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->context, size_t(batch * L * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->ctx_k, size_t(batch * L * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->ctx_v, size_t(batch * L * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->sinusoid, size_t(batch * c.freq_dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->time_h, size_t(batch * dim) * f4));
  VEDA_RETURN_IF_ERROR(alloc(fb->time_hb, size_t(batch * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->temb, size_t(batch * dim) * f4));
  VEDA_RETURN_IF_ERROR(alloc(fb->temb_act, size_t(batch * dim) * bf));
  VEDA_RETURN_IF_ERROR(alloc(fb->time_mod, size_t(batch * 6 * dim) * f4));
  VEDA_RETURN_IF_ERROR(alloc(fb->modulation, size_t(batch * 6 * dim) * f4));
  VEDA_RETURN_IF_ERROR(alloc(fb->out_mod, size_t(batch * 2 * dim) * f4));
  VEDA_RETURN_IF_ERROR(alloc(fb->projected, size_t(rows * of) * f4));
  VEDA_RETURN_IF_ERROR(alloc(fb->out, size_t(rows * of) * f4));
  const size_t tiled_bytes = size_t(batch * H * padded * D) * bf;
  VEDA_ASSIGN_OR_RETURN(fb->q_tiled, zeros(tiled_bytes));
  VEDA_ASSIGN_OR_RETURN(fb->k_tiled, zeros(tiled_bytes));
  VEDA_ASSIGN_OR_RETURN(fb->v_tiled, zeros(tiled_bytes));
  VEDA_ASSIGN_OR_RETURN(fb->o_tiled, zeros(tiled_bytes));
  const std::vector<float> rope = rope_table(grid, int(D));
  VEDA_ASSIGN_OR_RETURN(fb->rope, upload_to_device(rope));
  if (veda) {
    bool query_extrema = false;
    for (const AttentionPlan& plan : fb->plans)
      query_extrema |= plan.selector.reads_query_extrema();
    float* stats[6];
    for (int i = 0; i < 6; ++i) {
      if (GpuTileStatsInput::is_read(i, query_extrema))
        VEDA_RETURN_IF_ERROR(alloc(fb->tile_stats[i], size_t(batch * H * mask_rows * D) * f4));
      stats[i] = fb->tile_stats[i].as<float>();
    }
    for (AttentionPlan& plan : fb->plans)
      plan.given = plan.producer.given(stats, plan.selector.reads_query_extrema());
    VEDA_RETURN_IF_ERROR(alloc(fb->mask_counts, size_t(batch * H * mask_rows) * 4));
    VEDA_RETURN_IF_ERROR(alloc(fb->mask_indices, size_t(batch * H * mask_rows * mask_width) * 4));
  }

  if (fb->cross_tiled) {
    // Query tiles = 64 consecutive video tokens; key tiles 0..L/64-1 of the text (all full,
    // since tokens >= L); every query tile selects every key tile.
    fb->cross_tiles = int(fb->cross_padded / 64);
    fb->cross_k_tiles = int(L / 64);
    std::vector<int32_t> valid(size_t(H * fb->cross_tiles));
    for (int64_t h = 0; h < H; ++h)
      for (int t = 0; t < fb->cross_tiles; ++t)
        valid[size_t(h * fb->cross_tiles + t)] = int32_t(std::min<int64_t>(64, fb->tokens - 64 * t));
    std::vector<int32_t> counts(size_t(batch * H * fb->cross_tiles), fb->cross_k_tiles);
    std::vector<int32_t> indices(counts.size() * size_t(fb->cross_k_tiles));
    for (size_t i = 0; i < indices.size(); ++i) indices[i] = int32_t(i % fb->cross_k_tiles);
    VEDA_ASSIGN_OR_RETURN(fb->cross_valid, upload_to_device(valid));
    VEDA_ASSIGN_OR_RETURN(fb->cross_counts, upload_to_device(counts));
    VEDA_ASSIGN_OR_RETURN(fb->cross_indices, upload_to_device(indices));
  }
  VEDA_CUDA_CHECK(cudaDeviceSynchronize());
  buffers = std::move(fb);
  return Status::ok();
}

Status WanCudaModel::Impl::self_attention(ForwardBuffers& fb, const DevBlock& blk, int layer) {
  const WanConfig& c = config;
  AttentionPlan& plan = fb.plans[size_t(fb.layer_plan[size_t(layer)])];
  const int H = c.num_heads, D = c.head_dim;
  const bool veda = fb.mode == SelfAttentionMode::kVeda;
  // RMSNorm across heads + RoPE of q and k, and v, written straight to the plan's layout in one
  // launch; padding slots hold zeros, or another plan's finite values (profile layers share the
  // buffers), and the kernels only need them finite. In veda mode the same pass computes the
  // tile statistics the selector scores from (for the heads of the reference layout).
  float* stats[6];
  for (int i = 0; i < 6; ++i) stats[i] = fb.tile_stats[i].as<float>();  // null in dense mode
  dit_cuda::TileProducerParams tp{};
  tp.t[0] = {fb.q.data(), fb.q_tiled.data(), blk.attn1.norm_q.as<float>(), true};
  tp.t[1] = {fb.k.data(), fb.k_tiled.data(), blk.attn1.norm_k.as<float>(), true};
  tp.t[2] = {fb.v.data(), fb.v_tiled.data(), nullptr, false};
  tp.tensors = 3;
  plan.producer.set_layout(tp);
  ProducerTables::set_statistics(tp, veda ? stats : nullptr,
                                 plan.selector.reads_query_extrema());
  tp.head_dim = D, tp.eps = c.eps;
  tp.rope = reinterpret_cast<const float2*>(fb.rope.as<float>());
  VEDA_RETURN_IF_ERROR(timer.mark(kOther));
  VEDA_CUDA_CHECK(dit_cuda::tile_producer(tp, fb.batch, nullptr));
  VEDA_RETURN_IF_ERROR(timer.mark(kSelf));
  if (veda) {
    VEDA_RETURN_IF_ERROR(plan.selector.select_tiled(
        fb.q_tiled.data(), fb.k_tiled.data(), DType::kBF16, int(fb.batch), D,
        fb.mask_counts.as<int32_t>(), fb.mask_indices.as<int32_t>(), nullptr, nullptr,
        &plan.given));
  }
  AttentionParams p;
  p.q = fb.q_tiled.data();
  p.k = fb.k_tiled.data();
  p.v = fb.v_tiled.data();
  p.o = fb.o_tiled.data();
  p.dtype = DType::kBF16;
  p.batch = fb.batch;
  p.heads = H;
  p.tokens = plan.padded;
  p.head_dim = D;
  p.set_contiguous_strides();
  p.tile_size = plan.layouts.volume();
  p.num_tiles = plan.max_tiles;
  p.tile_valid = plan.tile_valid.as<int32_t>();
  if (veda) {
    p.mask_counts = fb.mask_counts.as<int32_t>();
    p.mask_indices = fb.mask_indices.as<int32_t>();
    p.max_k = plan.max_k;
  }
  p.softmax_scale = 1.0f / std::sqrt(float(D));
  VEDA_RETURN_IF_ERROR(attention_cuda(p, nullptr));
  VEDA_CUDA_CHECK(dit_cuda::heads_to_rows(fb.o_tiled.data(), fb.attn.data(), fb.batch, fb.tokens, H,
                                          D, plan.producer.token_slot.as<int32_t>(), plan.padded,
                                          nullptr));
  return Status::ok();
}

Status WanCudaModel::Impl::capture(ForwardBuffers& fb, const DevBlock& blk, int layer,
                                   const WanCudaOptions& o) {
  const WanConfig& c = config;
  const int H = c.num_heads, D = c.head_dim;
  const int64_t n = fb.rows * c.dim();
  if (!fb.capture.data()) {
    VEDA_ASSIGN_OR_RETURN(fb.capture, DeviceBuffer::allocate(size_t(3 * n) * 2));
  }
  const auto* rope = reinterpret_cast<const float2*>(fb.rope.as<float>());
  const void* src[3] = {fb.q.data(), fb.k.data(), fb.v.data()};
  const float* norm[3] = {blk.attn1.norm_q.as<float>(), blk.attn1.norm_k.as<float>(), nullptr};
  Tensor qkv[3];
  std::vector<uint16_t> host(static_cast<size_t>(n));
  for (int i = 0; i < 3; ++i) {
    // Norm + RoPE as the self-attention's producer applies them, to head-major token order
    // [B, H, N, D] (rms_rope: its sum of squares runs in another order, so a value may differ
    // from what the attention reads by one bf16 rounding).
    void* dst = fb.capture.as<uint16_t>() + i * n;
    VEDA_CUDA_CHECK(dit_cuda::rms_rope(src[i], dst, fb.batch, fb.tokens, H, D, i < 2, c.eps,
                                       norm[i], i < 2 ? rope : nullptr, true, nullptr));
    VEDA_RETURN_IF_ERROR(copy_to_host(host.data(), dst, host.size() * 2));
    qkv[i] = Tensor::empty(DType::kF32, {fb.batch, H, fb.tokens, D});
    convert_to_f32(host.data(), DType::kBF16, qkv[i].data_as<float>(), host.size());
  }
  return o.capture(layer, qkv[0], qkv[1], qkv[2], fb.grid);
}

Status WanCudaModel::Impl::run(const std::vector<float>& timesteps, const WanCudaOptions& o,
                               WanCudaTimings* t) {
  ForwardBuffers& fb = *buffers;
  const WanConfig& c = config;
  const DevWeights& w = weights;
  const int64_t dim = c.dim(), B = fb.batch, N = fb.tokens, rows = fb.rows, L = fb.text_tokens;
  const int H = c.num_heads, D = c.head_dim;
  const int64_t frames = int64_t(fb.grid.t) * c.patch_t, height = int64_t(fb.grid.h) * c.patch_h,
                width = int64_t(fb.grid.w) * c.patch_w;
  const float attn_scale = 1.0f / std::sqrt(float(D));
  auto bf = [](const DeviceBuffer& b, int64_t elem_offset = 0) {
    return static_cast<void*>(b.as<uint16_t>() + elem_offset);
  };

  // Timestep sinusoid: tiny host work before the timed region.
  {
    const std::vector<float> s = wan_ops::timestep_sinusoid(timesteps, c.freq_dim);
    std::vector<uint16_t> sb(s.size());
    convert_from_f32(s.data(), sb.data(), DType::kBF16, s.size());
    VEDA_RETURN_IF_ERROR(copy_to_device(fb.sinusoid.data(), sb.data(), sb.size() * 2));
  }

  VEDA_RETURN_IF_ERROR(timer.start(o.time_parts));
  // Patch embedding -> hidden (f32 residual stream).
  VEDA_CUDA_CHECK(dit_cuda::patchify(fb.x.as<float>(), fb.patches.data(), int(B), c.in_channels,
                                    int(frames), int(height), int(width), c.patch_t, c.patch_h,
                                    c.patch_w, nullptr));
  VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
  VEDA_RETURN_IF_ERROR(gemm.linear(w.patch, fb.patches.data(), rows, fb.hidden.data(), nullptr));
  // Conditioning: temb, time_proj -> time_mod [B, 6*dim]; text -> context [B*L, dim].
  VEDA_RETURN_IF_ERROR(gemm.linear(w.time1, fb.sinusoid.data(), B, fb.time_h.data(), nullptr));
  VEDA_RETURN_IF_ERROR(timer.mark(kOther));
  VEDA_CUDA_CHECK(dit_cuda::silu_to_bf16(fb.time_h.as<float>(), fb.time_hb.data(), B * dim, nullptr));
  VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
  VEDA_RETURN_IF_ERROR(gemm.linear(w.time2, fb.time_hb.data(), B, fb.temb.data(), nullptr));
  VEDA_RETURN_IF_ERROR(timer.mark(kOther));
  VEDA_CUDA_CHECK(dit_cuda::silu_to_bf16(fb.temb.as<float>(), fb.temb_act.data(), B * dim, nullptr));
  VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
  VEDA_RETURN_IF_ERROR(gemm.linear(w.time_proj, fb.temb_act.data(), B, fb.time_mod.data(), nullptr));
  VEDA_RETURN_IF_ERROR(gemm.linear(w.text1, fb.text_in.data(), B * L, fb.text_hidden.data(), nullptr));
  VEDA_RETURN_IF_ERROR(timer.mark(kOther));
  VEDA_CUDA_CHECK(dit_cuda::gelu_tanh(fb.text_hidden.data(), B * L * dim, nullptr));
  VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
  VEDA_RETURN_IF_ERROR(gemm.linear(w.text2, fb.text_hidden.data(), B * L, fb.context.data(), nullptr));

  float* hidden = fb.hidden.as<float>();
  float* mod = fb.modulation.as<float>();
  const int64_t ms = 6 * dim;
  for (int layer = 0; layer < layers; ++layer) {
    const DevBlock& blk = w.blocks[size_t(layer)];
    // 1. Self-attention.
    VEDA_RETURN_IF_ERROR(timer.mark(kOther));
    VEDA_CUDA_CHECK(dit_cuda::add_table(blk.table.as<float>(), fb.time_mod.as<float>(), mod, B, ms,
                                       ms, ms, nullptr));
    VEDA_CUDA_CHECK(dit_cuda::layer_norm(hidden, fb.norm.data(), rows, int(dim), c.eps, N, mod,
                                        mod + dim, ms, nullptr, nullptr, nullptr));
    VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
    VEDA_RETURN_IF_ERROR(gemm.linear(blk.attn1.q, fb.norm.data(), rows, fb.q.data(), nullptr));
    VEDA_RETURN_IF_ERROR(gemm.linear(blk.attn1.k, fb.norm.data(), rows, fb.k.data(), nullptr));
    VEDA_RETURN_IF_ERROR(gemm.linear(blk.attn1.v, fb.norm.data(), rows, fb.v.data(), nullptr));
    if (o.capture && std::find(o.capture_layers.begin(), o.capture_layers.end(), layer) !=
                         o.capture_layers.end()) {
      VEDA_RETURN_IF_ERROR(timer.mark(kOther));
      VEDA_RETURN_IF_ERROR(capture(fb, blk, layer, o));
    }
    Status st = self_attention(fb, blk, layer);
    if (!st.is_ok())
      return Status(st.code(), fmt::format("layer {} self-attention: {}", layer, st.message()));
    VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
    VEDA_RETURN_IF_ERROR(gemm.linear(blk.attn1.o, fb.attn.data(), rows, fb.proj.data(), nullptr));
    VEDA_RETURN_IF_ERROR(timer.mark(kOther));
    VEDA_CUDA_CHECK(dit_cuda::gated_residual(hidden, fb.proj.data(), rows, int(dim), N, mod + 2 * dim,
                                            ms, nullptr));
    // 2. Cross-attention; plain residual.
    if (c.cross_attn_norm) {
      VEDA_CUDA_CHECK(dit_cuda::layer_norm(hidden, fb.norm.data(), rows, int(dim), c.eps, N, nullptr,
                                          nullptr, 0, blk.norm2_weight.as<float>(),
                                          blk.norm2_bias.as<float>(), nullptr));
    } else {  // norm2 is the identity
      VEDA_CUDA_CHECK(dit_cuda::f32_to_bf16(hidden, fb.norm.data(), rows * dim, nullptr));
    }
    VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
    VEDA_RETURN_IF_ERROR(gemm.linear(blk.attn2.q, fb.norm.data(), rows, fb.q.data(), nullptr));
    VEDA_RETURN_IF_ERROR(gemm.linear(blk.attn2.k, fb.context.data(), B * L, fb.ctx_k.data(), nullptr));
    VEDA_RETURN_IF_ERROR(gemm.linear(blk.attn2.v, fb.context.data(), B * L, fb.ctx_v.data(), nullptr));
    VEDA_RETURN_IF_ERROR(timer.mark(kOther));
    VEDA_CUDA_CHECK(dit_cuda::rms_rope(fb.q.data(), fb.q.data(), B, N, H, D, true, c.eps,
                                      blk.attn2.norm_q.as<float>(), nullptr, false, nullptr));
    VEDA_CUDA_CHECK(dit_cuda::rms_rope(fb.ctx_k.data(), fb.ctx_k.data(), B, L, H, D, true, c.eps,
                                      blk.attn2.norm_k.as<float>(), nullptr, false, nullptr));
    VEDA_RETURN_IF_ERROR(timer.mark(kCross));
    if (fb.cross_tiled) {
      AttentionParams p;
      p.q = fb.q.data();
      p.k = fb.ctx_k.data();
      p.v = fb.ctx_v.data();
      p.o = fb.attn.data();
      p.dtype = DType::kBF16;
      p.batch = B;
      p.heads = H;
      p.tokens = fb.cross_padded;
      p.head_dim = D;
      p.q_batch_stride = N * dim;
      p.k_batch_stride = p.v_batch_stride = L * dim;
      p.o_batch_stride = fb.cross_padded * dim;
      p.q_head_stride = p.k_head_stride = p.v_head_stride = p.o_head_stride = D;
      p.q_row_stride = p.k_row_stride = p.v_row_stride = p.o_row_stride = dim;
      p.tile_size = 64;
      p.num_tiles = fb.cross_tiles;
      p.tile_valid = fb.cross_valid.as<int32_t>();
      p.mask_counts = fb.cross_counts.as<int32_t>();
      p.mask_indices = fb.cross_indices.as<int32_t>();
      p.max_k = fb.cross_k_tiles;
      p.softmax_scale = attn_scale;
      Status cst = attention_cuda(p, nullptr);
      if (!cst.is_ok())
        return Status(cst.code(), fmt::format("layer {} cross-attention: {}", layer, cst.message()));
    } else {
      VEDA_CUDA_CHECK(dit_cuda::cross_attention(fb.q.data(), fb.ctx_k.data(), fb.ctx_v.data(),
                                               fb.attn.data(), B, N, L, H, D, attn_scale,
                                               fb.cross_padded, nullptr));
    }
    VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
    if (fb.cross_padded == N || B == 1) {
      VEDA_RETURN_IF_ERROR(gemm.linear(blk.attn2.o, fb.attn.data(), rows, fb.proj.data(), nullptr));
    } else {
      for (int64_t b = 0; b < B; ++b) {
        VEDA_RETURN_IF_ERROR(gemm.linear(blk.attn2.o, bf(fb.attn, b * fb.cross_padded * dim), N,
                                         bf(fb.proj, b * N * dim), nullptr));
      }
    }
    VEDA_RETURN_IF_ERROR(timer.mark(kOther));
    VEDA_CUDA_CHECK(dit_cuda::gated_residual(hidden, fb.proj.data(), rows, int(dim), N, nullptr, 0,
                                            nullptr));
    // 3. Feed-forward; gated residual.
    VEDA_CUDA_CHECK(dit_cuda::layer_norm(hidden, fb.norm.data(), rows, int(dim), c.eps, N,
                                        mod + 3 * dim, mod + 4 * dim, ms, nullptr, nullptr, nullptr));
    VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
    VEDA_RETURN_IF_ERROR(gemm.linear(blk.ffn_in, fb.norm.data(), rows, fb.ffn.data(), nullptr));
    VEDA_RETURN_IF_ERROR(timer.mark(kOther));
    VEDA_CUDA_CHECK(dit_cuda::gelu_tanh(fb.ffn.data(), rows * c.ffn_dim, nullptr));
    VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
    VEDA_RETURN_IF_ERROR(gemm.linear(blk.ffn_out, fb.ffn.data(), rows, fb.proj.data(), nullptr));
    VEDA_RETURN_IF_ERROR(timer.mark(kOther));
    VEDA_CUDA_CHECK(dit_cuda::gated_residual(hidden, fb.proj.data(), rows, int(dim), N, mod + 5 * dim,
                                            ms, nullptr));
  }

  // Output: (table [2, dim] + temb) -> shift, scale; norm, modulate, project, unpatchify.
  VEDA_RETURN_IF_ERROR(timer.mark(kOther));
  float* out_mod = fb.out_mod.as<float>();
  VEDA_CUDA_CHECK(dit_cuda::add_table(w.out_table.as<float>(), fb.temb.as<float>(), out_mod, B,
                                     2 * dim, dim, dim, nullptr));
  VEDA_CUDA_CHECK(dit_cuda::layer_norm(hidden, fb.norm.data(), rows, int(dim), c.eps, N, out_mod,
                                      out_mod + dim, 2 * dim, nullptr, nullptr, nullptr));
  VEDA_RETURN_IF_ERROR(timer.mark(kGemm));
  VEDA_RETURN_IF_ERROR(gemm.linear(w.proj_out, fb.norm.data(), rows, fb.projected.data(), nullptr));
  VEDA_RETURN_IF_ERROR(timer.mark(kOther));
  VEDA_CUDA_CHECK(dit_cuda::unpatchify(fb.projected.as<float>(), fb.out.as<float>(), int(B),
                                      c.out_channels, int(frames), int(height), int(width),
                                      c.patch_t, c.patch_h, c.patch_w, nullptr));
  WanCudaTimings local;
  VEDA_RETURN_IF_ERROR(timer.finish(&local));
  VEDA_CUDA_CHECK(cudaGetLastError());
  if (t) *t = local;
  return Status::ok();
}

Result<Tensor> WanCudaModel::forward(const Tensor& x, const std::vector<float>& timesteps,
                                     const Tensor& text, const WanCudaOptions& options,
                                     WanCudaTimings* timings) {
  if (!impl_) return invalid_argument("CUDA forward: model not loaded");
  const WanConfig& c = impl_->config;
  if (x.dtype() != DType::kF32 || x.rank() != 5 || x.dim(1) != c.in_channels || x.dim(0) < 1) {
    return invalid_argument(fmt::format("CUDA forward: x must be f32 [B, {}, F, H, W], got {} {}",
                                        c.in_channels, dtype_name(x.dtype()),
                                        shape_to_string(x.shape())));
  }
  if (x.dim(2) % c.patch_t || x.dim(3) % c.patch_h || x.dim(4) % c.patch_w || x.dim(2) == 0 ||
      x.dim(3) == 0 || x.dim(4) == 0) {
    return invalid_argument(fmt::format("CUDA forward: x {} is not a whole number of {}x{}x{} patches",
                                        shape_to_string(x.shape()), c.patch_t, c.patch_h, c.patch_w));
  }
  const int64_t batch = x.dim(0);
  if (int64_t(timesteps.size()) != batch) {
    return invalid_argument(fmt::format("CUDA forward: {} timesteps for batch {}", timesteps.size(),
                                        batch));
  }
  if (text.dtype() != DType::kF32 || text.rank() != 3 || text.dim(0) != batch ||
      text.dim(2) != c.text_dim || text.dim(1) < 1) {
    return invalid_argument(fmt::format("CUDA forward: text must be f32 [{}, L, {}], got {} {}",
                                        batch, c.text_dim, dtype_name(text.dtype()),
                                        shape_to_string(text.shape())));
  }
  const Grid grid{int(x.dim(2) / c.patch_t), int(x.dim(3) / c.patch_h), int(x.dim(4) / c.patch_w)};
  if (grid.t > c.rope_max_seq_len || grid.h > c.rope_max_seq_len || grid.w > c.rope_max_seq_len)
    return invalid_argument("CUDA forward: more patches along an axis than rope_max_seq_len");
  if (options.attention == SelfAttentionMode::kVeda &&
      !(options.density > 0.0 && options.density <= 1.0))
    return invalid_argument(fmt::format("CUDA forward: density {} not in (0, 1]", options.density));
  VEDA_RETURN_IF_ERROR(impl_->prepare(batch, grid, text.dim(1), options));
  ForwardBuffers& fb = *impl_->buffers;
  VEDA_RETURN_IF_ERROR(copy_to_device(fb.x.data(), x.data(), x.nbytes()));
  {
    std::vector<uint16_t> tb(size_t(text.numel()));
    convert_from_f32(text.data_as<float>(), tb.data(), DType::kBF16, tb.size());
    VEDA_RETURN_IF_ERROR(copy_to_device(fb.text_in.data(), tb.data(), tb.size() * 2));
  }
  VEDA_RETURN_IF_ERROR(impl_->run(timesteps, options, timings));
  Tensor out = Tensor::empty(DType::kF32, {batch, c.out_channels, x.dim(2), x.dim(3), x.dim(4)});
  VEDA_RETURN_IF_ERROR(copy_to_host(out.data(), fb.out.data(), out.nbytes()));
  return out;
}

FlowModelFn cuda_flow_model(WanCudaModel& model, WanCudaOptions options, ForwardTimings* timings) {
  return [&model, options = std::move(options), timings](
             const Tensor& x, const std::vector<float>& steps, const Tensor& text,
             const FlowPass& pass) -> Result<Tensor> {
    WanCudaOptions o = pass.applied_to(options);
    o.time_parts = timings != nullptr;
    WanCudaTimings t;
    VEDA_ASSIGN_OR_RETURN(Tensor out, model.forward(x, steps, text, o, &t));
    if (timings) {  // device time per part (CUDA events), in seconds like the CPU's wall times
      timings->self_attention += t.self_attention_ms * 1e-3;
      timings->cross_attention += t.cross_attention_ms * 1e-3;
      timings->gemm += t.gemm_ms * 1e-3;
      timings->other += t.other_ms * 1e-3;
      timings->forward_passes += 1;
    }
    return out;
  };
}

}  // namespace veda
