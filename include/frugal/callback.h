// Callback: code that runs at fixed points of the Trainer's loops (Lightning's hook set, in
// snake_case). Implement only the hooks you need; every hook has an empty default. Any hook may
// end training with `trainer.request_stop("why")`. State returned by `state_dict` is saved in
// checkpoints under `state_key()`, so two instances of one callback keep separate state.
//
//   struct PrintLoss : frugal::Callback {
//     void on_train_epoch_end(frugal::Trainer& t, frugal::Task&) override {
//       std::cout << t.metrics().get("train/loss").value_or(NAN) << "\n";
//     }
//   };
#pragma once

#include <ATen/core/Tensor.h>
#include <frugal/data/batch_source.h>
#include <frugal/state_dict.h>

#include <cstdint>
#include <exception>
#include <string>

namespace torch::optim {
class Optimizer;
}

namespace frugal {

class Trainer;
class Task;

/// What the user called: setup/teardown receive it.
enum class TrainerFn { kFit, kValidate, kTest };
const char* to_string(TrainerFn fn);

class Callback {
 public:
  virtual ~Callback() = default;

  /// Key under which this instance's state is saved; make it unique per configuration.
  virtual std::string state_key() const;
  virtual StateDict state_dict() const { return {}; }
  virtual void load_state_dict(const StateDict& /*state*/) {}

  virtual void setup(Trainer&, Task&, TrainerFn) {}
  virtual void teardown(Trainer&, Task&, TrainerFn) {}

  virtual void on_fit_start(Trainer&, Task&) {}
  virtual void on_fit_end(Trainer&, Task&) {}
  virtual void on_sanity_check_start(Trainer&, Task&) {}
  virtual void on_sanity_check_end(Trainer&, Task&) {}

  virtual void on_train_start(Trainer&, Task&) {}
  virtual void on_train_end(Trainer&, Task&) {}
  virtual void on_train_epoch_start(Trainer&, Task&) {}
  virtual void on_train_epoch_end(Trainer&, Task&) {}
  virtual void on_train_batch_start(Trainer&, Task&, const Batch&, int64_t /*batch_idx*/) {}
  /// `loss` is the unscaled loss of this micro-batch (still on device).
  virtual void on_train_batch_end(Trainer&, Task&, const at::Tensor& /*loss*/, const Batch&,
                                  int64_t /*batch_idx*/) {}

  virtual void on_validation_start(Trainer&, Task&) {}
  virtual void on_validation_end(Trainer&, Task&) {}
  virtual void on_validation_epoch_start(Trainer&, Task&) {}
  virtual void on_validation_epoch_end(Trainer&, Task&) {}
  virtual void on_validation_batch_start(Trainer&, Task&, const Batch&, int64_t) {}
  virtual void on_validation_batch_end(Trainer&, Task&, const Batch&, int64_t) {}

  virtual void on_test_start(Trainer&, Task&) {}
  virtual void on_test_end(Trainer&, Task&) {}
  virtual void on_test_epoch_start(Trainer&, Task&) {}
  virtual void on_test_epoch_end(Trainer&, Task&) {}
  virtual void on_test_batch_start(Trainer&, Task&, const Batch&, int64_t) {}
  virtual void on_test_batch_end(Trainer&, Task&, const Batch&, int64_t) {}

  /// `loss` is what backward will run on (divided by the accumulation window, not yet scaled).
  virtual void on_before_backward(Trainer&, Task&, const at::Tensor& /*loss*/) {}
  virtual void on_after_backward(Trainer&, Task&) {}
  /// Gradients are unscaled (true values) here, before clipping.
  virtual void on_before_optimizer_step(Trainer&, Task&, torch::optim::Optimizer&) {}
  virtual void on_before_zero_grad(Trainer&, Task&, torch::optim::Optimizer&) {}

  /// A step or hook threw: runs on every callback before the exception reaches the caller.
  virtual void on_exception(Trainer&, Task&, const std::exception&) {}
};

}  // namespace frugal
