// End-to-end checks of the `veda` binary: output contracts, exit codes and one-line errors.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "common/test_data.hpp"

namespace {

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

CommandResult run_veda(const std::string& args) {
  std::string dir = veda::test::temp_dir();
  std::string cmd = std::string(VEDA_CLI_PATH) + " " + args + " >" + dir + "/out 2>" + dir + "/err";
  int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(dir + "/out");
  r.err = read_file(dir + "/err");
  return r;
}

// Rows with head "all", keyed by method.
std::map<std::string, nlohmann::json> mean_rows(const std::string& json_text, double density) {
  std::map<std::string, nlohmann::json> rows;
  for (const auto& row : nlohmann::json::parse(json_text))
    if (row["head"] == "all" && std::abs(row["density"].get<double>() - density) < 1e-12)
      rows[row["method"]] = row;
  return rows;
}

TEST(Cli, HelpListsCommands) {
  CommandResult r = run_veda("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* command : {"eval", "demo"}) EXPECT_NE(r.out.find(command), std::string::npos);
}

TEST(Cli, EvalJsonOnSharedCapture) {
  CommandResult r = run_veda("eval --capture " + veda::test::shared_capture_path() +
                             " --density 0.05,1 --method mean,stats,oracle --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto at5 = mean_rows(r.out, 0.05);
  ASSERT_EQ(at5.size(), 3u);
  for (const auto& [method, row] : at5) {
    for (const char* field : {"method", "density", "head", "recall", "rel_l2", "cosine"})
      EXPECT_TRUE(row.contains(field)) << field;
    double recall = row["recall"], rel_l2 = row["rel_l2"];
    EXPECT_GT(recall, 0.2) << method;  // real attention: 5% of tiles hold far more than 5% of mass
    EXPECT_LT(rel_l2, 1.0) << method;
    EXPECT_LE(recall, at5["oracle"]["recall"].get<double>() + 1e-9) << method;
  }
  for (const auto& [method, row] : mean_rows(r.out, 1.0)) {
    EXPECT_LT(row["rel_l2"].get<double>(), 1e-5) << method;
    EXPECT_NEAR(row["recall"].get<double>(), 1.0, 1e-6) << method;
  }
}

TEST(Cli, TruncatedCaptureGivesOneLineError) {
  std::string capture = read_file(veda::test::shared_capture_path());
  std::string path = veda::test::temp_dir() + "/truncated.safetensors";
  std::ofstream(path, std::ios::binary).write(capture.data(), std::streamsize(capture.size() / 3));
  CommandResult r = run_veda("eval --capture " + path + " --density 0.05");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
}

TEST(Cli, CorruptHeaderGivesOneLineError) {
  std::string path = veda::test::temp_dir() + "/corrupt.safetensors";
  std::string bytes = read_file(veda::test::shared_capture_path());
  for (size_t i = 8; i < 200; ++i) bytes[i] = char('{' + (i % 7));  // garble the JSON header
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  CommandResult r = run_veda("eval --capture " + path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("format error"), std::string::npos) << r.err;
}

TEST(Cli, BadArgumentsAreRejected) {
  std::string capture = veda::test::shared_capture_path();
  for (const std::string& args :
       {"eval --capture " + capture + " --density 0", "eval --capture " + capture + " --density abc",
        "eval --capture " + capture + " --method bogus", "eval --capture " + capture + " --tile 3x3x3",
        std::string("eval --capture /nonexistent.safetensors"), std::string("nosuchcommand"),
        "calibrate --capture " + capture + " -o /dev/null --target-grid 21x45",
        "calibrate --capture " + capture + " -o /dev/null --target-grid 0x45x80"}) {
    CommandResult r = run_veda(args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_FALSE(r.err.empty()) << args;
  }
}

// Refused while parsing, before a device is touched (so with or without a GPU), naming the option.
TEST(Cli, BenchAttentionRejectsBadOptions) {
  // The last: an underflowing --warmup-seconds is 0 (no crash), so --runs is the one refused.
  for (const std::string& option :
       {"--warmup-seconds nan", "--warmup-seconds -1", "--warmup-seconds inf", "--runs 0",
        "--mask bogus", "--runs 0 --warmup-seconds 1e-400"}) {
    CommandResult r = run_veda("bench attention --preset wan1.3b-480p " + option);
    EXPECT_NE(r.exit_code, 0) << option;
    EXPECT_NE(r.err.find(option.substr(0, option.find(' '))), std::string::npos)
        << option << ": " << r.err;
  }
}

// Refused before a model is loaded or a device is touched, so this runs with or without a GPU.
TEST(Cli, GenerateOnCudaRefusesCpuOnlyOptions) {
  const std::string model = VEDA_SHARED_DIR "/data/tiny-wan";
  if (!std::filesystem::exists(model + "/config.json")) GTEST_SKIP() << model << " missing";
  const std::string base = "generate --model " + model + " --prompt-index 1 --steps 2 -o " +
                           veda::test::temp_dir() + "/gen";
  for (const std::string& extra :
       {std::string("--device tpu"), std::string("--device cuda --attention veda --score oracle"),
        std::string("--device cuda --attention veda --select mass")}) {
    CommandResult r = run_veda(base + " " + extra);
    EXPECT_EQ(r.exit_code, 1) << extra;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << extra << ": " << r.err;
    EXPECT_NE(r.err.find("--device"), std::string::npos) << r.err;
  }
}

TEST(Cli, DemoRunsOnShippedCapture) {
  CommandResult r = run_veda("demo --density 0.05");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("oracle"), std::string::npos);
  EXPECT_NE(r.out.find("Mean over heads"), std::string::npos);
}

}  // namespace
