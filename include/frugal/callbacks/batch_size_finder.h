// BatchSizeFinder: Lightning's batch-size finder as a callback. At on_fit_start it runs
// frugal::find_batch_size (frugal/budget/batch_size_finder.h) with the Trainer's device,
// precision and optimizer, and keeps the result. See docs/budget.md.
//
//   auto finder = std::make_shared<frugal::BatchSizeFinder>(images, labels,
//       frugal::BatchSizeFinderOptions().budget_bytes(2e9));
//   trainer.fit(task, train);  // finder->result().batch_size
#pragma once

#include <ATen/core/Tensor.h>
#include <frugal/budget/batch_size_finder.h>
#include <frugal/callback.h>

namespace frugal {

/// At on_fit_start it runs find_batch_size on
/// `data`/`targets` with the Trainer's device, precision and optimizer (restored afterwards), and
/// keeps the result; it does not change the Trainer's data source (use the result, or the
/// Trainer's budget mode, to set it).
class BatchSizeFinder : public Callback {
 public:
  BatchSizeFinder(at::Tensor data, at::Tensor targets, BatchSizeFinderOptions options = {});
  void on_fit_start(Trainer& trainer, Task& task) override;
  /// The last search (batch_size 0 before any fit).
  const BatchSizeResult& result() const { return result_; }

 private:
  at::Tensor data_;
  at::Tensor targets_;
  BatchSizeFinderOptions options_;
  BatchSizeResult result_;
};

}  // namespace frugal
