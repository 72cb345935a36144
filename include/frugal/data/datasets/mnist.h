// MNIST / Fashion-MNIST from IDX files (gzip'd or plain), read with zlib.
//
// Default folder: /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist). Looks for
// `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-...`. Bad files get
// errors that name the file and what was expected: missing (with the Debian package to install),
// wrong magic number, truncated data, image/label count mismatch.
//
//   auto data = frugal::datasets::FashionMnist::load();
//   trainer.fit(task, data.train_loader(64), data.test_loader(256));
#pragma once

#include <ATen/core/Tensor.h>
#include <frugal/data/batch_source.h>

#include <cstdint>
#include <memory>
#include <string>

namespace frugal::datasets {

/// Reads an IDX file of unsigned bytes (magic 0x0801 labels, 0x0803 images); returns a uint8
/// tensor of the file's shape. Throws frugal::Error naming the file on any defect.
at::Tensor read_idx(const std::string& path);

struct Split {
  at::Tensor images;  // N x 1 x 28 x 28 float, normalized
  at::Tensor labels;  // N int64
};

class FashionMnist {
 public:
  static constexpr const char* kDefaultDir = "/usr/share/datasets/fashion-mnist";
  /// The normalization load() applies after scaling to [0, 1]: Fashion-MNIST's training-set
  /// pixel mean and standard deviation (used for MNIST too, so one model sees one input range).
  static constexpr double kMean = 0.2860;
  static constexpr double kStd = 0.3530;
  /// Loads both splits; images scaled to [0,1] then normalized with the data set's mean/std.
  /// Same file layout for MNIST (pass its folder).
  static FashionMnist load(const std::string& dir = kDefaultDir);

  const Split& train() const { return train_; }
  const Split& test() const { return test_; }

  /// Shuffled training loader (seeded).
  std::shared_ptr<TensorLoader> train_loader(int64_t batch_size, uint64_t seed = 0) const;
  /// Ordered test loader, no padding when sharded.
  std::shared_ptr<TensorLoader> test_loader(int64_t batch_size) const;

 private:
  Split train_;
  Split test_;
};

}  // namespace frugal::datasets
