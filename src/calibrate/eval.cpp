#include "veda/eval.hpp"

#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <map>

#include "calibrate/region_metrics.hpp"
#include "veda/attention.hpp"
#include "veda/estimator.hpp"
#include "veda/metrics.hpp"

namespace veda {

namespace {

using Clock = std::chrono::steady_clock;

double elapsed_ms(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
}

// log(mass) as logits, so that every method hands selection the same kind of score.
Tensor mass_to_logits(const Tensor& mass) {
  Tensor logits = Tensor::empty(DType::kF32, mass.shape());
  const float* m = mass.data_as<float>();
  float* l = logits.data_as<float>();
  for (int64_t i = 0; i < mass.numel(); ++i) l[i] = m[i] > 0 ? std::log(m[i]) : -INFINITY;
  return logits;
}

// One capture gathered into one set of per-head layouts, with its dense reference and exact mass.
struct LayoutData {
  HeadLayouts layouts;
  Tensor q, k, v, ref, mass;
  std::vector<std::vector<bool>> region;
};

Result<LayoutData> prepare_layout(const Capture& c, HeadLayouts layouts, const Tensor& dense_tokens,
                                  float scale, QueryRegion region) {
  LayoutData d;
  d.layouts = std::move(layouts);
  VEDA_ASSIGN_OR_RETURN(d.q, gather_to_tiles(c.q, d.layouts));
  VEDA_ASSIGN_OR_RETURN(d.k, gather_to_tiles(c.k, d.layouts));
  VEDA_ASSIGN_OR_RETURN(d.v, gather_to_tiles(c.v, d.layouts));
  VEDA_ASSIGN_OR_RETURN(d.ref, gather_to_tiles(dense_tokens, d.layouts));
  VEDA_ASSIGN_OR_RETURN(d.mass, oracle_tile_mass(d.q, d.k, d.layouts, scale));
  d.region = detail::region_filters(d.layouts, region);
  return d;
}

// Per-head results of one selection on one layout.
struct SelectionResult {
  std::vector<double> recall, rel_l2, cosine, density;
  double select_ms = 0, attention_ms = 0;
};

// Selected pairs / existing pairs of one head, over the batch.
double head_density(const TileMask& mask, const HeadLayouts& layouts, int h) {
  const TileLayout& layout = layouts.head(h);
  int existing = 0;
  for (int32_t v : layout.tile_valid()) existing += v > 0;
  int64_t selected = 0;
  for (int b = 0; b < mask.batch; ++b)
    for (int i = 0; i < layout.num_tiles(); ++i) selected += mask.count(b, h, i);
  const int64_t rows = int64_t(mask.batch) * existing;
  return rows > 0 ? double(selected) / double(rows * existing) : 0;
}

Result<SelectionResult> run_selection(const LayoutData& d, const Tensor& logits,
                                      const SelectionConfig& sel, float scale, QueryRegion region,
                                      double scoring_ms) {
  SelectionResult r;
  auto t0 = Clock::now();
  VEDA_ASSIGN_OR_RETURN(TileMask mask, select_tiles(logits, d.layouts, sel));
  r.select_ms = scoring_ms + elapsed_ms(t0);
  Tensor out = Tensor::empty(DType::kF32, d.q.shape());
  VEDA_ASSIGN_OR_RETURN(AttentionParams p, make_attention_params(d.q, d.k, d.v, out, d.layouts, &mask, scale));
  auto t1 = Clock::now();
  VEDA_RETURN_IF_ERROR(attention_cpu(p));
  r.attention_ms = elapsed_ms(t1);
  const int heads = d.layouts.heads();
  if (region == QueryRegion::kAll) {  // the library's metrics, as for every method
    r.recall = tile_mass_recall(d.mass, mask, d.layouts);
    for (const OutputError& e : compare_per_head(out, d.ref, d.layouts)) {
      r.rel_l2.push_back(e.rel_l2);
      r.cosine.push_back(e.cosine);
    }
  } else {
    for (const auto& q : detail::region_quality(d.mass, mask, out, d.ref, d.layouts, d.region)) {
      r.recall.push_back(q.recall);
      r.rel_l2.push_back(q.rel_l2);
      r.cosine.push_back(q.cosine);
    }
  }
  for (int h = 0; h < heads; ++h) r.density.push_back(head_density(mask, d.layouts, h));
  return r;
}

// Per-head rows and their mean row. `tiles[h]` names head h's shape.
void append_rows(std::vector<EvalRow>& rows, const std::string& capture, const std::string& method,
                 double density, const std::vector<std::string>& tiles, const SelectionResult& r) {
  const int heads = int(r.recall.size());
  EvalRow mean_row;
  mean_row.capture = capture;
  mean_row.method = method;
  mean_row.density = density;
  mean_row.select_ms = r.select_ms;
  mean_row.attention_ms = r.attention_ms;
  std::vector<std::string> distinct;
  for (int h = 0; h < heads; ++h) {
    EvalRow row = mean_row;
    row.head = h;
    row.tile = tiles[h];
    row.actual_density = r.density[h];
    row.recall = r.recall[h];
    row.rel_l2 = r.rel_l2[h];
    row.cosine = r.cosine[h];
    rows.push_back(row);
    mean_row.actual_density += r.density[h] / heads;
    mean_row.recall += r.recall[h] / heads;
    mean_row.rel_l2 += r.rel_l2[h] / heads;
    mean_row.cosine += r.cosine[h] / heads;
    if (std::find(distinct.begin(), distinct.end(), tiles[h]) == distinct.end()) distinct.push_back(tiles[h]);
  }
  for (const std::string& t : distinct) mean_row.tile += (mean_row.tile.empty() ? "" : "/") + t;
  rows.push_back(mean_row);
}

}  // namespace

Result<std::vector<EvalRow>> evaluate_capture(const Capture& capture, const EvalConfig& config) {
  if (config.densities.empty() || (config.methods.empty() && !(config.profile && config.veda)))
    return invalid_argument("evaluation needs at least one density and one method");
  for (double d : config.densities)
    if (!(d > 0 && d <= 1)) return invalid_argument("density must be in (0, 1], got " + std::to_string(d));
  VEDA_RETURN_IF_ERROR(capture.q.check_finite("q of " + capture.source));
  VEDA_RETURN_IF_ERROR(capture.k.check_finite("k of " + capture.source));
  VEDA_RETURN_IF_ERROR(capture.v.check_finite("v of " + capture.source));

  const int heads = int(capture.q.dim(1));
  const float scale = 1.0f / std::sqrt(float(capture.q.dim(3)));
  const LayerProfile* layer = nullptr;
  if (config.profile) {
    VEDA_ASSIGN_OR_RETURN(layer, config.profile->layer_for(capture.layer, heads));
  }

  // Dense attention once, in token order, shared by every layout.
  VEDA_ASSIGN_OR_RETURN(HeadLayouts base_layouts,
                        HeadLayouts::uniform(capture.grid, capture.prefix_tokens, heads, config.tile));
  Tensor dense_tokens;
  double dense_ms = 0;
  {
    VEDA_ASSIGN_OR_RETURN(Tensor q, gather_to_tiles(capture.q, base_layouts));
    VEDA_ASSIGN_OR_RETURN(Tensor k, gather_to_tiles(capture.k, base_layouts));
    VEDA_ASSIGN_OR_RETURN(Tensor v, gather_to_tiles(capture.v, base_layouts));
    Tensor dense_out = Tensor::zeros(DType::kF32, q.shape());
    VEDA_ASSIGN_OR_RETURN(AttentionParams dense,
                          make_attention_params(q, k, v, dense_out, base_layouts, nullptr, scale));
    VEDA_RETURN_IF_ERROR(attention_cpu(dense));
    // Timed on a second run, as the sparse runs are: the first one pays for page faults.
    auto t_dense = Clock::now();
    VEDA_RETURN_IF_ERROR(attention_cpu(dense));
    dense_ms = elapsed_ms(t_dense);
    VEDA_ASSIGN_OR_RETURN(dense_tokens, scatter_from_tiles(dense_out, base_layouts));
  }
  VEDA_ASSIGN_OR_RETURN(LayoutData base, prepare_layout(capture, std::move(base_layouts), dense_tokens,
                                                        scale, config.query_region));
  const std::vector<std::string> base_tiles(heads, config.tile.str());

  std::vector<EvalRow> rows;
  auto uniform_selection = [&](double density) {
    SelectionConfig sel;
    sel.density = density;
    sel.mode = config.mode;
    return sel;
  };

  auto add_veda_rows = [&]() -> Status {
    VEDA_ASSIGN_OR_RETURN(HeadLayouts layouts, profile_layouts(*layer, capture.grid, capture.prefix_tokens));
    VEDA_ASSIGN_OR_RETURN(LayoutData d, prepare_layout(capture, std::move(layouts), dense_tokens, scale,
                                                       config.query_region));
    std::vector<std::string> tiles;
    std::vector<EstimatorParams> params;
    for (const HeadProfile& h : layer->heads) {
      tiles.push_back(h.tile.str());
      params.push_back(h.estimator);
    }
    // Scoring time counts the statistics too, as for mean/stats.
    auto t0 = Clock::now();
    VEDA_ASSIGN_OR_RETURN(TileStats q_stats, compute_tile_stats(d.q, d.layouts));
    VEDA_ASSIGN_OR_RETURN(TileStats k_stats, compute_tile_stats(d.k, d.layouts));
    const double stats_ms = elapsed_ms(t0);
    VEDA_ASSIGN_OR_RETURN(Tensor fitted, score_tiles_estimated(q_stats, k_stats, d.layouts, scale, params));
    const double fitted_ms = elapsed_ms(t0);
    Tensor pooled;
    double pooled_ms = 0;
    if (config.veda_ablations) {
      auto t1 = Clock::now();
      VEDA_ASSIGN_OR_RETURN(pooled, score_tiles_mean(q_stats, k_stats, d.layouts, scale));
      pooled_ms = stats_ms + elapsed_ms(t1);
    }
    for (double density : config.densities) {
      if (config.veda_ablations) {
        VEDA_ASSIGN_OR_RETURN(SelectionResult shape_only,
                              run_selection(d, pooled, uniform_selection(density), scale, config.query_region, pooled_ms));
        append_rows(rows, capture.source, "veda-shape", density, tiles, shape_only);
        VEDA_ASSIGN_OR_RETURN(SelectionResult fit_only,
                              run_selection(d, fitted, uniform_selection(density), scale, config.query_region, fitted_ms));
        append_rows(rows, capture.source, "veda-fit", density, tiles, fit_only);
      }
      if (config.veda) {
        SelectionConfig sel = uniform_selection(density);
        sel.head_density = config.profile->head_densities(*layer, density);
        VEDA_ASSIGN_OR_RETURN(SelectionResult full,
                              run_selection(d, fitted, sel, scale, config.query_region, fitted_ms));
        append_rows(rows, capture.source, "veda", density, tiles, full);
      }
    }
    return Status::ok();
  };

  // With a profile: per head and density, the candidate shape whose exact mass selects best.
  auto add_best_shape_oracle_rows = [&]() -> Status {
    std::vector<TileShape> shapes =
        config.oracle_shapes.empty() ? default_candidate_shapes(capture.grid) : config.oracle_shapes;
    if (std::find(shapes.begin(), shapes.end(), config.tile) == shapes.end()) shapes.insert(shapes.begin(), config.tile);
    for (const HeadProfile& h : layer->heads)
      if (std::find(shapes.begin(), shapes.end(), h.tile) == shapes.end()) shapes.push_back(h.tile);
    std::vector<SelectionResult> best(config.densities.size());
    std::vector<std::vector<std::string>> best_tiles(config.densities.size(), std::vector<std::string>(heads));
    for (const TileShape& shape : shapes) {
      const LayoutData* d = &base;
      std::optional<LayoutData> own;
      if (!(shape == config.tile)) {
        VEDA_ASSIGN_OR_RETURN(HeadLayouts layouts, HeadLayouts::uniform(capture.grid, capture.prefix_tokens, heads, shape));
        VEDA_ASSIGN_OR_RETURN(LayoutData prepared, prepare_layout(capture, std::move(layouts), dense_tokens,
                                                                  scale, config.query_region));
        own = std::move(prepared);
        d = &*own;
      }
      auto t0 = Clock::now();
      Tensor logits = mass_to_logits(d->mass);
      const double scoring_ms = elapsed_ms(t0);
      for (size_t di = 0; di < config.densities.size(); ++di) {
        VEDA_ASSIGN_OR_RETURN(SelectionResult r, run_selection(*d, logits, uniform_selection(config.densities[di]),
                                                               scale, config.query_region, scoring_ms));
        SelectionResult& b = best[di];
        if (b.recall.empty()) {
          b = r;
          for (int h = 0; h < heads; ++h) best_tiles[di][h] = shape.str();
          continue;
        }
        b.select_ms = std::max(b.select_ms, r.select_ms);
        b.attention_ms = std::max(b.attention_ms, r.attention_ms);
        for (int h = 0; h < heads; ++h) {
          if (r.recall[h] <= b.recall[h]) continue;
          b.recall[h] = r.recall[h], b.rel_l2[h] = r.rel_l2[h], b.cosine[h] = r.cosine[h];
          b.density[h] = r.density[h];
          best_tiles[di][h] = shape.str();
        }
      }
    }
    for (size_t di = 0; di < config.densities.size(); ++di)
      append_rows(rows, capture.source, "oracle", config.densities[di], best_tiles[di], best[di]);
    return Status::ok();
  };

  bool veda_done = false;
  for (ScoreMethod method : config.methods) {
    if (method == ScoreMethod::kOracle && layer) {
      if (!veda_done) VEDA_RETURN_IF_ERROR(add_veda_rows());
      veda_done = true;
      VEDA_RETURN_IF_ERROR(add_best_shape_oracle_rows());
      continue;
    }
    auto t0 = Clock::now();
    Tensor logits;
    if (method == ScoreMethod::kOracle) {
      logits = mass_to_logits(base.mass);
    } else {
      // Statistics are recomputed per method so that the reported time is the method's own.
      VEDA_ASSIGN_OR_RETURN(TileStats q_stats, compute_tile_stats(base.q, base.layouts));
      VEDA_ASSIGN_OR_RETURN(TileStats k_stats, compute_tile_stats(base.k, base.layouts));
      auto scored = method == ScoreMethod::kMean ? score_tiles_mean(q_stats, k_stats, base.layouts, scale)
                                                 : score_tiles_stats(q_stats, k_stats, base.layouts, scale);
      if (!scored) return scored.status();
      logits = std::move(scored).value();
    }
    const double scoring_ms = elapsed_ms(t0);
    for (double density : config.densities) {
      VEDA_ASSIGN_OR_RETURN(SelectionResult r, run_selection(base, logits, uniform_selection(density), scale,
                                                             config.query_region, scoring_ms));
      append_rows(rows, capture.source, score_method_name(method), density, base_tiles, r);
    }
  }
  if (layer && !veda_done) VEDA_RETURN_IF_ERROR(add_veda_rows());
  for (EvalRow& row : rows) row.dense_attention_ms = dense_ms;
  return rows;
}

}  // namespace veda
