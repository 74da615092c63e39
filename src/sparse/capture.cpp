// Captured attention inputs: loading/saving safetensors captures, and a procedural video-like
// workload for tests and benchmarks when no capture is at hand.
#include "veda/capture.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <numbers>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include <fmt/format.h>

#include "veda/safetensors.hpp"
#include "veda/thread_pool.hpp"

namespace veda {
namespace {

// Whole-string base-10 integer; nullopt for anything else ("", "3x", " 3").
std::optional<int64_t> parse_integer(const std::string& text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || text.empty()) return std::nullopt;
  return value;
}

std::string grid_json(const Grid& g) { return fmt::format("[{}, {}, {}]", g.t, g.h, g.w); }

Result<Grid> parse_grid_json(const std::string& path, const std::string& text) {
  auto fail = [&] {
    return format_error(fmt::format("{}: metadata grid = '{}', expected JSON [T, H, W] of positive "
                                    "integers",
                                    path, text));
  };
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array() || j.size() != 3) return fail();
  int extents[3];
  for (int i = 0; i < 3; ++i) {
    if (!j[i].is_number_integer()) return fail();
    int64_t v = j[i].get<int64_t>();
    if (v <= 0 || v > (1 << 20)) return fail();
    extents[i] = int(v);
  }
  return Grid{extents[0], extents[1], extents[2]};
}

// Optional integer metadata: `fallback` when absent, an error when present but not an integer
// in [min_value, int max].
Result<int> metadata_int(const std::string& path, const std::map<std::string, std::string>& meta,
                         const std::string& key, int fallback, int64_t min_value) {
  auto it = meta.find(key);
  if (it == meta.end()) return fallback;
  std::optional<int64_t> v = parse_integer(it->second);
  if (!v || *v < min_value || *v > INT32_MAX) {
    return format_error(fmt::format("{}: metadata {} = '{}', expected an integer >= {}", path, key,
                                    it->second, min_value));
  }
  return int(*v);
}

// q, k, v rank 4 with one shape, and N = prefix + T*H*W.
Status check_capture_shapes(const std::string& where, const Tensor& q, const Tensor& k,
                            const Tensor& v, const Grid& grid, int prefix_tokens) {
  if (q.rank() != 4) {
    return format_error(fmt::format("{}: q has shape {}, expected [B, H, N, D]", where,
                                    shape_to_string(q.shape())));
  }
  if (k.shape() != q.shape() || v.shape() != q.shape()) {
    return format_error(fmt::format("{}: q, k, v shapes differ: {}, {}, {}", where,
                                    shape_to_string(q.shape()), shape_to_string(k.shape()),
                                    shape_to_string(v.shape())));
  }
  if (grid.t <= 0 || grid.h <= 0 || grid.w <= 0 || prefix_tokens < 0) {
    return invalid_argument(fmt::format("{}: invalid grid {} or prefix_tokens {}", where,
                                        grid_json(grid), prefix_tokens));
  }
  const int64_t expected = int64_t(prefix_tokens) + grid.tokens();
  if (q.dim(2) != expected) {
    return format_error(fmt::format("{}: N = {} tokens, but prefix_tokens {} + grid {} = {}", where,
                                    q.dim(2), prefix_tokens, grid_json(grid), expected));
  }
  return Status::ok();
}

// Deterministic normal samples. Box-Muller over mt19937_64 bits, so the same seed gives the same
// workload with any standard library (std::normal_distribution is implementation-defined).
class NormalRng {
 public:
  explicit NormalRng(uint64_t seed) : engine_(seed) {}
  float normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform_open(), u2 = uniform_open();
    double r = std::sqrt(-2.0 * std::log(u1));
    double a = 2.0 * std::numbers::pi * u2;
    spare_ = float(r * std::sin(a));
    has_spare_ = true;
    return float(r * std::cos(a));
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform_open(); }
  uint64_t bits() { return engine_(); }

 private:
  double uniform_open() { return (double(engine_() >> 11) + 0.5) * 0x1.0p-53; }  // (0, 1)
  std::mt19937_64 engine_;
  float spare_ = 0;
  bool has_spare_ = false;
};

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b) {
  // splitmix64 finaliser over the combined words: nearby (seed, a, b) give unrelated streams.
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (a + 1) + 0xBF58476D1CE4E5B9ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

enum class HeadKind { kLocal, kTemporal, kDiffuse };

// One head's structure, shared across the batch (as one layer's head is).
struct HeadPlan {
  HeadKind kind;
  std::vector<std::array<double, 3>> freqs;  // random Fourier frequencies over (t, h, w)
  std::vector<double> phases;
  std::vector<float> sink_dir;  // unit vector (diffuse heads)
  std::vector<int64_t> sinks;   // token indices of sink keys (diffuse heads)
  double pos_scale = 0;         // norm of the positional part of q and k
};

// Peak logit q.k/sqrt(D) between a token and itself for positional heads, and the noise. Tuned
// so that the positional heads match the dev capture's sharper heads (about 0.7 of a query's
// attention mass on its top 1% of keys, 0.85 on the top 5%, entropy ~0.6 log N) rather than
// being near one-hot.
constexpr double kPeakLogit = 8.0;
constexpr double kNoiseFraction = 0.35;  // per-token noise norm relative to the positional part
constexpr double kNormSpread = 0.05;     // log-normal spread of q/k norms (larger: a few keys win)

HeadPlan plan_head(const ProceduralSpec& spec, HeadKind kind, int head) {
  NormalRng rng(mix_seed(spec.seed, 0xC0FFEE, uint64_t(head)));
  HeadPlan plan;
  plan.kind = kind;
  const int d = spec.head_dim;
  plan.pos_scale = std::sqrt(kPeakLogit * std::sqrt(double(d)));
  // Length scales in tokens per axis. Random Fourier features with frequencies ~ N(0, 1/l^2)
  // give f(p).f(p') ~ exp(-|p - p'|^2 / 2l^2): local heads mix short, anisotropic extents (so
  // heads prefer different tile shapes); temporal heads ignore t entirely.
  double length[3];
  if (kind == HeadKind::kLocal) {
    length[0] = rng.uniform(1.5, 4.0);
    length[1] = rng.uniform(1.5, 4.0);
    length[2] = rng.uniform(1.5, 4.0);
  } else {
    length[0] = INFINITY;
    length[1] = rng.uniform(0.8, 1.5);
    length[2] = rng.uniform(0.8, 1.5);
  }
  for (int j = 0; j < d / 2; ++j) {
    std::array<double, 3> f{};
    for (int a = 0; a < 3; ++a) f[a] = std::isinf(length[a]) ? 0.0 : rng.normal() / length[a];
    plan.freqs.push_back(f);
    plan.phases.push_back(rng.uniform(0.0, 2.0 * std::numbers::pi));
  }
  if (kind == HeadKind::kDiffuse) {
    plan.sink_dir.resize(d);
    double norm = 0;
    for (float& x : plan.sink_dir) {
      x = rng.normal();
      norm += double(x) * x;
    }
    for (float& x : plan.sink_dir) x = float(x / std::sqrt(norm));
    const int64_t video_tokens = spec.grid.tokens();
    const int num_sinks = int(std::min<int64_t>(4, video_tokens));
    plan.sinks.push_back(spec.prefix_tokens);  // the first video token, as in real models
    while (int(plan.sinks.size()) < num_sinks) {
      int64_t s = spec.prefix_tokens + int64_t(rng.bits() % uint64_t(video_tokens));
      if (std::find(plan.sinks.begin(), plan.sinks.end(), s) == plan.sinks.end()) plan.sinks.push_back(s);
    }
  }
  return plan;
}

// Fills q, k, v rows [N, D] of one (batch, head).
void fill_head(const ProceduralSpec& spec, const HeadPlan& plan, uint64_t stream_seed, float* q,
               float* k, float* v) {
  NormalRng rng(stream_seed);
  const int d = spec.head_dim;
  const int64_t prefix = spec.prefix_tokens;
  const int64_t n = prefix + spec.grid.tokens();
  const double unit = 1.0 / std::sqrt(double(d));  // per-coordinate std for a unit-norm vector
  const double pos = plan.pos_scale;
  const double feature_norm = std::sqrt(2.0 / d);  // cos/sin pairs: |f(p)| = 1 (d even)

  // Sink logit so that the (four) sinks together take roughly a tenth of a query's attention.
  const double sink_logit = std::max(2.0, std::log(double(n)) - 3.5);
  const double sink_q = std::sqrt(sink_logit * std::sqrt(double(d)));

  for (int64_t i = 0; i < n; ++i) {
    float* qi = q + i * d;
    float* ki = k + i * d;
    float* vi = v + i * d;
    for (int c = 0; c < d; ++c) vi[c] = rng.normal();

    if (i < prefix) {  // prefix tokens: random embeddings of the positional heads' magnitude
      const double s = (plan.kind == HeadKind::kDiffuse ? 0.5 : pos) * unit;
      for (int c = 0; c < d; ++c) {
        qi[c] = float(s * rng.normal());
        ki[c] = float(s * rng.normal());
      }
      continue;
    }

    if (plan.kind == HeadKind::kDiffuse) {
      // Small random q/k: logits of std ~0.25, i.e. nearly flat attention, plus a shared
      // direction on every query that only the sink keys also carry.
      const double s = 0.5;
      const double q_sink = sink_q * (1.0 + 0.2 * rng.normal());
      for (int c = 0; c < d; ++c) {
        qi[c] = float(s * rng.normal() + q_sink * plan.sink_dir[c]);
        ki[c] = float(s * rng.normal());
      }
      if (std::find(plan.sinks.begin(), plan.sinks.end(), i) != plan.sinks.end()) {
        for (int c = 0; c < d; ++c) ki[c] += float(sink_q * plan.sink_dir[c]);
      }
      continue;
    }

    const int64_t token = i - prefix;
    const double pt = double(token / (int64_t(spec.grid.h) * spec.grid.w));
    const double ph = double((token / spec.grid.w) % spec.grid.h);
    const double pw = double(token % spec.grid.w);
    // Query norms vary per token as in real models; noise keeps the pattern from being exact.
    const double q_scale = pos * std::exp(kNormSpread * rng.normal());
    const double k_scale = pos * std::exp(kNormSpread * rng.normal());
    for (int j = 0; j < d / 2; ++j) {
      const auto& f = plan.freqs[j];
      const double angle = f[0] * pt + f[1] * ph + f[2] * pw + plan.phases[j];
      const double c = feature_norm * std::cos(angle), s = feature_norm * std::sin(angle);
      qi[2 * j] = float(q_scale * c);
      qi[2 * j + 1] = float(q_scale * s);
      ki[2 * j] = float(k_scale * c);
      ki[2 * j + 1] = float(k_scale * s);
    }
    if (d % 2 == 1) qi[d - 1] = ki[d - 1] = 0.0f;
    const double noise = kNoiseFraction * pos * unit;
    for (int c = 0; c < d; ++c) {
      qi[c] += float(noise * rng.normal());
      ki[c] += float(noise * rng.normal());
    }
  }
}

}  // namespace

Result<Capture> load_capture(const std::string& path) {
  VEDA_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(path));
  for (const char* name : {"q", "k", "v"}) {
    if (!file.contains(name)) {
      return format_error(fmt::format("{}: capture has no tensor '{}' (needs q, k, v)", path, name));
    }
  }
  Capture cap;
  VEDA_ASSIGN_OR_RETURN(cap.q, file.get("q"));
  VEDA_ASSIGN_OR_RETURN(cap.k, file.get("k"));
  VEDA_ASSIGN_OR_RETURN(cap.v, file.get("v"));

  const auto& meta = file.metadata();
  auto grid_it = meta.find("grid");
  if (grid_it == meta.end()) {
    return format_error(fmt::format("{}: capture has no 'grid' metadata (JSON [T, H, W])", path));
  }
  VEDA_ASSIGN_OR_RETURN(cap.grid, parse_grid_json(path, grid_it->second));
  VEDA_ASSIGN_OR_RETURN(cap.prefix_tokens, metadata_int(path, meta, "prefix_tokens", 0, 0));
  VEDA_ASSIGN_OR_RETURN(cap.layer, metadata_int(path, meta, "layer", -1, -1));
  VEDA_ASSIGN_OR_RETURN(cap.step, metadata_int(path, meta, "step", -1, -1));
  VEDA_RETURN_IF_ERROR(check_capture_shapes(path, cap.q, cap.k, cap.v, cap.grid, cap.prefix_tokens));
  cap.source = path;
  return cap;
}

Status save_capture(const std::string& path, const Capture& capture) {
  for (const Tensor* t : {&capture.q, &capture.k, &capture.v}) {
    if (!t->defined()) return invalid_argument(fmt::format("{}: capture q, k, v must all be set", path));
  }
  Status shapes = check_capture_shapes(path, capture.q, capture.k, capture.v, capture.grid,
                                       capture.prefix_tokens);
  if (!shapes.is_ok()) return invalid_argument(shapes.message());
  std::map<std::string, std::string> meta{
      {"grid", grid_json(capture.grid)},
      {"prefix_tokens", std::to_string(capture.prefix_tokens)},
      {"layout", "q,k,v: [batch, heads, tokens, head_dim], tokens in (t,h,w) row-major order"},
  };
  if (capture.layer >= 0) meta["layer"] = std::to_string(capture.layer);
  if (capture.step >= 0) meta["step"] = std::to_string(capture.step);
  if (!capture.source.empty()) meta["source"] = capture.source;
  return write_safetensors(path, {{"q", capture.q}, {"k", capture.k}, {"v", capture.v}}, meta);
}

Result<Capture> make_procedural_capture(const ProceduralSpec& spec) {
  if (spec.grid.t <= 0 || spec.grid.h <= 0 || spec.grid.w <= 0) {
    return invalid_argument(fmt::format("procedural capture: grid {} must be positive", grid_json(spec.grid)));
  }
  if (spec.prefix_tokens < 0 || spec.batch <= 0 || spec.heads <= 0 || spec.head_dim < 2) {
    return invalid_argument(fmt::format(
        "procedural capture: need prefix_tokens >= 0, batch > 0, heads > 0, head_dim >= 2 "
        "(got {}, {}, {}, {})",
        spec.prefix_tokens, spec.batch, spec.heads, spec.head_dim));
  }
  if (spec.head_kinds.empty()) return invalid_argument("procedural capture: head_kinds is empty");
  std::vector<HeadPlan> plans;
  for (int h = 0; h < spec.heads; ++h) {
    const std::string& name = spec.head_kinds[size_t(h) % spec.head_kinds.size()];
    HeadKind kind;
    if (name == "local") kind = HeadKind::kLocal;
    else if (name == "temporal") kind = HeadKind::kTemporal;
    else if (name == "diffuse") kind = HeadKind::kDiffuse;
    else {
      return invalid_argument(fmt::format(
          "procedural capture: unknown head kind '{}' (local, temporal, diffuse)", name));
    }
    plans.push_back(plan_head(spec, kind, h));
  }

  const int64_t n = spec.prefix_tokens + spec.grid.tokens();
  const Shape shape{spec.batch, spec.heads, n, spec.head_dim};
  Capture cap;
  cap.q = Tensor::empty(DType::kF32, shape);
  cap.k = Tensor::empty(DType::kF32, shape);
  cap.v = Tensor::empty(DType::kF32, shape);
  cap.grid = spec.grid;
  cap.prefix_tokens = spec.prefix_tokens;
  cap.source = fmt::format("procedural(grid={}, prefix={}, seed={})", grid_json(spec.grid),
                           spec.prefix_tokens, spec.seed);
  // One random stream per (batch, head): the result does not depend on the thread count.
  const size_t head_elems = size_t(n) * spec.head_dim;
  parallel_for(0, int64_t(spec.batch) * spec.heads, [&](int64_t bh) {
    const int h = int(bh % spec.heads);
    const size_t off = size_t(bh) * head_elems;
    fill_head(spec, plans[h], mix_seed(spec.seed, uint64_t(bh / spec.heads) + 1, uint64_t(h)),
              cap.q.data_as<float>() + off, cap.k.data_as<float>() + off,
              cap.v.data_as<float>() + off);
  });
  return cap;
}

}  // namespace veda
