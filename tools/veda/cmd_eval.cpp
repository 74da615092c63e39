// veda eval: recall and output error of tile selection methods on captured attention.
#include <fmt/core.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "eval_output.hpp"
#include "veda/eval.hpp"
#include "veda/profile.hpp"

namespace veda::cli {
namespace {

struct EvalOptions {
  std::vector<std::string> captures;
  std::string densities = "0.1,0.05,0.03";
  std::string methods;  // default depends on --profile
  std::string tile = "4x4x4";
  std::string mode = "topk";
  std::string profile;
  std::string region = "all";
  bool json = false;
};

// Same file, whether named by a relative or an absolute path.
bool same_capture(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (std::filesystem::equivalent(a, b, ec)) return true;
  return a == b;
}

RunFn setup_eval(CLI::App& sub) {
  auto opt = std::make_shared<EvalOptions>();
  sub.add_option("--capture", opt->captures, "capture files (safetensors with q, k, v)")
      ->required()
      ->check(CLI::ExistingFile);
  sub.add_option("--density", opt->densities, "comma-separated densities in (0, 1]")
      ->capture_default_str();
  sub.add_option("--method", opt->methods,
                 "comma-separated: mean, stats, oracle; with --profile also veda, veda-shape, veda-fit "
                 "(default: mean,stats,oracle, plus veda with --profile)");
  sub.add_option("--tile", opt->tile, "tile shape TxHxW (33-64 or 65-128 tokens) of mean/stats")->capture_default_str();
  sub.add_option("--mode", opt->mode, "selection: topk or mass")->capture_default_str();
  sub.add_option("--profile", opt->profile,
                 "calibration profile (veda calibrate): adds method veda; oracle then uses the best "
                 "tile shape per head")
      ->check(CLI::ExistingFile);
  sub.add_option("--region", opt->region,
                 "query tiles to score: all, left or right half of the width (a held-out half of a "
                 "capture calibrated with the other one)")
      ->capture_default_str();
  sub.add_flag("--json", opt->json, "print a JSON array of rows instead of a table");
  return [opt]() -> Status {
    std::string methods = opt->methods;
    if (methods.empty()) methods = opt->profile.empty() ? "mean,stats,oracle" : "mean,stats,veda,oracle";
    VEDA_ASSIGN_OR_RETURN(EvalConfig config, parse_eval_config(opt->densities, methods, opt->tile, opt->mode));
    VEDA_ASSIGN_OR_RETURN(config.query_region, parse_query_region(opt->region));
    if (opt->profile.empty()) {
      if (config.veda || config.veda_ablations)
        return invalid_argument("methods veda, veda-shape and veda-fit need --profile");
    } else {
      VEDA_ASSIGN_OR_RETURN(config.profile, load_profile(opt->profile));
      // The split between calibration and evaluation data, so held-out numbers are labelled so.
      std::vector<std::string> held_out, seen;
      for (const std::string& path : opt->captures) {
        bool calibrated = false;
        for (const std::string& c : config.profile->calibration_captures) calibrated |= same_capture(path, c);
        (calibrated ? seen : held_out).push_back(path);
      }
      fmt::print(stderr, "profile {}: density {}, layers", opt->profile, config.profile->density);
      for (const LayerProfile& l : config.profile->layers) fmt::print(stderr, " {}", l.layer);
      fmt::print(stderr, "\n  calibration captures ({}):\n", config.profile->calibration_captures.size());
      for (const std::string& c : config.profile->calibration_captures) fmt::print(stderr, "    {}\n", c);
      fmt::print(stderr, "  evaluation captures held out ({}):\n", held_out.size());
      for (const std::string& c : held_out) fmt::print(stderr, "    {}\n", c);
      if (!seen.empty()) {
        fmt::print(stderr, "  evaluation captures ALSO USED FOR CALIBRATION ({}){}:\n", seen.size(),
                   config.query_region == QueryRegion::kAll ? "" : " (scored on the query region only)");
        for (const std::string& c : seen) fmt::print(stderr, "    {}\n", c);
      }
    }
    std::vector<EvalRow> all;
    for (const std::string& path : opt->captures) {
      VEDA_ASSIGN_OR_RETURN(Capture capture, load_capture(path));
      if (!opt->json)
        fmt::print(stderr, "evaluating {} (grid {}, {} heads, {} tokens, layer {}, query region {})\n", path,
                   capture.grid.str(), capture.q.dim(1), capture.q.dim(2), capture.layer,
                   query_region_name(config.query_region));
      VEDA_ASSIGN_OR_RETURN(std::vector<EvalRow> rows, evaluate_capture(capture, config));
      if (!opt->json) fmt::print("\n{}\n\n{}", path, eval_rows_to_table(rows));
      all.insert(all.end(), rows.begin(), rows.end());
    }
    if (opt->json) fmt::print("{}\n", eval_rows_to_json(all).dump(2));
    return Status::ok();
  };
}

const bool kRegistered = register_command(
    {"eval", "Recall and output error of tile selection methods on captured attention", setup_eval});

}  // namespace
}  // namespace veda::cli
