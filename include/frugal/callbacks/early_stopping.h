// EarlyStopping: ends training when a monitored metric stops improving, reaches a target
// (stopping_threshold), runs away (divergence_threshold) or becomes NaN/inf. Lightning's callback,
// plus Keras's restore_best_weights. Patience counts checks (validation runs), not epochs. Its
// state (counters, best score, best weights) is saved in checkpoints, so a resumed run stops
// where an uninterrupted one would. See docs/early_stopping.md.
//
//   auto es = std::make_shared<frugal::EarlyStopping>(
//       frugal::EarlyStoppingOptions("val/acc").mode_max().patience(5).restore_best_weights(true));
//   frugal::Trainer trainer(frugal::TrainerOptions().max_epochs(100), {es});
//   trainer.fit(task, train, val);
//   std::cout << es->stopping_reason() << "\n";
#pragma once

#include <frugal/callback.h>
#include <torch/arg.h>

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace frugal {

struct EarlyStoppingOptions {
  using OStreamPtr = std::ostream*;  // TORCH_ARG needs a one-word type for a const pointer

  /* implicit */ EarlyStoppingOptions(std::string monitor) : monitor_(std::move(monitor)) {}

  /// Name of the metric to watch, as logged (e.g. "val/loss").
  TORCH_ARG(std::string, monitor);
  /// An improvement must beat the best score by more than this (>= 0).
  TORCH_ARG(double, min_delta) = 0.0;
  /// Checks without improvement before stopping (>= 0). A check is one validation run, or one
  /// training epoch end when checking there: with check_val_every_n_epoch(10), patience(3) means
  /// at least 40 epochs.
  TORCH_ARG(int64_t, patience) = 3;
  /// "min": lower is better; "max": higher is better.
  TORCH_ARG(std::string, mode) = "min";
  /// A missing metric at check time is an error listing the logged metrics (false: skip the check
  /// and warn once).
  TORCH_ARG(bool, strict) = true;
  /// Stop as soon as the metric is NaN or infinite.
  TORCH_ARG(bool, check_finite) = true;
  /// Stop as soon as the metric is strictly better than this.
  TORCH_ARG(std::optional<double>, stopping_threshold);
  /// Stop as soon as the metric is strictly worse than this.
  TORCH_ARG(std::optional<double>, divergence_threshold);
  /// Check at the end of each training epoch (true) or after each validation run (false). Unset:
  /// as Lightning, at the training epoch end if val_check_interval is 1.0 and
  /// check_val_every_n_epoch is 1 (validation, if any, has just run), else after validation.
  TORCH_ARG(std::optional<bool>, check_on_train_epoch_end);
  /// At the end of fit, load the parameters and buffers of the best check back into the module,
  /// whether or not this callback stopped training (Keras restores only when it stopped).
  TORCH_ARG(bool, restore_best_weights) = false;
  /// Print improvements and the stopping reason, one line each, to log_stream.
  TORCH_ARG(bool, verbose) = true;
  /// Where messages go; null: std::cerr.
  TORCH_ARG(OStreamPtr, log_stream) = nullptr;

 public:
  EarlyStoppingOptions& mode_min() {
    mode_ = "min";
    return *this;
  }
  EarlyStoppingOptions& mode_max() {
    mode_ = "max";
    return *this;
  }
};

class EarlyStopping : public Callback {
 public:
  /// Throws frugal::Error naming the first bad option.
  explicit EarlyStopping(EarlyStoppingOptions options);
  explicit EarlyStopping(std::string monitor)
      : EarlyStopping(EarlyStoppingOptions(std::move(monitor))) {}

  /// "EarlyStopping{monitor=val/loss, mode=min}".
  std::string state_key() const override;
  /// wait_count, stopped_epoch, best_score, best_epoch, patience, stopping_reason and, with
  /// restore_best_weights, the best weights as CPU tensors under "best_weights/<name>".
  StateDict state_dict() const override;
  /// Restores what state_dict saved. The configured patience is kept (Lightning takes the saved).
  void load_state_dict(const StateDict& state) override;

  void on_train_epoch_end(Trainer& trainer, Task& task) override;
  void on_validation_end(Trainer& trainer, Task& task) override;
  void on_fit_end(Trainer& trainer, Task& task) override;

  const EarlyStoppingOptions& options() const { return options_; }
  /// Checks since the last improvement.
  int64_t wait_count() const { return wait_count_; }
  /// Best value seen (+inf in mode min / -inf in mode max before the first check).
  double best_score() const { return best_score_; }
  /// Epoch (0-based) of the best value; -1 before the first improvement.
  int64_t best_epoch() const { return best_epoch_; }
  /// Epoch (0-based) at which this callback last asked to stop; -1: never.
  int64_t stopped_epoch() const { return stopped_epoch_; }
  /// Why this callback asked to stop ("" if it did not).
  const std::string& stopping_reason() const { return stopping_reason_; }
  /// Whether the module was loaded with the best weights at the end of the last fit.
  bool restored_best_weights() const { return restored_; }

 private:
  bool check_at_train_epoch_end(const Trainer& trainer) const;
  bool should_skip(const Trainer& trainer) const;
  void run_check(Trainer& trainer, Task& task);
  void snapshot(Task& task);
  void say(const std::string& line) const;

  EarlyStoppingOptions options_;
  bool maximize_;
  int64_t wait_count_ = 0;
  double best_score_;
  int64_t best_epoch_ = -1;
  int64_t stopped_epoch_ = -1;
  std::string stopping_reason_;
  bool warned_missing_ = false;
  bool restored_ = false;
  /// Parameters then buffers, by qualified name, on their own device (CPU after a load).
  std::vector<std::pair<std::string, at::Tensor>> best_weights_;
};

}  // namespace frugal
