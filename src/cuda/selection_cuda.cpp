// Host side of the GPU tile selection (include/veda/cuda_selection.hpp): argument checks, the
// device copies of the layouts, the scoring GEMM (cuBLASLt, strided batched over (b, h)) and the
// launches of the kernels in selection_kernels.cu. Every CUDA / cuBLASLt call is checked.
//
// Scoring is one GEMM per (b, h): logits[i][j] = Qf[i] . Kf[j] over per-tile feature rows that
// the gather/statistics kernel writes with the method's weights folded in:
//   mean       Qf = s*qmean                     Kf = kmean
//   stats      Qf = [s*q+, s*q-]                Kf = [(1-a) kmean + a kmax, (1-a) kmean + a kmin]
//   estimator  Qf = [s*q+, s*q-, s*qmax, s*qmin]
//              Kf = [P km + KU kmax + KL kmin, P km + KU kmin + KL kmax, QU km+, QU km-]
// (q+ = max(qmean, 0), q- = min(qmean, 0); qmean = q+ + q-, so these equal the CPU's sums of
// feature planes). Per-key biases (log valid, prefix bias) and the distance prior are added in
// the top-k kernel's epilogue.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "cuda/cuda_check.hpp"
#include "cuda/selection_launch.hpp"
#include "veda/cuda.hpp"
#include "veda/cuda_selection.hpp"

namespace veda {
namespace {

namespace sel = cuda::sel;



template <class T>
Result<DeviceBuffer> upload(const std::vector<T>& v) {
  VEDA_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(sizeof(T) * v.size()));
  if (!v.empty()) VEDA_RETURN_IF_ERROR(copy_to_device(buf.data(), v.data(), sizeof(T) * v.size()));
  return Result<DeviceBuffer>(std::move(buf));
}

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

}  // namespace

struct GpuSelector::Impl {
  GpuSelectorOptions options;
  SelectionConfig config;
  int heads = 0, max_tiles = 0, volume = 0, max_k = 0;
  int64_t tokens = 0;
  sel::FeatureKind q_kind = sel::FeatureKind::kQMean, k_kind = sel::FeatureKind::kKMean;
  int width_factor = 1;  // feature width = width_factor * head_dim

  DeviceBuffer slot_token, valid, info, key_bias, distance, head_weights;

  cublasLtHandle_t lt = nullptr;
  DeviceBuffer workspace;
  // The cached GEMM plan, for (batch, width).
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr, layout_b = nullptr, layout_c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  int plan_batch = -1, plan_width = -1;

  // Scratch, grown on demand.
  int scratch_batch = 0, scratch_dim = 0;
  DeviceBuffer q_feat, k_feat, logits, bad_row;
  DeviceBuffer stats[6];  // q mean/max/min, k mean/max/min
  int last_batch = 0, last_dim = 0;
  bool have_stats = false, have_logits = false;

  cudaEvent_t events[4] = {nullptr, nullptr, nullptr, nullptr};

  ~Impl() {
    free_plan();
    if (lt) cublasLtDestroy(lt);
    for (auto& e : events)
      if (e) cudaEventDestroy(e);
  }

  void free_plan() {
    if (layout_a) cublasLtMatrixLayoutDestroy(layout_a);
    if (layout_b) cublasLtMatrixLayoutDestroy(layout_b);
    if (layout_c) cublasLtMatrixLayoutDestroy(layout_c);
    if (op) cublasLtMatmulDescDestroy(op);
    layout_a = layout_b = layout_c = nullptr;
    op = nullptr;
    plan_batch = plan_width = -1;
  }

  Status ensure_scratch(int batch, int dim) {
    if (batch <= scratch_batch && dim <= scratch_dim) return Status::ok();
    const int b = std::max(batch, scratch_batch), d = std::max(dim, scratch_dim);
    const size_t rows = size_t(b) * heads * max_tiles;
    VEDA_ASSIGN_OR_RETURN(q_feat, DeviceBuffer::allocate(rows * width_factor * d * sizeof(float)));
    VEDA_ASSIGN_OR_RETURN(k_feat, DeviceBuffer::allocate(rows * width_factor * d * sizeof(float)));
    VEDA_ASSIGN_OR_RETURN(logits, DeviceBuffer::allocate(rows * max_tiles * sizeof(float)));
    if (!bad_row.data()) {
      VEDA_ASSIGN_OR_RETURN(bad_row, DeviceBuffer::allocate(sizeof(unsigned long long)));
    }
    if (options.keep_stats) {
      for (auto& s : stats) {
        VEDA_ASSIGN_OR_RETURN(s, DeviceBuffer::allocate(rows * d * sizeof(float)));
      }
    }
    scratch_batch = b, scratch_dim = d;
    return Status::ok();
  }

  Status ensure_plan(int batch, int width) {
    if (batch == plan_batch && width == plan_width) return Status::ok();
    free_plan();
    const cublasComputeType_t compute =
        options.precision == GpuScorePrecision::kTF32   ? CUBLAS_COMPUTE_32F_FAST_TF32
        : options.precision == GpuScorePrecision::kBF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                                        : CUBLAS_COMPUTE_32F;
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, compute, CUDA_R_32F));
    // Column-major view: C (keys x queries, ld T) = Kf^T^T . Qf^T, i.e. row-major
    // logits[q][k] = Qf[q] . Kf[k]. A = Kf stored W x T (op T), B = Qf stored W x T (op N).
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    const int64_t T = max_tiles, W = width;
    const int32_t count = batch * heads;
    VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_a, CUDA_R_32F, W, T, W));
    VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_b, CUDA_R_32F, W, T, W));
    VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_c, CUDA_R_32F, T, T, T));
    const int64_t stride_ab = T * W, stride_c = T * T;
    for (auto [layout, stride] : {std::pair{layout_a, stride_ab}, std::pair{layout_b, stride_ab},
                                  std::pair{layout_c, stride_c}}) {
      VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                        &count, sizeof(count)));
      VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
          layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
    }
    cublasLtMatmulPreference_t pref = nullptr;
    VEDA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspaceBytes;
    cublasLtMatmulHeuristicResult_t heur{};
    int returned = 0;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulAlgoGetHeuristic(lt, op, layout_a, layout_b, layout_c, layout_c, pref, 1,
                                          &heur, &returned);
    cublasLtMatmulPreferenceDestroy(pref);
    VEDA_CUBLAS_CHECK(st);
    if (returned == 0)
      return Status(ErrorCode::kCudaError, "GpuSelector: cuBLASLt found no GEMM algorithm");
    algo = heur.algo;
    plan_batch = batch, plan_width = width;
    return Status::ok();
  }

  Status gather_stats(const void* x, sel::Elem elem, int batch, int dim, void* x_tiled,
                      sel::FeatureKind kind, float* features, float* mean, float* max,
                      float* min, const float* weights, cudaStream_t stream) {
    sel::GatherStatsParams p{};
    p.x = x;
    p.x_tiled = x_tiled;
    p.tokens = tokens;
    p.heads = heads, p.max_tiles = max_tiles, p.volume = volume, p.head_dim = dim;
    p.slot_token = slot_token.as<int32_t>();
    p.valid = valid.as<int32_t>();
    p.mean = mean, p.max = max, p.min = min;
    p.feature = kind;
    p.features = features;
    p.width = width_factor * dim;
    p.q_scale = options.scale;
    p.head_weights = weights;
    VEDA_CUDA_CHECK(sel::launch_gather_stats(p, elem, batch, stream));
    return Status::ok();
  }
};

GpuSelector::GpuSelector() = default;
GpuSelector::~GpuSelector() = default;
GpuSelector::GpuSelector(GpuSelector&&) noexcept = default;
GpuSelector& GpuSelector::operator=(GpuSelector&&) noexcept = default;

int GpuSelector::max_k() const { return impl_ ? impl_->max_k : 0; }
int GpuSelector::max_tiles() const { return impl_ ? impl_->max_tiles : 0; }
int GpuSelector::heads() const { return impl_ ? impl_->heads : 0; }

Result<GpuSelector> GpuSelector::make(const HeadLayouts& layouts, const SelectionConfig& config,
                                      const GpuSelectorOptions& options) {
  if (config.mode != SelectMode::kTopK)
    return unsupported("GpuSelector: only selection mode topk runs on the GPU");
  auto check_density = [](double d, const char* what) -> Status {
    if (!(d > 0.0 && d <= 1.0)) return invalid_argument(fmt::format("GpuSelector: {} {} is not in (0, 1]", what, d));
    return Status::ok();
  };
  VEDA_RETURN_IF_ERROR(check_density(config.density, "density"));
  const int heads = layouts.heads();
  if (!config.head_density.empty()) {
    if (int(config.head_density.size()) != heads)
      return invalid_argument(fmt::format("GpuSelector: {} head densities for {} heads",
                                          config.head_density.size(), heads));
    for (double d : config.head_density) VEDA_RETURN_IF_ERROR(check_density(d, "head density"));
  }
  if (!(options.scale > 0.f) || !std::isfinite(options.scale))
    return invalid_argument("GpuSelector: scale must be positive and finite");
  if (options.method == GpuScoreMethod::kStats &&
      !(options.stats.key_alpha >= 0.f && options.stats.key_alpha <= 1.f))
    return invalid_argument(fmt::format("GpuSelector: key_alpha {} is not in [0, 1]",
                                        options.stats.key_alpha));
  if (options.method == GpuScoreMethod::kEstimator) {
    if (int(options.estimator.size()) != heads)
      return invalid_argument(fmt::format("GpuSelector: estimator has {} parameter sets for {} heads",
                                          options.estimator.size(), heads));
    for (const EstimatorParams& p : options.estimator)
      if (!p.is_finite()) return invalid_argument("GpuSelector: estimator parameters must be finite");
  }
  if (!cuda_device_available()) return Status(ErrorCode::kCudaError, "GpuSelector: no CUDA device");

  GpuSelector out;
  out.impl_ = std::make_unique<Impl>();
  Impl& im = *out.impl_;
  im.options = options;
  im.config = config;
  im.heads = heads;
  im.max_tiles = layouts.max_tiles();
  im.volume = layouts.volume();
  im.tokens = layouts.tokens();
  const int T = im.max_tiles;

  // Per-head budgets and max_k exactly as select_tiles computes them.
  std::vector<sel::HeadSelectInfo> info(heads);
  for (int h = 0; h < heads; ++h) {
    const TileLayout& layout = layouts.head(h);
    const int n = layout.num_tiles();
    const double density = config.head_density.empty() ? config.density : config.head_density[h];
    info[h].n = n;
    info[h].num_prefix = layout.num_prefix_tiles();
    info[h].budget = selection_budget(density, n);
    info[h].tiles_h = layout.tiles_per_axis()[1];
    info[h].tiles_w = layout.tiles_per_axis()[2];
    const int forced =
        (config.force_prefix ? layout.num_prefix_tiles() : 0) + (config.force_self ? 1 : 0);
    im.max_k = std::max(im.max_k, std::min(n, std::max(info[h].budget, forced)));
  }

  std::vector<int32_t> slots(size_t(heads) * T * im.volume, -1);
  for (int h = 0; h < heads; ++h) {
    const auto& s = layouts.head(h).slot_token();
    std::copy(s.begin(), s.end(), slots.begin() + size_t(h) * T * im.volume);
  }

  std::vector<float> key_bias, distance, weights;
  switch (options.method) {
    case GpuScoreMethod::kMean:
      im.q_kind = sel::FeatureKind::kQMean, im.k_kind = sel::FeatureKind::kKMean;
      im.width_factor = 1;
      break;
    case GpuScoreMethod::kStats: {
      const float a = options.stats.key_alpha;
      if (a == 0.f) {  // the CPU scores with the mean block alone
        im.q_kind = sel::FeatureKind::kQMean, im.k_kind = sel::FeatureKind::kKMean;
        im.width_factor = 1;
      } else {
        im.q_kind = sel::FeatureKind::kQSplit, im.k_kind = sel::FeatureKind::kKBlend;
        im.width_factor = 2;
        for (int h = 0; h < heads; ++h) weights.insert(weights.end(), {1.f - a, a, 0.f, 0.f});
      }
      if (options.stats.log_valid_bias) {
        key_bias.assign(size_t(heads) * T, 0.f);
        for (int h = 0; h < heads; ++h)
          for (int j = 0; j < info[h].n; ++j)
            key_bias[size_t(h) * T + j] = std::log(float(layouts.valid(h, j)));
      }
      break;
    }
    case GpuScoreMethod::kEstimator: {
      bool query_upper = false;
      for (const EstimatorParams& p : options.estimator) query_upper |= p.query_upper != 0.0;
      im.q_kind = query_upper ? sel::FeatureKind::kQSplit4 : sel::FeatureKind::kQSplit;
      im.k_kind = query_upper ? sel::FeatureKind::kKBlend4 : sel::FeatureKind::kKBlend;
      im.width_factor = query_upper ? 4 : 2;
      key_bias.assign(size_t(heads) * T, 0.f);
      for (int h = 0; h < heads; ++h) {
        const EstimatorParams& p = options.estimator[h];
        weights.insert(weights.end(), {float(p.pooled), float(p.key_upper), float(p.key_lower),
                                       float(p.query_upper)});
        const TileLayout& layout = layouts.head(h);
        for (int j = 0; j < info[h].n; ++j) {
          double z = p.log_valid * std::log(double(layouts.valid(h, j)));
          if (layout.is_prefix_tile(j)) z += p.prefix_bias;
          key_bias[size_t(h) * T + j] = float(z);
        }
        for (int axis = 0; axis < 3; ++axis)
          for (int bin = 0; bin < kDistanceBins; ++bin)
            distance.push_back(float(p.distance[axis][bin]));
      }
      break;
    }
  }
  static_assert(sel::kDistanceTableSize == 3 * kDistanceBins);

  VEDA_ASSIGN_OR_RETURN(im.slot_token, upload(slots));
  VEDA_ASSIGN_OR_RETURN(im.valid, upload(layouts.valid_table()));
  VEDA_ASSIGN_OR_RETURN(im.info, upload(info));
  VEDA_ASSIGN_OR_RETURN(im.key_bias, upload(key_bias));
  VEDA_ASSIGN_OR_RETURN(im.distance, upload(distance));
  VEDA_ASSIGN_OR_RETURN(im.head_weights, upload(weights));
  VEDA_CUBLAS_CHECK(cublasLtCreate(&im.lt));
  VEDA_ASSIGN_OR_RETURN(im.workspace, DeviceBuffer::allocate(kWorkspaceBytes));
  return Result<GpuSelector>(std::move(out));
}

namespace {

Result<sel::Elem> check_input(DType dtype, int batch, int head_dim, const void* x,
                              const void* x_tiled, const char* what) {
  sel::Elem elem = sel::Elem::kF32;
  if (dtype == DType::kBF16) {
    elem = sel::Elem::kBF16;
  } else if (dtype == DType::kF16) {
    elem = sel::Elem::kF16;
  } else if (dtype != DType::kF32) {
    return unsupported(fmt::format("GpuSelector::{}: dtype {}", what, dtype_name(dtype)));
  }
  if (batch <= 0 || batch > 65535)
    return invalid_argument(fmt::format("GpuSelector::{}: batch {} not in [1, 65535]", what, batch));
  const size_t row_bytes = size_t(head_dim) * dtype_size(dtype);
  const size_t chunks = row_bytes / 16;
  if (head_dim <= 0 || row_bytes % 16 != 0 || chunks > 256 || (chunks & (chunks - 1)) != 0)
    return unsupported(fmt::format(
        "GpuSelector::{}: head_dim {} ({} bytes a row): rows must be 16 bytes times a power of "
        "two, at most 4096 bytes", what, head_dim, row_bytes));
  auto misaligned = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) != 0; };
  if (!x) return invalid_argument(fmt::format("GpuSelector::{}: input is null", what));
  if (misaligned(x) || misaligned(x_tiled))
    return invalid_argument(fmt::format("GpuSelector::{}: buffers must be 16-byte aligned", what));
  return elem;
}

}  // namespace

Status GpuSelector::gather(const void* x, DType dtype, int batch, int head_dim, void* x_tiled,
                           void* stream_ptr) {
  if (!impl_) return invalid_argument("GpuSelector::gather on an empty selector");
  VEDA_ASSIGN_OR_RETURN(sel::Elem elem, check_input(dtype, batch, head_dim, x, x_tiled, "gather"));
  if (!x_tiled) return invalid_argument("GpuSelector::gather: x_tiled is null");
  return impl_->gather_stats(x, elem, batch, head_dim, x_tiled, sel::FeatureKind::kNone, nullptr,
                             nullptr, nullptr, nullptr, nullptr,
                             static_cast<cudaStream_t>(stream_ptr));
}

Status GpuSelector::select(const void* q, const void* k, DType dtype, int batch, int head_dim,
                           void* q_tiled, void* k_tiled, int32_t* counts, int32_t* indices,
                           void* stream_ptr, GpuSelectStageTimes* times) {
  if (!impl_) return invalid_argument("GpuSelector::select on an empty selector");
  Impl& im = *impl_;
  VEDA_ASSIGN_OR_RETURN(sel::Elem elem, check_input(dtype, batch, head_dim, q, q_tiled, "select"));
  VEDA_RETURN_IF_ERROR(check_input(dtype, batch, head_dim, k, k_tiled, "select").status());
  if (!counts || !indices) return invalid_argument("GpuSelector::select: counts and indices must be set");
  VEDA_RETURN_IF_ERROR(im.ensure_scratch(batch, head_dim));
  const int width = im.width_factor * head_dim;
  VEDA_RETURN_IF_ERROR(im.ensure_plan(batch, width));
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (times) {
    for (auto& e : im.events)
      if (!e) VEDA_CUDA_CHECK(cudaEventCreate(&e));
    VEDA_CUDA_CHECK(cudaEventRecord(im.events[0], stream));
  }
  VEDA_CUDA_CHECK(cudaMemsetAsync(im.bad_row.data(), 0xFF, sizeof(unsigned long long), stream));

  const bool keep = im.options.keep_stats;
  float* st[6];
  for (int i = 0; i < 6; ++i) st[i] = keep ? im.stats[i].as<float>() : nullptr;
  VEDA_RETURN_IF_ERROR(im.gather_stats(q, elem, batch, head_dim, q_tiled, im.q_kind,
                                       im.q_feat.as<float>(), st[0], st[1], st[2], nullptr, stream));
  VEDA_RETURN_IF_ERROR(im.gather_stats(k, elem, batch, head_dim, k_tiled, im.k_kind,
                                       im.k_feat.as<float>(), st[3], st[4], st[5],
                                       im.head_weights.as<float>(), stream));
  if (times) VEDA_CUDA_CHECK(cudaEventRecord(im.events[1], stream));

  const float alpha = 1.f, beta = 0.f;
  VEDA_CUBLAS_CHECK(cublasLtMatmul(im.lt, im.op, &alpha, im.k_feat.data(), im.layout_a,
                                  im.q_feat.data(), im.layout_b, &beta, im.logits.data(),
                                  im.layout_c, im.logits.data(), im.layout_c, &im.algo,
                                  im.workspace.data(), kWorkspaceBytes, stream));
  if (times) VEDA_CUDA_CHECK(cudaEventRecord(im.events[2], stream));

  sel::TopkParams tp{};
  tp.logits = im.logits.as<float>();
  tp.write_back = im.options.keep_logits;
  tp.max_tiles = im.max_tiles, tp.heads = im.heads;
  tp.info = im.info.as<sel::HeadSelectInfo>();
  tp.key_bias = im.key_bias.data() ? im.key_bias.as<float>() : nullptr;
  tp.distance = im.distance.data() ? im.distance.as<float>() : nullptr;
  tp.force_prefix = im.config.force_prefix, tp.force_self = im.config.force_self;
  tp.max_k = im.max_k;
  tp.counts = counts, tp.indices = indices;
  tp.bad_row = im.bad_row.as<unsigned long long>();
  VEDA_CUDA_CHECK(sel::launch_topk(tp, batch, stream));
  im.last_batch = batch, im.last_dim = head_dim;
  im.have_stats = keep, im.have_logits = im.options.keep_logits;

  if (times) {
    VEDA_CUDA_CHECK(cudaEventRecord(im.events[3], stream));
    VEDA_CUDA_CHECK(cudaEventSynchronize(im.events[3]));
    VEDA_CUDA_CHECK(cudaEventElapsedTime(&times->gather_stats_ms, im.events[0], im.events[1]));
    VEDA_CUDA_CHECK(cudaEventElapsedTime(&times->score_ms, im.events[1], im.events[2]));
    VEDA_CUDA_CHECK(cudaEventElapsedTime(&times->select_ms, im.events[2], im.events[3]));
  }
  if (im.options.check_numerics) return check_numerics(stream_ptr);
  return Status::ok();
}

Status GpuSelector::check_numerics(void* stream_ptr) {
  if (!impl_ || !impl_->bad_row.data()) return Status::ok();
  VEDA_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_ptr)));
  unsigned long long bad = 0;
  VEDA_RETURN_IF_ERROR(copy_to_host(&bad, impl_->bad_row.data(), sizeof(bad)));
  if (bad == ~0ull) return Status::ok();
  const int64_t T = impl_->max_tiles, H = impl_->heads;
  const int64_t q = int64_t(bad) % T, h = (int64_t(bad) / T) % H, b = int64_t(bad) / (T * H);
  return numeric_error(fmt::format(
      "GpuSelector::select: a logit of (b={}, h={}, q tile={}) is NaN or +inf", b, h, q));
}

Status GpuSelector::copy_stats_to_host(TileStats* q, TileStats* k) const {
  if (!impl_ || !impl_->have_stats)
    return invalid_argument("GpuSelector: no statistics kept (set keep_stats and run select)");
  const Impl& im = *impl_;
  const Shape shape{im.last_batch, im.heads, im.max_tiles, im.last_dim};
  Tensor* dst[6] = {&q->mean, &q->max, &q->min, &k->mean, &k->max, &k->min};
  for (int i = 0; i < 6; ++i) {
    *dst[i] = Tensor::empty(DType::kF32, shape);
    VEDA_RETURN_IF_ERROR(copy_to_host(dst[i]->data(), im.stats[i].data(), dst[i]->nbytes()));
  }
  return Status::ok();
}

Result<Tensor> GpuSelector::copy_logits_to_host() const {
  if (!impl_ || !impl_->have_logits)
    return invalid_argument("GpuSelector: no logits kept (set keep_logits and run select)");
  const Impl& im = *impl_;
  Tensor t = Tensor::empty(DType::kF32, {im.last_batch, im.heads, im.max_tiles, im.max_tiles});
  VEDA_RETURN_IF_ERROR(copy_to_host(t.data(), im.logits.data(), t.nbytes()));
  return t;
}

}  // namespace veda
