#include "cuda/attention_check.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <thread>

namespace veda::cuda_check {

TileMask random_mask(int batch, const HeadLayouts& layouts, double density, uint64_t seed,
                     double empty_rows) {
  const int tiles = layouts.max_tiles();
  int max_k = 1;
  for (int h = 0; h < layouts.heads(); ++h) {
    const int n = layouts.head(h).num_tiles();
    max_k = std::max(max_k, std::clamp(int(std::lround(density * n)), 1, n));
  }
  TileMask mask = TileMask::empty(batch, layouts.heads(), tiles, tiles, max_k);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  std::vector<int32_t> perm;
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < layouts.heads(); ++h) {
      const int n = layouts.head(h).num_tiles();
      const int k = std::clamp(int(std::lround(density * n)), 1, n);
      perm.resize(n);
      for (int q = 0; q < n; ++q) {
        if (empty_rows > 0 && u01(rng) < empty_rows) continue;  // count stays 0
        std::iota(perm.begin(), perm.end(), 0);
        for (int i = 0; i < k; ++i) {  // partial Fisher-Yates
          std::uniform_int_distribution<int> pick(i, n - 1);
          std::swap(perm[i], perm[pick(rng)]);
        }
        std::sort(perm.begin(), perm.begin() + k);
        mask.counts[mask.row_offset(b, h, q)] = k;
        std::copy(perm.begin(), perm.begin() + k, mask.row(b, h, q));
      }
    }
  return mask;
}

Result<DeviceProblem> DeviceProblem::make(int batch, const HeadLayouts& layouts, int head_dim,
                                          DType dtype, const TileMask* mask, uint64_t seed,
                                          float qk_range) {
  DeviceProblem p;
  p.batch = batch;
  p.heads = layouts.heads();
  p.head_dim = head_dim;
  p.tile_size = layouts.volume();
  p.num_tiles = layouts.max_tiles();
  p.tokens = layouts.padded_tokens();
  p.dtype = dtype;
  p.scale = float(1.0 / std::sqrt(double(head_dim)));
  p.valid_host = layouts.valid_table();
  const size_t n = size_t(p.elements());
  const size_t bytes = n * dtype_size(dtype);
  VEDA_ASSIGN_OR_RETURN(p.q, DeviceBuffer::allocate(bytes));
  VEDA_ASSIGN_OR_RETURN(p.k, DeviceBuffer::allocate(bytes));
  VEDA_ASSIGN_OR_RETURN(p.v, DeviceBuffer::allocate(bytes));
  VEDA_ASSIGN_OR_RETURN(p.o, DeviceBuffer::allocate(bytes));
  VEDA_ASSIGN_OR_RETURN(p.lse, DeviceBuffer::allocate(size_t(batch) * p.heads * p.tokens * 4));
  VEDA_RETURN_IF_ERROR(
      fill_device_uniform(p.q.data(), dtype, n, seed * 3 + 1, -qk_range, qk_range));
  VEDA_RETURN_IF_ERROR(
      fill_device_uniform(p.k.data(), dtype, n, seed * 3 + 2, -qk_range, qk_range));
  VEDA_RETURN_IF_ERROR(fill_device_uniform(p.v.data(), dtype, n, seed * 3 + 3, -1.f, 1.f));
  VEDA_ASSIGN_OR_RETURN(p.valid, DeviceBuffer::allocate(p.valid_host.size() * 4));
  VEDA_RETURN_IF_ERROR(
      copy_to_device(p.valid.data(), p.valid_host.data(), p.valid_host.size() * 4));
  if (mask) {
    if (mask->batch != batch || mask->heads != p.heads || mask->q_tiles != p.num_tiles)
      return invalid_argument("DeviceProblem: mask does not match the problem");
    p.has_mask = true;
    p.mask_host = *mask;
    p.max_k = mask->max_k;
    VEDA_ASSIGN_OR_RETURN(p.counts, DeviceBuffer::allocate(mask->counts.size() * 4));
    VEDA_ASSIGN_OR_RETURN(p.indices,
                          DeviceBuffer::allocate(std::max<size_t>(mask->indices.size(), 1) * 4));
    VEDA_RETURN_IF_ERROR(
        copy_to_device(p.counts.data(), mask->counts.data(), mask->counts.size() * 4));
    if (!mask->indices.empty())
      VEDA_RETURN_IF_ERROR(
          copy_to_device(p.indices.data(), mask->indices.data(), mask->indices.size() * 4));
  }
  VEDA_RETURN_IF_ERROR(cuda_synchronize());
  return Result<DeviceProblem>(std::move(p));
}

AttentionParams DeviceProblem::params() const {
  AttentionParams a;
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.o = o.data();
  a.lse = lse.as<float>();
  a.dtype = dtype;
  a.batch = batch, a.heads = heads, a.tokens = tokens, a.head_dim = head_dim;
  a.set_contiguous_strides();
  a.tile_size = tile_size;
  a.num_tiles = num_tiles;
  a.tile_valid = valid.as<int32_t>();
  if (has_mask) {
    a.mask_counts = counts.as<int32_t>();
    a.mask_indices = indices.as<int32_t>();
    a.max_k = max_k;
  }
  a.softmax_scale = scale;
  return a;
}

Status DeviceProblem::poison_outputs() {
  VEDA_RETURN_IF_ERROR(fill_device_bytes(o.data(), 0xFF, o.size()));
  VEDA_RETURN_IF_ERROR(fill_device_bytes(lse.data(), 0xFF, lse.size()));
  return Status::ok();
}

Result<std::vector<float>> DeviceProblem::slice_to_host(const DeviceBuffer& buf, int b,
                                                        int h) const {
  const size_t n = size_t(tokens) * head_dim, es = dtype_size(dtype);
  std::vector<uint16_t> raw(n);
  const auto* base =
      static_cast<const unsigned char*>(buf.data()) + (size_t(b) * heads + h) * n * es;
  VEDA_RETURN_IF_ERROR(copy_to_host(raw.data(), base, n * es));
  std::vector<float> out(n);
  convert_to_f32(raw.data(), dtype, out.data(), n);
  return out;
}

Result<std::vector<float>> DeviceProblem::lse_to_host(int b, int h) const {
  std::vector<float> out(static_cast<size_t>(tokens));
  VEDA_RETURN_IF_ERROR(copy_to_host(out.data(), lse.as<float>() + (size_t(b) * heads + h) * tokens,
                                    size_t(tokens) * 4));
  return out;
}

namespace {

float round_to(float x, DType dt) {
  return dt == DType::kF16 ? half_to_float(float_to_half(x)) : bf16_to_float(float_to_bf16(x));
}

// References for query tile qt of one slice: out64/lse64 in fp64 over the selected key tiles'
// valid keys, outlow emulating the kernel's roundings. Rows >= valid are left untouched.
void reference_tile(const DeviceProblem& pr, const std::vector<float>& q,
                    const std::vector<float>& k, const std::vector<float>& v, const int32_t* valid,
                    const std::vector<int32_t>& keys, int qt, std::vector<double>& out64,
                    std::vector<float>& outlow, std::vector<double>& lse64) {
  const int D = pr.head_dim, T = pr.tile_size;
  std::vector<int64_t> key_rows;
  for (int kt : keys)
    for (int s = 0; s < valid[kt]; ++s) key_rows.push_back(int64_t(kt) * T + s);
  const size_t nk = key_rows.size();
  std::vector<double> s64(nk);
  std::vector<float> s32(nk);
  for (int r = 0; r < valid[qt]; ++r) {
    const float* qr = &q[(size_t(qt) * T + r) * D];
    double m64 = -std::numeric_limits<double>::infinity();
    float m32 = -std::numeric_limits<float>::infinity();
    for (size_t j = 0; j < nk; ++j) {
      const float* kr = &k[size_t(key_rows[j]) * D];
      double a = 0;
      float a32 = 0;
      for (int d = 0; d < D; ++d) {
        a += double(qr[d]) * double(kr[d]);
        a32 += qr[d] * kr[d];
      }
      s64[j] = a * pr.scale;
      s32[j] = a32;
      m64 = std::max(m64, s64[j]);
      m32 = std::max(m32, a32);
    }
    double* o64 = &out64[size_t(r) * D];
    float* olow = &outlow[size_t(r) * D];
    std::fill(o64, o64 + D, 0.0);
    std::fill(olow, olow + D, 0.f);
    if (nk == 0) {
      lse64[r] = -std::numeric_limits<double>::infinity();
      continue;
    }
    double l64 = 0;
    float l32 = 0;
    for (size_t j = 0; j < nk; ++j) {
      const double p64 = std::exp(s64[j] - m64);
      const float p32 = std::exp2((s32[j] - m32) * pr.scale * 1.4426950408889634f);
      l64 += p64;
      l32 += p32;
      const float pr32 = round_to(p32, pr.dtype);
      const float* vr = &v[size_t(key_rows[j]) * D];
      for (int d = 0; d < D; ++d) {
        o64[d] += p64 * double(vr[d]);
        olow[d] += pr32 * vr[d];
      }
    }
    for (int d = 0; d < D; ++d) {
      o64[d] /= l64;
      olow[d] = round_to(olow[d] / l32, pr.dtype);
    }
    lse64[r] = m64 + std::log(l64);
  }
}

}  // namespace

bool CheckResult::pass() const {
  return nonfinite == 0 && bad_padding == 0 && bad_lse == 0 && std::isfinite(err_gpu) &&
         err_gpu <= 2 * err_lowp + atol && err_lse <= 1e-3;
}

std::string CheckResult::summary() const {
  return fmt::format(
      "{} err_gpu {:.3e} err_lowp {:.3e} (bound {:.3e}) err_lse {:.2e} max|ref| {:.3f} "
      "nonfinite {} bad_padding {} bad_lse {} tiles {}",
      pass() ? "PASS" : "FAIL", err_gpu, err_lowp, 2 * err_lowp + atol, err_lse, max_ref, nonfinite,
      bad_padding, bad_lse, checked_tiles);
}

std::vector<int> sample_tiles(int num_tiles, int n, uint64_t seed) {
  std::vector<int> tiles;
  if (n >= num_tiles) {
    tiles.resize(num_tiles);
    std::iota(tiles.begin(), tiles.end(), 0);
    return tiles;
  }
  std::mt19937_64 rng(seed);
  tiles.push_back(0);
  tiles.push_back(num_tiles - 1);
  std::uniform_int_distribution<int> pick(1, std::max(1, num_tiles - 2));
  while (int(tiles.size()) < n) {
    const int t = pick(rng);
    if (std::find(tiles.begin(), tiles.end(), t) == tiles.end()) tiles.push_back(t);
  }
  std::sort(tiles.begin(), tiles.end());
  return tiles;
}

Result<CheckResult> check_slice(const DeviceProblem& pr, int b, int h,
                                const std::vector<int>& q_tiles_in, int threads) {
  VEDA_ASSIGN_OR_RETURN(auto q, pr.slice_to_host(pr.q, b, h));
  VEDA_ASSIGN_OR_RETURN(auto k, pr.slice_to_host(pr.k, b, h));
  VEDA_ASSIGN_OR_RETURN(auto v, pr.slice_to_host(pr.v, b, h));
  VEDA_ASSIGN_OR_RETURN(auto o, pr.slice_to_host(pr.o, b, h));
  VEDA_ASSIGN_OR_RETURN(auto lse, pr.lse_to_host(b, h));
  const int D = pr.head_dim, T = pr.tile_size;
  const int32_t* valid = &pr.valid_host[size_t(h) * pr.num_tiles];
  auto keys_of = [&](int qt) {
    std::vector<int32_t> keys;
    if (pr.has_mask) {
      const int c = pr.mask_host.count(b, h, qt);
      keys.assign(pr.mask_host.row(b, h, qt), pr.mask_host.row(b, h, qt) + c);
    } else {
      for (int t = 0; t < pr.num_tiles; ++t)
        if (valid[t] > 0) keys.push_back(t);
    }
    return keys;
  };

  CheckResult res;
  // Whole slice: finiteness of valid rows, exact zeros in padding rows, lse of empty rows.
  for (int qt = 0; qt < pr.num_tiles; ++qt) {
    const bool empty = valid[qt] == 0 || keys_of(qt).empty();
    for (int r = 0; r < T; ++r) {
      const size_t row = size_t(qt) * T + r;
      const bool live = r < valid[qt];
      for (int d = 0; d < D; ++d) {
        const float x = o[row * D + d];
        if (live && !std::isfinite(x)) ++res.nonfinite;
        if ((!live || empty) && x != 0.f) ++res.bad_padding;
      }
      const float l = lse[row];
      if (std::isnan(l) || ((!live || empty) && !(std::isinf(l) && l < 0))) ++res.bad_lse;
    }
  }

  const std::vector<int> q_tiles =
      q_tiles_in.empty() ? sample_tiles(pr.num_tiles, pr.num_tiles, 0) : q_tiles_in;
  res.checked_tiles = int(q_tiles.size());
  const int nthreads = threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<CheckResult> partial(nthreads);
  std::atomic<size_t> next{0};
  auto worker = [&](int w) {
    std::vector<double> out64(size_t(T) * D), lse64(T);
    std::vector<float> outlow(size_t(T) * D);
    CheckResult& pr_res = partial[w];
    for (size_t i; (i = next.fetch_add(1)) < q_tiles.size();) {
      const int qt = q_tiles[i];
      if (qt < 0 || qt >= pr.num_tiles) continue;
      const auto keys = keys_of(qt);
      reference_tile(pr, q, k, v, valid, keys, qt, out64, outlow, lse64);
      for (int r = 0; r < valid[qt]; ++r) {
        const size_t row = size_t(qt) * T + r;
        for (int d = 0; d < D; ++d) {
          const double ref = out64[size_t(r) * D + d];
          const double g = o[row * D + d];
          const double e = std::abs(g - ref);
          pr_res.err_gpu = std::isnan(e) ? INFINITY : std::max(pr_res.err_gpu, e);
          pr_res.err_lowp = std::max(pr_res.err_lowp, std::abs(outlow[size_t(r) * D + d] - ref));
          pr_res.max_ref = std::max(pr_res.max_ref, std::abs(ref));
        }
        if (!keys.empty()) {
          const double el = std::abs(double(lse[row]) - lse64[r]);
          pr_res.err_lse = std::isnan(el) ? INFINITY : std::max(pr_res.err_lse, el);
        }
      }
    }
  };
  std::vector<std::thread> pool;
  for (int w = 0; w < nthreads; ++w) pool.emplace_back(worker, w);
  for (auto& t : pool) t.join();
  for (const auto& p : partial) {
    res.err_gpu = std::max(res.err_gpu, p.err_gpu);
    res.err_lowp = std::max(res.err_lowp, p.err_lowp);
    res.err_lse = std::max(res.err_lse, p.err_lse);
    res.max_ref = std::max(res.max_ref, p.max_ref);
  }
  return res;
}

}  // namespace veda::cuda_check
