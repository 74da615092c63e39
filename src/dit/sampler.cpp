// Flow-matching samplers (Euler, UniPC bh2) and the text-to-video sampling loop.
#include "veda/sampler.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "veda/thread_pool.hpp"

namespace veda {

Result<FlowSchedule> make_flow_schedule(int steps, double shift, bool integer_timesteps,
                                        int num_train_timesteps) {
  if (steps < 1) return invalid_argument(fmt::format("steps must be >= 1, got {}", steps));
  if (!(shift > 0)) return invalid_argument(fmt::format("shift must be > 0, got {}", shift));
  // diffusers (use_flow_sigmas): alphas = linspace(1, 1/N, steps + 1), sigma = 1 - alpha, shifted,
  // reversed, the trailing 0 dropped; the final sigma is 0.
  FlowSchedule s;
  const double last_alpha = 1.0 / num_train_timesteps;
  for (int i = steps; i >= 1; --i) {
    const double alpha = 1.0 + double(i) * (last_alpha - 1.0) / double(steps);
    const double sigma = 1.0 - alpha;
    const double shifted = shift * sigma / (1.0 + (shift - 1.0) * sigma);
    s.sigmas.push_back(shifted);
    const double t = shifted * num_train_timesteps;
    s.timesteps.push_back(integer_timesteps ? float(std::trunc(t)) : float(t));
  }
  s.sigmas.push_back(0.0);
  return s;
}

Result<SamplerKind> parse_sampler_kind(const std::string& name) {
  if (name == "euler") return SamplerKind::kEuler;
  if (name == "unipc") return SamplerKind::kUniPC;
  return invalid_argument(fmt::format("unknown sampler '{}' (euler, unipc)", name));
}

const char* sampler_kind_name(SamplerKind kind) {
  return kind == SamplerKind::kEuler ? "euler" : "unipc";
}

FlowSampler::FlowSampler(SamplerKind kind, FlowSchedule schedule)
    : kind_(kind), schedule_(std::move(schedule)) {}

Status FlowSampler::step(int step, const float* velocity, float* sample, int64_t n) {
  if (step != next_step_ || step >= schedule_.steps()) {
    return invalid_argument(fmt::format("sampler: step {} out of order (expected {} of {})", step,
                                        next_step_, schedule_.steps()));
  }
  ++next_step_;
  if (kind_ == SamplerKind::kEuler) {
    const float dt = float(schedule_.sigmas[step + 1] - schedule_.sigmas[step]);
    parallel_for(0, n, [&](int64_t i) { sample[i] += dt * velocity[i]; }, 1 << 15);
    return Status::ok();
  }
  unipc_step(step, velocity, sample, n);
  return Status::ok();
}

namespace {
// Flow sigmas: alpha = 1 - sigma; lambda = log(alpha) - log(sigma) (+inf at sigma 0).
double flow_lambda(double sigma) { return std::log(1.0 - sigma) - std::log(sigma); }
}  // namespace

// diffusers' UniPCMultistepScheduler.step with solver_order 2, bh2, predict_x0,
// flow_prediction, lower_order_final: corrector (UniC) on the previous predictor's result, then
// predictor (UniP).
void FlowSampler::unipc_step(int step, const float* velocity, float* sample, int64_t n) {
  const std::vector<double>& sig = schedule_.sigmas;
  const int steps = schedule_.steps();
  constexpr int64_t kGrain = 1 << 15;

  // x0 prediction from the flow prediction.
  std::vector<float> x0(static_cast<size_t>(n));
  {
    const float s = float(sig[step]);
    parallel_for(0, n, [&](int64_t i) { x0[i] = sample[i] - s * velocity[i]; }, kGrain);
  }

  // Corrector: refine the sample the last predictor produced, now that x0 at it is known.
  if (step > 0 && !last_sample_.empty()) {
    const double sigma_t = sig[step], sigma_s0 = sig[step - 1];
    const double alpha_t = 1.0 - sigma_t;
    const double lambda_s0 = flow_lambda(sigma_s0);
    const double h = flow_lambda(sigma_t) - lambda_s0;
    const double hh = -h;
    const double h_phi_1 = std::expm1(hh);
    const double b_h = std::expm1(hh);  // bh2
    const std::vector<float>& m0 = model_outputs_.back();
    double rho_d1 = 0, rho_t = 0.5, rk = 1;
    if (last_order_ == 2) {
      rk = (flow_lambda(sig[step - 2]) - lambda_s0) / h;
      // R = [[1, 1], [rk, 1]], b_k = h_phi_k * k! / B(h); rhos = R^-1 b.
      const double h_phi_k1 = h_phi_1 / hh - 1.0;
      const double h_phi_k2 = h_phi_k1 / hh - 0.5;
      const double b0 = h_phi_k1 / b_h, b1 = h_phi_k2 * 2.0 / b_h;
      rho_d1 = (b1 - b0) / (rk - 1.0);
      rho_t = b0 - rho_d1;
    }
    const std::vector<float>* m1 = last_order_ == 2 ? &model_outputs_[model_outputs_.size() - 2]
                                                    : nullptr;
    const double c_x = sigma_t / sigma_s0;
    const double c_m0 = alpha_t * h_phi_1;
    const double c_res = alpha_t * b_h;
    parallel_for(0, n, [&](int64_t i) {
      double corr = rho_t * (double(x0[i]) - m0[i]);
      if (m1) corr += rho_d1 * (double((*m1)[i]) - m0[i]) / rk;
      sample[i] = float(c_x * last_sample_[i] - c_m0 * m0[i] - c_res * corr);
    }, kGrain);
  }

  model_outputs_.push_back(std::move(x0));
  if (model_outputs_.size() > 2) model_outputs_.erase(model_outputs_.begin());
  int order = std::min(2, steps - step);  // lower_order_final
  order = std::min(order, lower_order_nums_ + 1);
  last_order_ = order;
  last_sample_.assign(sample, sample + n);

  // Predictor.
  const double sigma_t = sig[step + 1], sigma_s0 = sig[step];
  const std::vector<float>& m0 = model_outputs_.back();
  if (sigma_t == 0) {
    // h is infinite: the update reduces to the x0 prediction.
    std::memcpy(sample, m0.data(), size_t(n) * 4);
  } else {
    const double alpha_t = 1.0 - sigma_t;
    const double lambda_s0 = flow_lambda(sigma_s0);
    const double h = flow_lambda(sigma_t) - lambda_s0;
    const double h_phi_1 = std::expm1(-h);
    const double b_h = std::expm1(-h);
    const double c_x = sigma_t / sigma_s0;
    const double c_m0 = alpha_t * h_phi_1;
    const std::vector<float>* m1 = order == 2 ? &model_outputs_[0] : nullptr;
    const double rk = order == 2 ? (flow_lambda(sig[step - 1]) - lambda_s0) / h : 1.0;
    const double c_d1 = alpha_t * b_h * 0.5 / rk;  // rhos_p = 0.5 for order 2
    parallel_for(0, n, [&](int64_t i) {
      double x = c_x * sample[i] - c_m0 * m0[i];
      if (m1) x -= c_d1 * (double((*m1)[i]) - m0[i]);
      sample[i] = float(x);
    }, kGrain);
  }
  if (lower_order_nums_ < 2) ++lower_order_nums_;
}

void fill_standard_normal(float* data, int64_t n, uint64_t seed) {
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  auto next = [&state] {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  auto uniform = [&] { return (double(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); };
  for (int64_t i = 0; i < n; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double angle = 2.0 * M_PI * uniform();
    data[i] = float(r * std::cos(angle));
    if (i + 1 < n) data[i + 1] = float(r * std::sin(angle));
  }
}

FlowModelFn cpu_flow_model(const WanModel& model, ForwardOptions forward) {
  return [&model, forward = std::move(forward)](const Tensor& x, const std::vector<float>& steps,
                                                const Tensor& text, const FlowPass& pass) {
    return model.forward(x, steps, text, pass.applied_to(forward));
  };
}

Result<Tensor> generate(const WanModel& model, const Tensor& prompt_embeds,
                        const Tensor& negative_embeds, const GenerateOptions& options) {
  return generate(model.config(), cpu_flow_model(model, options.forward), prompt_embeds,
                  negative_embeds, options);
}

Result<Tensor> generate(const WanConfig& c, const FlowModelFn& model, const Tensor& prompt_embeds,
                        const Tensor& negative_embeds, const GenerateOptions& options) {
  if (!model) return invalid_argument("generate: no model");
  if (prompt_embeds.rank() != 2 || prompt_embeds.dim(1) != c.text_dim) {
    return invalid_argument(fmt::format("prompt embeddings must be [L, {}], got {}", c.text_dim,
                                        shape_to_string(prompt_embeds.shape())));
  }
  const bool guided = options.guidance > 1.0;
  if (guided && negative_embeds.shape() != prompt_embeds.shape()) {
    return invalid_argument(fmt::format("unconditional embeddings {} differ from the prompt's {}",
                                        shape_to_string(negative_embeds.shape()),
                                        shape_to_string(prompt_embeds.shape())));
  }
  if (options.frames < 1 || options.height < 1 || options.width < 1 ||
      options.frames % c.patch_t || options.height % c.patch_h || options.width % c.patch_w) {
    return invalid_argument(fmt::format("size {}x{}x{} is not a positive whole number of {}x{}x{} "
                                        "patches",
                                        options.frames, options.height, options.width, c.patch_t,
                                        c.patch_h, c.patch_w));
  }
  VEDA_ASSIGN_OR_RETURN(FlowSchedule schedule,
                        make_flow_schedule(options.steps, options.shift,
                                           options.sampler == SamplerKind::kUniPC));
  FlowSampler sampler(options.sampler, schedule);

  const int64_t batch = guided ? 2 : 1;
  const int64_t text_tokens = prompt_embeds.dim(0);
  // Text batch: [conditional, unconditional].
  Tensor text = Tensor::empty(DType::kF32, {batch, text_tokens, c.text_dim});
  {
    Tensor cond = prompt_embeds.to(DType::kF32);
    std::memcpy(text.data_as<float>(), cond.data(), cond.nbytes());
    if (guided) {
      Tensor uncond = negative_embeds.to(DType::kF32);
      std::memcpy(text.data_as<float>() + cond.numel(), uncond.data(), uncond.nbytes());
    }
  }

  const Shape sample_shape{1, c.in_channels, options.frames, options.height, options.width};
  Tensor sample = Tensor::empty(DType::kF32, sample_shape);
  const int64_t n = sample.numel();
  fill_standard_normal(sample.data_as<float>(), n, options.seed);
  Tensor model_in = Tensor::empty(DType::kF32, {batch, c.in_channels, options.frames,
                                                options.height, options.width});
  std::vector<float> velocity(static_cast<size_t>(n));

  for (int step = 0; step < schedule.steps(); ++step) {
    if (options.stop_after_step >= 0 && step > options.stop_after_step) break;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < batch; ++b) {
      std::memcpy(model_in.data_as<float>() + b * n, sample.data(), sample.nbytes());
    }
    FlowPass pass;
    pass.step = step;
    pass.dense = step < options.dense_warmup_steps;
    const bool capture_now =
        options.capture && std::find(options.capture_steps.begin(), options.capture_steps.end(),
                                     step) != options.capture_steps.end();
    if (capture_now) {
      pass.capture_layers = options.capture_layers;
      // Keep the conditional batch item only: [B, H, N, D] -> [1, H, N, D].
      pass.capture = [&, step](int layer, const Tensor& q, const Tensor& k, const Tensor& v,
                               Grid grid) -> Status {
        auto first = [](const Tensor& t) {
          Shape s = t.shape();
          s[0] = 1;
          Tensor out = Tensor::empty(DType::kF32, s);
          std::memcpy(out.data(), t.data(), out.nbytes());
          return out;
        };
        return options.capture(step, layer, first(q), first(k), first(v), grid);
      };
    }
    std::vector<float> timesteps(size_t(batch), schedule.timesteps[step]);
    Result<Tensor> out = model(model_in, timesteps, text, pass);
    if (!out.is_ok()) {
      return Status(out.status().code(),
                    fmt::format("step {}: {}", step, out.status().message()));
    }
    if (out->dtype() != DType::kF32 || out->shape() != model_in.shape()) {
      return invalid_argument(fmt::format(
          "step {}: the model returned {} {}, expected f32 {}", step, dtype_name(out->dtype()),
          shape_to_string(out->shape()), shape_to_string(model_in.shape())));
    }
    const float* pred = out->data_as<float>();
    if (guided) {
      const float g = float(options.guidance);
      parallel_for(0, n, [&](int64_t i) {
        velocity[i] = pred[n + i] + g * (pred[i] - pred[n + i]);
      }, 1 << 15);
    } else {
      std::memcpy(velocity.data(), pred, size_t(n) * 4);
    }
    VEDA_RETURN_IF_ERROR(sampler.step(step, velocity.data(), sample.data_as<float>(), n));
    if (options.on_step) {
      options.on_step(step, schedule.steps(),
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                          .count());
    }
  }
  VEDA_RETURN_IF_ERROR(sample.check_finite("generated sample"));
  return sample;
}

}  // namespace veda
