// ImageLoader: the same batches with 1, 2 and 4 threads, exact mid-epoch resume, pixels equal to
// decode + transform of each sample, bad samples raised or substituted, shards as TensorLoader.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "frugal/data/batch_source.h"
#include "frugal/data/image_loader.h"
#include "frugal/error.h"
#include "image_set.h"
#include "python_oracle.h"
#include "test_support.h"

namespace fs = std::filesystem;
using frugal::testing::augment;
using frugal::testing::epoch;
using frugal::testing::expect_same;

namespace {

const char* kMakeSet = R"PY(
import os, sys
import numpy as np
from PIL import Image
root = sys.argv[1]
rng = np.random.default_rng(11)
for c in range(3):
    for k in range(9 + c):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        d = os.path.join(root, f"class{c}")
        os.makedirs(d, exist_ok=True)
        if k % 2:
            Image.fromarray(a).save(os.path.join(d, f"{k:02d}.jpg"), quality=85)
        else:
            Image.fromarray(a).save(os.path.join(d, f"{k:02d}.png"))
)PY";

bool have_pil() { return frugal::testing::python_can("import PIL, numpy"); }

const std::string& image_set() {
  static const std::string dir =
      frugal::testing::run_python_script("image_loader_set", kMakeSet, "images");
  return dir;
}

#define SKIP_WITHOUT_PIL() \
  if (!have_pil()) GTEST_SKIP() << "needs /usr/bin/python3 with PIL and numpy (python3-pil)";

}  // namespace

TEST(ImageLoader, SameBatchesWith1_2_4Threads) {
  SKIP_WITHOUT_PIL();
  frugal::ImageFolder folder(image_set());
  ASSERT_EQ(folder.size(), 30);
  std::vector<std::vector<frugal::Batch>> runs;
  for (int64_t threads : {1, 2, 4}) {
    frugal::ImageLoader loader(
        folder.samples(), augment(), 16, 16,
        frugal::ImageLoaderOptions(4).shuffle(true).seed(3).threads(threads));
    EXPECT_EQ(loader.threads(), threads);
    EXPECT_EQ(loader.num_batches(), 8);
    auto e0 = epoch(loader, 0);
    auto e1 = epoch(loader, 1);
    ASSERT_EQ(e0.size(), 8u);
    EXPECT_EQ(e0.back().size(), 2);
    EXPECT_EQ(e0[0].data.sizes(), (at::IntArrayRef{4, 3, 16, 16}));
    EXPECT_EQ(e0[0].data.scalar_type(), at::kByte);
    EXPECT_FALSE(e0[0].data.equal(e1[0].data));  // a new epoch, new order and augmentation
    e0.insert(e0.end(), e1.begin(), e1.end());
    runs.push_back(e0);
  }
  expect_same(runs[0], runs[1]);
  expect_same(runs[0], runs[2]);
}

TEST(ImageLoader, ResumeMidEpochEqualsUninterrupted) {
  SKIP_WITHOUT_PIL();
  frugal::ImageFolder folder(image_set());
  auto options = frugal::ImageLoaderOptions(4).shuffle(true).seed(5).threads(2);
  frugal::ImageLoader whole(folder.samples(), augment(), 16, 16, options);
  const auto full = epoch(whole, 2);
  frugal::ImageLoader resumed(folder.samples(), augment(), 16, 16, options);
  const auto rest = epoch(resumed, 2, 3);
  expect_same(std::vector<frugal::Batch>(full.begin() + 3, full.end()), rest);
  EXPECT_TRUE(epoch(resumed, 2, 8).empty());
}

TEST(ImageLoader, PixelsAreEachSampleDecodedAndTransformed) {
  SKIP_WITHOUT_PIL();
  frugal::ImageFolder folder(image_set());
  auto tf = augment();
  frugal::ImageLoader loader(folder.samples(), tf, 16, 16,
                             frugal::ImageLoaderOptions(7).shuffle(true).seed(9).threads(3));
  const auto order = loader.epoch_indices(4);
  const auto batches = epoch(loader, 4);
  int64_t position = 0;
  for (const auto& b : batches) {
    for (int64_t r = 0; r < b.size(); ++r, ++position) {
      const auto& s = folder.samples()[order[position]];
      frugal::SampleRng rng(9, 4, position);
      const at::Tensor expected = tf->apply(frugal::read_image(s.path), rng).to_tensor();
      EXPECT_TRUE(b.data[r].equal(expected.permute({2, 0, 1}))) << s.path;
      EXPECT_EQ(b.target[r].item<int64_t>(), s.label);
    }
  }
  EXPECT_EQ(position, 30);
}

TEST(ImageLoader, HeldBatchesAreNeverOverwritten) {
  SKIP_WITHOUT_PIL();
  frugal::ImageFolder folder(image_set());
  auto options = frugal::ImageLoaderOptions(2).shuffle(true).seed(1).threads(2).batches_ahead(1);
  frugal::ImageLoader loader(folder.samples(), augment(), 16, 16, options);
  std::vector<frugal::Batch> held = epoch(loader, 0);  // 15 batches through a 2-slot ring
  std::vector<at::Tensor> copies;
  for (const auto& b : held) copies.push_back(b.data.clone());
  epoch(loader, 1);
  for (size_t k = 0; k < held.size(); ++k) EXPECT_TRUE(held[k].data.equal(copies[k])) << k;
}

TEST(ImageLoader, ShardsAsTensorLoader) {
  SKIP_WITHOUT_PIL();
  frugal::ImageFolder folder(image_set());
  at::Tensor dummy = at::zeros({30, 1});
  for (bool pad : {true, false}) {
    for (int64_t rank = 0; rank < 4; ++rank) {
      auto opts = frugal::ImageLoaderOptions(4).shuffle(true).seed(2).pad_shards(pad).threads(1);
      frugal::ImageLoader loader(folder.samples(), augment(), 16, 16, opts);
      frugal::TensorLoader reference(
          dummy, at::zeros({30}, at::kLong),
          frugal::TensorLoaderOptions(4).shuffle(true).seed(2).pad_shards(pad));
      loader.set_shard(rank, 4);
      reference.set_shard(rank, 4);
      const at::Tensor ref = reference.epoch_indices(3);
      const auto mine = loader.epoch_indices(3);
      ASSERT_EQ(static_cast<int64_t>(mine.size()), ref.size(0));
      for (size_t k = 0; k < mine.size(); ++k) EXPECT_EQ(mine[k], ref[k].item<int64_t>());
      EXPECT_EQ(loader.num_batches(), reference.num_batches());
      EXPECT_EQ(loader.num_samples(), reference.num_samples());
      int64_t seen = 0;
      for (const auto& b : epoch(loader, 3)) seen += b.size();
      EXPECT_EQ(seen, loader.num_samples());
    }
  }
}

TEST(ImageLoader, BadSampleRaisesOrIsSubstitutedAndCounted) {
  SKIP_WITHOUT_PIL();
  const std::string dir = frugal::testing::temp_dir("image_loader_bad");
  frugal::ImageFolder folder(image_set());
  std::vector<frugal::ImageSample> samples(folder.samples().begin(), folder.samples().begin() + 6);
  std::ofstream(dir + "/broken.jpg") << "not a jpeg";
  samples[2] = {dir + "/broken.jpg", 1};
  auto tf = std::make_shared<frugal::Resize>(16, 16);
  frugal::ImageLoader strict(samples, tf, 16, 16, frugal::ImageLoaderOptions(3).threads(2));
  strict.start_epoch(0);
  const std::string message = frugal::testing::error_message([&] { strict.next(); });
  EXPECT_NE(message.find("'" + dir + "/broken.jpg'"), std::string::npos) << message;

  frugal::ImageLoader lenient(
      samples, tf, 16, 16,
      frugal::ImageLoaderOptions(3).threads(2).on_bad_sample(frugal::OnBadSample::kSkip));
  const auto batches = epoch(lenient, 0);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(lenient.bad_samples(), 1);
  // Sample 2 is replaced by sample 3, the next readable one.
  EXPECT_TRUE(batches[0].data[2].equal(batches[1].data[0]));
  EXPECT_EQ(batches[0].target[2].item<int64_t>(), samples[3].label);
}

TEST(ImageLoader, WrongOutputSizeAndBadOptionsAreErrors) {
  SKIP_WITHOUT_PIL();
  frugal::ImageFolder folder(image_set());
  frugal::ImageLoader loader(folder.samples(), std::make_shared<frugal::Resize>(8, 9), 16, 16,
                             frugal::ImageLoaderOptions(4).threads(1));
  loader.start_epoch(0);
  const std::string message = frugal::testing::error_message([&] { loader.next(); });
  EXPECT_NE(message.find("came out of the transforms as 8x9x3, expected 16x16x3"),
            std::string::npos)
      << message;
  EXPECT_NE(frugal::testing::error_message([&] {
              frugal::ImageLoader(folder.samples(), augment(), 16, 16,
                                  frugal::ImageLoaderOptions(0));
            }).find("batch_size must be >= 1"),
            std::string::npos);
  frugal::ImageLoader unstarted(folder.samples(), augment(), 16, 16, 4);
  EXPECT_NE(frugal::testing::error_message([&] { unstarted.next(); }).find("before start_epoch"),
            std::string::npos);
}

TEST(ImageLoader, NormalizeBatchIsToTensorThenNormalize) {
  at::Tensor x = at::randint(0, 256, {2, 3, 4, 5}, at::kByte);
  const std::vector<double> mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225};
  const at::Tensor expected =
      (x.to(at::kFloat) / 255 - at::tensor({0.485f, 0.456f, 0.406f}).view({1, 3, 1, 1})) /
      at::tensor({0.229f, 0.224f, 0.225f}).view({1, 3, 1, 1});
  EXPECT_TRUE(at::allclose(frugal::normalize_batch(x, mean, std), expected, 1e-5, 1e-5));
  EXPECT_NE(frugal::testing::error_message([&] {
              frugal::normalize_batch(x, {0.5}, {0.5});
            }).find("need 3 values"),
            std::string::npos);
}

TEST(ImageLoader, FilesChangedUnderARunningEpoch) {
  // Images deleted or truncated while an epoch runs (a sync job, a full disk, a user tidying up):
  // the loader names the file (kRaise) or substitutes and counts it (kSkip); never a crash. The
  // loader decodes at most batches_ahead batches ahead, so files of the last batches are read
  // after the change.
  SKIP_WITHOUT_PIL();
  frugal::ImageFolder source(image_set());
  ASSERT_GE(source.samples().size(), 24u);
  for (const auto policy : {frugal::OnBadSample::kRaise, frugal::OnBadSample::kSkip}) {
    const std::string dir = frugal::testing::temp_dir("image_loader_changed");
    std::vector<frugal::ImageSample> samples;
    for (size_t k = 0; k < 24; ++k) {
      const fs::path from = source.samples()[k].path;
      const std::string to = dir + "/" + std::to_string(k) + from.extension().string();
      fs::copy_file(from, to, fs::copy_options::overwrite_existing);
      samples.push_back({to, source.samples()[k].label});
    }
    frugal::ImageLoader loader(
        samples, std::make_shared<frugal::Resize>(16, 16), 16, 16,
        frugal::ImageLoaderOptions(2).threads(2).batches_ahead(2).on_bad_sample(policy));
    loader.start_epoch(0);
    ASSERT_TRUE(loader.next().has_value());
    fs::remove(samples[20].path);           // batch 10
    fs::resize_file(samples[22].path, 40);  // batch 11: a torn copy
    int64_t batches = 1;
    const std::string message = frugal::testing::error_message([&] {
      while (loader.next()) ++batches;
    });
    if (policy == frugal::OnBadSample::kRaise) {
      EXPECT_NE(message.find("'" + samples[20].path + "'"), std::string::npos) << message;
      EXPECT_EQ(batches, 10);
    } else {
      EXPECT_EQ(message, "no error");
      EXPECT_EQ(batches, 12);
      EXPECT_EQ(loader.bad_samples(), 2);
    }
  }
}
