// Metric logging: `ctx.log(name, value, options)` from steps and hooks.
//
// Values stay on their device as 0-dim tensors. Epoch means are accumulated on device, weighted
// by batch size. Nothing is copied to the host until a logger, the progress bar or a monitoring
// callback asks for a number; so logging every step costs one small tensor op, never a sync.
//
// Naming follows Lightning: a metric logged with on_step only is `name`; on_epoch only is `name`
// (its epoch mean); both gives `name_step` and `name_epoch`, and `name` holds the epoch mean.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace frugal {

/// The loop a step or hook runs in.
enum class Stage { kTrain, kValidate, kTest };
const char* to_string(Stage stage);

/// How epoch values are reduced over the steps of an epoch.
enum class Reduce { kMean, kSum, kMax, kMin };

struct LogOptions {
  /// Record the value of every step. Default: true in training, false in validation/test.
  TORCH_ARG(std::optional<bool>, on_step);
  /// Accumulate and report the epoch value. Default: false in training, true in validation/test.
  TORCH_ARG(std::optional<bool>, on_epoch);
  /// Show on the progress bar.
  TORCH_ARG(bool, prog_bar) = false;
  /// Send to the loggers.
  TORCH_ARG(bool, logger) = true;
  /// Weight of this value in the epoch mean; default: the current batch's size.
  TORCH_ARG(int64_t, batch_size) = -1;
  TORCH_ARG(Reduce, reduce) = Reduce::kMean;
  /// Reduce the epoch value across data-parallel ranks.
  TORCH_ARG(bool, sync_dist) = false;
};

/// The metric store of one Trainer. Steps and callbacks write to it through `log`; callbacks read
/// it through `get` / `callback_metrics`.
class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  void log(const std::string& name, const at::Tensor& value, const LogOptions& options = {});
  void log(const std::string& name, double value, const LogOptions& options = {});

  /// The latest value of a monitored metric, fetched to the host; nullopt if never logged.
  std::optional<double> get(const std::string& name) const;
  bool contains(const std::string& name) const;
  /// All callback metrics, fetched to the host.
  std::map<std::string, double> callback_metrics() const;
  /// Names of all callback metrics (no host copy).
  std::vector<std::string> names() const;
  /// Metrics flagged prog_bar, fetched to the host.
  std::map<std::string, double> progress_bar_metrics() const;

  // ---- driven by the Trainer ----
  /// Sets the stage and batch size that defaults and weights refer to.
  void set_context(Stage stage, int64_t batch_size);
  Stage stage() const { return stage_; }
  /// Clears the epoch accumulators of `stage`.
  void begin_epoch(Stage stage);
  /// Turns `stage`'s accumulators into epoch values (callback metrics and pending logger values)
  /// and returns their names. `reduce_across_ranks`, when set, sums (sum, weight) pairs over
  /// data-parallel ranks for metrics logged with sync_dist.
  std::vector<std::string> end_epoch(
      Stage stage, const std::function<void(std::vector<at::Tensor>&)>& reduce_across_ranks = {});
  /// Step values waiting for the loggers since the last call; fetched to the host. Empties them.
  std::map<std::string, double> take_step_metrics();
  /// Epoch values waiting for the loggers; fetched to the host. Empties them.
  std::map<std::string, double> take_epoch_metrics();
  /// Forgets everything (e.g. between fit and test).
  void reset();
  /// Epoch accumulators and monitored values, for exact mid-epoch resume.
  std::map<std::string, c10::IValue> state_dict() const;
  void load_state_dict(const std::map<std::string, c10::IValue>& state);

  /// Everything logged so far, held in memory without copying a tensor (values are never updated
  /// in place); `rollback` forgets what was logged after it. The Trainer's OOM recovery redoes
  /// an accumulation window this way without counting its first attempt.
  struct Snapshot;
  Snapshot snapshot() const;
  void rollback(const Snapshot& snapshot);

 private:
  struct Accumulator {
    at::Tensor value;  // running sum (mean/sum) or extreme (max/min), on the value's device
    int64_t weight = 0;
    LogOptions options;
    Stage stage = Stage::kTrain;
    std::string epoch_name;   // where the epoch value goes ("name" or "name_epoch")
    bool also_plain = false;  // both on_step and on_epoch: `name` holds the epoch value too
  };
  Stage stage_ = Stage::kTrain;
  int64_t batch_size_ = 1;
  std::map<std::string, at::Tensor> callback_;
  std::map<std::string, at::Tensor> progress_;
  std::map<std::string, at::Tensor> pending_step_;
  std::map<std::string, at::Tensor> pending_epoch_;
  std::map<std::string, Accumulator> accumulators_;
};

struct Metrics::Snapshot {
  std::map<std::string, at::Tensor> callback, progress, pending_step, pending_epoch;
  std::map<std::string, Accumulator> accumulators;
};

}  // namespace frugal
