#include "veda/calibrate.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>

#include "calibrate/region_metrics.hpp"
#include "veda/attention.hpp"
#include "veda/scoring.hpp"

namespace veda {

Result<QueryRegion> parse_query_region(std::string_view name) {
  if (name == "all") return QueryRegion::kAll;
  if (name == "left") return QueryRegion::kLeftHalf;
  if (name == "right") return QueryRegion::kRightHalf;
  return invalid_argument(fmt::format("unknown query region '{}' (all, left, right)", name));
}

const char* query_region_name(QueryRegion region) {
  switch (region) {
    case QueryRegion::kAll: return "all";
    case QueryRegion::kLeftHalf: return "left";
    case QueryRegion::kRightHalf: return "right";
  }
  return "?";
}

std::vector<bool> query_tiles_in_region(const TileLayout& layout, int max_tiles, QueryRegion region) {
  std::vector<bool> in(size_t(max_tiles), false);
  const int width = layout.grid().w, tile_w = layout.shape().w;
  for (int i = 0; i < layout.num_tiles(); ++i) {
    if (layout.tile_valid()[i] == 0) continue;
    if (region == QueryRegion::kAll) {
      in[i] = true;
      continue;
    }
    if (layout.is_prefix_tile(i)) continue;
    const int w0 = layout.tile_coords(i)[2] * tile_w, w1 = std::min(w0 + tile_w, width);
    const bool left = (w0 + w1) < width;  // centre (w0 + w1) / 2 left of width / 2
    in[i] = region == QueryRegion::kLeftHalf ? left : !left;
  }
  return in;
}

std::vector<TileShape> default_candidate_shapes(Grid grid, int volume) {
  if (volume != kDefaultTileVolume) return {};
  static const TileShape kShapes[] = {{4, 4, 4}, {1, 8, 8}, {2, 4, 8}, {4, 2, 8}, {8, 2, 4},
                                      {16, 2, 2}, {2, 8, 4}, {4, 8, 2}, {8, 4, 2}};
  std::vector<TileShape> out;
  for (const TileShape& s : kShapes)
    if (s.t <= grid.t && s.h <= grid.h && s.w <= grid.w) out.push_back(s);
  if (out.empty()) out.push_back({4, 4, 4});  // tiny grids: ragged cubes still work
  return out;
}

std::vector<TileShape> shapes_for_target_grids(const std::vector<TileShape>& candidates,
                                               const std::vector<Grid>& target_grids,
                                               TileShape reference) {
  std::vector<TileShape> out;
  for (const TileShape& s : candidates) {
    const bool pads_no_more = std::all_of(target_grids.begin(), target_grids.end(), [&](Grid g) {
      return slot_use(g, s) >= slot_use(g, reference) - 1e-12;
    });
    if (pads_no_more) out.push_back(s);
  }
  return out;
}

Result<HeadLayouts> profile_layouts(const LayerProfile& layer, Grid grid, int prefix_tokens) {
  std::vector<TileShape> shapes;
  for (const HeadProfile& h : layer.heads) shapes.push_back(h.tile);
  return HeadLayouts::make(grid, prefix_tokens, shapes);
}

namespace {

float softmax_scale_of(const Capture& c) { return 1.0f / std::sqrt(float(c.q.dim(3))); }

// Dense attention output in token order [B, H, N, D] f32 (shape-independent, so computed once).
Result<Tensor> dense_output_tokens(const Capture& c) {
  VEDA_ASSIGN_OR_RETURN(HeadLayouts layouts,
                        HeadLayouts::uniform(c.grid, c.prefix_tokens, int(c.q.dim(1)), {4, 4, 4}));
  VEDA_ASSIGN_OR_RETURN(Tensor q, gather_to_tiles(c.q, layouts));
  VEDA_ASSIGN_OR_RETURN(Tensor k, gather_to_tiles(c.k, layouts));
  VEDA_ASSIGN_OR_RETURN(Tensor v, gather_to_tiles(c.v, layouts));
  Tensor out = Tensor::zeros(DType::kF32, q.shape());
  VEDA_ASSIGN_OR_RETURN(AttentionParams p, make_attention_params(q, k, v, out, layouts, nullptr,
                                                                 softmax_scale_of(c)));
  VEDA_RETURN_IF_ERROR(attention_cpu(p));
  return scatter_from_tiles(out, layouts);
}

// One capture in one tile shape: what both the fit and the trials need.
struct ShapedCapture {
  HeadLayouts layouts;
  TileStats q_stats, k_stats;
  Tensor mass;
};

Result<ShapedCapture> shape_capture(const Capture& c, TileShape shape) {
  VEDA_ASSIGN_OR_RETURN(HeadLayouts layouts,
                        HeadLayouts::uniform(c.grid, c.prefix_tokens, int(c.q.dim(1)), shape));
  VEDA_ASSIGN_OR_RETURN(Tensor q, gather_to_tiles(c.q, layouts));
  VEDA_ASSIGN_OR_RETURN(Tensor k, gather_to_tiles(c.k, layouts));
  VEDA_ASSIGN_OR_RETURN(TileStats q_stats, compute_tile_stats(q, layouts));
  VEDA_ASSIGN_OR_RETURN(TileStats k_stats, compute_tile_stats(k, layouts));
  VEDA_ASSIGN_OR_RETURN(Tensor mass, oracle_tile_mass(q, k, layouts, softmax_scale_of(c)));
  return ShapedCapture{std::move(layouts), std::move(q_stats), std::move(k_stats), std::move(mass)};
}

// Budget split: one scale per head minimising the summed `cost` of all heads with mean scale
// <= 1 (a small knapsack over scales counted in units of 1/20). -1 entries when none fits.
std::vector<int> split_budget(const std::vector<std::vector<double>>& cost,  // [head][scale]
                              const std::vector<double>& scales) {
  const int heads = int(cost.size()), options = int(scales.size());
  constexpr int kUnits = 20;
  std::vector<int> units(options);
  for (int s = 0; s < options; ++s) units[s] = int(std::lround(scales[s] * kUnits));
  const int budget = heads * kUnits;
  const double inf = std::numeric_limits<double>::infinity();
  // best[h][u]: least summed cost of heads [0, h) using exactly u units.
  std::vector<std::vector<double>> best(heads + 1, std::vector<double>(budget + 1, inf));
  std::vector<std::vector<int>> choice(heads + 1, std::vector<int>(budget + 1, -1));
  best[0][0] = 0;
  for (int h = 0; h < heads; ++h)
    for (int u = 0; u <= budget; ++u) {
      if (best[h][u] == inf) continue;
      for (int s = 0; s < options; ++s) {
        const int next = u + units[s];
        if (next > budget || !std::isfinite(cost[h][s])) continue;
        const double e = best[h][u] + cost[h][s];
        if (e < best[h + 1][next]) best[h + 1][next] = e, choice[h + 1][next] = s;
      }
    }
  int end = -1;
  for (int u = 0; u <= budget; ++u)
    if (best[heads][u] < inf && (end < 0 || best[heads][u] < best[heads][end] - 1e-12)) end = u;
  std::vector<int> picked(heads, -1);
  if (end < 0) return picked;
  for (int h = heads; h > 0; --h) {
    picked[h - 1] = choice[h][end];
    end -= units[picked[h - 1]];
  }
  return picked;
}

// The split that minimises the layer's total squared output error while the mean recall stays
// within `max_recall_loss` of the uniform budget's: a Lagrangian sweep (error - lambda * recall)
// from lambda = 0 upward, keeping the first split that meets the recall bound.
std::vector<int> split_budget_guarded(const std::vector<std::vector<double>>& error2,
                                      const std::vector<std::vector<double>>& recall,
                                      const std::vector<double>& scales, int unit_scale,
                                      double max_recall_loss) {
  const int heads = int(error2.size());
  double error_uniform = 0, recall_uniform = 0;
  for (int h = 0; h < heads; ++h) error_uniform += error2[h][unit_scale], recall_uniform += recall[h][unit_scale] / heads;
  if (!(error_uniform > 0)) return std::vector<int>(heads, unit_scale);
  for (double lambda : {0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0}) {
    std::vector<std::vector<double>> cost(heads, std::vector<double>(scales.size()));
    for (int h = 0; h < heads; ++h)
      for (size_t s = 0; s < scales.size(); ++s)
        cost[h][s] = error2[h][s] / error_uniform - lambda * recall[h][s] / heads;
    std::vector<int> split = split_budget(cost, scales);
    if (std::find(split.begin(), split.end(), -1) != split.end()) continue;
    double split_recall = 0, split_error = 0;
    for (int h = 0; h < heads; ++h) split_recall += recall[h][split[h]] / heads, split_error += error2[h][split[h]];
    if (split_recall >= recall_uniform - max_recall_loss && split_error <= error_uniform) return split;
  }
  return std::vector<int>(heads, unit_scale);
}

}  // namespace

Result<CalibrationResult> calibrate(const std::vector<Capture>& captures,
                                    const CalibrationConfig& config, const ProgressFn& progress) {
  auto say = [&](const std::string& m) {
    if (progress) progress(m);
  };
  if (captures.empty()) return invalid_argument("calibration needs at least one capture");
  if (!(config.density > 0 && config.density <= 1))
    return invalid_argument(fmt::format("density {} is not in (0, 1]", config.density));
  if (config.budget_scales.empty()) return invalid_argument("budget_scales is empty");
  int unit_scale = -1;
  for (size_t s = 0; s < config.budget_scales.size(); ++s) {
    const double scale = config.budget_scales[s];
    if (!(scale > 0) || config.density * scale > 1)
      return invalid_argument(fmt::format("budget scale {} must be > 0 and keep density <= 1", scale));
    if (std::abs(scale - 1) < 1e-9) unit_scale = int(s);
  }
  if (unit_scale < 0) return invalid_argument("budget_scales must contain 1");
  if (!(config.max_recall_loss >= 0) || !(config.shape_error_tolerance >= 0))
    return invalid_argument("max_recall_loss and shape_error_tolerance must be >= 0");
  const int heads = int(captures.front().q.dim(1));
  for (const Capture& c : captures) {
    if (c.q.rank() != 4 || c.q.dim(1) != heads)
      return invalid_argument(fmt::format("capture {} has {} heads, the first has {}", c.source,
                                          c.q.rank() == 4 ? c.q.dim(1) : -1, heads));
    VEDA_RETURN_IF_ERROR(c.q.check_finite("q of " + c.source));
    VEDA_RETURN_IF_ERROR(c.k.check_finite("k of " + c.source));
    VEDA_RETURN_IF_ERROR(c.v.check_finite("v of " + c.source));
  }

  std::map<int, std::vector<const Capture*>> by_layer;
  for (const Capture& c : captures) by_layer[c.layer].push_back(&c);

  CalibrationResult result;
  result.profile.density = config.density;
  result.profile.heads = heads;
  result.profile.tile_volume = kDefaultTileVolume;
  for (const Capture& c : captures) result.profile.calibration_captures.push_back(c.source);

  for (const auto& [layer, layer_captures] : by_layer) {
    // Candidate shapes must fit every capture of the layer.
    std::vector<TileShape> shapes;
    if (!config.choose_shapes) {
      shapes = {config.fallback_shape};
    } else if (!config.candidate_shapes.empty()) {
      shapes = config.candidate_shapes;
    } else {
      shapes = default_candidate_shapes(layer_captures.front()->grid);
      for (const Capture* c : layer_captures) {
        std::vector<TileShape> fit = default_candidate_shapes(c->grid);
        std::erase_if(shapes, [&](const TileShape& s) { return std::find(fit.begin(), fit.end(), s) == fit.end(); });
      }
      if (shapes.empty()) shapes = {config.fallback_shape};
    }
    if (config.choose_shapes && !config.target_grids.empty()) {
      std::vector<TileShape> kept =
          shapes_for_target_grids(shapes, config.target_grids, config.fallback_shape);
      std::string dropped;
      for (const TileShape& s : shapes)
        if (std::find(kept.begin(), kept.end(), s) == kept.end()) {
          dropped += fmt::format(" {} (", s.str());
          for (const Grid& g : config.target_grids)
            dropped += fmt::format("{}{:.0f}% on {}", &g == &config.target_grids.front() ? "" : ", ",
                                   100 * slot_use(g, s), g.str());
          dropped += ")";
        }
      if (!dropped.empty())
        say(fmt::format("layer {}: shapes that pad more than {} on the target grids left out:{}",
                        layer, config.fallback_shape.str(), dropped));
      shapes = kept.empty() ? std::vector<TileShape>{config.fallback_shape} : kept;
    }
    for (const TileShape& s : shapes)
      if (s.slots() == 0 || s.slots() != shapes.front().slots())
        return invalid_argument("candidate tile shapes must take one slot count (64 or 128)");
    result.profile.tile_volume = shapes.front().slots();

    LayerCalibration report;
    report.layer = layer;
    report.heads.resize(heads);
    say(fmt::format("layer {}: {} capture(s), {} candidate shape(s), target density {}", layer,
                    layer_captures.size(), shapes.size(), config.density));

    std::vector<double> reference2(heads, 0);  // per head, summed over captures
    std::vector<Tensor> dense_tokens;
    for (const Capture* c : layer_captures) {
      report.captures.push_back(c->source);
      say(fmt::format("  dense attention on {} ({} heads x {} tokens)", c->source, heads, c->q.dim(2)));
      VEDA_ASSIGN_OR_RETURN(Tensor dense, dense_output_tokens(*c));
      dense_tokens.push_back(std::move(dense));
    }

    for (const TileShape& shape : shapes) {
      std::vector<ShapedCapture> shaped;
      std::vector<EstimatorFitData> fit_data(heads);
      for (const Capture* c : layer_captures) {
        VEDA_ASSIGN_OR_RETURN(ShapedCapture sc, shape_capture(*c, shape));
        if (config.fit_estimator) {
          auto filters = detail::region_filters(sc.layouts, config.query_region);
          for (int b = 0; b < c->q.dim(0); ++b)
            for (int h = 0; h < heads; ++h)
              VEDA_RETURN_IF_ERROR(fit_data[h].add_head(sc.q_stats, sc.k_stats, sc.mass, sc.layouts,
                                                        b, h, softmax_scale_of(*c), config.fit,
                                                        &filters[h]));
        }
        shaped.push_back(std::move(sc));
      }
      std::vector<EstimatorParams> params(heads);
      std::vector<FitReport> fits(heads);
      if (config.fit_estimator) {
        for (int h = 0; h < heads; ++h) {
          VEDA_ASSIGN_OR_RETURN(fits[h], fit_estimator(fit_data[h], config.fit));
          params[h] = fits[h].params;
        }
      }
      fit_data.clear();

      // Trials: the fitted estimator's selection at every budget scale, against dense attention.
      const size_t n_scales = config.budget_scales.size();
      std::vector<std::vector<double>> recall(heads, std::vector<double>(n_scales, 0));
      std::vector<std::vector<double>> rel_l2 = recall, error2 = recall;
      std::vector<std::vector<double>> capture_rel_l2(heads);
      reference2.assign(heads, 0);
      for (size_t ci = 0; ci < layer_captures.size(); ++ci) {
        const Capture& c = *layer_captures[ci];
        const ShapedCapture& sc = shaped[ci];
        const float scale = softmax_scale_of(c);
        VEDA_ASSIGN_OR_RETURN(Tensor q, gather_to_tiles(c.q, sc.layouts));
        VEDA_ASSIGN_OR_RETURN(Tensor k, gather_to_tiles(c.k, sc.layouts));
        VEDA_ASSIGN_OR_RETURN(Tensor v, gather_to_tiles(c.v, sc.layouts));
        VEDA_ASSIGN_OR_RETURN(Tensor ref, gather_to_tiles(dense_tokens[ci], sc.layouts));
        VEDA_ASSIGN_OR_RETURN(Tensor logits, score_tiles_estimated(sc.q_stats, sc.k_stats, sc.layouts,
                                                                   scale, params));
        auto filters = detail::region_filters(sc.layouts, config.query_region);
        for (size_t s = 0; s < n_scales; ++s) {
          SelectionConfig sel;
          sel.density = std::min(1.0, config.density * config.budget_scales[s]);
          sel.mode = config.mode;
          VEDA_ASSIGN_OR_RETURN(TileMask mask, select_tiles(logits, sc.layouts, sel));
          Tensor out = Tensor::empty(DType::kF32, q.shape());
          VEDA_ASSIGN_OR_RETURN(AttentionParams p,
                                make_attention_params(q, k, v, out, sc.layouts, &mask, scale));
          VEDA_RETURN_IF_ERROR(attention_cpu(p));
          auto quality = detail::region_quality(sc.mass, mask, out, ref, sc.layouts, filters);
          for (int h = 0; h < heads; ++h) {
            // VEDA_CALIBRATE_TRIALS set: one progress line per (capture, head, shape, scale), the
            // raw data for cross-validating calibration settings between generations.
            if (std::getenv("VEDA_CALIBRATE_TRIALS"))
              say(fmt::format("TRIAL {} {} {} {} {} {:.6f} {:.6f} {:.8g} {:.8g}", layer, c.source, h,
                              shape.str(), config.budget_scales[s], quality[h].recall, quality[h].rel_l2,
                              quality[h].error2, quality[h].reference2));
            recall[h][s] += quality[h].recall / double(layer_captures.size());
            rel_l2[h][s] += quality[h].rel_l2 / double(layer_captures.size());
            error2[h][s] += quality[h].error2;
            if (s == 0) reference2[h] += quality[h].reference2;
            if (int(s) == unit_scale) capture_rel_l2[h].push_back(quality[h].rel_l2);
          }
        }
      }
      std::string line = fmt::format("  shape {:>7}:", shape.str());
      for (int h = 0; h < heads; ++h) {
        report.heads[h].trials.push_back({shape, fits[h], recall[h], rel_l2[h], error2[h], capture_rel_l2[h]});
        line += fmt::format(" h{} recall {:.3f} rel-L2 {:.3f}", h, recall[h][unit_scale], rel_l2[h][unit_scale]);
        if (config.fit_estimator) line += fmt::format(" (KL {:.3f}->{:.3f})", fits[h].initial_loss, fits[h].final_loss);
        line += ";";
      }
      say(line);
    }

    // Shape per head (see ShapeCriterion), from the trials at the target density.
    std::vector<std::vector<double>> chosen_errors(heads), chosen_recall(heads);
    for (int h = 0; h < heads; ++h) {
      HeadCalibration& hc = report.heads[h];
      // Without the reference shape among the candidates, kMaxRecallWithinError has no error
      // bound and falls back to kMinError.
      const ShapeTrial* reference = nullptr;
      if (config.shape_criterion == ShapeCriterion::kMaxRecallWithinError) {
        for (const ShapeTrial& t : hc.trials)
          if (t.tile == config.fallback_shape) reference = &t;
      }
      const bool by_recall = reference != nullptr;
      auto within_error = [&](const ShapeTrial& t) {
        for (size_t c = 0; c < t.capture_rel_l2.size(); ++c)
          if (t.capture_rel_l2[c] > reference->capture_rel_l2[c] * (1 + config.shape_error_tolerance) + 1e-12)
            return false;
        return true;
      };
      int best = -1;
      for (int t = 0; t < int(hc.trials.size()); ++t) {
        const ShapeTrial& a = hc.trials[t];
        if (by_recall && !within_error(a)) continue;
        if (best < 0) {
          best = t;
          continue;
        }
        const ShapeTrial& b = hc.trials[best];
        const double ra = a.recall[unit_scale], rb = b.recall[unit_scale];
        const double ea = a.rel_l2[unit_scale], eb = b.rel_l2[unit_scale];
        const bool better = by_recall ? (ra > rb + 1e-12 || (std::abs(ra - rb) <= 1e-12 && ea < eb))
                                      : (ea < eb - 1e-12 || (std::abs(ea - eb) <= 1e-12 && ra > rb));
        if (better) best = t;
      }
      hc.chosen_trial = best;
      chosen_errors[h] = hc.trials[best].error2;
      chosen_recall[h] = hc.trials[best].recall;
    }
    std::vector<int> scale_index(heads, unit_scale);
    if (config.split_budget && heads > 1) {
      scale_index = split_budget_guarded(chosen_errors, chosen_recall, config.budget_scales, unit_scale,
                                         config.max_recall_loss);
    }

    LayerProfile lp;
    lp.layer = layer;
    double mean_before = 0, mean_after = 0, error_before = 0, error_after = 0, reference = 0;
    for (int h = 0; h < heads; ++h) {
      HeadCalibration& hc = report.heads[h];
      hc.budget_scale = config.budget_scales[scale_index[h]];
      const ShapeTrial& trial = hc.trials[hc.chosen_trial];
      lp.heads.push_back({trial.tile, std::min(1.0, config.density * hc.budget_scale), trial.fit.params});
      mean_before += trial.rel_l2[unit_scale] / heads;
      mean_after += trial.rel_l2[scale_index[h]] / heads;
      error_before += trial.error2[unit_scale];
      error_after += trial.error2[scale_index[h]];
      reference += reference2[h];
      say(fmt::format("  head {}: tile {}, density {:.4f} (x{:.2f}), recall {:.3f}, rel-L2 {:.3f}", h,
                      trial.tile.str(), lp.heads.back().density, hc.budget_scale,
                      trial.recall[scale_index[h]], trial.rel_l2[scale_index[h]]));
    }
    say(fmt::format("  layer {}: output rel-L2 (all heads) {:.4f} with a uniform budget, {:.4f} with the "
                    "split (mean of per-head rel-L2 {:.4f} -> {:.4f})",
                    layer, std::sqrt(error_before / reference), std::sqrt(error_after / reference),
                    mean_before, mean_after));
    result.profile.layers.push_back(std::move(lp));
    result.layers.push_back(std::move(report));
  }
  VEDA_RETURN_IF_ERROR(validate_profile(result.profile));
  return result;
}

}  // namespace veda
