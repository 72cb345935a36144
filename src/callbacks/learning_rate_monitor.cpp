#include "frugal/callbacks/learning_rate_monitor.h"

#include <fmt/format.h>
#include <torch/optim.h>

#include <tuple>

#include "frugal/error.h"
#include "frugal/trainer.h"

namespace frugal {

namespace {

const char* optimizer_name(const torch::optim::Optimizer& optimizer) {
  // AdamW before Adam, in case a build ever derives one from the other.
  if (dynamic_cast<const torch::optim::AdamW*>(&optimizer)) return "AdamW";
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer)) return "Adam";
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer)) return "SGD";
  if (dynamic_cast<const torch::optim::RMSprop*>(&optimizer)) return "RMSprop";
  if (dynamic_cast<const torch::optim::Adagrad*>(&optimizer)) return "Adagrad";
  if (dynamic_cast<const torch::optim::LBFGS*>(&optimizer)) return "LBFGS";
  return "Optimizer";
}

// SGD and RMSprop momentum, Adam(W) beta1; 0 for optimizers without momentum (as Lightning).
double momentum_of(const torch::optim::OptimizerOptions& options) {
  if (auto* o = dynamic_cast<const torch::optim::SGDOptions*>(&options)) return o->momentum();
  if (auto* o = dynamic_cast<const torch::optim::AdamOptions*>(&options)) {
    return std::get<0>(o->betas());
  }
  if (auto* o = dynamic_cast<const torch::optim::AdamWOptions*>(&options)) {
    return std::get<0>(o->betas());
  }
  if (auto* o = dynamic_cast<const torch::optim::RMSpropOptions*>(&options)) return o->momentum();
  return 0.0;
}

// get_lr() is virtual on every built-in options type (LibTorch 1.13 and 2.x); a user's options
// type that does not override it throws from the base class.
double learning_rate(const torch::optim::OptimizerOptions& options, const std::string& name) {
  try {
    return options.get_lr();
  } catch (const c10::Error&) {
    throw Error(fmt::format(
        "LearningRateMonitor: cannot read the learning rate for '{}': the optimizer's options "
        "type does not override OptimizerOptions::get_lr()",
        name));
  }
}

}  // namespace

LearningRateMonitor::LearningRateMonitor(Interval interval, bool log_momentum)
    : interval_(interval), log_momentum_(log_momentum) {}

void LearningRateMonitor::on_train_epoch_start(Trainer& trainer, Task&) {
  if (interval_ != Interval::kEpoch) return;
  if (torch::optim::Optimizer* optimizer = trainer.optimizer()) log_lrs(trainer, *optimizer);
}

void LearningRateMonitor::on_before_optimizer_step(Trainer& trainer, Task&,
                                                   torch::optim::Optimizer& optimizer) {
  if (interval_ == Interval::kStep) log_lrs(trainer, optimizer);
}

void LearningRateMonitor::log_lrs(Trainer& trainer, torch::optim::Optimizer& optimizer) {
  const auto log_options = LogOptions().on_step(true).on_epoch(false);
  const std::string base = fmt::format("lr-{}", optimizer_name(optimizer));
  const auto& groups = optimizer.param_groups();
  for (size_t i = 0; i < groups.size(); ++i) {
    const std::string name = groups.size() == 1 ? base : fmt::format("{}/pg{}", base, i);
    trainer.metrics().log(name, learning_rate(groups[i].options(), name), log_options);
    if (log_momentum_) {
      trainer.metrics().log(name + "-momentum", momentum_of(groups[i].options()), log_options);
    }
  }
}

}  // namespace frugal
