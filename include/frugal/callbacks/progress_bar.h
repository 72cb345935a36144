// ProgressBar: epoch, batch i/N, it/s, ETA and the progress-bar metrics. On a terminal it redraws
// one line (at most `refresh_ms` apart); when output is not a terminal (CI, Slurm logs) it prints
// a plain line every `print_every_seconds` and at each epoch / validation / test end. Only rank 0
// prints. Epochs are shown 1-based, as a count ("Epoch 1/10" is the first of ten).
//
//   Epoch 2/10  312/938 [it/s 512.3, ETA 0:01:12] train/loss=0.3312
//   Validation 40/40 [it/s 80.0, took 0:00:00] val/acc=0.8812 val/loss=0.3390
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
  // An alias, not `std::ostream*`: TORCH_ARG spells `const type&`, which would make the pointee
  // const for a raw pointer type.
  using StreamPtr = std::ostream*;
  TORCH_ARG(StreamPtr, out) = nullptr;
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
  /// Ends an open terminal line, so the error message starts on a line of its own.
  void on_exception(Trainer&, Task&, const std::exception&) override;

  /// The last text rendered (for tests).
  const std::string& last_line() const { return last_line_; }

 private:
  using Clock = std::chrono::steady_clock;
  /// Where one loop (a training epoch, or one evaluation run) is.
  struct Loop {
    Clock::time_point start;
    int64_t start_done = 0;  // batches already done when timing began (a resumed epoch)
    int64_t done = 0;
    int64_t total = 0;
    const char* label = "";  // evaluation: "Validation" or "Test"
  };
  void begin(Loop& loop, int64_t start_done, int64_t total);
  /// Renders and writes a line; a final one ends with a newline.
  void draw(Trainer& trainer, const Loop& loop, bool training, bool final);
  std::string render(Trainer& trainer, const Loop& loop, bool training) const;
  void write(const std::string& line, bool final);
  std::ostream& out() const;

  ProgressBarOptions options_;
  bool terminal_ = false;
  Clock::duration interval_{};
  Loop train_;
  Loop eval_;
  Clock::time_point last_render_;
  std::string last_line_;
  bool line_open_ = false;  // terminal: a line drawn after '\r' without its newline yet
};

}  // namespace frugal
