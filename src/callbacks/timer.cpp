#include "frugal/callbacks/timer.h"

#include <fmt/format.h>

#include "frugal/error.h"
#include "frugal/trainer.h"

namespace frugal {

Timer::Timer(double max_seconds) : max_seconds_(max_seconds) {
  FRUGAL_CHECK(max_seconds > 0.0, "Timer: max_seconds must be > 0, got ", max_seconds);
}

std::string Timer::state_key() const { return "Timer"; }

StateDict Timer::state_dict() const { return {{"elapsed_seconds", elapsed_seconds()}}; }

void Timer::load_state_dict(const StateDict& state) {
  auto it = state.find("elapsed_seconds");
  FRUGAL_CHECK(it != state.end() && it->second.isDouble(),
               "Timer: checkpoint state has no 'elapsed_seconds' (a double)");
  offset_seconds_ = it->second.toDouble();
  start_ = Clock::now();  // a running timer continues from the restored value
}

void Timer::on_train_start(Trainer&, Task&) {
  start_ = Clock::now();
  running_ = true;
}

void Timer::on_train_batch_end(Trainer& trainer, Task&, const at::Tensor&, const Batch&, int64_t) {
  if (trainer.state().should_stop) return;
  const double elapsed = elapsed_seconds();
  if (elapsed >= max_seconds_) {
    trainer.request_stop(
        fmt::format("max_time of {:g} s reached after {:.2f} s", max_seconds_, elapsed));
  }
}

void Timer::on_train_end(Trainer&, Task&) {
  if (!running_) return;
  offset_seconds_ = elapsed_seconds();
  running_ = false;
}

double Timer::elapsed_seconds() const {
  if (!running_) return offset_seconds_;
  return offset_seconds_ + std::chrono::duration<double>(Clock::now() - start_).count();
}

}  // namespace frugal
