// ImageLoader: a BatchSource over image files (ImageFolder, a list file) or a packed cache
// (packed.h) and transforms, decoded
// by a pool of threads straight into preallocated uint8 batch buffers, several batches ahead,
// delivered in order.
//
//   frugal::ImageFolder folder("data/train");
//   auto train = std::make_shared<frugal::ImageLoader>(folder.samples(),
//       frugal::compose({std::make_shared<frugal::RandomResizedCrop>(224),
//                        std::make_shared<frugal::RandomHorizontalFlip>()}),
//       224, 224, frugal::ImageLoaderOptions(256).shuffle(true).seed(42));
//   // batch.data: N x 3 x 224 x 224 uint8; normalize it where it lands:
//   at::Tensor x = frugal::normalize_batch(batch.data, {0.485, 0.456, 0.406}, {0.229, 0.224,
//   0.225});
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "frugal/data/batch_source.h"
#include "frugal/data/image.h"
#include "frugal/data/image_folder.h"
#include "frugal/data/packed.h"
#include "frugal/data/transforms.h"

namespace frugal {

/// What a sample that cannot be read or decoded does.
enum class OnBadSample {
  kRaise,  ///< next() throws the error naming the file (default)
  kSkip,   ///< a deterministic other sample takes its place (the epoch keeps its length), counted
};

struct ImageLoaderOptions {
  /* implicit */ ImageLoaderOptions(int64_t batch_size = 64) : batch_size_(batch_size) {}
  TORCH_ARG(int64_t, batch_size);
  /// The epoch's order is a permutation drawn from (seed, epoch), as TensorLoader's.
  TORCH_ARG(bool, shuffle) = false;
  /// Block shuffle, for data larger than RAM read from a packed cache: 0 (default) shuffles all
  /// samples; B > 0 cuts the samples into blocks of B consecutive ones (consecutive in the file),
  /// shuffles the blocks, then shuffles the samples within each window of `shuffle_window`
  /// consecutive blocks of that order. Reads then stay within a few blocks at a time, at the
  /// price of a less thorough shuffle (a sample's neighbours in a batch come from at most
  /// `shuffle_window` blocks). Still a pure function of (seed, epoch).
  TORCH_ARG(int64_t, shuffle_block) = 0;
  TORCH_ARG(int64_t, shuffle_window) = 16;
  /// Seeds the shuffle and every sample's augmentation (SampleRng(seed, epoch, position)).
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(bool, drop_last) = false;
  /// Pad shards to equal length (training); false for evaluation, as TensorLoader.
  TORCH_ARG(bool, pad_shards) = true;
  /// Decode threads; 0: the number of CPUs less one, at least 1.
  TORCH_ARG(int64_t, threads) = 0;
  /// Batches prepared ahead of the one being consumed (>= 1).
  TORCH_ARG(int64_t, batches_ahead) = 3;
  TORCH_ARG(ColorMode, color) = ColorMode::kRGB;
  TORCH_ARG(OnBadSample, on_bad_sample) = OnBadSample::kRaise;
};

/// Batches of `N x C x height x width` uint8 images (C = 3, or 1 for ColorMode::kGray) and
/// int64 labels. Every transformed image must be exactly height x width.
///
/// Sample `k` of the epoch's order (before sharding) is transformed with SampleRng(seed, epoch,
/// k): the batches are the same whatever the number of threads, and start_epoch(e, skip)
/// resumes exactly, without reading the skipped samples. A bad sample with OnBadSample::kSkip is
/// replaced by the first readable sample among (i + 1), (i + 2), ... (mod N) of the data set,
/// transformed with the bad one's randomness; bad_samples() counts them.
///
/// Buffers are reused: a batch the caller still holds when its buffer comes round again is
/// left alone (a new buffer is allocated instead), so held batches never change.
class ImageLoader : public BatchSource {
 public:
  ImageLoader(std::vector<ImageSample> samples, TransformPtr transform, int64_t height,
              int64_t width, ImageLoaderOptions options = {});
  /// The samples of a store — a packed cache (PackedFile::open; write_packed / frugal-pack) or an
  /// LMDB database (LmdbFile) — or its samples listed in `subset` (store indices, in the order
  /// given): no file opened per sample; nothing decoded for a raw cache. A sample the store
  /// cannot read (a failed checksum, a corrupt image) is a bad sample, as a corrupt file is.
  ImageLoader(std::shared_ptr<const SampleStore> store, TransformPtr transform, int64_t height,
              int64_t width, ImageLoaderOptions options = {}, std::vector<int64_t> subset = {});
  ~ImageLoader() override;

  int64_t num_batches() const override;
  int64_t num_samples() const override;
  void start_epoch(int64_t epoch, int64_t skip_batches = 0) override;
  std::optional<Batch> next() override;
  void set_device(c10::Device device) override;
  void set_shard(int64_t rank, int64_t world_size) override;
  std::string describe() const override;
  bool set_batch_size(int64_t batch_size) override;
  int64_t worker_threads() const override { return threads(); }

  const ImageLoaderOptions& options() const { return options_; }
  int64_t threads() const;
  /// Samples replaced since construction (OnBadSample::kSkip).
  int64_t bad_samples() const;
  /// The dataset indices this rank sees in `epoch`, in order (after padding and drop_last).
  std::vector<int64_t> epoch_indices(int64_t epoch) const;

 private:
  void init(std::vector<ImageSample> samples, TransformPtr transform, int64_t height,
            int64_t width);
  struct Impl;
  ImageLoaderOptions options_;
  std::unique_ptr<Impl> impl_;
};

/// (x / 255 - mean) / std per channel, on `batch`'s device, as float32: torchvision's
/// ToTensor + Normalize, done after the uint8 batch has arrived.
at::Tensor normalize_batch(const at::Tensor& batch, const std::vector<double>& mean,
                           const std::vector<double>& std);

}  // namespace frugal
