// examples/finetune end to end on a few Fashion-MNIST images: it pre-trains, saves the weights as
// .safetensors, fine-tunes a fresh model loaded from them with the backbone frozen (only the new
// head trains) and trains the same model from scratch, and reports both; given --weights it skips
// the pre-training. Needs the example built and Debian's dataset-fashion-mnist.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "frugal/data/datasets/mnist.h"
#include "frugal/io/weights.h"
#include "frugal/models/zoo.h"
#include "test_support.h"
#include "under_asan.h"

namespace fs = std::filesystem;

namespace {

fs::path example() {
  const char* env = std::getenv("FRUGAL_EXAMPLES_DIR");
  return fs::path(env ? env : "") / "finetune" / "finetune";
}

int64_t trainable(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

TEST(FinetuneExample, PretrainsSavesFinetunesAndComparesWithScratch) {
  FRUGAL_SKIP_UNDER_ASAN();
  if (!fs::exists(std::string(frugal::datasets::FashionMnist::kDefaultDir))) {
    GTEST_SKIP() << "Fashion-MNIST is not installed (dataset-fashion-mnist)";
  }
  ASSERT_TRUE(fs::exists(example())) << example() << " is not built";
  const std::string dir = frugal::testing::temp_dir("finetune_example");
  const std::string args =
      "--model mobilenet_v3_small --epochs 1 --per-class 40 --batch-size 20 --num-threads 1 "
      "--out-dir " +
      dir + "/out --metrics-json " + dir + "/m.json";
  const auto run = frugal::testing::run_program(example().string(), args, dir, "finetune");
  ASSERT_EQ(run.exit_code, 0) << run.describe();
  const auto j = nlohmann::json::parse(frugal::testing::read_text(dir + "/m.json"));
  for (const char* part : {"pretrain", "finetune", "scratch"}) {
    ASSERT_TRUE(j.contains(part)) << j.dump();
    EXPECT_GE(j[part]["test_acc"].get<double>(), 0.0) << part;
    EXPECT_LE(j[part]["test_acc"].get<double>(), 1.0) << part;
    EXPECT_GT(j[part]["seconds"].get<double>(), 0.0) << part;
  }
  // Only the new head trains when the backbone is frozen; from scratch, everything.
  auto net = frugal::models::create_model("mobilenet_v3_small", 5, 1);
  int64_t head = 0;
  for (const auto& p : net->named_parameters()) {
    if (p.key().rfind(net->head_prefix() + ".", 0) == 0) head += p.value().numel();
  }
  EXPECT_EQ(j["finetune"]["trainable"].get<int64_t>(), head);
  EXPECT_EQ(j["scratch"]["trainable"].get<int64_t>(), trainable(*net));
  EXPECT_LT(head, trainable(*net));
  // The pre-trained weights are a safetensors file a fresh model loads (strict).
  const std::string weights = dir + "/out/pretrained.safetensors";
  ASSERT_TRUE(fs::exists(weights));
  EXPECT_NO_THROW(frugal::load_state_dict(*net, weights));
  // Given weights, no pre-training.
  const auto again = frugal::testing::run_program(
      example().string(),
      "--model mobilenet_v3_small --epochs 1 --per-class 20 --batch-size 20 --num-threads 1 "
      "--weights " +
          weights + " --out-dir " + dir + "/out2 --metrics-json " + dir + "/m2.json",
      dir, "finetune2");
  ASSERT_EQ(again.exit_code, 0) << again.describe();
  const auto j2 = nlohmann::json::parse(frugal::testing::read_text(dir + "/m2.json"));
  EXPECT_FALSE(j2.contains("pretrain"));
  EXPECT_TRUE(j2.contains("finetune"));
}

TEST(FinetuneExample, OnAFolderFromTorchvisionWeightsSavedByPython) {
  // torchvision's MobileNetV3-Small (1000 classes) as Python saves it, fine-tuned on a folder of
  // two classes: a new head, the backbone frozen; and the same model from scratch.
  FRUGAL_SKIP_UNDER_ASAN();
  if (std::system("/usr/bin/python3 -c 'import torchvision, PIL, numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "needs /usr/bin/python3 with torchvision, PIL and numpy";
  }
  ASSERT_TRUE(fs::exists(example())) << example() << " is not built";
  const std::string dir = frugal::testing::temp_dir("finetune_example_folder");
  std::ofstream(dir + "/make.py") << R"PY(
import os, sys
import numpy as np, torch, torchvision
from PIL import Image
d = sys.argv[1]
torch.manual_seed(0)
torch.save(torchvision.models.mobilenet_v3_small().state_dict(), os.path.join(d, "mnv3s.pt"))
rng = np.random.default_rng(2)
for split, n in (("train", 8), ("val", 4)):
    for c in range(2):
        os.makedirs(os.path.join(d, "data", split, f"c{c}"))
        for k in range(n):
            a = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            a[:, :, c] = 230
            Image.fromarray(a).save(os.path.join(d, "data", split, f"c{c}", f"{k}.png"))
)PY";
  ASSERT_EQ(std::system(("/usr/bin/python3 " + dir + "/make.py " + dir).c_str()), 0);
  const std::string common = "--model mobilenet_v3_small --image-folder " + dir +
                             "/data --image-size 32 --epochs 1 --batch-size 8 --num-threads 1 "
                             "--out-dir " +
                             dir + "/out";
  const auto run = frugal::testing::run_program(
      example().string(),
      common + " --weights " + dir + "/mnv3s.pt --metrics-json " + dir + "/m.json", dir, "ft");
  ASSERT_EQ(run.exit_code, 0) << run.describe();
  const auto j = nlohmann::json::parse(frugal::testing::read_text(dir + "/m.json"));
  EXPECT_EQ(j["classes"].get<int64_t>(), 2);
  auto net = frugal::models::create_model("mobilenet_v3_small", 2, 3);
  int64_t head = 0;
  for (const auto& p : net->named_parameters()) {
    if (p.key().rfind(net->head_prefix() + ".", 0) == 0) head += p.value().numel();
  }
  EXPECT_EQ(j["finetune"]["trainable"].get<int64_t>(), head);
  EXPECT_EQ(j["scratch"]["trainable"].get<int64_t>(), trainable(*net));
  const auto no_weights =
      frugal::testing::run_program(example().string(), common, dir, "no_weights");
  EXPECT_EQ(no_weights.exit_code, 1);
  EXPECT_NE(no_weights.err.find("--image-folder needs --weights"), std::string::npos)
      << no_weights.describe();
}
