// Parsing eval options and printing eval rows (shared by `veda eval` and `veda demo`).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "veda/eval.hpp"

namespace veda::cli {

Result<std::vector<double>> parse_densities(const std::string& csv);
// Methods: mean, stats, oracle, and (with a profile) veda, veda-shape, veda-fit.
Result<EvalConfig> parse_eval_config(const std::string& densities, const std::string& methods,
                                     const std::string& tile, const std::string& mode);
nlohmann::json eval_rows_to_json(const std::vector<EvalRow>& rows);
std::string eval_rows_to_table(const std::vector<EvalRow>& rows);

}  // namespace veda::cli
