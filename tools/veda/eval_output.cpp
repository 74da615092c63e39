#include "eval_output.hpp"

#include <fmt/core.h>

#include "command.hpp"
#include "table.hpp"

namespace veda::cli {

Result<std::vector<double>> parse_densities(const std::string& csv) {
  std::vector<double> densities;
  for (const std::string& item : split_csv(csv)) {
    char* end = nullptr;
    double d = std::strtod(item.c_str(), &end);
    if (end == item.c_str() || *end != '\0' || !(d > 0 && d <= 1))
      return invalid_argument("density '" + item + "' is not a number in (0, 1]");
    densities.push_back(d);
  }
  if (densities.empty()) return invalid_argument("no density given");
  return densities;
}

Result<EvalConfig> parse_eval_config(const std::string& densities, const std::string& methods,
                                     const std::string& tile, const std::string& mode) {
  EvalConfig config;
  VEDA_ASSIGN_OR_RETURN(config.densities, parse_densities(densities));
  config.methods.clear();
  config.veda = false;
  for (const std::string& name : split_csv(methods)) {
    // The Veda methods need a profile (EvalConfig::profile); the caller checks it is there.
    if (name == "veda") {
      config.veda = true;
    } else if (name == "veda-shape" || name == "veda-fit") {
      config.veda_ablations = true;
    } else {
      VEDA_ASSIGN_OR_RETURN(ScoreMethod m, parse_score_method(name));
      config.methods.push_back(m);
    }
  }
  if (config.methods.empty() && !config.veda && !config.veda_ablations) return invalid_argument("no method given");
  VEDA_ASSIGN_OR_RETURN(config.tile, TileShape::parse(tile));
  VEDA_ASSIGN_OR_RETURN(config.mode, parse_select_mode(mode));
  return config;
}

nlohmann::json eval_rows_to_json(const std::vector<EvalRow>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const EvalRow& r : rows) {
    out.push_back({{"capture", r.capture},
                   {"method", r.method},
                   {"density", r.density},
                   {"actual_density", r.actual_density},
                   {"head", r.head < 0 ? nlohmann::json("all") : nlohmann::json(r.head)},
                   {"tile", r.tile},
                   {"recall", r.recall},
                   {"rel_l2", r.rel_l2},
                   {"cosine", r.cosine},
                   {"select_ms", r.select_ms},
                   {"attention_ms", r.attention_ms},
                   {"dense_attention_ms", r.dense_attention_ms}});
  }
  return out;
}

std::string eval_rows_to_table(const std::vector<EvalRow>& rows) {
  Table table{{"method", "density", "actual", "head", "tile", "recall", "rel-L2", "cosine", "select ms",
               "attention ms"}, {}};
  for (const EvalRow& r : rows) {
    table.rows.push_back({r.method, fmt::format("{:.3g}", r.density),
                          fmt::format("{:.4f}", r.actual_density),
                          r.head < 0 ? "all" : std::to_string(r.head), r.tile, fmt::format("{:.4f}", r.recall),
                          fmt::format("{:.3e}", r.rel_l2), fmt::format("{:.5f}", r.cosine),
                          fmt::format("{:.1f}", r.select_ms), fmt::format("{:.1f}", r.attention_ms)});
  }
  return table.to_markdown();
}

}  // namespace veda::cli
