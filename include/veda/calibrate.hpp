// Calibration: from captured attention to a Profile. Per layer and head it fits the distilled
// estimator for every candidate tile shape, keeps the shape with the highest tile-mass recall among
// those whose sparse output reconstructs dense attention no worse than 4x4x4's at the target
// density (ShapeCriterion), and splits the density budget across heads to minimise
// the error of the layer's whole attention output, all heads together (not recall: moving tiles to
// raise recall can hurt the output; and not the mean of per-head relative errors, which a diffuse
// head with a small output would dominate).
#pragma once
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "veda/capture.hpp"
#include "veda/estimator.hpp"
#include "veda/profile.hpp"
#include "veda/selection.hpp"
#include "veda/status.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

// Which query tiles take part (a development split of one capture into calibration and
// evaluation halves along the width axis; tiles belong to the half holding their centre).
enum class QueryRegion { kAll, kLeftHalf, kRightHalf };
Result<QueryRegion> parse_query_region(std::string_view name);  // "all", "left", "right"
const char* query_region_name(QueryRegion region);
// [layout.max_tiles()] flags per head: true for the head's existing query tiles in `region`
// (prefix tiles belong to kAll only).
std::vector<bool> query_tiles_in_region(const TileLayout& layout, int max_tiles, QueryRegion region);

// Equal-volume shapes from {4x4x4, 1x8x8, 2x4x8, 4x2x8, 8x2x4, 16x2x2, 2x8x4, 4x8x2, 8x4x2} whose
// extents do not exceed the grid's (volume 64; other volumes need explicit candidates).
std::vector<TileShape> default_candidate_shapes(Grid grid, int volume = kDefaultTileVolume);

// The candidates that use at least as large a share of their slots as `reference` on every grid
// in `target_grids` (slot_use), in their order: a shape that pads more than the reference on a
// grid the profile will run on costs more there at the same tile density (16x2x2 on 21x45x80:
// 64% against 4x4x4's 82%, 1.63x the tile pairs). No target grids: all candidates.
std::vector<TileShape> shapes_for_target_grids(const std::vector<TileShape>& candidates,
                                               const std::vector<Grid>& target_grids,
                                               TileShape reference);

// How calibration picks a head's tile shape from its trials (fitted estimator, target density,
// aggregated over all of the layer's calibration captures: recall and rel-L2 averaged).
enum class ShapeCriterion {
  // Highest mean recall among the shapes whose rel-L2 is no worse than the reference shape's
  // (CalibrationConfig::fallback_shape, 4x4x4) on every calibration capture of the layer, so that
  // one capture cannot pick a shape that loses elsewhere: more of the attention mass without a
  // worse output. Cross-validated between two generations (calibrate on one, score on the other)
  // this kept most of the recall of a recall-only choice and most of the error gain of kMinError,
  // while kMinError gave diffuse heads shapes (1x8x8) that lowered their recall below 4x4x4's.
  kMaxRecallWithinError,
  kMinError,  // lowest rel-L2, ties broken by recall (the original rule)
};

struct CalibrationConfig {
  double density = 0.05;
  std::vector<TileShape> candidate_shapes;  // empty: default_candidate_shapes(grid)
  // Grids the profile will run on (e.g. 21x45x80 for Wan2.1 720p): candidates are limited to
  // shapes_for_target_grids(candidates, target_grids, fallback_shape). Empty: no limit.
  std::vector<Grid> target_grids;
  TileShape fallback_shape{4, 4, 4};        // used when choose_shapes is off; kMaxRecallWithinError's reference
  ShapeCriterion shape_criterion = ShapeCriterion::kMaxRecallWithinError;
  // kMaxRecallWithinError: a shape qualifies when its rel-L2 <= reference's * (1 + this) on every
  // calibration capture.
  double shape_error_tolerance = 0;
  bool fit_estimator = true;                // off: mean pooling (+ log valid count) per head
  bool choose_shapes = true;
  bool split_budget = true;
  // Head density multipliers the budget split may use; their mean over heads stays <= 1.
  std::vector<double> budget_scales{0.5, 0.75, 1.0, 1.5, 2.0};
  // The split may lower the mean recall over heads by at most this much (on calibration data):
  // output error is the objective, but a split that trades recall for it rarely holds up (across
  // generations a 0.01 allowance cost more recall than it gained in output error), so by default
  // the split must not lower recall at all.
  double max_recall_loss = 0;
  SelectMode mode = SelectMode::kTopK;
  FitOptions fit;
  QueryRegion query_region = QueryRegion::kAll;
};

// What calibration measured for one head and one candidate shape (fitted estimator, summed
// over the layer's captures).
struct ShapeTrial {
  TileShape tile;
  FitReport fit;
  // Per budget scale (CalibrationConfig::budget_scales), averaged over the layer's captures;
  // error2 is the squared output error summed over the captures (what the budget split adds up).
  std::vector<double> recall, rel_l2, error2;
  std::vector<double> capture_rel_l2;  // per capture of the layer, at the target density (scale 1)
};

struct HeadCalibration {
  std::vector<ShapeTrial> trials;  // one per candidate shape
  int chosen_trial = 0;
  double budget_scale = 1;
};

struct LayerCalibration {
  int layer = -1;
  std::vector<std::string> captures;
  std::vector<HeadCalibration> heads;
};

struct CalibrationResult {
  Profile profile;
  std::vector<LayerCalibration> layers;
};

using ProgressFn = std::function<void(const std::string& message)>;

// Captures are grouped by layer (each layer gets its own entry); all must have the same head
// count and tile volume. Errors on empty input, a bad config, or failures of the pipeline.
Result<CalibrationResult> calibrate(const std::vector<Capture>& captures,
                                    const CalibrationConfig& config,
                                    const ProgressFn& progress = {});

// Per-head layouts of one profile layer on a grid.
Result<HeadLayouts> profile_layouts(const LayerProfile& layer, Grid grid, int prefix_tokens);

}  // namespace veda
