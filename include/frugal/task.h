// Task: what to train and how (Lightning's LightningModule, minus the loop).
//
// A Task owns a module and says what one training / validation / test step computes; the
// Trainer owns the loop. Steps log through the StepContext:
//
//   struct MyTask : frugal::Task {
//     torch::nn::Module& module() override { return *net; }
//     at::Tensor training_step(const frugal::Batch& b, frugal::StepContext& ctx) override {
//       auto loss = torch::nll_loss(net->forward(b.data), b.target);
//       ctx.log("train/loss", loss, frugal::LogOptions().prog_bar(true));
//       return loss;
//     }
//     frugal::OptimizerConfig configure_optimizers() override { ... }
//   };
#pragma once

#include <ATen/core/Tensor.h>
#include <frugal/data/batch_source.h>
#include <frugal/metrics.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace frugal {

class LRScheduler;
class Trainer;

/// When a scheduler steps: after each epoch, or after each optimizer step that was taken.
enum class Interval { kEpoch, kStep };

struct OptimizerConfig {
  std::shared_ptr<torch::optim::Optimizer> optimizer;
  std::shared_ptr<LRScheduler> scheduler;  // optional
  Interval interval = Interval::kEpoch;
  /// Step the scheduler every `frequency` intervals.
  int64_t frequency = 1;
  /// Metric for schedulers that need one (ReduceLROnPlateau), e.g. "val/loss".
  std::string monitor;
};

/// What a step sees of the run: where it is and how to log.
class StepContext {
 public:
  /// `trainer` may be null for steps run outside a fit (find_batch_size on its own).
  StepContext(Metrics& metrics, const Trainer* trainer, Stage stage, int64_t batch_idx)
      : metrics_(metrics), trainer_(trainer), stage_(stage), batch_idx_(batch_idx) {}

  void log(const std::string& name, const at::Tensor& value, const LogOptions& options = {}) {
    metrics_.log(name, value, options);
  }
  void log(const std::string& name, double value, const LogOptions& options = {}) {
    metrics_.log(name, value, options);
  }
  Stage stage() const { return stage_; }
  int64_t batch_idx() const { return batch_idx_; }
  /// The Trainer running this step; throws frugal::Error for a step run outside a fit.
  const Trainer& trainer() const;

 private:
  Metrics& metrics_;
  const Trainer* trainer_;
  Stage stage_;
  int64_t batch_idx_;
};

class Task {
 public:
  virtual ~Task() = default;

  /// The module being trained; the Trainer moves it to the device and saves it in checkpoints.
  virtual torch::nn::Module& module() = 0;
  /// Returns the loss of one (micro-)batch; the Trainer scales it and runs backward.
  virtual at::Tensor training_step(const Batch& batch, StepContext& ctx) = 0;
  /// Runs under no-grad with the module in eval mode. Default: nothing.
  virtual void validation_step(const Batch& batch, StepContext& ctx);
  /// Default: same as validation_step.
  virtual void test_step(const Batch& batch, StepContext& ctx);
  /// Called once at the start of fit, after the module has been moved to the device.
  virtual OptimizerConfig configure_optimizers() = 0;
  /// Hyper-parameters written beside the logs (name -> value as text).
  virtual std::map<std::string, std::string> hparams() const { return {}; }
};

}  // namespace frugal
