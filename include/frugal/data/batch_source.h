// Batch sources: what the Trainer pulls batches from.
//
// A BatchSource yields the batches of one epoch for one rank. The Trainer tells it which epoch
// begins (so shuffling is a pure function of (seed, epoch)) and how many batches to skip (so a
// mid-epoch resume continues at the exact batch), and where batches must land (device).
//
//   auto train = std::make_shared<frugal::TensorLoader>(images, labels,
//       frugal::TensorLoaderOptions(64).shuffle(true).seed(42));
//   trainer.fit(task, train, val);
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace frugal {

/// One batch: inputs and targets, already on the training device.
struct Batch {
  at::Tensor data;
  at::Tensor target;
  /// Number of samples (first dimension of `data`).
  int64_t size() const { return data.defined() ? data.size(0) : 0; }
};

/// Where a BatchSource is in its stream; saved in checkpoints for exact resume.
struct DataPosition {
  int64_t epoch = 0;
  int64_t batches_done = 0;
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;

  /// Number of batches one epoch yields on this rank.
  virtual int64_t num_batches() const = 0;
  /// Number of samples one epoch covers on this rank (the last batch may be short).
  virtual int64_t num_samples() const = 0;
  /// Begins `epoch`, skipping its first `skip_batches` batches (exact resume).
  virtual void start_epoch(int64_t epoch, int64_t skip_batches = 0) = 0;
  /// The next batch of the current epoch, or nullopt at its end.
  virtual std::optional<Batch> next() = 0;
  /// Batches are delivered on `device` from now on.
  virtual void set_device(c10::Device device) = 0;
  /// Restricts this source to shard `rank` of `world_size` (data parallel). Evaluation sources
  /// split without padding, so every sample is seen exactly once across ranks.
  virtual void set_shard(int64_t rank, int64_t world_size) = 0;
  /// A short description for logs and errors.
  virtual std::string describe() const = 0;
  /// Changes the batch size from the next start_epoch on; false when this source cannot
  /// (budget mode needs it).
  virtual bool set_batch_size(int64_t /*batch_size*/) { return false; }
  /// Threads this source keeps busy producing batches beside the training computation (an
  /// ImageLoader's decode threads); the Trainer's automatic CPU thread count leaves them their
  /// cores (frugal/hardware/cpu_threads.h). 0 for sources that work on the caller's thread.
  virtual int64_t worker_threads() const { return 0; }
};

namespace detail {
/// The seed of epoch `epoch`'s shuffle: a SplitMix64 mix of (seed, epoch), so neighbouring seeds
/// and epochs give unrelated permutations.
uint64_t seed_mix(uint64_t seed, int64_t epoch);
}  // namespace detail

struct TensorLoaderOptions {
  /* implicit */ TensorLoaderOptions(int64_t batch_size = 64) : batch_size_(batch_size) {}
  TORCH_ARG(int64_t, batch_size);
  /// Reshuffle every epoch with a permutation drawn from (seed, epoch).
  TORCH_ARG(bool, shuffle) = false;
  TORCH_ARG(uint64_t, seed) = 0;
  /// Drop the last, short batch (of this rank's shard).
  TORCH_ARG(bool, drop_last) = false;
  /// Prepare the next batch on a background thread while the current one trains. Unset (auto):
  /// only when the batches go from host memory to an accelerator (pinned copies that overlap the
  /// step); batches that stay on the CPU are indexed inline, where a second thread only competes
  /// with LibTorch's compute threads (docs/data.md, docs/performance.md).
  TORCH_ARG(std::optional<bool>, prefetch);
  /// Pad shards to equal length (training: every rank steps equally often). Off for evaluation,
  /// where each sample must be counted exactly once.
  TORCH_ARG(bool, pad_shards) = true;
};

/// An in-memory source: one index_select per batch, seeded shuffle, shard per rank, prefetch,
/// pinned non-blocking copies to CUDA.
class TensorLoader : public BatchSource {
 public:
  TensorLoader(at::Tensor data, at::Tensor targets, TensorLoaderOptions options = {});
  ~TensorLoader() override;

  int64_t num_batches() const override;
  int64_t num_samples() const override;
  void start_epoch(int64_t epoch, int64_t skip_batches = 0) override;
  std::optional<Batch> next() override;
  void set_device(c10::Device device) override;
  void set_shard(int64_t rank, int64_t world_size) override;
  std::string describe() const override;

  bool set_batch_size(int64_t batch_size) override;

  const TensorLoaderOptions& options() const { return options_; }
  /// The whole data set, as given.
  const at::Tensor& data() const;
  const at::Tensor& targets() const;
  /// Number of samples in the whole data set (all ranks).
  int64_t dataset_size() const;
  int64_t rank() const;
  int64_t world_size() const;
  /// The sample indices (int64, CPU) this rank sees in `epoch`, in order, after padding and
  /// drop_last: a pure function of (options, epoch, rank, world_size). For tests and debugging.
  at::Tensor epoch_indices(int64_t epoch) const;

 private:
  struct Impl;
  TensorLoaderOptions options_;
  std::unique_ptr<Impl> impl_;
};

/// Adapts any LibTorch `torch::data` loader (anything iterable yielding `Example<>` batches or
/// vectors of them) by a factory that makes the loader for an epoch. The factory receives the
/// epoch so it can reseed its sampler.
class FunctionSource : public BatchSource {
 public:
  /// `make_epoch(epoch)` returns a function that yields the next batch or nullopt.
  using EpochFactory = std::function<std::function<std::optional<Batch>()>(int64_t epoch)>;
  FunctionSource(EpochFactory make_epoch, int64_t num_batches, int64_t num_samples,
                 std::string name = "function source");

  int64_t num_batches() const override { return num_batches_; }
  int64_t num_samples() const override { return num_samples_; }
  void start_epoch(int64_t epoch, int64_t skip_batches = 0) override;
  std::optional<Batch> next() override;
  void set_device(c10::Device device) override { device_ = device; }
  void set_shard(int64_t rank, int64_t world_size) override;
  std::string describe() const override { return name_; }

 private:
  EpochFactory make_epoch_;
  std::function<std::optional<Batch>()> current_;
  int64_t num_batches_;
  int64_t num_samples_;
  std::string name_;
  c10::Device device_{c10::kCPU};
};

}  // namespace frugal
