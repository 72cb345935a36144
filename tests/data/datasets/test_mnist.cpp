// The IDX reader and FashionMnist: synthetic files (plain and gzip'd), every error, real data.
#include <frugal/data/datasets/mnist.h>
#include <frugal/error.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "test_support.h"

#define EXPECT_SUBSTR(substring, text) EXPECT_PRED_FORMAT2(::testing::IsSubstring, substring, text)

namespace {

namespace fs = std::filesystem;
using frugal::testing::error_message;

void put_u32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

// An IDX file's bytes: magic, big-endian dimensions, then `payload`.
std::string idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims,
                      const std::string& payload) {
  std::string out;
  put_u32(out, magic);
  for (uint32_t d : dims) put_u32(out, d);
  return out + payload;
}

void write_file(const std::string& path, const std::string& bytes) {
  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
    gzFile file = gzopen(path.c_str(), "wb");
    ASSERT_NE(file, nullptr) << path;
    ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    ASSERT_EQ(gzclose(file), Z_OK);
  } else {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// n deterministic images: pixel j of image i is (i * 31 + j * 7) % 256.
std::string image_payload(int64_t n, int64_t rows = 28, int64_t cols = 28) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < rows * cols; ++j)
      out.push_back(static_cast<char>((i * 31 + j * 7) % 256));
  }
  return out;
}

std::string label_payload(int64_t n) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) out.push_back(static_cast<char>((i * 3) % 10));
  return out;
}

at::Tensor payload_tensor(const std::string& payload, std::vector<int64_t> shape) {
  return torch::from_blob(const_cast<char*>(payload.data()), shape, torch::kUInt8).clone();
}

// A data folder: train split gzip'd, test split plain (the reader must take either).
std::string make_dataset(const std::string& name, int64_t train, int64_t test) {
  const std::string dir = frugal::testing::temp_dir(name);
  write_file(dir + "/train-images-idx3-ubyte.gz",
             idx_bytes(0x803, {uint32_t(train), 28, 28}, image_payload(train)));
  write_file(dir + "/train-labels-idx1-ubyte.gz",
             idx_bytes(0x801, {uint32_t(train)}, label_payload(train)));
  write_file(dir + "/t10k-images-idx3-ubyte",
             idx_bytes(0x803, {uint32_t(test), 28, 28}, image_payload(test)));
  write_file(dir + "/t10k-labels-idx1-ubyte",
             idx_bytes(0x801, {uint32_t(test)}, label_payload(test)));
  return dir;
}

TEST(ReadIdx, ReadsPlainAndGzippedFiles) {
  const std::string dir = frugal::testing::temp_dir("mnist_read_idx");
  const std::string images = image_payload(3, 4, 5);
  for (const std::string name : {"images", "images.gz"}) {
    const std::string path = dir + "/" + name;
    write_file(path, idx_bytes(0x803, {3, 4, 5}, images));
    at::Tensor t = frugal::datasets::read_idx(path);
    EXPECT_EQ(t.scalar_type(), torch::kUInt8);
    EXPECT_EQ(t.sizes(), (std::vector<int64_t>{3, 4, 5}));
    EXPECT_TRUE(torch::equal(t, payload_tensor(images, {3, 4, 5}))) << path;
    EXPECT_EQ(t[2][3][4].item<int>(), (2 * 31 + 19 * 7) % 256);
  }
  // The gzip'd file really is compressed (so the test exercises zlib's inflate).
  EXPECT_NE(read_file(dir + "/images.gz").substr(0, 2), std::string("\0\0", 2));
  write_file(dir + "/labels", idx_bytes(0x801, {4}, std::string("\x00\x09\x03\xff", 4)));
  at::Tensor labels = frugal::datasets::read_idx(dir + "/labels");
  EXPECT_EQ(labels.sizes(), (std::vector<int64_t>{4}));
  EXPECT_EQ(labels[1].item<int>(), 9);
  EXPECT_EQ(labels[3].item<int>(), 255);
}

TEST(FashionMnist, LoadsNormalizedImagesAndInt64Labels) {
  const std::string dir = make_dataset("mnist_load", 5, 3);
  auto data = frugal::datasets::FashionMnist::load(dir);
  const auto& train = data.train();
  EXPECT_EQ(train.images.sizes(), (std::vector<int64_t>{5, 1, 28, 28}));
  EXPECT_EQ(train.images.scalar_type(), torch::kFloat);
  EXPECT_EQ(train.labels.sizes(), (std::vector<int64_t>{5}));
  EXPECT_EQ(train.labels.scalar_type(), torch::kLong);
  at::Tensor raw = payload_tensor(image_payload(5), {5, 1, 28, 28}).to(torch::kFloat);
  EXPECT_TRUE(torch::allclose(train.images, (raw / 255.0 - 0.2860) / 0.3530, 1e-5, 1e-6));
  // Pixel 0 of image 0 is 0, pixel 1 is 7.
  EXPECT_NEAR(train.images[0][0][0][0].item<float>(), -0.2860 / 0.3530, 1e-5);
  EXPECT_NEAR(train.images[0][0][0][1].item<float>(), (7 / 255.0 - 0.2860) / 0.3530, 1e-5);
  EXPECT_EQ(train.labels[4].item<int64_t>(), 2);
  EXPECT_EQ(data.test().images.sizes(), (std::vector<int64_t>{3, 1, 28, 28}));
  EXPECT_TRUE(torch::equal(data.test().labels, torch::tensor({0, 3, 6}, torch::kLong)));

  auto train_loader = data.train_loader(2, 9);
  EXPECT_TRUE(train_loader->options().shuffle());
  EXPECT_EQ(train_loader->options().seed(), 9u);
  EXPECT_EQ(train_loader->num_batches(), 3);
  auto test_loader = data.test_loader(2);
  EXPECT_FALSE(test_loader->options().shuffle());
  EXPECT_FALSE(test_loader->options().pad_shards());
  test_loader->start_epoch(0);
  auto batch = test_loader->next();
  ASSERT_TRUE(batch.has_value());
  EXPECT_TRUE(torch::equal(batch->data, data.test().images.slice(0, 0, 2)));
}

TEST(FashionMnist, PrefersGzippedFilesWhenBothExist) {
  const std::string dir = make_dataset("mnist_both", 2, 2);
  // A plain copy with other labels next to the gzip'd one: the .gz wins.
  write_file(dir + "/train-labels-idx1-ubyte", idx_bytes(0x801, {2}, std::string("\x07\x07", 2)));
  auto data = frugal::datasets::FashionMnist::load(dir);
  EXPECT_TRUE(torch::equal(data.train().labels, torch::tensor({0, 3}, torch::kLong)));
}

TEST(FashionMnist, MissingFileNamesThePathAndThePackage) {
  const std::string dir = frugal::testing::temp_dir("mnist_missing");
  std::string message = error_message([&] { frugal::datasets::FashionMnist::load(dir); });
  EXPECT_SUBSTR(dir + "/train-images-idx3-ubyte.gz", message);
  EXPECT_SUBSTR(dir + "/train-images-idx3-ubyte", message);
  EXPECT_SUBSTR("install Debian's dataset-fashion-mnist package or pass --data-dir", message);

  // Only the test labels missing: that file is named.
  const std::string partial = make_dataset("mnist_partial", 2, 2);
  fs::remove(partial + "/t10k-labels-idx1-ubyte");
  message = error_message([&] { frugal::datasets::FashionMnist::load(partial); });
  EXPECT_SUBSTR(partial + "/t10k-labels-idx1-ubyte", message);

  message = error_message([&] { frugal::datasets::FashionMnist::load(dir + "/nowhere"); });
  EXPECT_SUBSTR("the folder does not exist", message);
  message = error_message([&] { frugal::datasets::read_idx(dir + "/nothing"); });
  EXPECT_SUBSTR("IDX file not found: " + dir + "/nothing", message);
}

TEST(ReadIdx, WrongMagicNumberNamesFileExpectedAndGot) {
  const std::string dir = frugal::testing::temp_dir("mnist_magic");
  for (const std::string name : {"bad", "bad.gz"}) {
    const std::string path = dir + "/" + name;
    write_file(path, idx_bytes(0x00000804, {1, 1, 1, 1}, "x"));
    const std::string message = error_message([&] { frugal::datasets::read_idx(path); });
    EXPECT_SUBSTR("wrong magic number in IDX file " + path, message);
    EXPECT_SUBSTR("expected 0x00000801 (labels) or 0x00000803 (images)", message);
    EXPECT_SUBSTR("got 0x00000804", message);
  }
  // A file that is not IDX at all (e.g. a PNG).
  write_file(dir + "/png", "\x89PNG\r\n\x1a\n0000000000000000");
  EXPECT_SUBSTR("got 0x89504e47", error_message([&] { frugal::datasets::read_idx(dir + "/png"); }));
}

TEST(ReadIdx, TruncatedDataNamesFileExpectedAndGot) {
  const std::string dir = frugal::testing::temp_dir("mnist_truncated");
  const std::string full = idx_bytes(0x803, {3, 28, 28}, image_payload(3));
  const std::string cut = full.substr(0, 16 + 1000);  // 1000 of 2352 data bytes

  write_file(dir + "/plain", cut);
  std::string message = error_message([&] { frugal::datasets::read_idx(dir + "/plain"); });
  EXPECT_SUBSTR("truncated IDX file " + dir + "/plain", message);
  EXPECT_SUBSTR("needs 2352 bytes of data, but the file holds 1000", message);

  // A complete gzip stream of a short file.
  write_file(dir + "/short.gz", cut);
  message = error_message([&] { frugal::datasets::read_idx(dir + "/short.gz"); });
  EXPECT_SUBSTR("truncated IDX file " + dir + "/short.gz", message);
  EXPECT_SUBSTR("expected 2352 bytes of data for [3, 28, 28], got 1000", message);

  // A gzip stream cut in the middle (an interrupted download).
  write_file(dir + "/full.gz", full);
  const std::string gz = read_file(dir + "/full.gz");
  write_file(dir + "/cut.gz.part", gz.substr(0, gz.size() / 2));
  fs::rename(dir + "/cut.gz.part", dir + "/cut.gz");  // written raw, not re-compressed
  message = error_message([&] { frugal::datasets::read_idx(dir + "/cut.gz"); });
  EXPECT_SUBSTR("truncated IDX file " + dir + "/cut.gz", message);
  EXPECT_SUBSTR("expected 2352 bytes of data", message);

  // Cut inside the header.
  write_file(dir + "/header", full.substr(0, 6));
  message = error_message([&] { frugal::datasets::read_idx(dir + "/header"); });
  EXPECT_SUBSTR("expected 12 bytes of dimensions after the magic number, got 2", message);
  write_file(dir + "/tiny", std::string("\x00\x00", 2));
  message = error_message([&] { frugal::datasets::read_idx(dir + "/tiny"); });
  EXPECT_SUBSTR("expected a 4-byte header, got 2 bytes", message);

  // A header that claims far more than a compressed file could hold is refused before allocating.
  write_file(dir + "/huge.gz", idx_bytes(0x803, {60000, 4000, 4000}, "abc"));
  message = error_message([&] { frugal::datasets::read_idx(dir + "/huge.gz"); });
  EXPECT_SUBSTR("truncated IDX file " + dir + "/huge.gz", message);
  EXPECT_SUBSTR("needs 960000000000 bytes of data", message);
}

TEST(FashionMnist, CountMismatchNamesBothFilesAndCounts) {
  const std::string dir = make_dataset("mnist_mismatch", 5, 3);
  write_file(dir + "/train-labels-idx1-ubyte.gz", idx_bytes(0x801, {4}, label_payload(4)));
  const std::string message = error_message([&] { frugal::datasets::FashionMnist::load(dir); });
  EXPECT_SUBSTR("image/label count mismatch", message);
  EXPECT_SUBSTR(dir + "/train-images-idx3-ubyte.gz has 5 images", message);
  EXPECT_SUBSTR(dir + "/train-labels-idx1-ubyte.gz has 4 labels", message);
}

TEST(FashionMnist, UnexpectedDimensionsAreNamed) {
  const std::string dir = make_dataset("mnist_dims", 2, 2);
  write_file(dir + "/t10k-images-idx3-ubyte",
             idx_bytes(0x803, {2, 28, 27}, image_payload(2, 28, 27)));
  std::string message = error_message([&] { frugal::datasets::FashionMnist::load(dir); });
  EXPECT_SUBSTR("unexpected dimensions: " + dir + "/t10k-images-idx3-ubyte holds [2, 28, 27]",
                message);
  EXPECT_SUBSTR("expected images of [N, 28, 28]", message);

  // Labels where images belong.
  write_file(dir + "/t10k-images-idx3-ubyte", idx_bytes(0x801, {2}, label_payload(2)));
  message = error_message([&] { frugal::datasets::FashionMnist::load(dir); });
  EXPECT_SUBSTR("holds [2], expected images of [N, 28, 28]", message);

  // More data than the header declares.
  write_file(dir + "/long", idx_bytes(0x801, {2}, "abc"));
  message = error_message([&] { frugal::datasets::read_idx(dir + "/long"); });
  EXPECT_SUBSTR("holds more data than its header [2] declares", message);
}

TEST(FashionMnist, LoadsTheRealDataSetWhenInstalled) {
  const std::string dir = frugal::datasets::FashionMnist::kDefaultDir;
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz") &&
      !fs::exists(dir + "/train-images-idx3-ubyte")) {
    GTEST_SKIP() << "Fashion-MNIST is not installed in " << dir
                 << " (Debian package dataset-fashion-mnist)";
  }
  auto data = frugal::datasets::FashionMnist::load();
  EXPECT_EQ(data.train().images.sizes(), (std::vector<int64_t>{60000, 1, 28, 28}));
  EXPECT_EQ(data.train().labels.sizes(), (std::vector<int64_t>{60000}));
  EXPECT_EQ(data.test().images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(data.test().labels.sizes(), (std::vector<int64_t>{10000}));
  for (const auto* split : {&data.train(), &data.test()}) {
    EXPECT_EQ(split->labels.min().item<int64_t>(), 0);
    EXPECT_EQ(split->labels.max().item<int64_t>(), 9);
  }
  // Balanced classes: 6000 of each in training.
  EXPECT_TRUE(
      torch::equal(torch::bincount(data.train().labels), torch::full({10}, 6000, torch::kLong)));
  // Normalized with the training set's own statistics: mean ~0, std ~1.
  EXPECT_NEAR(data.train().images.mean().item<double>(), 0.0, 0.005);
  EXPECT_NEAR(data.train().images.std().item<double>(), 1.0, 0.005);
}

}  // namespace
