// The `veda` command line: one binary, one subcommand per file (see command.hpp).
#include <fmt/core.h>

#include <cstdio>

#include "command.hpp"

namespace veda::cli {

std::vector<Command>& command_registry() {
  static std::vector<Command> commands;
  return commands;
}
bool register_command(Command command) {
  command_registry().push_back(std::move(command));
  return true;
}
const std::vector<Command>& registered_commands() { return command_registry(); }

}  // namespace veda::cli

int main(int argc, char** argv) {
  CLI::App app{"Veda: distilled tile-sparse attention for video diffusion transformers"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "veda 0.1.0");
  std::vector<std::pair<CLI::App*, veda::cli::RunFn>> runs;
  for (const auto& command : veda::cli::registered_commands()) {
    // "bench attention" nests under a "bench" group shared by several files.
    CLI::App* parent = &app;
    std::string name = command.name;
    if (auto space = name.find(' '); space != std::string::npos) {
      std::string group = name.substr(0, space);
      name = name.substr(space + 1);
      try {
        parent = app.get_subcommand(group);
      } catch (const CLI::OptionNotFound&) {
        parent = app.add_subcommand(group, group + " commands");
        parent->require_subcommand(1);
      }
    }
    CLI::App* sub = parent->add_subcommand(name, command.help);
    runs.emplace_back(sub, command.setup(*sub));
  }
  CLI11_PARSE(app, argc, argv);
  for (auto& [sub, run] : runs) {
    if (!sub->parsed()) continue;
    veda::Status st = run();
    if (!st.is_ok()) {
      fmt::print(stderr, "veda {}: {}\n", sub->get_name(), st.to_string());
      return 1;
    }
    return 0;
  }
  return 1;
}
