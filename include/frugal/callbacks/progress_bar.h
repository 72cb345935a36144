// ProgressBar: epoch, batch i/N, it/s, ETA and the progress-bar metrics. On a terminal it redraws
// one line (at most `refresh_ms` apart); when output is not a terminal (CI, Slurm logs) it prints
// a plain line every `print_every_seconds` and at each epoch end. Only rank 0 prints.
#pragma once

#include <frugal/callback.h>
#include <torch/arg.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <ostream>
#include <string>

namespace frugal {

struct ProgressBarOptions {
  /// Minimum time between two redraws on a terminal.
  TORCH_ARG(int64_t, refresh_ms) = 250;
  /// Minimum time between two plain lines when not on a terminal.
  TORCH_ARG(double, print_every_seconds) = 30.0;
  /// Force terminal (true) or plain-line (false) mode; default: isatty(stdout/stderr).
  TORCH_ARG(std::optional<bool>, terminal);
  /// Where to write; default std::cout.
  TORCH_ARG(std::ostream*, out) = nullptr;
};

class ProgressBar : public Callback {
 public:
  explicit ProgressBar(ProgressBarOptions options = {});

  void on_train_epoch_start(Trainer&, Task&) override;
  void on_train_batch_end(Trainer&, Task&, const at::Tensor&, const Batch&, int64_t) override;
  void on_train_epoch_end(Trainer&, Task&) override;
  void on_validation_start(Trainer&, Task&) override;
  void on_validation_batch_end(Trainer&, Task&, const Batch&, int64_t) override;
  void on_validation_end(Trainer&, Task&) override;
  void on_test_start(Trainer&, Task&) override;
  void on_test_batch_end(Trainer&, Task&, const Batch&, int64_t) override;
  void on_test_end(Trainer&, Task&) override;

  /// The last text rendered (for tests).
  const std::string& last_line() const { return last_line_; }

 private:
  using Clock = std::chrono::steady_clock;
  void maybe_render(Trainer& trainer, const char* stage, int64_t done, int64_t total, bool force);
  std::string render(Trainer& trainer, const char* stage, int64_t done, int64_t total) const;
  std::ostream& out() const;
  ProgressBarOptions options_;
  bool terminal_ = false;
  Clock::time_point stage_start_;
  Clock::time_point last_render_;
  int64_t start_done_ = 0;
  std::string last_line_;
  bool line_open_ = false;
};

}  // namespace frugal
