// veda calibrate: fit the distilled estimator, choose tile shapes per head and split the density
// budget across heads on captured attention; writes a profile for `veda eval --profile`.
#include <fmt/core.h>

#include <chrono>

#include "command.hpp"
#include "eval_output.hpp"
#include "veda/calibrate.hpp"
#include "veda/profile.hpp"

namespace veda::cli {
namespace {

struct CalibrateOptions {
  std::vector<std::string> captures;
  double density = 0.05;
  std::string output;
  std::string shapes;  // empty: the default candidates that fit the grid
  std::string target_grids;  // empty: no limit
  std::string budget_scales = "0.5,0.75,1,1.5,2";
  std::string mode = "topk";
  std::string region = "all";
  int max_query_tiles = 256;
  bool query_upper = false;
  bool no_fit = false, no_shapes = false, no_split = false;
};

// Each comma-separated item parsed by `parse` (TileShape::parse, Grid::parse).
template <class T>
Result<std::vector<T>> parse_each(const std::string& csv, Result<T> (*parse)(std::string_view)) {
  std::vector<T> out;
  for (const std::string& item : split_csv(csv)) {
    VEDA_ASSIGN_OR_RETURN(T value, parse(item));
    out.push_back(value);
  }
  return out;
}

Result<std::vector<double>> parse_scales(const std::string& csv) {
  std::vector<double> scales;
  for (const std::string& item : split_csv(csv)) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (end == item.c_str() || *end != '\0' || !(v > 0))
      return invalid_argument("budget scale '" + item + "' is not a positive number");
    scales.push_back(v);
  }
  return scales;
}

RunFn setup_calibrate(CLI::App& sub) {
  auto opt = std::make_shared<CalibrateOptions>();
  sub.add_option("--capture", opt->captures, "calibration captures (safetensors with q, k, v); "
                                              "each layer found gets its own profile entry")
      ->required()
      ->check(CLI::ExistingFile);
  sub.add_option("--density", opt->density, "overall density target in (0, 1]")->capture_default_str();
  sub.add_option("-o,--output", opt->output, "profile to write (JSON)")->required();
  sub.add_option("--shapes", opt->shapes,
                 "comma-separated candidate tile shapes TxHxW of one slot count (default: the 64-token shapes "
                 "that fit the grid); shapes are compared at one tile density, so a shape with "
                 "fewer tokens than slots (3x5x4) costs more tiles on grids it does not fit");
  sub.add_option("--target-grid", opt->target_grids,
                 "comma-separated grids TxHxW the profile will run on (21x45x80 for Wan2.1 720p, "
                 "21x30x52 for 480p): candidate shapes that pad more than 4x4x4 there are left out");
  sub.add_option("--budget-scales", opt->budget_scales,
                 "head density multipliers the budget split may use (must include 1)")
      ->capture_default_str();
  sub.add_option("--mode", opt->mode, "selection: topk or mass")->capture_default_str();
  sub.add_option("--region", opt->region,
                 "query tiles to calibrate on: all, left or right half of the width (evaluate on "
                 "the other half with veda eval --region)")
      ->capture_default_str();
  sub.add_option("--max-query-tiles", opt->max_query_tiles,
                 "query tiles per head and capture used by the estimator fit")
      ->capture_default_str();
  sub.add_flag("--no-fit", opt->no_fit, "keep mean pooling instead of fitting the estimator");
  sub.add_flag("--query-upper", opt->query_upper,
               "also fit the query_upper term (query maxima and minima): doubles the GPU "
               "selection's scoring width");
  sub.add_flag("--no-shapes", opt->no_shapes, "use 4x4x4 for every head");
  sub.add_flag("--no-split", opt->no_split, "give every head the same density");
  return [opt]() -> Status {
    CalibrationConfig config;
    config.density = opt->density;
    VEDA_ASSIGN_OR_RETURN(config.candidate_shapes, parse_each(opt->shapes, &TileShape::parse));
    VEDA_ASSIGN_OR_RETURN(config.target_grids, parse_each(opt->target_grids, &Grid::parse));
    VEDA_ASSIGN_OR_RETURN(config.budget_scales, parse_scales(opt->budget_scales));
    VEDA_ASSIGN_OR_RETURN(config.mode, parse_select_mode(opt->mode));
    VEDA_ASSIGN_OR_RETURN(config.query_region, parse_query_region(opt->region));
    config.fit.max_query_tiles = opt->max_query_tiles;
    config.fit.query_upper = opt->query_upper;
    config.fit_estimator = !opt->no_fit;
    config.choose_shapes = !opt->no_shapes;
    config.split_budget = !opt->no_split;

    std::vector<Capture> captures;
    for (const std::string& path : opt->captures) {
      VEDA_ASSIGN_OR_RETURN(Capture c, load_capture(path));
      fmt::print(stderr, "loaded {}: grid {}, {} heads, {} tokens, layer {}, step {}\n", path,
                 c.grid.str(), c.q.dim(1), c.q.dim(2), c.layer, c.step);
      captures.push_back(std::move(c));
    }
    auto t0 = std::chrono::steady_clock::now();
    VEDA_ASSIGN_OR_RETURN(CalibrationResult result,
                          calibrate(captures, config, [](const std::string& m) { fmt::print(stderr, "{}\n", m); }));
    VEDA_RETURN_IF_ERROR(save_profile(opt->output, result.profile));
    fmt::print(stderr, "calibrated {} layer(s) in {:.1f} s; wrote {}\n", result.profile.layers.size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), opt->output);
    return Status::ok();
  };
}

const bool kRegistered = register_command(
    {"calibrate", "Fit the tile estimator, per-head tile shapes and density split on captures; write a profile",
     setup_calibrate});

}  // namespace
}  // namespace veda::cli
