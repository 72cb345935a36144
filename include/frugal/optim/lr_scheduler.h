// Learning-rate schedulers that LibTorch 1.13 lacks, with state that can be saved.
//
// The Trainer steps a scheduler once per epoch or once per optimizer step (OptimizerConfig's
// `interval`), and never after a skipped optimizer step (fp16 overflow, NaN-skip). Each scheduler
// sets the learning rate of every parameter group from its base LR and its step count, with the
// formulas of torch.optim.lr_scheduler, so results match PyTorch's.
//
//   auto opt = std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1));
//   auto sched = std::make_shared<frugal::CosineAnnealingLR>(*opt, /*t_max=*/100);
//
// Warm-up then cosine (construct the parts in order, on the same optimizer):
//   auto warm = std::make_shared<frugal::LinearWarmupLR>(*opt, /*total_iters=*/5, 0.1);
//   auto cos = std::make_shared<frugal::CosineAnnealingLR>(*opt, /*t_max=*/95);
//   auto sched = std::make_shared<frugal::SequentialLR>(
//       *opt, std::vector<std::shared_ptr<frugal::LRScheduler>>{warm, cos},
//       std::vector<int64_t>{5});
//
// See docs/schedulers.md for the formulas.
#pragma once

#include <frugal/state_dict.h>
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace frugal {

/// Base of all schedulers: the step count, the base LRs, saving and restoring them.
class LRScheduler {
 public:
  /// Records each group's current LR as its base LR; the derived constructor then applies the LR
  /// of step 0.
  explicit LRScheduler(torch::optim::Optimizer& optimizer);
  virtual ~LRScheduler() = default;

  /// Advances by one step (epoch or optimizer step) and applies the new learning rates.
  virtual void step();
  /// Metric-driven schedulers (ReduceLROnPlateau) step with the monitored value; the others
  /// ignore the metric and step().
  virtual void step(double metric);
  /// True when the scheduler must be given a monitored metric.
  virtual bool needs_metric() const { return false; }

  /// Learning rate of every parameter group after the last step.
  std::vector<double> get_last_lr() const;
  /// Number of steps taken so far.
  int64_t last_epoch() const { return last_epoch_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }

  /// {"last_epoch", "base_lrs"} plus what a subclass adds; hyper-parameters come from the
  /// constructor, not from the state.
  virtual StateDict state_dict() const;
  /// Restores a state_dict() and re-applies its learning rates. Throws frugal::Error when a key is
  /// missing or the number of parameter groups differs.
  virtual void load_state_dict(const StateDict& state);

 protected:
  /// The LRs for step `last_epoch_` (closed form of the base LRs).
  virtual std::vector<double> compute_lr() const = 0;
  /// Writes `lrs` into the optimizer's parameter groups.
  void apply(const std::vector<double>& lrs);
  /// Call at the end of a derived constructor: applies the LR of step 0.
  void initialize();

  torch::optim::Optimizer& optimizer_;
  std::vector<double> base_lrs_;
  std::vector<double> last_lrs_;
  int64_t last_epoch_ = 0;

 private:
  friend class SequentialLR;  // drives its parts' step counts and base LRs
};

/// lr = base * gamma^(floor(t / step_size))
class StepLR : public LRScheduler {
 public:
  StepLR(torch::optim::Optimizer& optimizer, int64_t step_size, double gamma = 0.1);

 protected:
  std::vector<double> compute_lr() const override;

 private:
  int64_t step_size_;
  double gamma_;
};

/// lr = base * gamma^(number of milestones <= t)
class MultiStepLR : public LRScheduler {
 public:
  MultiStepLR(torch::optim::Optimizer& optimizer, std::vector<int64_t> milestones,
              double gamma = 0.1);

 protected:
  std::vector<double> compute_lr() const override;

 private:
  std::vector<int64_t> milestones_;
  double gamma_;
};

/// lr = eta_min + (base - eta_min) * (1 + cos(pi * t / t_max)) / 2
/// As in PyTorch, t is not clamped: past t_max the LR climbs back up (period 2 * t_max).
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(torch::optim::Optimizer& optimizer, int64_t t_max, double eta_min = 0.0);

 protected:
  std::vector<double> compute_lr() const override;

 private:
  int64_t t_max_;
  double eta_min_;
};

/// Linear warm-up: factor goes from start_factor to end_factor over total_iters steps, then holds
/// (torch.optim.lr_scheduler.LinearLR):
/// lr = base * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters)
class LinearWarmupLR : public LRScheduler {
 public:
  LinearWarmupLR(torch::optim::Optimizer& optimizer, int64_t total_iters,
                 double start_factor = 1.0 / 3, double end_factor = 1.0);

 protected:
  std::vector<double> compute_lr() const override;

 private:
  int64_t total_iters_;
  double start_factor_;
  double end_factor_;
};

/// One-cycle policy (torch.optim.lr_scheduler.OneCycleLR, cosine annealing, two phases):
/// from max_lr/div_factor up to max_lr over pct_start of total_steps, then down to
/// max_lr/(div_factor*final_div_factor). Stepped per optimizer step; like PyTorch, it refuses a
/// step past total_steps. The optimizer's own LR is ignored (base LR = max_lr/div_factor), and
/// momentum is not cycled.
class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(torch::optim::Optimizer& optimizer, double max_lr, int64_t total_steps,
             double pct_start = 0.3, double div_factor = 25.0, double final_div_factor = 1e4);

 protected:
  std::vector<double> compute_lr() const override;

 private:
  double max_lr_;
  int64_t total_steps_;
  double pct_start_;
  double div_factor_;
  double final_div_factor_;
};

/// lr = base * f(t) for a user function f.
class LambdaLR : public LRScheduler {
 public:
  LambdaLR(torch::optim::Optimizer& optimizer, std::function<double(int64_t)> factor);

 protected:
  std::vector<double> compute_lr() const override;

 private:
  std::function<double(int64_t)> factor_;
};

struct ReduceLROnPlateauOptions {
  /// "min": reduce when the metric stops decreasing; "max": when it stops increasing.
  TORCH_ARG(std::string, mode) = "min";
  TORCH_ARG(double, factor) = 0.1;
  TORCH_ARG(int64_t, patience) = 10;
  TORCH_ARG(double, threshold) = 1e-4;
  /// "rel" or "abs", as PyTorch.
  TORCH_ARG(std::string, threshold_mode) = "rel";
  TORCH_ARG(int64_t, cooldown) = 0;
  TORCH_ARG(double, min_lr) = 0.0;
  TORCH_ARG(double, eps) = 1e-8;
};

/// Reduces the LR by `factor` when a monitored metric has not improved for `patience` steps.
class ReduceLROnPlateau : public LRScheduler {
 public:
  ReduceLROnPlateau(torch::optim::Optimizer& optimizer, ReduceLROnPlateauOptions options = {});

  void step() override;  // refuses: needs a metric
  void step(double metric) override;
  bool needs_metric() const override { return true; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

 protected:
  std::vector<double> compute_lr() const override;

 private:
  bool is_better(double value) const;
  ReduceLROnPlateauOptions options_;
  double best_;
  int64_t num_bad_epochs_ = 0;
  int64_t cooldown_counter_ = 0;
  std::vector<double> current_lrs_;
};

/// Runs `schedulers` one after the other, switching at each milestone
/// (torch.optim.lr_scheduler.SequentialLR): before milestones[0] the first one at step t; from
/// milestones[i-1] on, scheduler i at step t - milestones[i-1]. All parts use the base LRs of the
/// first one, so construct them in order on the same optimizer. Closed-form parts only (no
/// ReduceLROnPlateau).
class SequentialLR : public LRScheduler {
 public:
  SequentialLR(torch::optim::Optimizer& optimizer,
               std::vector<std::shared_ptr<LRScheduler>> schedulers,
               std::vector<int64_t> milestones);

 protected:
  std::vector<double> compute_lr() const override;

 private:
  std::vector<std::shared_ptr<LRScheduler>> schedulers_;
  std::vector<int64_t> milestones_;
};

}  // namespace frugal
