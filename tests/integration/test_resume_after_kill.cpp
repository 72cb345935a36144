// Exact resume with real processes: the example is killed with SIGKILL at arbitrary moments
// (mid-epoch, mid accumulation window), resumed from its last step checkpoint each time, and ends
// with the same parameters (SHA-256) and the same validation and test metrics as an uninterrupted
// run. Every start has the same command line (--ckpt-path last, also the first). Also: SIGTERM
// makes it save a checkpoint and exit cleanly.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "test_support.h"

namespace {

namespace fs = std::filesystem;

const char* kData = "/usr/share/datasets/fashion-mnist";

std::string example() {
  const char* dir = std::getenv("FRUGAL_EXAMPLES_DIR");
  return std::string(dir ? dir : "examples") + "/fashion_mnist/fashion_mnist";
}

std::vector<std::string> args(const std::string& root, const std::string& json) {
  return {example(),
          "--model",
          "mlp",
          "--max-epochs",
          "3",
          "--limit-train-batches",
          "90",
          "--limit-val-batches",
          "4",
          "--batch-size",
          "32",
          "--accumulate-grad-batches",
          "4",
          "--seed",
          "3",
          "--save-every-n-steps",
          "3",
          "--monitor",
          "",
          "--save-top-k",
          "0",
          "--no-progress-bar",
          "--num-threads",
          "1",
          "--default-root-dir",
          root,
          "--metrics-json",
          json};
}

nlohmann::json read_json(const std::string& path) {
  return nlohmann::json::parse(frugal::testing::read_text(path));
}

TEST(ResumeAfterKill, KilledAndResumedRunEndsExactlyLikeAnUninterruptedOne) {
  if (!fs::exists(kData)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::string dir = frugal::testing::temp_dir("resume_after_kill");
  {
    frugal::testing::Child ref(args(dir + "/ref", dir + "/ref.json"), dir + "/ref.log");
    ASSERT_EQ(ref.wait(), 0) << frugal::testing::read_text(dir + "/ref.log");
  }
  const nlohmann::json expected = read_json(dir + "/ref.json");

  std::mt19937 rng(7);
  const std::string root = dir + "/killed";
  const std::string last = root + "/checkpoints/last.ckpt";
  int kills = 0;
  for (int attempt = 0; attempt < 8; ++attempt) {
    // One command line for every start, as a requeued job has: "--ckpt-path last" from the first
    // start on, when no checkpoint exists yet (a warning and a fresh start, as Lightning).
    std::vector<std::string> a = args(root, dir + "/killed.json");
    a.push_back("--ckpt-path");
    a.push_back("last");
    const bool first_start = !fs::exists(last);
    const std::string log = dir + "/killed" + std::to_string(attempt) + ".log";
    frugal::testing::Child run(a, log);
    if (attempt < 3) {
      // Wait for a fresh checkpoint, then kill at a random moment after it.
      const auto before = fs::exists(last) ? fs::last_write_time(last) : fs::file_time_type();
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      while (run.running() && std::chrono::steady_clock::now() < deadline &&
             (!fs::exists(last) || fs::last_write_time(last) == before)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 300));
      if (run.running()) {
        run.kill(SIGKILL);
        EXPECT_EQ(run.wait(), -SIGKILL);
        ++kills;
        if (first_start) {
          EXPECT_NE(frugal::testing::read_text(log).find(
                        "fit(ckpt_path=\"last\") is set, but there is no last checkpoint "
                        "available (looked in " +
                        root + "/checkpoints)"),
                    std::string::npos)
              << frugal::testing::read_text(log);
        }
        continue;
      }
    }
    ASSERT_EQ(run.wait(), 0) << frugal::testing::read_text(log);
    break;
  }
  EXPECT_GE(kills, 2) << "the run finished before it could be killed; make it longer";
  const nlohmann::json got = read_json(dir + "/killed.json");
  EXPECT_EQ(got["params_sha256"], expected["params_sha256"]);
  EXPECT_EQ(got["global_step"], expected["global_step"]);
  EXPECT_EQ(got["epochs"], expected["epochs"]);
  EXPECT_EQ(got["val_acc"], expected["val_acc"]);
  EXPECT_EQ(got["val_loss"], expected["val_loss"]);
  EXPECT_EQ(got["test_acc"], expected["test_acc"]);
  EXPECT_EQ(got["test_loss"], expected["test_loss"]);
}

TEST(ResumeAfterKill, SigtermSavesACheckpointAndExitsCleanly) {
  if (!fs::exists(kData)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::string dir = frugal::testing::temp_dir("sigterm");
  std::vector<std::string> a = args(dir + "/run", dir + "/run.json");
  a[4] = "50";  // many epochs: it must be stopped by the signal
  a.push_back("--no-save-last");
  frugal::testing::Child run(a, dir + "/run.log");
  const std::string ckpt_dir = dir + "/run/checkpoints";
  // Wait until training is under way (the logger's folder appears at the start of fit).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (run.running() && !fs::exists(dir + "/run/frugal_logs") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  run.kill(SIGTERM);
  ASSERT_EQ(run.wait(), 0) << frugal::testing::read_text(dir + "/run.log");
  ASSERT_TRUE(fs::exists(ckpt_dir + "/last.ckpt"));
  const nlohmann::json got = read_json(dir + "/run.json");
  EXPECT_NE(got["stop_reason"].get<std::string>().find("received SIGTERM"), std::string::npos)
      << got.dump();
  EXPECT_LT(got["epochs"].get<int>(), 50);
}

}  // namespace
