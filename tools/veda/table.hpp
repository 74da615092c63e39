// Plain-text and markdown tables for CLI output.
#pragma once
#include <string>
#include <vector>

namespace veda::cli {

struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  // Markdown pipe table with columns padded to a common width.
  std::string to_markdown() const;
};

}  // namespace veda::cli
