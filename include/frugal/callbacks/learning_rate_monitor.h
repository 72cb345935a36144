// LearningRateMonitor: logs the learning rate of each parameter group ("lr-<Optimizer>" or
// "lr-<Optimizer>/pg<i>") every optimizer step or every epoch.
#pragma once

#include <frugal/callback.h>
#include <frugal/task.h>

#include <string>

namespace frugal {

class LearningRateMonitor : public Callback {
 public:
  /// `interval`: kStep logs at every optimizer step, kEpoch at each epoch start.
  explicit LearningRateMonitor(Interval interval = Interval::kEpoch, bool log_momentum = false);

  void on_train_epoch_start(Trainer&, Task&) override;
  void on_before_optimizer_step(Trainer&, Task&, torch::optim::Optimizer&) override;

 private:
  void log_lrs(Trainer& trainer, torch::optim::Optimizer& optimizer);
  Interval interval_;
  bool log_momentum_;
};

}  // namespace frugal
