// Evaluation of tile selection methods on captured attention: for each method and density, the
// selection's tile-mass recall and the sparse output's error against dense attention.
//
// With a calibration profile two things change: method "veda" is added (the profile's tile shape,
// fitted estimator and density split per head), and "oracle" keeps, per head and density, the
// candidate tile shape whose exact tile mass gives the highest recall (the best any selector on
// those shapes can do).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "veda/calibrate.hpp"
#include "veda/capture.hpp"
#include "veda/profile.hpp"
#include "veda/scoring.hpp"
#include "veda/selection.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

struct EvalConfig {
  std::vector<double> densities{0.1, 0.05, 0.03};
  std::vector<ScoreMethod> methods{ScoreMethod::kMean, ScoreMethod::kStats, ScoreMethod::kOracle};
  TileShape tile{4, 4, 4};
  SelectMode mode = SelectMode::kTopK;

  std::optional<Profile> profile;  // the capture's layer must be in it, with matching heads
  bool veda = true;                // with a profile: method "veda"
  // With a profile, also "veda-shape" (profile shapes, mean pooling, uniform density) and
  // "veda-fit" (profile shapes and estimator, uniform density): what each part contributes.
  bool veda_ablations = false;
  std::vector<TileShape> oracle_shapes;  // with a profile; empty: default_candidate_shapes(grid)
  // Metrics over these query tiles only (a held-out half of a capture used for calibration).
  QueryRegion query_region = QueryRegion::kAll;
};

struct EvalRow {
  std::string capture;
  std::string method;
  double density = 0;         // requested
  double actual_density = 0;  // selected pairs / existing pairs
  int head = -1;              // -1: mean over heads
  std::string tile;           // the head's tile shape; for head -1 the shapes used, '/'-joined
  double recall = 0, rel_l2 = 0, cosine = 0;
  double select_ms = 0;     // statistics + scoring + selection (whole call, all heads)
  double attention_ms = 0;  // tile-sparse CPU attention (whole call, all heads)
  double dense_attention_ms = 0;  // dense CPU attention on the same capture, for comparison
};

// Rows for every (method, density): one per head, then the mean over heads (head = -1).
// Dense attention is computed once per capture, the exact tile mass once per tile layout.
Result<std::vector<EvalRow>> evaluate_capture(const Capture& capture, const EvalConfig& config);

}  // namespace veda
