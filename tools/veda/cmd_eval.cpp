// veda eval: recall and output error of tile selection methods on captured attention.
#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "command.hpp"
#include "eval_output.hpp"
#include "veda/eval.hpp"

namespace veda::cli {
namespace {

struct EvalOptions {
  std::vector<std::string> captures;
  std::string densities = "0.1,0.05,0.03";
  std::string methods = "mean,stats,oracle";
  std::string tile = "4x4x4";
  std::string mode = "topk";
  bool json = false;
};

RunFn setup_eval(CLI::App& sub) {
  auto opt = std::make_shared<EvalOptions>();
  sub.add_option("--capture", opt->captures, "capture files (safetensors with q, k, v)")
      ->required()
      ->check(CLI::ExistingFile);
  sub.add_option("--density", opt->densities, "comma-separated densities in (0, 1]")
      ->capture_default_str();
  sub.add_option("--method", opt->methods, "comma-separated: mean, stats, oracle")
      ->capture_default_str();
  sub.add_option("--tile", opt->tile, "tile shape TxHxW (volume 64 or 128)")->capture_default_str();
  sub.add_option("--mode", opt->mode, "selection: topk or mass")->capture_default_str();
  sub.add_flag("--json", opt->json, "print a JSON array of rows instead of a table");
  return [opt]() -> Status {
    VEDA_ASSIGN_OR_RETURN(EvalConfig config,
                          parse_eval_config(opt->densities, opt->methods, opt->tile, opt->mode));
    std::vector<EvalRow> all;
    for (const std::string& path : opt->captures) {
      VEDA_ASSIGN_OR_RETURN(Capture capture, load_capture(path));
      if (!opt->json)
        fmt::print(stderr, "evaluating {} (grid {}, {} heads, {} tokens)\n", path,
                   capture.grid.str(), capture.q.dim(1), capture.q.dim(2));
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
