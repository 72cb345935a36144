// The Fashion-MNIST example under Debian's real torchrun, 2 processes (Gloo on CPU): exits 0,
// rank 0 writes the metrics JSON and the checkpoints. torchrun 1.13 on Python 3.11 needs
// `-r 1 -t 1` (see docs/distributed.md).
#include <gtest/gtest.h>

#include <filesystem>

#include "ddp_test_support.h"

namespace ft = frugal::testing;
namespace fs = std::filesystem;

TEST(DdpTorchrun, ExampleRunsOnTwoRanks) {
  const char* torchrun = "/usr/bin/torchrun";
  if (!fs::exists(torchrun)) GTEST_SKIP() << "no " << torchrun;
  if (!fs::exists("/usr/share/datasets/fashion-mnist")) GTEST_SKIP() << "no Fashion-MNIST";
  const std::string example = FRUGAL_EXAMPLE;
  const std::string dir = ft::temp_dir("ddp_torchrun");
  const std::string cmd =
      "timeout 400 " + ft::torchrun_command(torchrun, 120) + ft::shell_quote(example) +
      ft::join_args({"--max-epochs", "1", "--limit-train-batches", "20", "--limit-val-batches", "4",
                     "--batch-size", "32", "--num-threads", "1", "--no-progress-bar",
                     "--default-root-dir", dir, "--metrics-json", dir + "/metrics.json"});
  auto r = ft::run_shell(cmd, dir + "/torchrun.log");
  ASSERT_EQ(r.exit_code, 0) << r.log;
  const std::string json = ft::read_text(dir + "/metrics.json");
  EXPECT_NE(json.find("\"test_acc\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"global_step\": 20"), std::string::npos) << json;  // 20 steps per rank
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/last.ckpt")) << r.log;
  std::cout << "torchrun run took " << r.seconds << " s\n";
}
