// A process killed (SIGKILL) while it writes a large checkpoint never leaves a truncated or torn
// file under the final name: the path always loads, and holds one whole step's weights.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "test_support.h"

namespace {

namespace fs = std::filesystem;

TEST(KillDuringSave, PreviousCheckpointSurvivesManyKills) {
  const std::string dir = frugal::testing::temp_dir("kill_during_save");
  const std::string path = dir + "/model.ckpt";
  const int64_t features = 2048;  // 4M weights: a 16 MB checkpoint, long enough to be hit
  std::mt19937 rng(1234);
  int64_t last_step = -1;
  int killed_while_running = 0;
  for (int round = 0; round < 12; ++round) {
    frugal::testing::Child child({FRUGAL_CHECKPOINT_WRITER, path, std::to_string(features)},
                                 dir + "/writer.log");
    // Let it write a few checkpoints, then kill it at a random moment.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!fs::exists(path) && std::chrono::steady_clock::now() < deadline && child.running()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_TRUE(fs::exists(path)) << frugal::testing::read_text(dir + "/writer.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 400));
    if (child.running()) ++killed_while_running;
    child.kill(SIGKILL);
    EXPECT_EQ(child.wait(), -SIGKILL);

    torch::nn::Linear net(features, features);
    ASSERT_NO_THROW(frugal::load_weights(*net, path)) << "round " << round;
    const double first = net->weight[0][0].item<double>();
    EXPECT_TRUE(net->weight.eq(first).all().item<bool>()) << "a torn file in round " << round;
    EXPECT_GE(first, 1.0);
    last_step = static_cast<int64_t>(first);
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      EXPECT_TRUE(name == "model.ckpt" || name == "writer.log" ||
                  name.rfind(".model.ckpt.tmp", 0) == 0)
          << "unexpected file " << name;
    }
  }
  EXPECT_GE(last_step, 1);
  EXPECT_EQ(killed_while_running, 12);
}

}  // namespace
