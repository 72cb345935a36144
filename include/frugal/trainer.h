// Trainer: runs the loops (fit -> epoch -> batch -> optimizer step; validate; test) around a Task,
// in the step order of DESIGN.md, with callbacks and loggers.
//
//   frugal::Trainer trainer(frugal::TrainerOptions().max_epochs(10).seed(42),
//                           {std::make_shared<frugal::MemoryMonitor>()});
//   trainer.fit(task, train, val);
//   auto metrics = trainer.test(task, test);
#pragma once

#include <c10/core/Device.h>
#include <frugal/callback.h>
#include <frugal/data/batch_source.h>
#include <frugal/loggers/logger.h>
#include <frugal/metrics.h>
#include <frugal/precision/precision.h>
#include <frugal/task.h>
#include <torch/arg.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace frugal {

namespace detail {
class Strategy;
}

/// A number of batches, or a fraction of an epoch's batches (Lightning's int-or-float limits).
struct BatchLimit {
  /* implicit */ BatchLimit(double fraction) : value(fraction), is_fraction(true) {}
  /* implicit */ BatchLimit(int64_t count)
      : value(static_cast<double>(count)), is_fraction(false) {}
  /* implicit */ BatchLimit(int count) : BatchLimit(static_cast<int64_t>(count)) {}
  /// Parses "0.25" (fraction) or "100" (count).
  static BatchLimit parse(const std::string& text);
  /// Batches this limit allows out of `available`.
  int64_t resolve(int64_t available) const;
  std::string str() const;
  double value;
  bool is_fraction;
};

enum class NanLossPolicy {
  kRaise,  ///< stop with an error naming the step (default)
  kSkip,   ///< skip the optimizer step of that accumulation window, count and log it
  kIgnore  ///< no check (no host sync for it)
};

struct TrainerOptions {
  /// Epochs to train; -1: unlimited if max_steps is set, else 1000 (as Lightning).
  TORCH_ARG(int64_t, max_epochs) = -1;
  /// Early stopping is not honoured before this many epochs.
  TORCH_ARG(int64_t, min_epochs) = 0;
  /// Optimizer steps to train; -1: no limit.
  TORCH_ARG(int64_t, max_steps) = -1;
  TORCH_ARG(int64_t, min_steps) = 0;
  /// Wall-clock limit in seconds (<= 0: none); checked after every training batch.
  TORCH_ARG(double, max_time_seconds) = 0.0;
  TORCH_ARG(BatchLimit, limit_train_batches) = BatchLimit(1.0);
  TORCH_ARG(BatchLimit, limit_val_batches) = BatchLimit(1.0);
  TORCH_ARG(BatchLimit, limit_test_batches) = BatchLimit(1.0);
  /// n > 0: run n batches of train, val and test once, without checkpoints or loggers.
  TORCH_ARG(int64_t, fast_dev_run) = 0;
  /// Validate every fraction of an epoch (double) or every n training batches (int).
  TORCH_ARG(BatchLimit, val_check_interval) = BatchLimit(1.0);
  /// Validate every n epochs; 0: only as val_check_interval (a batch count) says.
  TORCH_ARG(int64_t, check_val_every_n_epoch) = 1;
  /// Validation batches run before training to catch bugs early; -1: all.
  TORCH_ARG(int64_t, num_sanity_val_steps) = 2;
  /// Step metrics go to the loggers every n optimizer steps.
  TORCH_ARG(int64_t, log_every_n_steps) = 50;
  TORCH_ARG(bool, enable_progress_bar) = true;
  /// Add a CSVLogger and a TensorBoardLogger (same version_N folder) under default_root_dir when
  /// no logger is given.
  TORCH_ARG(bool, logger) = true;
  TORCH_ARG(std::string, default_root_dir) = ".";
  /// Seeds LibTorch's generators (and the data sources the Trainer builds) at fit start; -1: no.
  TORCH_ARG(int64_t, seed) = -1;
  /// Use deterministic algorithms only.
  TORCH_ARG(bool, deterministic) = false;
  /// "auto", "cpu" or "cuda".
  TORCH_ARG(std::string, accelerator) = "auto";
  /// Number of devices; -1: "auto".
  TORCH_ARG(int64_t, devices) = -1;
  /// "auto" (data parallel when the launcher's environment says WORLD_SIZE > 1, else one
  /// device), "single_device" or "ddp". See docs/distributed.md.
  TORCH_ARG(std::string, strategy) = "auto";
  /// Data parallel: how long a collective may wait for the other ranks before failing.
  TORCH_ARG(double, process_group_timeout_seconds) = 300.0;
  /// Data parallel: gradient bucket size cap, in MiB.
  TORCH_ARG(double, ddp_bucket_cap_mb) = 25.0;
  /// Data parallel: allow parameters that get no gradient in a step (else a clear error naming
  /// them).
  TORCH_ARG(bool, find_unused_parameters) = false;
  TORCH_ARG(Precision, precision) = Precision::k32;
  TORCH_ARG(int64_t, accumulate_grad_batches) = 1;

 public:
  /// Per-epoch accumulation (Lightning's GradientAccumulationScheduler): {epoch: k} applies k
  /// from that epoch on, e.g. {{0, 8}, {4, 4}, {8, 1}}. Needs accumulate_grad_batches == 1.
  using AccumulationSchedule = std::map<int64_t, int64_t>;
  TORCH_ARG(AccumulationSchedule, accumulation_schedule);
  /// <= 0: no clipping.
  TORCH_ARG(double, gradient_clip_val) = 0.0;
  /// "norm" or "value".
  TORCH_ARG(std::string, gradient_clip_algorithm) = "norm";
  /// The p of the p-norm for gradient_clip_algorithm "norm" (inf allowed).
  TORCH_ARG(double, gradient_clip_norm_type) = 2.0;
  /// Log the total gradient norm (before clipping) as "train/grad_norm" at every optimizer step.
  TORCH_ARG(bool, log_grad_norm) = false;
  TORCH_ARG(NanLossPolicy, nan_loss) = NanLossPolicy::kRaise;
  /// Budget mode: bytes one training process may use (CPU: peak RSS growth; CUDA: peak reserved
  /// growth). Needs effective_batch_size. See docs/budget.md.
  TORCH_ARG(double, memory_budget) = 0.0;
  /// Budget mode: micro-batch x accumulate_grad_batches x world size; the Trainer picks the
  /// micro-batch with the batch-size finder. 0: off.
  TORCH_ARG(int64_t, effective_batch_size) = 0;
  /// On an out-of-memory error in a training step: free what the step held, halve the
  /// micro-batch (each batch is then run as two halves), double the accumulation, and redo the
  /// accumulation window, so the effective batch and the update stay as they were. Repeats down
  /// to micro-batch 1; logged as train/oom_recoveries. Single device only; holds the current
  /// window's batches to redo it. See docs/budget.md.
  TORCH_ARG(bool, oom_recovery) = false;
  /// Training on the CPU: fit makes glibc's malloc keep freed tensor memory for reuse instead of
  /// handing it back to the kernel after every step (frugal/budget/cpu_memory.h), and returns it
  /// when fit ends: 15% faster steps for the example CNN on one thread. Not in budget mode or with
  /// a BatchSizeFinder callback (the finder measures memory), nor when the environment sets
  /// malloc's thresholds (MALLOC_MMAP_THRESHOLD_, ...).
  TORCH_ARG(bool, cpu_malloc_tuning) = true;
  /// Check a checkpoint's SHA-256 before resuming from it (one extra read of the file; turn off
  /// only for huge files on trusted storage). Files written before checksums load with a warning.
  TORCH_ARG(bool, verify_checkpoints) = true;
  /// LibTorch's intra-op CPU threads. 0: decided by frugal from the CPUs this process may run on
  /// (OMP_NUM_THREADS when set, else the affinity mask and the cgroup CPU quota, divided among the
  /// ranks on this machine; frugal/hardware/cpu_threads.h); n > 0: n; -1: leave LibTorch's setting
  /// as it is (for programs that call at::set_num_threads themselves). Applied when the Trainer is
  /// built; the first lines of a fit say how many and why.
  TORCH_ARG(int64_t, num_threads) = 0;
  /// The model's 4-D parameters and buffers, and every 4-D input batch, in the channels_last
  /// (NHWC) memory format: faster convolutions with oneDNN on CPUs and with tensor cores on GPUs
  /// (docs/performance.md measures it). The values are the same; only the layout changes.
  TORCH_ARG(bool, channels_last) = false;

 public:
  /// Sets max_time from "DD:HH:MM:SS" (Lightning's format) or a duration.
  TrainerOptions& max_time(const std::string& dd_hh_mm_ss);
  template <typename Rep, typename Period>
  TrainerOptions& max_time(std::chrono::duration<Rep, Period> d) {
    max_time_seconds_ = std::chrono::duration<double>(d).count();
    return *this;
  }
  TrainerOptions& precision(const std::string& text) {
    precision_ = parse_precision(text);
    return *this;
  }

  /// Throws frugal::Error naming the first bad option and what is allowed.
  void validate() const;
  /// Every option as text (written beside the logs as hyper-parameters).
  std::map<std::string, std::string> to_map() const;
  /// Micro-batches per optimizer step in `epoch` (the schedule, else accumulate_grad_batches).
  int64_t accumulation_for_epoch(int64_t epoch) const;
};

/// Where the Trainer is; callbacks read it.
struct TrainerState {
  TrainerFn fn = TrainerFn::kFit;
  Stage stage = Stage::kTrain;
  bool sanity_checking = false;
  /// Current epoch, 0-based; after fit, the number of epochs completed.
  int64_t epoch = 0;
  /// Optimizer steps taken.
  int64_t global_step = 0;
  /// Index of the current batch in its epoch (training), or in its evaluation loop.
  int64_t batch_idx = 0;
  /// Training batches processed in the current epoch.
  int64_t epoch_batches_done = 0;
  /// Optimizer steps skipped (non-finite loss or gradients).
  int64_t skipped_steps = 0;
  /// Out-of-memory errors recovered from (TrainerOptions::oom_recovery).
  int64_t oom_recoveries = 0;
  /// Parts each training batch is split into (1 until an out-of-memory recovery halves the
  /// micro-batch; then 2, 4, ...).
  int64_t micro_batch_split = 1;
  bool should_stop = false;
  std::string stop_reason;
};

class Trainer {
 public:
  explicit Trainer(TrainerOptions options = {},
                   std::vector<std::shared_ptr<Callback>> callbacks = {},
                   std::vector<std::shared_ptr<Logger>> loggers = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Trains `task` on `train`, validating on `val` (may be null). `ckpt_path` resumes from a
  /// checkpoint: a path, "last" (the newest last-checkpoint of the ModelCheckpoint callbacks; when
  /// there is none yet, a warning naming where it looked and a fresh start, as Lightning) or
  /// "best" (their best model); empty: start fresh.
  void fit(Task& task, std::shared_ptr<BatchSource> train, std::shared_ptr<BatchSource> val = {},
           const std::string& ckpt_path = "");

  /// Saves the training state to `path` atomically (the full state, or the model only). Only
  /// rank 0 writes; all ranks must call it. Callable from any hook during fit.
  void save_checkpoint(const std::string& path, bool weights_only = false);
  /// Where checkpoints go by default: <log_dir()>/checkpoints.
  std::string checkpoint_dir() const;
  /// One pass over `data` with validation_step; returns the epoch metrics.
  std::map<std::string, double> validate(Task& task, std::shared_ptr<BatchSource> data);
  /// One pass over `data` with test_step; returns the epoch metrics.
  std::map<std::string, double> test(Task& task, std::shared_ptr<BatchSource> data);

  /// Ends training after the current optimizer step (honours min_epochs / min_steps).
  void request_stop(const std::string& reason);

  const TrainerOptions& options() const { return options_; }
  const TrainerState& state() const { return state_; }
  Metrics& metrics() { return metrics_; }
  const Metrics& metrics() const { return metrics_; }
  /// Callback metrics fetched to the host.
  std::map<std::string, double> callback_metrics() const { return metrics_.callback_metrics(); }
  const std::vector<std::shared_ptr<Callback>>& callbacks() const { return callbacks_; }
  const std::vector<std::shared_ptr<Logger>>& loggers() const { return loggers_; }
  c10::Device device() const { return device_; }
  /// The optimizer and scheduler of the current fit (null outside fit).
  torch::optim::Optimizer* optimizer() const;
  LRScheduler* lr_scheduler() const;
  /// Training batches per epoch after limits; evaluation batches of the current loop.
  int64_t num_training_batches() const { return num_training_batches_; }
  int64_t num_eval_batches() const { return num_eval_batches_; }
  /// Largest number of epochs this fit may run (resolved max_epochs; -1: unlimited).
  int64_t max_epochs() const { return max_epochs_; }
  /// Rank of this process in data-parallel training (0 when single).
  int64_t global_rank() const;
  int64_t world_size() const;
  bool is_global_zero() const { return global_rank() == 0; }
  /// Where logs (and by default checkpoints) go.
  std::string log_dir() const;
  /// The checkpoint the current (or last) fit resumed from, resolved ("" when it started fresh).
  /// ModelCheckpoint never deletes it.
  const std::string& ckpt_path() const { return ckpt_path_; }

 private:
  struct Fit;
  void prepare(Task& task, BatchSource* a, BatchSource* b);
  void configure_optimization(Task& task);
  void plan_micro_batch(Task& task, BatchSource& train);
  void configure_validation(BatchSource& val);
  void run_training(Task& task, BatchSource& train, BatchSource* val);
  bool train_epoch(Task& task, BatchSource& train, BatchSource* val);
  void run_training_batch(Task& task, const Batch& batch, int64_t batch_idx);
  at::Tensor forward_backward(Task& task, const Batch& batch, int64_t batch_idx, int64_t window,
                              bool sync);
  at::Tensor recoverable_forward_backward(Task& task, const Batch& batch, int64_t batch_idx,
                                          int64_t window, bool sync);
  void check_loss(const at::Tensor& loss);
  void check_pending_loss();
  void optimizer_step(Task& task);
  void clip_gradients();
  void step_scheduler(Interval interval);
  bool should_validate(int64_t batch_idx, bool stopping) const;
  bool can_stop(bool at_epoch_end) const;
  enum Vote : size_t { kVotePreempt, kVoteStop, kVoteSkip, kVoteCount };
  std::vector<bool> step_votes() const;
  std::vector<bool> step_decisions() const;
  bool max_steps_reached() const;
  void log_epoch_metrics();
  std::vector<std::string> run_evaluation(Task& task, BatchSource& data, Stage stage,
                                          int64_t max_batches, bool sanity);
  std::map<std::string, double> evaluate(Task& task, std::shared_ptr<BatchSource> data,
                                         TrainerFn fn);
  void handle_exception(Task& task, const std::exception& error);
  void preempt();
  void write_checkpoint(const std::string& path, bool weights_only);
  std::function<void(std::vector<at::Tensor>&)> metric_reducer();
  std::string resolve_ckpt_path(const std::string& which) const;
  StateDict training_state() const;
  void restore(Task& task, const std::string& path);

  TrainerOptions options_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  std::vector<std::shared_ptr<Logger>> loggers_;
  // report.html beside the CSV logs at the end of fit (run report, docs/logging.md); `failure`:
  // the error that ended a failed fit.
  void write_fit_report(const std::string& failure = "");
  TrainerState state_;
  Metrics metrics_;
  c10::Device device_{c10::kCPU};
  int64_t num_training_batches_ = 0;
  int64_t num_eval_batches_ = 0;
  int64_t max_epochs_ = -1;
  std::string ckpt_path_;
  std::unique_ptr<Fit> fit_;
  std::unique_ptr<detail::Strategy> strategy_;
};

}  // namespace frugal
