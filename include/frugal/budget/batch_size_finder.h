// Batch-size finder: the largest micro-batch whose real training steps (forward, backward,
// optimizer step, at the chosen precision) fit a memory limit — CUDA memory (out-of-memory is
// caught and the search goes on) or, on CPU, a byte budget measured as peak RSS growth. Model,
// optimizer and RNG state are restored bit for bit afterwards. See docs/budget.md.
//
//   auto found = frugal::find_batch_size(task, images, labels,
//       frugal::BatchSizeFinderOptions().budget_bytes(2e9).max_size(1024));
//   std::cout << found.describe();
//   auto plan = frugal::plan_budget(task, images, labels, /*budget_bytes=*/2e9,
//                                   /*effective_batch=*/512);  // micro_batch x accumulate = 512
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <frugal/precision/precision.h>
#include <frugal/task.h>
#include <torch/arg.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace frugal {

/// How sizes are tried: powers of two from start_size, then a binary search between the last
/// size that fitted and the first that did not (Lightning's "binsearch"); or powers only.
enum class BatchSizeSearch { kPowerThenBinary, kPower };

struct BatchSizeFinderOptions {
  /// The limit as peak memory growth of one trial, in bytes: peak RSS growth on CPU (required
  /// there), peak reserved CUDA memory growth on CUDA (optional; 0: only out-of-memory limits).
  TORCH_ARG(double, budget_bytes) = 0.0;
  TORCH_ARG(c10::Device, device) = c10::Device(c10::kCPU);
  TORCH_ARG(Precision, precision) = Precision::k32;
  /// First size tried.
  TORCH_ARG(int64_t, start_size) = 1;
  /// Largest size tried; -1: the number of samples given (never more than that).
  TORCH_ARG(int64_t, max_size) = -1;
  /// Optimizer steps per trial (the first step allocates the optimizer's state).
  TORCH_ARG(int64_t, steps_per_trial) = 2;
  TORCH_ARG(BatchSizeSearch, mode) = BatchSizeSearch::kPowerThenBinary;
  /// Trials at most (the search stops with the best size so far).
  TORCH_ARG(int64_t, max_trials) = 25;
  /// Run one unmeasured trial at start_size first, so one-time allocations (thread pools, kernel
  /// caches) are not charged to the first measured size.
  TORCH_ARG(bool, warmup) = true;
  /// Where progress lines go (nullptr: nowhere).
  using StreamPtr = std::ostream*;
  TORCH_ARG(StreamPtr, out) = nullptr;
  /// The Trainer that the trial steps' StepContext::trainer() returns (the BatchSizeFinder
  /// callback and the Trainer's budget mode pass themselves); none on its own.
  using TrainerPtr = const Trainer*;
  TORCH_ARG(TrainerPtr, context) = nullptr;

 public:
  /// Throws frugal::Error naming the first bad option and what is allowed.
  void validate() const;
};

/// One size tried.
struct BatchSizeTrial {
  enum class Outcome { kFits, kOverBudget, kOutOfMemory };
  int64_t batch_size = 0;
  /// Peak memory growth measured (bytes); -1 when the trial ran out of memory.
  int64_t bytes = -1;
  Outcome outcome = Outcome::kFits;
  bool fits() const { return outcome == Outcome::kFits; }
};
const char* to_string(BatchSizeTrial::Outcome outcome);

struct BatchSizeResult {
  /// The largest size that fitted.
  int64_t batch_size = 0;
  /// The memory that size used (peak growth, bytes).
  int64_t bytes_used = 0;
  double budget_bytes = 0.0;
  c10::Device device{c10::kCPU};
  Precision precision = Precision::k32;
  /// Every trial in the order run (the warm-up excluded).
  std::vector<BatchSizeTrial> trials;
  /// A few lines: the choice, the limit, and the table of trials.
  std::string describe() const;
};

/// Searches the largest micro-batch of `data`/`targets` (samples along dim 0, on any device; each
/// trial copies its batch to options.device) for `task`, with a fresh optimizer from
/// task.configure_optimizers(). The module is moved to options.device. Throws frugal::Error when
/// even start_size does not fit.
BatchSizeResult find_batch_size(Task& task, const at::Tensor& data, const at::Tensor& targets,
                                BatchSizeFinderOptions options = {});
/// The same with an existing optimizer, whose state (and the module's) is restored afterwards.
BatchSizeResult find_batch_size(Task& task, torch::optim::Optimizer& optimizer,
                                const at::Tensor& data, const at::Tensor& targets,
                                BatchSizeFinderOptions options = {});

/// Runs one trial at `batch_size` (after an unmeasured one at the same size when options.warmup)
/// and returns it, state restored as above: what the finder measures, for tests and the table in
/// docs/budget.md. max_size is ignored.
BatchSizeTrial measure_batch_size(Task& task, const at::Tensor& data, const at::Tensor& targets,
                                  int64_t batch_size, BatchSizeFinderOptions options = {});

/// Micro-batch and accumulation for an effective batch under a memory budget.
struct BudgetPlan {
  int64_t micro_batch = 0;
  int64_t accumulate = 1;
  int64_t effective_batch = 0;
  int64_t world_size = 1;
  BatchSizeResult search;
  /// What was chosen and why, one line.
  std::string describe() const;
};

/// Finds the largest micro-batch within `budget_bytes`, then the accumulation k so that
/// micro_batch x k x world_size == effective_batch exactly: k is the smallest count with
/// k >= effective_batch / (world_size x largest fitting size) that divides the per-rank batch.
/// See Note [Budget plans divide the effective batch exactly] in the source.
BudgetPlan plan_budget(Task& task, const at::Tensor& data, const at::Tensor& targets,
                       double budget_bytes, int64_t effective_batch, int64_t world_size = 1,
                       BatchSizeFinderOptions options = {});

}  // namespace frugal
