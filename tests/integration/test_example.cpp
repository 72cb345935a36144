// The Fashion-MNIST example end to end: a fast dev run writes a complete metrics JSON, runs are
// bit-for-bit reproducible for a seed, and bad input ends with an error that says what to do.
//
// Needs the example built ($FRUGAL_EXAMPLES_DIR/fashion_mnist/fashion_mnist) and, for most tests,
// Debian's dataset-fashion-mnist in /usr/share/datasets/fashion-mnist (skipped without it).
#include <gtest/gtest.h>
#include <torch/version.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "test_support.h"

#ifndef FRUGAL_NO_EXAMPLE
#include <nlohmann/json.hpp>
#endif

namespace fs = std::filesystem;

namespace {

constexpr const char* kDataDir = "/usr/share/datasets/fashion-mnist";

using frugal::testing::shell_quote;

fs::path example_path() {
  const char* env = std::getenv("FRUGAL_EXAMPLES_DIR");
#ifdef FRUGAL_EXAMPLES_BINARY_DIR
  const std::string dir = env ? env : FRUGAL_EXAMPLES_BINARY_DIR;
#else
  const std::string dir = env ? env : "";
#endif
  return fs::path(dir) / "fashion_mnist" / "fashion_mnist";
}

using Outcome = frugal::testing::ProgramRun;

/// Runs the example with `args` in `dir` (its working folder); stdout/stderr go to files there.
Outcome run_example(const std::string& args, const fs::path& dir, const std::string& name) {
  return frugal::testing::run_program(example_path().string(), args, dir.string(), name);
}

std::string describe(const Outcome& r) { return r.describe(); }

bool has_data() {
  return fs::exists(fs::path(kDataDir) / "train-images-idx3-ubyte.gz") ||
         fs::exists(fs::path(kDataDir) / "train-images-idx3-ubyte");
}

class Example : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef FRUGAL_NO_EXAMPLE
    GTEST_SKIP() << "the example is not built (FRUGAL_BUILD_EXAMPLES off or nlohmann_json missing)";
#endif
    ASSERT_TRUE(fs::exists(example_path())) << example_path() << " is not built";
  }
  void require_data() {
    if (!has_data()) GTEST_SKIP() << kDataDir << " is missing (Debian's dataset-fashion-mnist)";
  }
};

#ifndef FRUGAL_NO_EXAMPLE
nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

/// The metrics JSON of a run of the example in `dir` with `args` (fails the test if it fails).
nlohmann::json metrics_of(const std::string& args, const fs::path& dir, const std::string& name) {
  const fs::path json = dir / (name + ".json");
  const Outcome r = run_example(args + " --default-root-dir " + shell_quote((dir / name).string()) +
                                    " --metrics-json " + shell_quote(json.string()),
                                dir, name);
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  if (r.exit_code != 0 || !fs::exists(json)) {
    ADD_FAILURE() << "no metrics JSON " << json << "\n" << describe(r);
    return nlohmann::json::object();
  }
  return read_json(json);
}

bool is_sha256(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}
#endif

}  // namespace

#ifndef FRUGAL_NO_EXAMPLE

TEST_F(Example, FastDevRunWritesCompleteMetricsJson) {
  require_data();
  const fs::path dir = frugal::testing::temp_dir("example_fast_dev_run");
  const nlohmann::json j =
      metrics_of("--fast-dev-run 2 --no-progress-bar --num-threads 2", dir, "fast");
  ASSERT_TRUE(j.is_object());
  for (const char* key : {"test_acc", "test_loss", "epochs", "global_step", "train_seconds",
                          "samples_per_second", "peak_rss_mb", "params_sha256"})
    ASSERT_TRUE(j.contains(key)) << "missing \"" << key << "\" in " << j.dump(2);

  EXPECT_EQ(j["global_step"].get<int64_t>(), 2) << j.dump(2);
  EXPECT_EQ(j["epochs"].get<int64_t>(), 1) << j.dump(2);
  const double acc = j["test_acc"].get<double>();
  EXPECT_GE(acc, 0.0);
  EXPECT_LE(acc, 1.0);
  const double loss = j["test_loss"].get<double>();
  EXPECT_TRUE(std::isfinite(loss) && loss > 0.0) << loss;
  const double seconds = j["train_seconds"].get<double>();
  EXPECT_TRUE(seconds > 0.0 && seconds < 600.0) << seconds;
  const double sps = j["samples_per_second"].get<double>();
  EXPECT_TRUE(std::isfinite(sps) && sps > 0.0) << sps;
  const double rss = j["peak_rss_mb"].get<double>();
  EXPECT_TRUE(rss > 10.0 && rss < 64 * 1024.0) << rss;
  const std::string sha = j["params_sha256"].get<std::string>();
  EXPECT_TRUE(is_sha256(sha)) << "params_sha256 is not 64 hex chars: \"" << sha << "\"";
}

TEST_F(Example, SameSeedSameParametersOtherSeedOtherParameters) {
  require_data();
  const fs::path dir = frugal::testing::temp_dir("example_determinism");
  const std::string common =
      "--model cnn --max-epochs 1 --limit-train-batches 30 --limit-val-batches 2 "
      "--no-progress-bar --num-threads 2";
  const nlohmann::json a = metrics_of(common + " --seed 5", dir, "a");
  const nlohmann::json b = metrics_of(common + " --seed 5", dir, "b");
  const nlohmann::json c = metrics_of(common + " --seed 6", dir, "c");
  ASSERT_TRUE(a.contains("params_sha256") && b.contains("params_sha256") &&
              c.contains("params_sha256"));
  EXPECT_EQ(a["global_step"], 30) << a.dump(2);
  EXPECT_EQ(a["params_sha256"], b["params_sha256"]) << "same seed, different parameters";
  EXPECT_EQ(a["test_acc"].get<double>(), b["test_acc"].get<double>());
  EXPECT_EQ(a["test_loss"].get<double>(), b["test_loss"].get<double>());
  EXPECT_NE(a["params_sha256"], c["params_sha256"]) << "--seed 6 trained the same parameters";
}

TEST_F(Example, LoggerFlagChoosesTheFilesOfTheRun) {
  require_data();
  const fs::path dir = frugal::testing::temp_dir("example_logger");
  // The files in frugal_logs/version_0 of a short run with --logger `which`.
  auto files_of = [&](const std::string& which) {
    const fs::path root = dir / which;
    const Outcome r = run_example(
        "--max-steps 4 --limit-val-batches 1 --log-every-n-steps 2 --no-progress-bar "
        "--num-threads 2 --logger " +
            which + " --default-root-dir " + shell_quote(root.string()),
        dir, which);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    std::vector<std::string> names;
    const fs::path version = root / "frugal_logs" / "version_0";
    if (fs::exists(version)) {
      for (const auto& e : fs::directory_iterator(version)) {
        const std::string name = e.path().filename().string();
        names.push_back(name.rfind("events.out.tfevents.", 0) == 0 ? "events" : name);
      }
    }
    std::sort(names.begin(), names.end());
    return names;
  };
  using Names = std::vector<std::string>;
  EXPECT_EQ(files_of("both"), (Names{"events", "hparams.yaml", "metrics.csv", "report.html"}));
  EXPECT_EQ(files_of("csv"), (Names{"hparams.yaml", "metrics.csv", "report.html"}));
  EXPECT_EQ(files_of("tensorboard"), (Names{"events"}));
  EXPECT_EQ(files_of("none"), (Names{}));
  // A bad value is refused by name before anything is read or written.
  const Outcome bad = run_example(
      "--logger wandb --default-root-dir " + shell_quote((dir / "bad").string()), dir, "bad");
  EXPECT_NE(bad.exit_code, 0) << describe(bad);
  EXPECT_NE(bad.err.find("--logger"), std::string::npos) << describe(bad);
  EXPECT_NE(bad.err.find("wandb"), std::string::npos) << describe(bad);
  EXPECT_FALSE(fs::exists(dir / "bad"));
}

TEST_F(Example, UnknownModelIsAnErrorNamingTheFlag) {
  require_data();
  const fs::path dir = frugal::testing::temp_dir("example_bad_model");
  const Outcome r = run_example("--model nosuch --no-progress-bar", dir, "run");
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("--model"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << describe(r);
}

// Needs no data: the folder is missing on purpose.
TEST_F(Example, MissingDataDirNamesThePathAndTheDebianPackage) {
  const fs::path dir = frugal::testing::temp_dir("example_no_data");
  const Outcome r = run_example("--data-dir /nonexistent --no-progress-bar", dir, "run");
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("/nonexistent"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("dataset-fashion-mnist"), std::string::npos) << describe(r);
}

TEST_F(Example, Fp16MixedOnCpuSuggestsBf16Mixed) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  GTEST_SKIP() << "LibTorch >= 2.4 has fp16 autocast on CPU";
#endif
  require_data();
  const fs::path dir = frugal::testing::temp_dir("example_fp16_cpu");
  const Outcome r = run_example(
      "--precision 16-mixed --accelerator cpu --fast-dev-run 1 --no-progress-bar", dir, "run");
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("16-mixed"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find("bf16-mixed"), std::string::npos) << describe(r);
}

#else

TEST_F(Example, NotBuilt) {}

#endif
