// The plan example end to end on a tiny fraction of Fashion-MNIST: it prints the ranked table,
// writes one CSV row per candidate with the same numbers as the table, reports a memory-limit
// breaker with its reason, and refuses bad flags by name.
//
// Needs the example built ($FRUGAL_EXAMPLES_DIR/plan/plan) and, for most tests, Debian's
// dataset-fashion-mnist in /usr/share/datasets/fashion-mnist (skipped without it).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.h"
#include "under_asan.h"

namespace fs = std::filesystem;

namespace {

constexpr const char* kDataDir = "/usr/share/datasets/fashion-mnist";

fs::path plan_path() {
  const char* env = std::getenv("FRUGAL_EXAMPLES_DIR");
  return fs::path(env ? env : "") / "plan" / "plan";
}

using Outcome = frugal::testing::ProgramRun;

Outcome run_plan(const std::string& args, const fs::path& dir) {
  return frugal::testing::run_program(plan_path().string(), args, dir.string(), "plan");
}

bool has_data() {
  return fs::exists(fs::path(kDataDir) / "train-images-idx3-ubyte.gz") ||
         fs::exists(fs::path(kDataDir) / "train-images-idx3-ubyte");
}

// Splits a CSV line without quoted fields (the rows checked here have none before `reason`).
std::vector<std::string> fields(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream in(line);
  std::string field;
  while (std::getline(in, field, ',')) out.push_back(field);
  return out;
}

class Plan : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef FRUGAL_NO_EXAMPLE
    GTEST_SKIP() << "the plan example is not built (FRUGAL_BUILD_EXAMPLES off)";
#endif
    ASSERT_TRUE(fs::exists(plan_path())) << plan_path() << " is not built";
  }
  void require_data() {
    if (!has_data()) GTEST_SKIP() << kDataDir << " is missing (Debian's dataset-fashion-mnist)";
  }
};

TEST_F(Plan, RanksTheCandidatesAndWritesTheirNumbers) {
  FRUGAL_SKIP_UNDER_ASAN();
  require_data();
  const fs::path dir = frugal::testing::temp_dir("plan_tiny");
  // 1% of 59000 training samples, one epoch: seconds per candidate. The 16 MiB budget is below
  // what the CNN at micro-batch 64 needs (about 30 MiB), above the MLP's (about 7 MiB): the rows
  // over it must say why they are out.
  const Outcome r = run_plan(
      "--models mlp,cnn --precisions 32 --micro-batches 16,64 --fraction 0.01 --epochs 1 "
      "--val-size 1000 "
      "--memory-budget 16 --output out",
      dir);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("rank  model"), std::string::npos) << r.describe();
  EXPECT_NE(r.out.find("590 of 59000 training samples"), std::string::npos) << r.describe();
  EXPECT_NE(r.out.find("best: "), std::string::npos) << r.describe();

  const std::string csv = frugal::testing::read_text((dir / "out" / "trials.csv").string());
  std::stringstream lines(csv);
  std::string line;
  std::getline(lines, line);
  const std::vector<std::string> header = fields(line);
  ASSERT_GE(header.size(), 8u);
  EXPECT_EQ(header[0], "rank");
  int rows = 0;
  int ranked = 0;
  while (std::getline(lines, line)) {
    const std::vector<std::string> f = fields(line);
    ASSERT_GE(f.size(), 8u) << line;
    ++rows;
    if (f[6] == "ranked") {
      ++ranked;
      continue;
    }
    // Anything not ranked says why; here only the memory limit can be the reason.
    EXPECT_EQ(f[6], "over limit") << line;
    EXPECT_NE(f[7].find("> limit 16.0 MiB"), std::string::npos) << line;
    EXPECT_NE(r.out.find("over limit: " + f[7]), std::string::npos) << r.describe();
  }
  EXPECT_EQ(rows, 4) << csv;
  EXPECT_GE(ranked, 1) << csv;
  EXPECT_GE(rows - ranked, 1) << csv;
  EXPECT_TRUE(fs::exists(dir / "out" / "trials.json"));
}

TEST_F(Plan, BadFlagsAreErrorsNamingThem) {
  require_data();
  const fs::path dir = frugal::testing::temp_dir("plan_bad");
  Outcome r = run_plan("--models mlp,nosuch", dir);
  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_NE(r.err.find("--models"), std::string::npos) << r.describe();
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.describe();
  r = run_plan("--fraction 0", dir);
  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_NE(r.err.find("data_fraction must be in (0, 1], got 0"), std::string::npos)
      << r.describe();
  r = run_plan("--precisions 8-bit", dir);
  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_NE(r.err.find("\"8-bit\""), std::string::npos) << r.describe();
}

// Needs no data: the folder is missing on purpose.
TEST_F(Plan, MissingDataDirNamesThePath) {
  const fs::path dir = frugal::testing::temp_dir("plan_no_data");
  const Outcome r = run_plan("--data-dir /nonexistent", dir);
  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_NE(r.err.find("/nonexistent"), std::string::npos) << r.describe();
  EXPECT_NE(r.err.find("dataset-fashion-mnist"), std::string::npos) << r.describe();
}

}  // namespace
