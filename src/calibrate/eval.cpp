#include "veda/eval.hpp"

#include <chrono>
#include <cmath>

#include "veda/attention.hpp"
#include "veda/metrics.hpp"

namespace veda {

namespace {

double elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since)
      .count();
}

// log(mass) as logits, so that every method hands selection the same kind of score.
Tensor mass_to_logits(const Tensor& mass) {
  Tensor logits = Tensor::empty(DType::kF32, mass.shape());
  const float* m = mass.data_as<float>();
  float* l = logits.data_as<float>();
  for (int64_t i = 0; i < mass.numel(); ++i) l[i] = m[i] > 0 ? std::log(m[i]) : -INFINITY;
  return logits;
}

}  // namespace

Result<std::vector<EvalRow>> evaluate_capture(const Capture& capture, const EvalConfig& config) {
  if (config.densities.empty() || config.methods.empty())
    return invalid_argument("evaluation needs at least one density and one method");
  for (double d : config.densities)
    if (!(d > 0 && d <= 1)) return invalid_argument("density must be in (0, 1], got " + std::to_string(d));
  VEDA_RETURN_IF_ERROR(capture.q.check_finite("q of " + capture.source));
  VEDA_RETURN_IF_ERROR(capture.k.check_finite("k of " + capture.source));
  VEDA_RETURN_IF_ERROR(capture.v.check_finite("v of " + capture.source));

  const int heads = int(capture.q.dim(1));
  const float scale = 1.0f / std::sqrt(float(capture.q.dim(3)));
  VEDA_ASSIGN_OR_RETURN(HeadLayouts layouts,
                        HeadLayouts::uniform(capture.grid, capture.prefix_tokens, heads, config.tile));
  VEDA_ASSIGN_OR_RETURN(Tensor q, gather_to_tiles(capture.q, layouts));
  VEDA_ASSIGN_OR_RETURN(Tensor k, gather_to_tiles(capture.k, layouts));
  VEDA_ASSIGN_OR_RETURN(Tensor v, gather_to_tiles(capture.v, layouts));

  Tensor dense_out = Tensor::zeros(DType::kF32, q.shape());
  VEDA_ASSIGN_OR_RETURN(AttentionParams dense, make_attention_params(q, k, v, dense_out, layouts, nullptr, scale));
  VEDA_RETURN_IF_ERROR(attention_cpu(dense));
  VEDA_ASSIGN_OR_RETURN(Tensor mass, oracle_tile_mass(q, k, layouts, scale));

  std::vector<EvalRow> rows;
  for (ScoreMethod method : config.methods) {
    auto t0 = std::chrono::steady_clock::now();
    Tensor logits;
    if (method == ScoreMethod::kOracle) {
      logits = mass_to_logits(mass);
    } else {
      VEDA_ASSIGN_OR_RETURN(TileStats q_stats, compute_tile_stats(q, layouts));
      VEDA_ASSIGN_OR_RETURN(TileStats k_stats, compute_tile_stats(k, layouts));
      auto scored = method == ScoreMethod::kMean ? score_tiles_mean(q_stats, k_stats, layouts, scale)
                                                 : score_tiles_stats(q_stats, k_stats, layouts, scale);
      if (!scored) return scored.status();
      logits = std::move(scored).value();
    }
    double scoring_ms = elapsed_ms(t0);

    for (double density : config.densities) {
      auto t1 = std::chrono::steady_clock::now();
      SelectionConfig sel;
      sel.density = density;
      sel.mode = config.mode;
      VEDA_ASSIGN_OR_RETURN(TileMask mask, select_tiles(logits, layouts, sel));
      double select_ms = scoring_ms + elapsed_ms(t1);

      Tensor out = Tensor::empty(DType::kF32, q.shape());
      VEDA_ASSIGN_OR_RETURN(AttentionParams sparse, make_attention_params(q, k, v, out, layouts, &mask, scale));
      auto t2 = std::chrono::steady_clock::now();
      VEDA_RETURN_IF_ERROR(attention_cpu(sparse));
      double attention_ms = elapsed_ms(t2);

      std::vector<double> recall = tile_mass_recall(mass, mask, layouts);
      std::vector<OutputError> err = compare_per_head(out, dense_out, layouts);
      EvalRow mean_row{capture.source, score_method_name(method), density, mask.density(layouts), -1};
      mean_row.select_ms = select_ms;
      mean_row.attention_ms = attention_ms;
      for (int h = 0; h < heads; ++h) {
        EvalRow row = mean_row;
        row.head = h;
        row.recall = recall[h];
        row.rel_l2 = err[h].rel_l2;
        row.cosine = err[h].cosine;
        rows.push_back(row);
        mean_row.recall += recall[h] / heads;
        mean_row.rel_l2 += err[h].rel_l2 / heads;
        mean_row.cosine += err[h].cosine / heads;
      }
      rows.push_back(mean_row);
    }
  }
  return rows;
}

}  // namespace veda
