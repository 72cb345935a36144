#include "frugal/callbacks/progress_bar.h"

#include <fmt/format.h>
#include <unistd.h>

#include <iostream>

#include "frugal/error.h"
#include "frugal/trainer.h"
#include "loggers/metric_format.h"

namespace frugal {

namespace {

constexpr const char* kClearToEol = "\x1b[K";

std::string format_duration(double seconds) {
  if (!(seconds >= 0.0)) seconds = 0.0;
  const auto total = static_cast<int64_t>(seconds + 0.5);
  return fmt::format("{}:{:02d}:{:02d}", total / 3600, (total / 60) % 60, total % 60);
}

}  // namespace

ProgressBar::ProgressBar(ProgressBarOptions options) : options_(std::move(options)) {
  FRUGAL_CHECK(options_.refresh_ms() >= 0, "ProgressBarOptions: refresh_ms must be >= 0, got ",
               options_.refresh_ms());
  FRUGAL_CHECK(options_.print_every_seconds() >= 0.0,
               "ProgressBarOptions: print_every_seconds must be >= 0, got ",
               options_.print_every_seconds());
  if (options_.terminal().has_value()) {
    terminal_ = *options_.terminal();
  } else if (options_.out() == nullptr || options_.out() == &std::cout) {
    terminal_ = ::isatty(STDOUT_FILENO) == 1;
  } else if (options_.out() == &std::cerr || options_.out() == &std::clog) {
    terminal_ = ::isatty(STDERR_FILENO) == 1;
  }
  interval_ = terminal_ ? Clock::duration(std::chrono::milliseconds(options_.refresh_ms()))
                        : std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(options_.print_every_seconds()));
}

std::ostream& ProgressBar::out() const { return options_.out() ? *options_.out() : std::cout; }

void ProgressBar::begin(Loop& loop, int64_t start_done, int64_t total) {
  loop.start = Clock::now();
  loop.start_done = start_done;
  loop.done = start_done;
  loop.total = total;
  last_render_ = loop.start;
}

// ---- training ----

void ProgressBar::on_train_epoch_start(Trainer& trainer, Task&) {
  if (!trainer.is_global_zero()) return;
  begin(train_, trainer.state().epoch_batches_done, trainer.num_training_batches());
}

// Note [Progress bar cost per batch]
// A batch costs one steady_clock read and a comparison. Metrics are fetched (a host copy) only
// when a line is actually rendered, at most every refresh_ms / print_every_seconds.
void ProgressBar::on_train_batch_end(Trainer& trainer, Task&, const at::Tensor&, const Batch&,
                                     int64_t batch_idx) {
  if (!trainer.is_global_zero()) return;
  train_.done = batch_idx + 1;
  if (Clock::now() - last_render_ < interval_) return;
  draw(trainer, train_, /*training=*/true, /*final=*/false);
}

void ProgressBar::on_train_epoch_end(Trainer& trainer, Task&) {
  if (!trainer.is_global_zero()) return;
  draw(trainer, train_, /*training=*/true, /*final=*/true);
}

// ---- validation and test ----

void ProgressBar::on_validation_start(Trainer& trainer, Task&) {
  if (!trainer.is_global_zero()) return;
  begin(eval_, 0, trainer.num_eval_batches());
  eval_.label = "Validation";
}

void ProgressBar::on_validation_batch_end(Trainer& trainer, Task&, const Batch&,
                                          int64_t batch_idx) {
  if (!trainer.is_global_zero()) return;
  eval_.done = batch_idx + 1;
  if (Clock::now() - last_render_ < interval_) return;
  draw(trainer, eval_, /*training=*/false, /*final=*/false);
}

void ProgressBar::on_validation_end(Trainer& trainer, Task&) {
  if (!trainer.is_global_zero()) return;
  if (trainer.state().sanity_checking) {
    // The sanity check's few batches leave no line behind.
    if (terminal_ && line_open_) {
      out() << '\r' << kClearToEol << std::flush;
      line_open_ = false;
    }
    return;
  }
  draw(trainer, eval_, /*training=*/false, /*final=*/true);
}

void ProgressBar::on_test_start(Trainer& trainer, Task&) {
  if (!trainer.is_global_zero()) return;
  begin(eval_, 0, trainer.num_eval_batches());
  eval_.label = "Test";
}

void ProgressBar::on_test_batch_end(Trainer& trainer, Task& task, const Batch& batch,
                                    int64_t batch_idx) {
  on_validation_batch_end(trainer, task, batch, batch_idx);
}

void ProgressBar::on_test_end(Trainer& trainer, Task&) {
  if (!trainer.is_global_zero()) return;
  draw(trainer, eval_, /*training=*/false, /*final=*/true);
}

void ProgressBar::on_exception(Trainer&, Task&, const std::exception&) {
  if (!line_open_) return;
  out() << '\n' << std::flush;
  line_open_ = false;
}

// ---- rendering ----

void ProgressBar::draw(Trainer& trainer, const Loop& loop, bool training, bool final) {
  last_render_ = Clock::now();
  last_line_ = render(trainer, loop, training);
  write(last_line_, final);
}

std::string ProgressBar::render(Trainer& trainer, const Loop& loop, bool training) const {
  const TrainerState& state = trainer.state();
  std::string head;
  if (training) {
    const int64_t max_epochs = trainer.max_epochs();
    head = max_epochs > 0 ? fmt::format("Epoch {}/{}  ", state.epoch + 1, max_epochs)
                          : fmt::format("Epoch {}  ", state.epoch + 1);
  } else {
    head = state.sanity_checking ? "Sanity check " : fmt::format("{} ", loop.label);
  }
  head +=
      loop.total > 0 ? fmt::format("{}/{}", loop.done, loop.total) : fmt::format("{}", loop.done);

  const double elapsed = std::chrono::duration<double>(Clock::now() - loop.start).count();
  const int64_t counted = loop.done - loop.start_done;
  const double rate = elapsed > 0.0 && counted > 0 ? counted / elapsed : 0.0;
  std::string speed = rate <= 0.0   ? std::string("it/s -")
                      : rate < 10.0 ? fmt::format("it/s {:.2f}", rate)
                                    : fmt::format("it/s {:.1f}", rate);
  std::string when;
  if (loop.total > 0 && loop.done >= loop.total) {
    when = "took " + format_duration(elapsed);
  } else if (loop.total > 0 && rate > 0.0) {
    when = "ETA " + format_duration(static_cast<double>(loop.total - loop.done) / rate);
  } else {
    when = "ETA ?";
  }

  std::string line = fmt::format("{} [{}, {}]", head, speed, when);
  // The only host copy of metrics, and only here: when a line is actually drawn.
  const std::string metrics = detail::format_metrics(trainer.metrics().progress_bar_metrics());
  if (!metrics.empty()) {
    line += ' ';
    line += metrics;
  }
  return line;
}

void ProgressBar::write(const std::string& line, bool final) {
  std::ostream& o = out();
  if (terminal_) {
    o << '\r' << line << kClearToEol;
    if (final) o << '\n';
    line_open_ = !final;
  } else {
    o << line << '\n';
  }
  o << std::flush;
}

}  // namespace frugal
