// Subcommands register themselves here: each tools/veda/cmd_*.cpp defines one (or a group) with
//   static const bool kRegistered = veda::cli::register_command({"eval", "help text", setup});
// where setup adds the options to the subcommand and returns the function that runs it.
#pragma once
#include <CLI/CLI.hpp>
#include <algorithm>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "veda/status.hpp"

namespace veda::cli {

using RunFn = std::function<Status()>;
struct Command {
  std::string name;
  std::string help;
  std::function<RunFn(CLI::App& sub)> setup;
};

bool register_command(Command command);
const std::vector<Command>& registered_commands();

// The non-empty items of a comma-separated option value ("0.1,0.05" -> {"0.1", "0.05"}).
inline std::vector<std::string> split_csv(const std::string& csv) {
  std::vector<std::string> parts;
  std::stringstream ss(csv);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) parts.push_back(item);
  return parts;
}

// The median of timed runs: the middle of the sorted times, the upper middle of an even count
// (a time that was measured; scripts/compare_torch.py reports its baselines the same way). NaN
// for no runs.
inline double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace veda::cli
