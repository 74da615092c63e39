// Subcommands register themselves here: each tools/veda/cmd_*.cpp defines one (or a group) with
//   static const bool kRegistered = veda::cli::register_command({"eval", "help text", setup});
// where setup adds the options to the subcommand and returns the function that runs it.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
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

}  // namespace veda::cli
