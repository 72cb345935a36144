// The plan example end to end on a tiny fraction of Fashion-MNIST: it prints the ranked table,
// writes one CSV row per candidate with the same numbers as the table, reports a memory-limit
// breaker with its reason, and refuses bad flags by name.
//
// Needs the example built ($FRUGAL_EXAMPLES_DIR/plan/plan) and, for most tests, Debian's
// dataset-fashion-mnist in /usr/share/datasets/fashion-mnist (skipped without it).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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

TEST_F(Plan, ImageFolderCandidatesIncludeTheZoo) {
  // A folder of class sub-folders (made by PIL) instead of Fashion-MNIST: a small CNN and a zoo
  // model train on 3-channel 32-pixel images and are ranked, with the deployment columns filled.
  if (std::system("/usr/bin/python3 -c 'import PIL, numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "needs /usr/bin/python3 with PIL and numpy (python3-pil)";
  }
  const fs::path dir = frugal::testing::temp_dir("plan_image_folder");
  const std::string make = R"PY(
import os, sys
import numpy as np
from PIL import Image
rng = np.random.default_rng(3)
for c in range(3):
    os.makedirs(os.path.join(sys.argv[1], f"c{c}"))
    for k in range(16):
        a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        a[:, :, c] = 220  # a colour cue to learn
        Image.fromarray(a).save(os.path.join(sys.argv[1], f"c{c}", f"{k}.png"))
)PY";
  std::ofstream(dir / "make.py") << make;
  ASSERT_EQ(std::system(
                ("/usr/bin/python3 " + (dir / "make.py").string() + " " + (dir / "images").string())
                    .c_str()),
            0);
  const Outcome out = run_plan(
      "--image-folder " + (dir / "images").string() +
          " --image-size 32 --models cnn,mobilenet_v3_small --precisions 32 --micro-batches 8"
          " --epochs 1 --fraction 1 --val-size 12 --memory-budget 0 --num-threads 1 --output " +
          (dir / "plan").string(),
      dir);
  ASSERT_EQ(out.exit_code, 0) << out.describe();
  EXPECT_NE(out.out.find("decoded 48 images of 3 classes"), std::string::npos) << out.out;
  const std::string csv = frugal::testing::read_text((dir / "plan" / "trials.csv").string());
  std::istringstream lines(csv);
  std::string header, line;
  std::getline(lines, header);
  const auto names = fields(header);
  const auto column = [&](const std::string& name) {
    return static_cast<size_t>(std::find(names.begin(), names.end(), name) - names.begin());
  };
  int ranked = 0;
  while (std::getline(lines, line)) {
    const auto row = fields(line);
    // Both have an int8 size: the Sequential from quantize_dynamic, the zoo model from its graph.
    ASSERT_GT(row.size(), column("model_bytes_int8")) << line;
    EXPECT_GT(std::stoll(row[column("model_bytes_int8")]), 0) << line;
    EXPECT_LT(std::stoll(row[column("model_bytes_int8")]), std::stoll(row[column("model_bytes")]))
        << line;
    EXPECT_EQ(row[column("status")], "ranked") << line;
    EXPECT_GT(std::stod(row[column("latency_b1_ms")]), 0) << line;
    EXPECT_GT(std::stoll(row[column("model_bytes")]), 0) << line;
    ++ranked;
  }
  EXPECT_EQ(ranked, 2) << csv;
}
