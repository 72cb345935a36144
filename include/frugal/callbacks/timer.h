// Timer: stops training once a wall-clock budget is used up (what TrainerOptions::max_time
// installs). Checked after every training batch, so it stops mid-epoch. Elapsed time is kept in
// checkpoints, so a resumed run continues the same budget.
#pragma once

#include <frugal/callback.h>

#include <chrono>

namespace frugal {

class Timer : public Callback {
 public:
  explicit Timer(double max_seconds);

  std::string state_key() const override;
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  void on_train_start(Trainer&, Task&) override;
  void on_train_batch_end(Trainer&, Task&, const at::Tensor&, const Batch&, int64_t) override;
  void on_train_end(Trainer&, Task&) override;

  /// Seconds of training so far (including time before a resume).
  double elapsed_seconds() const;
  double max_seconds() const { return max_seconds_; }

 private:
  using Clock = std::chrono::steady_clock;
  double max_seconds_;
  double offset_seconds_ = 0.0;  // from a resumed run
  Clock::time_point start_;
  bool running_ = false;
};

}  // namespace frugal
