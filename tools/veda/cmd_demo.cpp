// veda demo: the whole CPU pipeline on the capture that ships with the repo, explained.
#include <fmt/core.h>

#include <chrono>

#include "command.hpp"
#include "eval_output.hpp"
#include "veda/eval.hpp"
#include "veda/profile.hpp"

namespace veda::cli {
namespace {

constexpr const char* kDefaultCapture = VEDA_DATA_DIR "/captures/dev_p3_s101_l6_t15.safetensors";
// Calibrated on other prompts and seeds (0 and 2) than the default capture's (prompt 3, seed 101).
constexpr const char* kDefaultProfile = VEDA_DATA_DIR "/profiles/tiny-wan-d0.05.json";

struct DemoOptions {
  std::string capture = kDefaultCapture;
  std::string profile = kDefaultProfile;
  std::string densities = "0.1,0.05,0.03";
};

RunFn setup_demo(CLI::App& sub) {
  auto opt = std::make_shared<DemoOptions>();
  sub.add_option("--capture", opt->capture, "capture to run on (default: the one in the repo)")
      ->check(CLI::ExistingFile);
  sub.add_option("--profile", opt->profile, "calibration profile for method veda (\"\" for none)")
      ->capture_default_str();
  sub.add_option("--density", opt->densities, "comma-separated densities")->capture_default_str();
  return [opt]() -> Status {
    VEDA_ASSIGN_OR_RETURN(Capture capture, load_capture(opt->capture));
    fmt::print(
        "Veda demo: tile-sparse attention on real self-attention captured from a video DiT\n"
        "  capture  {}\n"
        "  layer {}, sampling step {}; batch {}, {} heads, {} tokens (grid {} = T x H x W), head dim {}\n\n",
        capture.source, capture.layer, capture.step, capture.q.dim(0), capture.q.dim(1),
        capture.q.dim(2), capture.grid.str(), capture.q.dim(3));
    const bool with_profile = !opt->profile.empty();
    VEDA_ASSIGN_OR_RETURN(
        EvalConfig config,
        parse_eval_config(opt->densities, with_profile ? "mean,stats,veda,oracle" : "mean,stats,oracle",
                          "4x4x4", "topk"));
    if (with_profile) {
      VEDA_ASSIGN_OR_RETURN(config.profile, load_profile(opt->profile));
    }
    fmt::print(
        "Pipeline: gather tokens into 4x4x4 tiles -> per-tile mean/max/min of q and k -> tile scores\n"
        "-> keep the top tiles per query tile at each density -> tile-sparse attention on the CPU,\n"
        "compared with dense attention (output rel-L2, cosine) and with the exact tile mass (recall).\n"
        "Methods: mean = pooled q.k (Video Sparse Attention's rule), stats = statistics-aware score,\n"
        "veda = the distilled estimator with per-head tile shapes from the calibration profile\n"
        "  {}\n"
        "  (fitted on other prompts and seeds than this capture's),\n"
        "oracle = exact tile mass from full attention (the upper bound a selector can reach;\n"
        "  with a profile, on the best tile shape per head).\n\n",
        with_profile ? opt->profile : std::string("(none given: veda skipped)"));
    auto t0 = std::chrono::steady_clock::now();
    VEDA_ASSIGN_OR_RETURN(std::vector<EvalRow> rows, evaluate_capture(capture, config));
    double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::vector<EvalRow> means;
    for (const EvalRow& r : rows)
      if (r.head < 0) means.push_back(r);
    fmt::print("Mean over heads:\n\n{}\n", eval_rows_to_table(means));
    for (const EvalRow& r : means)
      if (r.method == (with_profile ? "veda" : "stats"))
        fmt::print("{} at density {:.3g}: tile-sparse CPU attention {:.1f} ms, dense {:.1f} ms: {:.1f}x.\n",
                   r.method, r.density, r.attention_ms, r.dense_attention_ms, r.dense_attention_ms / r.attention_ms);
    fmt::print("\n");
    fmt::print("Per head:\n\n{}\n", eval_rows_to_table(rows));
    fmt::print("Done in {:.1f} s (dense attention and exact tile mass computed once).\n"
               "Next: `veda eval --capture FILE ... --json` for your own captures.\n",
               total_s);
    return Status::ok();
  };
}

const bool kRegistered =
    register_command({"demo", "Run the tile-sparse pipeline on the capture shipped with the repo", setup_demo});

}  // namespace
}  // namespace veda::cli
