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
// kF32 runs that GEMM in f32. kF16x3 first computes a centre c of each head's k features (a few
// tiles' mean, centre kernel); the statistics kernel writes each row of Qf and of Kf - c scaled by
// a power of two and split into fp16 hi + lo, laid out so that one FP16 tensor-core GEMM over
// 3W sums lo.hi + hi.lo + hi.hi (f32 output, error ~1e-4 |Qf| |Kf - c| at W = 256). (c shifts each
// row by a constant, which no ranking sees; it keeps the bound small.) Either way the top-k kernel
// places what the GEMM's error bound allows and rescores the few boundary tiles it cannot from the
// f32 feature rows, recomputed from the tile statistics (canonical logits,
// kernels/selection_topk.cuh), so both precisions give one mask.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <fmt/core.h>

#include <algorithm>
#include <array>
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

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// Rows of the scoring GEMM per (b, h): FP16x3 pads the tiles to a multiple of 16 (zero rows,
// written once) -- at wan14b-720p in token order, 591 tiles, cuBLASLt's FP16 GEMM ran at ~78
// TFLOP/s, 3.6x slower than at 720 tiles, with 16-byte aligned strides and every heuristic
// candidate. The logits' row stride is a multiple of 4 floats (16-byte aligned rows).
int64_t gemm_rows(int max_tiles, bool fp16) {
  return fp16 ? (int64_t(max_tiles) + 15) / 16 * 16 : max_tiles;
}
int64_t logits_stride(int max_tiles, bool fp16) { return (gemm_rows(max_tiles, fp16) + 3) / 4 * 4; }

}  // namespace

struct GpuSelector::Impl {
  GpuSelectorOptions options;
  SelectionConfig config;
  int heads = 0, max_tiles = 0, volume = 0, max_k = 0;
  int64_t tokens = 0;
  int width_factor = 1;  // feature width = width_factor * head_dim (feature planes)
  sel::FeatureKind q_kind() const { return sel::query_kind_of(width_factor); }
  sel::FeatureKind k_kind() const { return sel::key_kind_of(width_factor); }
  bool fp16 = false;     // GpuScorePrecision::kF16x3

  DeviceBuffer slot_token, valid, info, key_bias, distance, key_coords, head_weights;
  int prior_entries = 0;  // with a distance prior: the largest prior table of a head

  cublasLtHandle_t lt = nullptr;
  DeviceBuffer workspace;
  // The cached GEMM plan, for (batch, width).
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr, layout_b = nullptr, layout_c = nullptr;
  // cuBLASLt's first heuristic pick is not always its fastest (wan14b-720p 4x4x4: 0.235 ms against
  // the best candidate's 0.217), so the first GEMM of a plan times each candidate on the real
  // operands and keeps the fastest (select()'s times for that call include the tuning).
  std::vector<cublasLtMatmulAlgo_t> candidates;
  bool tuned = false;
  cublasLtMatmulAlgo_t algo{};
  int plan_batch = -1, plan_width = -1;

  // Scratch, grown on demand: the tile statistics (the boundary rescoring recomputes feature rows
  // from them), the q row norms and the largest k row norm per (b, h); the f32 features (kF32) or
  // the split fp16 rows and their scales, the k centre and the largest centred k row norm
  // (kF16x3).
  int scratch_batch = 0, scratch_dim = 0;
  DeviceBuffer q_feat, k_feat, q_norm, k_norm_max;
  DeviceBuffer q_split, k_split, q_scale, k_scale, center, k_norm_centred;
  DeviceBuffer logits, logits_kept, bad_row, rescored;  // rescored: count_rescored
  // q mean/max/min, k mean/max/min; max and min only where the features read them or kept.
  DeviceBuffer stats[6];
  DeviceBuffer given_heads;                 // GpuTileStatsInput::heads, uploaded when it changes
  std::vector<uint8_t> given_heads_host;
  int last_batch = 0, last_dim = 0;
  bool have_stats = false, have_logits = false, have_rescored = false;
  int64_t existing_rows = 0;  // sum of the heads' tiles

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

  Status ensure_scratch(int batch, int dim, cudaStream_t stream) {
    if (batch <= scratch_batch && dim <= scratch_dim) return Status::ok();
    const int b = std::max(batch, scratch_batch), d = std::max(dim, scratch_dim);
    const size_t rows = size_t(b) * heads * max_tiles, w = size_t(width_factor) * d;
    auto alloc = [](DeviceBuffer& buf, size_t bytes) -> Status {
      VEDA_ASSIGN_OR_RETURN(buf, DeviceBuffer::allocate(bytes));
      return Status::ok();
    };
    const size_t head_rows = size_t(b) * heads;
    const size_t gemm_rows_all = size_t(b) * heads * gemm_rows(max_tiles, fp16);
    VEDA_RETURN_IF_ERROR(
        alloc(logits, gemm_rows_all * logits_stride(max_tiles, fp16) * sizeof(float)));
    for (int t = 0; t < 6; ++t)
      if (t % 3 == 0 || needs_extrema(t < 3 ? q_kind() : k_kind()))
        VEDA_RETURN_IF_ERROR(alloc(stats[t], rows * d * sizeof(float)));
    VEDA_RETURN_IF_ERROR(alloc(q_norm, rows * sizeof(float)));
    VEDA_RETURN_IF_ERROR(alloc(k_norm_max, head_rows * sizeof(unsigned)));
    if (!fp16) {
      VEDA_RETURN_IF_ERROR(alloc(q_feat, rows * w * sizeof(float)));
      VEDA_RETURN_IF_ERROR(alloc(k_feat, rows * w * sizeof(float)));
    } else {
      // The GEMM's padding rows: their logits are never read; zeroed once (on the caller's
      // stream, before this select's kernels) so that the GEMM reads initialised memory.
      for (DeviceBuffer* split : {&q_split, &k_split}) {
        VEDA_RETURN_IF_ERROR(alloc(*split, gemm_rows_all * 3 * w * 2));
        VEDA_CUDA_CHECK(cudaMemsetAsync(split->data(), 0, split->size(), stream));
      }
      VEDA_RETURN_IF_ERROR(alloc(q_scale, rows * sizeof(float)));
      VEDA_RETURN_IF_ERROR(alloc(k_scale, rows * sizeof(float)));
      VEDA_RETURN_IF_ERROR(alloc(center, head_rows * w * sizeof(float)));
      VEDA_RETURN_IF_ERROR(alloc(k_norm_centred, head_rows * sizeof(unsigned)));
    }
    if (options.keep_logits)
      VEDA_RETURN_IF_ERROR(alloc(logits_kept, rows * max_tiles * sizeof(float)));
    if (!bad_row.data()) VEDA_RETURN_IF_ERROR(alloc(bad_row, sizeof(unsigned long long)));
    if (options.count_rescored && !rescored.data())
      VEDA_RETURN_IF_ERROR(alloc(rescored, sizeof(unsigned long long)));
    scratch_batch = b, scratch_dim = d;
    return Status::ok();
  }

  Status ensure_plan(int batch, int width) {
    if (batch == plan_batch && width == plan_width) return Status::ok();
    free_plan();
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    // Column-major view: C (keys x queries, ld T) = Kf^T^T . Qf^T, i.e. row-major
    // logits[q][k] = Qf[q] . Kf[k]. A = Kf stored W x T (op T), B = Qf stored W x T (op N).
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    VEDA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    // kF16x3: the operands are the split rows, 3W halves each; the output stays f32.
    const int64_t T = gemm_rows(max_tiles, fp16), W = fp16 ? 3 * int64_t(width) : width;
    const int32_t count = batch * heads;
    const cudaDataType_t type = fp16 ? CUDA_R_16F : CUDA_R_32F;
    VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_a, type, W, T, W));
    VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_b, type, W, T, W));
    const int64_t ldc = logits_stride(max_tiles, fp16);
    VEDA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_c, CUDA_R_32F, T, T, ldc));
    const int64_t stride_ab = T * W, stride_c = T * ldc;
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
    constexpr int kCandidates = 8;
    cublasLtMatmulHeuristicResult_t heur[kCandidates] = {};
    int returned = 0;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulAlgoGetHeuristic(lt, op, layout_a, layout_b, layout_c, layout_c, pref,
                                          kCandidates, heur, &returned);
    cublasLtMatmulPreferenceDestroy(pref);
    VEDA_CUBLAS_CHECK(st);
    candidates.clear();
    for (int i = 0; i < returned; ++i)
      if (heur[i].state == CUBLAS_STATUS_SUCCESS) candidates.push_back(heur[i].algo);
    if (candidates.empty())
      return Status(ErrorCode::kCudaError, "GpuSelector: cuBLASLt found no GEMM algorithm");
    algo = candidates.front();
    tuned = candidates.size() == 1;
    plan_batch = batch, plan_width = width;
    return Status::ok();
  }

  // Whether the statistics of a tensor scored with `kind` need their maxima and minima: its
  // features read them, or keep_stats keeps them.
  bool needs_extrema(sel::FeatureKind kind) const {
    return sel::uses_extrema(kind) || options.keep_stats;
  }

  // Gather/statistics parameters of one tensor (no feature outputs set).
  sel::GatherStatsParams tensor_params(const void* x, bool tile_order, int dim, void* x_tiled,
                                       sel::FeatureKind kind) const {
    sel::GatherStatsParams p{};
    p.x = x;
    p.x_tiled = x_tiled;
    p.rows = tile_order ? int64_t(max_tiles) * volume : tokens;
    p.heads = heads, p.max_tiles = max_tiles, p.volume = volume, p.head_dim = dim;
    p.slot_token = tile_order ? nullptr : slot_token.as<int32_t>();
    p.valid = valid.as<int32_t>();
    p.feature = kind;
    p.width = width_factor * dim;
    p.q_scale = options.scale;
    return p;
  }

  Status select(const void* q, const void* k, bool tile_order, DType dtype, int batch,
                int head_dim, void* q_tiled, void* k_tiled, int32_t* counts, int32_t* indices,
                cudaStream_t stream, GpuSelectStageTimes* times, const GpuTileStatsInput* given);
  Status check_numerics(cudaStream_t stream);

  // logits = the scoring GEMM; the plan's first call picks its algorithm (see `candidates`).
  Status score_gemm(cudaStream_t stream) {
    const float alpha = 1.f, beta = 0.f;
    const void* a = fp16 ? k_split.data() : k_feat.data();
    const void* b = fp16 ? q_split.data() : q_feat.data();
    auto gemm = [&](const cublasLtMatmulAlgo_t& with) {
      return cublasLtMatmul(lt, op, &alpha, a, layout_a, b, layout_b, &beta, logits.data(),
                            layout_c, logits.data(), layout_c, &with, workspace.data(),
                            kWorkspaceBytes, stream);
    };
    if (!tuned) {
      // Each candidate that cuBLASLt accepts is timed over batches of back-to-back runs (as the
      // GEMM runs in a select: no host sync between), the candidates in turn for several
      // rounds, so that the clocks' ramp-up and drift reach them all alike; the smallest median
      // batch wins.
      constexpr int kRounds = 3, kRunsPerBatch = 4;
      std::vector<cublasLtMatmulAlgo_t> accepted;
      for (const cublasLtMatmulAlgo_t& c : candidates)
        if (gemm(c) == CUBLAS_STATUS_SUCCESS) accepted.push_back(c);
      if (accepted.empty())
        return Status(ErrorCode::kCudaError, "GpuSelector: no cuBLASLt GEMM algorithm ran");
      cudaEvent_t ev[2] = {};
      for (auto& e : ev) VEDA_CUDA_CHECK(cudaEventCreate(&e));
      std::vector<std::vector<float>> ms(accepted.size());
      Status st = Status::ok();
      for (int round = 0; round < kRounds && st.is_ok(); ++round) {
        for (size_t c = 0; c < accepted.size() && st.is_ok(); ++c) {
          st = cuda_status(cudaEventRecord(ev[0], stream), "cudaEventRecord");
          for (int r = 0; r < kRunsPerBatch && st.is_ok(); ++r)
            st = cublas_status(gemm(accepted[c]), "cublasLtMatmul (tuning)");
          if (st.is_ok()) st = cuda_status(cudaEventRecord(ev[1], stream), "cudaEventRecord");
          if (st.is_ok()) st = cuda_status(cudaEventSynchronize(ev[1]), "cudaEventSynchronize");
          float t = 0;
          if (st.is_ok())
            st = cuda_status(cudaEventElapsedTime(&t, ev[0], ev[1]), "cudaEventElapsedTime");
          ms[c].push_back(t);
        }
      }
      for (auto& e : ev) cudaEventDestroy(e);
      VEDA_RETURN_IF_ERROR(st);
      float best = INFINITY;
      for (size_t c = 0; c < accepted.size(); ++c) {
        std::sort(ms[c].begin(), ms[c].end());
        if (ms[c][kRounds / 2] < best) best = ms[c][kRounds / 2], algo = accepted[c];
      }
      tuned = true;
    }
    VEDA_CUBLAS_CHECK(gemm(algo));
    return Status::ok();
  }

  // Checks `given` and puts its head marks on the device (only when they changed).
  Status set_given_heads(const GpuTileStatsInput& given) {
    if (int(given.heads.size()) != heads)
      return invalid_argument(fmt::format("GpuSelector::select_tiled: given statistics mark {} "
                                          "heads for {} heads", given.heads.size(), heads));
    const float* bufs[6] = {given.q_mean, given.q_max, given.q_min,
                            given.k_mean, given.k_max, given.k_min};
    const char* what[6] = {"q mean", "q max", "q min", "k mean", "k max", "k min"};
    const bool query_extrema = needs_extrema(q_kind());
    for (int t = 0; t < 6; ++t) {
      if (!bufs[t] && GpuTileStatsInput::is_read(t, query_extrema))
        return invalid_argument(fmt::format(
            "GpuSelector::select_tiled: the given {} is null (only q max and min may be, where "
            "reads_query_extrema() is false)", what[t]));
      if ((reinterpret_cast<uintptr_t>(bufs[t]) & 15) != 0)
        return invalid_argument(fmt::format(
            "GpuSelector::select_tiled: the given {} is not 16-byte aligned", what[t]));
    }
    if (given.heads != given_heads_host) {
      VEDA_ASSIGN_OR_RETURN(given_heads, upload_to_device(given.heads));
      given_heads_host = given.heads;
    }
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
bool GpuSelector::reads_query_extrema() const {
  return impl_ && impl_->needs_extrema(impl_->q_kind());
}

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
  im.fp16 = options.precision == GpuScorePrecision::kF16x3;
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
    info[h].bias_abs = 0.f;  // set below, with the biases
    im.existing_rows += n;
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
  std::vector<uint32_t> key_coords;  // estimator: packed video tile coordinates (distance prior)
  switch (options.method) {
    case GpuScoreMethod::kMean:
      im.width_factor = 1;
      break;
    case GpuScoreMethod::kStats: {
      const float a = options.stats.key_alpha;
      if (a == 0.f) {  // the CPU scores with the mean block alone
        im.width_factor = 1;
      } else {
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
      // Each key tile's two entries in its head's prior table (TopkParams::key_coords).
      key_coords.assign(size_t(heads) * T, 0u);
      for (int h = 0; h < heads; ++h) {
        const TileLayout& layout = layouts.head(h);
        const auto e = layout.tiles_per_axis();
        std::copy(e.begin(), e.end(), info[h].prior_extent);
        const int entries = sel::prior_table_entries(e.data());
        im.prior_entries = std::max(im.prior_entries, entries);
        if (entries > 65535)
          return unsupported(fmt::format("GpuSelector: {}x{}x{} video tiles; the distance prior "
                                         "takes at most 65534 (t, h) pairs and w tiles",
                                         e[0], e[1], e[2]));
        for (int j = layout.num_prefix_tiles(); j < layout.num_tiles(); ++j) {
          const auto c = layout.tile_coords(j);
          key_coords[size_t(h) * T + j] =
              uint32_t(1 + c[0] * e[1] + c[1]) << 16 | uint32_t(1 + e[0] * e[1] + c[2]);
        }
      }
      break;
    }
  }
  static_assert(sel::kDistanceTableSize == 3 * kDistanceBins);
  if (sel::topk_smem_per_row(T, im.prior_entries) == 0)
    return unsupported(fmt::format("GpuSelector: {} tiles per head (and a distance prior table "
                                   "of {} entries) exceed the top-k kernel's shared memory", T,
                                   im.prior_entries));
  // B_h of the top-k error bound: the largest |key bias| plus the largest |prior| (each axis' largest
  // |bin|), rounded up past the f32 sum of the three prior terms.
  for (int h = 0; h < heads; ++h) {
    double b = 0;
    if (!key_bias.empty())
      for (int j = 0; j < T; ++j) b = std::max(b, double(std::fabs(key_bias[size_t(h) * T + j])));
    if (!distance.empty())
      for (int axis = 0; axis < 3; ++axis) {
        double m = 0;
        for (int bin = 0; bin < kDistanceBins; ++bin)
          m = std::max(m, double(std::fabs(distance[(size_t(h) * 3 + axis) * kDistanceBins + bin])));
        b += m;
      }
    info[h].bias_abs = float(b * (1 + 1e-6));
  }

  VEDA_ASSIGN_OR_RETURN(im.slot_token, upload_to_device(slots));
  VEDA_ASSIGN_OR_RETURN(im.valid, upload_to_device(layouts.valid_table()));
  VEDA_ASSIGN_OR_RETURN(im.info, upload_to_device(info));
  VEDA_ASSIGN_OR_RETURN(im.key_bias, upload_to_device(key_bias));
  VEDA_ASSIGN_OR_RETURN(im.distance, upload_to_device(distance));
  VEDA_ASSIGN_OR_RETURN(im.key_coords, upload_to_device(key_coords));
  VEDA_ASSIGN_OR_RETURN(im.head_weights, upload_to_device(weights));
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
  if (batch <= 0 || batch > 32767)  // grid z: batch x (q, k)
    return invalid_argument(fmt::format("GpuSelector::{}: batch {} not in [1, 32767]", what, batch));
  const size_t row_bytes = size_t(head_dim) * dtype_size(dtype);
  const size_t chunks = row_bytes / 16;
  if (head_dim <= 0 || row_bytes % 16 != 0 || chunks > size_t(sel::kMaxRowChunks) ||
      (chunks & (chunks - 1)) != 0)
    return unsupported(fmt::format(
        "GpuSelector::{}: head_dim {} ({} bytes a row): rows must be 16 bytes times a power of "
        "two, at most {} bytes", what, head_dim, row_bytes, 16 * sel::kMaxRowChunks));
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
  sel::GatherStatsLaunch launch{};
  launch.t[0] = impl_->tensor_params(x, false, head_dim, x_tiled, sel::FeatureKind::kNone);
  launch.tensors = 1;
  VEDA_CUDA_CHECK(sel::launch_gather_stats(launch, elem, batch,
                                           static_cast<cudaStream_t>(stream_ptr)));
  return Status::ok();
}

Status GpuSelector::select(const void* q, const void* k, DType dtype, int batch, int head_dim,
                           void* q_tiled, void* k_tiled, int32_t* counts, int32_t* indices,
                           void* stream, GpuSelectStageTimes* times) {
  if (!impl_) return invalid_argument("GpuSelector::select on an empty selector");
  return impl_->select(q, k, false, dtype, batch, head_dim, q_tiled, k_tiled, counts, indices,
                       static_cast<cudaStream_t>(stream), times, nullptr);
}

Status GpuSelector::select_tiled(const void* q_tiled, const void* k_tiled, DType dtype, int batch,
                                 int head_dim, int32_t* counts, int32_t* indices, void* stream,
                                 GpuSelectStageTimes* times, const GpuTileStatsInput* given) {
  if (!impl_) return invalid_argument("GpuSelector::select_tiled on an empty selector");
  return impl_->select(q_tiled, k_tiled, true, dtype, batch, head_dim, nullptr, nullptr, counts,
                       indices, static_cast<cudaStream_t>(stream), times, given);
}

Status GpuSelector::Impl::select(const void* q, const void* k, bool tile_order, DType dtype,
                                 int batch, int head_dim, void* q_tiled, void* k_tiled,
                                 int32_t* counts, int32_t* indices, cudaStream_t stream,
                                 GpuSelectStageTimes* times, const GpuTileStatsInput* given) {
  VEDA_ASSIGN_OR_RETURN(sel::Elem elem, check_input(dtype, batch, head_dim, q, q_tiled, "select"));
  VEDA_RETURN_IF_ERROR(check_input(dtype, batch, head_dim, k, k_tiled, "select").status());
  if (!counts || !indices) return invalid_argument("GpuSelector::select: counts and indices must be set");
  if (given) VEDA_RETURN_IF_ERROR(set_given_heads(*given));
  VEDA_RETURN_IF_ERROR(ensure_scratch(batch, head_dim, stream));
  const int width = width_factor * head_dim;
  VEDA_RETURN_IF_ERROR(ensure_plan(batch, width));
  if (times) {
    for (auto& e : events)
      if (!e) VEDA_CUDA_CHECK(cudaEventCreate(&e));
    VEDA_CUDA_CHECK(cudaEventRecord(events[0], stream));
  }
  VEDA_CUDA_CHECK(cudaMemsetAsync(bad_row.data(), 0xFF, sizeof(unsigned long long), stream));

  // Statistics and features of q and k in one launch (after the k centre, for kF16x3).
  const bool keep = options.keep_stats;
  sel::GatherStatsLaunch launch{};
  launch.tensors = 2;
  sel::GatherStatsParams& pq = launch.t[0];
  sel::GatherStatsParams& pk = launch.t[1];
  pq = tensor_params(q, tile_order, head_dim, q_tiled, q_kind());
  pk = tensor_params(k, tile_order, head_dim, k_tiled, k_kind());
  pq.features = q_feat.as<float>(), pk.features = k_feat.as<float>();  // null for kF16x3
  pq.norm = q_norm.as<float>(), pk.norm_max = k_norm_max.as<unsigned>();
  // Statistics out: every head not given (the rescoring reads them), and the given ones if kept.
  pq.mean = stats[0].as<float>(), pq.max = stats[1].as<float>(), pq.min = stats[2].as<float>();
  pk.mean = stats[3].as<float>(), pk.max = stats[4].as<float>(), pk.min = stats[5].as<float>();
  pq.stats_of_given = pk.stats_of_given = keep;
  pk.head_weights = head_weights.as<float>();
  const size_t head_rows_bytes = size_t(batch) * heads * sizeof(unsigned);
  VEDA_CUDA_CHECK(cudaMemsetAsync(k_norm_max.data(), 0, head_rows_bytes, stream));
  if (given) {
    pq.given = {given->q_mean, given->q_max, given->q_min};
    pk.given = {given->k_mean, given->k_max, given->k_min};
    pq.given_heads = pk.given_heads = given_heads.as<uint8_t>();
  }
  if (fp16) {
    pq.features16 = q_split.data(), pq.lo_slot = 0, pq.row_scale = q_scale.as<float>();
    pk.features16 = k_split.data(), pk.lo_slot = 1, pk.row_scale = k_scale.as<float>();
    pq.split_rows = pk.split_rows = gemm_rows(max_tiles, fp16);
    pk.norm_max_centred = k_norm_centred.as<unsigned>();
    VEDA_CUDA_CHECK(cudaMemsetAsync(k_norm_centred.data(), 0, head_rows_bytes, stream));
    sel::GatherStatsParams pc = pk;
    pc.x_tiled = nullptr, pc.mean = pc.max = pc.min = nullptr;
    VEDA_CUDA_CHECK(sel::launch_center(pc, info.as<sel::HeadSelectInfo>(), center.as<float>(),
                                       elem, batch, stream));
    pk.center = center.as<float>();
  }
  VEDA_CUDA_CHECK(sel::launch_gather_stats(launch, elem, batch, stream));
  if (times) VEDA_CUDA_CHECK(cudaEventRecord(events[1], stream));

  VEDA_RETURN_IF_ERROR(score_gemm(stream));
  if (times) VEDA_CUDA_CHECK(cudaEventRecord(events[2], stream));

  sel::TopkParams tp{};
  tp.logits = logits.as<float>();
  tp.logits_rows = gemm_rows(max_tiles, fp16);
  tp.logits_stride = logits_stride(max_tiles, fp16);
  tp.logits_out = options.keep_logits ? logits_kept.as<float>() : nullptr;
  tp.max_tiles = max_tiles, tp.heads = heads;
  tp.info = info.as<sel::HeadSelectInfo>();
  tp.key_bias = key_bias.as<float>();
  tp.distance = distance.as<float>();
  tp.key_coords = key_coords.as<uint32_t>();
  tp.prior_entries = prior_entries;
  tp.force_prefix = config.force_prefix, tp.force_self = config.force_self;
  tp.max_k = max_k;
  tp.counts = counts, tp.indices = indices;
  tp.bad_row = bad_row.as<unsigned long long>();
  tp.q_stats = {pq.mean, pq.max, pq.min}, tp.k_stats = {pk.mean, pk.max, pk.min};
  tp.q_given = pq.given, tp.k_given = pk.given, tp.given_heads = pq.given_heads;
  tp.q_feature_scale = pq.q_scale, tp.head_weights = head_weights.as<float>();
  tp.width = width, tp.head_dim = head_dim;
  tp.q_norm = q_norm.as<float>();
  tp.k_norm = k_norm_max.as<unsigned>();
  tp.k_norm_filter = fp16 ? k_norm_centred.as<unsigned>() : k_norm_max.as<unsigned>();
  // The GEMM's error coefficient (kernels/selection_topk.cuh derives it): P additions of the whole
  // scale a logit (FP16x3: the width's big products come last, 1.2 W bounds them, the reductions
  // of any K split and the small products), u = 2^-11 for the fp16 split.
  const double products = fp16 ? 1.2 * width : double(width), u = std::ldexp(1.0, -11);
  tp.err_rel = float(1.001 * (products * std::ldexp(1.0, -22) + (fp16 ? 6 * u * u : 0.0) +
                              std::ldexp(1.0, -20)));
  if (fp16) {
    tp.q_scale = q_scale.as<float>(), tp.k_scale = k_scale.as<float>();
    tp.center = center.as<float>();
  }
  if (options.count_rescored) {
    tp.rescored = rescored.as<unsigned long long>();
    VEDA_CUDA_CHECK(cudaMemsetAsync(rescored.data(), 0, rescored.size(), stream));
  }
  VEDA_CUDA_CHECK(sel::launch_topk(tp, batch, stream));
  last_batch = batch, last_dim = head_dim;
  have_stats = keep, have_logits = options.keep_logits;
  have_rescored = options.count_rescored;

  if (times) {
    VEDA_CUDA_CHECK(cudaEventRecord(events[3], stream));
    VEDA_CUDA_CHECK(cudaEventSynchronize(events[3]));
    VEDA_CUDA_CHECK(cudaEventElapsedTime(&times->gather_stats_ms, events[0], events[1]));
    VEDA_CUDA_CHECK(cudaEventElapsedTime(&times->score_ms, events[1], events[2]));
    VEDA_CUDA_CHECK(cudaEventElapsedTime(&times->select_ms, events[2], events[3]));
  }
  if (options.check_numerics) return check_numerics(stream);
  return Status::ok();
}

Status GpuSelector::check_numerics(void* stream) {
  if (!impl_) return Status::ok();
  return impl_->check_numerics(static_cast<cudaStream_t>(stream));
}

Status GpuSelector::Impl::check_numerics(cudaStream_t stream) {
  if (!bad_row.data()) return Status::ok();
  VEDA_CUDA_CHECK(cudaStreamSynchronize(stream));
  unsigned long long bad = 0;
  VEDA_RETURN_IF_ERROR(copy_to_host(&bad, bad_row.data(), sizeof(bad)));
  if (bad == ~0ull) return Status::ok();
  const int64_t T = max_tiles, H = heads;
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

Result<GpuRescoreCounts> GpuSelector::rescore_counts() const {
  if (!impl_ || !impl_->have_rescored)
    return invalid_argument("GpuSelector: no counts (set count_rescored and run select)");
  unsigned long long c = 0;
  VEDA_RETURN_IF_ERROR(copy_to_host(&c, impl_->rescored.data(), sizeof(c)));
  GpuRescoreCounts out;
  out.rows = impl_->existing_rows * impl_->last_batch;
  out.boundary_tiles = int64_t(c);
  return out;
}

Result<Tensor> GpuSelector::copy_logits_to_host() const {
  if (!impl_ || !impl_->have_logits)
    return invalid_argument("GpuSelector: no logits kept (set keep_logits and run select)");
  const Impl& im = *impl_;
  Tensor t = Tensor::empty(DType::kF32, {im.last_batch, im.heads, im.max_tiles, im.max_tiles});
  VEDA_RETURN_IF_ERROR(copy_to_host(t.data(), im.logits_kept.data(), t.nbytes()));
  return t;
}

}  // namespace veda
