// Evaluation of tile selection methods on captured attention: for each method and density, the
// selection's tile-mass recall and the sparse output's error against dense attention.
#pragma once
#include <string>
#include <vector>

#include "veda/capture.hpp"
#include "veda/scoring.hpp"
#include "veda/selection.hpp"
#include "veda/tile_layout.hpp"

namespace veda {

struct EvalConfig {
  std::vector<double> densities{0.1, 0.05, 0.03};
  std::vector<ScoreMethod> methods{ScoreMethod::kMean, ScoreMethod::kStats, ScoreMethod::kOracle};
  TileShape tile{4, 4, 4};
  SelectMode mode = SelectMode::kTopK;
};

struct EvalRow {
  std::string capture;
  std::string method;
  double density = 0;         // requested
  double actual_density = 0;  // selected pairs / existing pairs
  int head = -1;              // -1: mean over heads
  double recall = 0, rel_l2 = 0, cosine = 0;
  double select_ms = 0;     // statistics + scoring + selection (whole call, all heads)
  double attention_ms = 0;  // tile-sparse CPU attention (whole call, all heads)
};

// Rows for every (method, density): one per head, then the mean over heads (head = -1).
// Dense attention and the exact tile mass are computed once per capture.
Result<std::vector<EvalRow>> evaluate_capture(const Capture& capture, const EvalConfig& config);

}  // namespace veda
