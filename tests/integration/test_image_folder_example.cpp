// examples/image_folder end to end: --print-samples equals ImageFolder's view, the stratified
// split, and a short training run whose parameters do not depend on the number of decode threads.
// Needs $FRUGAL_EXAMPLES_DIR/image_folder/image_folder and /usr/bin/python3 with PIL and numpy.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "frugal/data/image_folder.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

const char* kMakeSet = R"PY(
import os, sys
import numpy as np
from PIL import Image
root = sys.argv[1]
rng = np.random.default_rng(5)
for split, n in (("train", 12), ("val", 4)):
    for c, name in enumerate(["cat", "dog", "Eel"]):
        for k in range(n):
            h, w = int(rng.integers(24, 48)), int(rng.integers(24, 48))
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            a[:, :, c] = 200  # a learnable colour cue
            d = os.path.join(root, split, name)
            os.makedirs(d, exist_ok=True)
            Image.fromarray(a).save(os.path.join(d, f"{k:02d}.jpg" if k % 2 else f"{k:02d}.png"))
)PY";

fs::path example() {
  const char* env = std::getenv("FRUGAL_EXAMPLES_DIR");
  return fs::path(env ? env : "") / "image_folder" / "image_folder";
}

bool ready() {
  return fs::exists(example()) &&
         std::system("/usr/bin/python3 -c 'import PIL, numpy' >/dev/null 2>&1") == 0;
}

const std::string& data_dir() {
  static const std::string dir = [] {
    const std::string d = frugal::testing::temp_dir("image_folder_example");
    std::ofstream(d + "/make.py") << kMakeSet;
    EXPECT_EQ(std::system(("/usr/bin/python3 " + d + "/make.py " + d + "/data").c_str()), 0);
    return d;
  }();
  return dir;
}

#define SKIP_UNLESS_READY() \
  if (!ready()) GTEST_SKIP() << "needs " << example() << " and /usr/bin/python3 with PIL, numpy";

}  // namespace

TEST(ImageFolderExample, PrintSamplesIsTheLoadersView) {
  SKIP_UNLESS_READY();
  const std::string d = data_dir();
  const auto run = frugal::testing::run_program(
      example().string(),
      "--data " + frugal::testing::shell_quote(d + "/data") + " --print-samples", d, "print");
  ASSERT_EQ(run.exit_code, 0) << run.describe();
  std::ostringstream expected;
  frugal::ImageFolder train(d + "/data/train"), val(d + "/data/val");
  for (size_t c = 0; c < train.classes().size(); ++c) {
    expected << "class\t" << c << "\t" << train.classes()[c] << "\n";
  }
  for (const auto* f : {&train, &val}) {
    for (const auto& s : f->samples()) {
      expected << s.label << "\t" << fs::path(s.path).lexically_relative(d + "/data").string()
               << "\n";
    }
  }
  EXPECT_EQ(run.out, expected.str());
  EXPECT_NE(run.out.find("class\t0\tEel\n"), std::string::npos);  // code-point order
}

TEST(ImageFolderExample, ValFractionSplitIsStratifiedAndSeeded) {
  SKIP_UNLESS_READY();
  const std::string d = data_dir();
  auto print = [&](const std::string& seed) {
    return frugal::testing::run_program(example().string(),
                                        "--data " +
                                            frugal::testing::shell_quote(d + "/data/train") +
                                            " --val-fraction 0.25 --print-samples --seed " + seed,
                                        d, "split" + seed);
  };
  const auto a = print("1"), b = print("1"), c = print("2");
  ASSERT_EQ(a.exit_code, 0) << a.describe();
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  // 36 samples + 3 class lines; the last 9 lines (3 per class) are the validation part.
  std::vector<std::string> lines;
  std::istringstream in(a.out);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 39u);
  int per_class[3] = {0, 0, 0};
  for (size_t k = 30; k < 39; ++k) ++per_class[lines[k][0] - '0'];
  EXPECT_EQ(per_class[0], 3);
  EXPECT_EQ(per_class[1], 3);
  EXPECT_EQ(per_class[2], 3);
}

TEST(ImageFolderExample, TrainsAndDecodeThreadsDoNotChangeTheResult) {
  SKIP_UNLESS_READY();
  const std::string d = data_dir();
  std::vector<nlohmann::json> results;
  for (const std::string threads : {"1", "3"}) {
    const std::string out = d + "/run" + threads;
    fs::create_directories(out);
    const auto run = frugal::testing::run_program(
        example().string(),
        "--data " + frugal::testing::shell_quote(d + "/data") +
            " --augment --image-size 16 --batch-size 8 --max-epochs 2 --num-threads 1"
            " --no-progress-bar --default-root-dir " +
            frugal::testing::shell_quote(out) + " --decode-threads " + threads +
            " --metrics-json " + frugal::testing::shell_quote(out + "/m.json"),
        out, "train");
    ASSERT_EQ(run.exit_code, 0) << run.describe();
    results.push_back(nlohmann::json::parse(frugal::testing::read_text(out + "/m.json")));
  }
  EXPECT_EQ(results[0]["params_sha256"], results[1]["params_sha256"]);
  EXPECT_EQ(results[0]["train_samples"], 36);
  EXPECT_EQ(results[0]["val_samples"], 12);
  EXPECT_EQ(results[0]["global_step"], 10);  // 2 epochs x ceil(36 / 8)
}

TEST(ImageFolderExample, KilledAndResumedRunEndsLikeAnUninterruptedOne) {
  SKIP_UNLESS_READY();
  const std::string d = data_dir();
  auto args = [&](const std::string& root) {
    return std::vector<std::string>{example().string(),
                                    "--data",
                                    d + "/data",
                                    "--augment",
                                    "--image-size",
                                    "24",
                                    "--batch-size",
                                    "4",
                                    "--max-epochs",
                                    "6",
                                    "--seed",
                                    "3",
                                    "--save-every-n-steps",
                                    "2",
                                    "--monitor",
                                    "",
                                    "--save-top-k",
                                    "0",
                                    "--no-progress-bar",
                                    "--num-threads",
                                    "1",
                                    "--decode-threads",
                                    "2",
                                    "--default-root-dir",
                                    root,
                                    "--metrics-json",
                                    root + "/m.json"};
  };
  {
    frugal::testing::Child ref(args(d + "/kill_ref"), d + "/kill_ref.log");
    ASSERT_EQ(ref.wait(), 0) << frugal::testing::read_text(d + "/kill_ref.log");
  }
  const std::string root = d + "/killed";
  const std::string last = root + "/checkpoints/last.ckpt";
  std::mt19937 rng(11);
  int kills = 0;
  for (int attempt = 0; attempt < 8; ++attempt) {
    std::vector<std::string> a = args(root);
    if (fs::exists(last)) {
      a.push_back("--ckpt-path");
      a.push_back("last");
    }
    frugal::testing::Child run(a, d + "/killed.log");
    if (attempt < 3) {
      frugal::testing::wait_for_rewrite(run, last);
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 100));
      if (run.running()) {
        run.kill(SIGKILL);
        EXPECT_EQ(run.wait(), -SIGKILL);
        ++kills;
        continue;
      }
    }
    ASSERT_EQ(run.wait(), 0) << frugal::testing::read_text(d + "/killed.log");
    break;
  }
  EXPECT_GE(kills, 2) << "the run finished before it could be killed; make it longer";
  const auto expected = nlohmann::json::parse(frugal::testing::read_text(d + "/kill_ref/m.json"));
  const auto got = nlohmann::json::parse(frugal::testing::read_text(root + "/m.json"));
  EXPECT_EQ(got["params_sha256"], expected["params_sha256"]);
  EXPECT_EQ(got["global_step"], expected["global_step"]);
  EXPECT_EQ(got["val_acc"], expected["val_acc"]);
}

TEST(ImageFolderExample, PackedRawCacheTrainsExactlyAsTheFolder) {
  // A raw cache holds the folder's decoded pixels: the same samples, split, batches and so the
  // same parameters as training from the files, in both layouts (train/ + val/, and one class
  // folder split by --val-fraction, where --data is not needed at all).
  SKIP_UNLESS_READY();
  const std::string d = data_dir();
  const fs::path pack =
      example().parent_path().parent_path().parent_path() / "tools" / "frugal-pack";
  ASSERT_TRUE(fs::exists(pack)) << pack;
  const std::string cache = d + "/train.fpk";
  const auto packed = frugal::testing::run_program(
      pack.string(),
      "--data " + frugal::testing::shell_quote(d + "/data/train") + " --out " +
          frugal::testing::shell_quote(cache) + " --storage raw --quiet",
      d, "pack");
  ASSERT_EQ(packed.exit_code, 0) << packed.describe();
  auto train = [&](const std::string& name, const std::string& source) {
    const std::string out = d + "/" + name;
    fs::create_directories(out);
    const auto run = frugal::testing::run_program(
        example().string(),
        source +
            " --augment --image-size 16 --batch-size 8 --max-epochs 2 --num-threads 1"
            " --no-progress-bar --decode-threads 2 --default-root-dir " +
            frugal::testing::shell_quote(out) + " --metrics-json " +
            frugal::testing::shell_quote(out + "/m.json"),
        out, "train");
    EXPECT_EQ(run.exit_code, 0) << run.describe();
    return nlohmann::json::parse(frugal::testing::read_text(out + "/m.json"));
  };
  const std::string data = frugal::testing::shell_quote(d + "/data");
  const std::string train_dir = frugal::testing::shell_quote(d + "/data/train");
  const auto files = train("files", "--data " + data);
  const auto from_cache = train("cached", "--data " + data + " --packed " + cache);
  EXPECT_EQ(from_cache["params_sha256"], files["params_sha256"]);
  EXPECT_EQ(from_cache["val_acc"], files["val_acc"]);
  EXPECT_EQ(from_cache["train_samples"], 36);

  const auto split_files = train("split_files", "--data " + train_dir + " --val-fraction 0.25");
  const auto split_cache = train("split_cache", "--packed " + cache + " --val-fraction 0.25");
  EXPECT_EQ(split_cache["params_sha256"], split_files["params_sha256"]);
  EXPECT_EQ(split_cache["val_samples"], 9);
  EXPECT_NE(split_cache["params_sha256"], files["params_sha256"]);
  const auto print_files = frugal::testing::run_program(
      example().string(), "--data " + train_dir + " --val-fraction 0.25 --print-samples", d,
      "print_files");
  const auto print_cache = frugal::testing::run_program(
      example().string(), "--packed " + cache + " --val-fraction 0.25 --print-samples", d,
      "print_cache");
  EXPECT_EQ(print_cache.out, print_files.out);
  // A cache that is not there is an error naming it.
  const auto mismatch = frugal::testing::run_program(
      example().string(), "--data " + data + " --packed " + cache + "x --print-samples", d,
      "missing");
  EXPECT_EQ(mismatch.exit_code, 1);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, cache + "x", mismatch.err);
}
