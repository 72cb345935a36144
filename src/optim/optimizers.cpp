// Optimizer factories: validate the hyper-parameters when the factory is made, build the
// optimizer on the module's trainable parameters when the Trainer asks for it.
#include "frugal/optim/optimizers.h"

#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <unordered_set>
#include <utility>

#include "frugal/error.h"
#include "frugal/optim/lr_scheduler.h"

namespace frugal {
namespace {

/// The parameters the optimizer should update: those that require grad, each once (a shared
/// parameter is listed under every name that reaches it).
std::vector<at::Tensor> trainable_parameters(torch::nn::Module& module, const char* who) {
  std::vector<at::Tensor> params;
  std::unordered_set<const c10::TensorImpl*> seen;
  for (const auto& p : module.parameters(/*recurse=*/true)) {
    if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) params.push_back(p);
  }
  FRUGAL_CHECK(!params.empty(), who, ": the module has no parameters that require grad");
  return params;
}

void check_lr(const char* who, double lr) {
  FRUGAL_CHECK(std::isfinite(lr) && lr > 0, who, ": lr must be > 0, got ", lr);
}

void check_weight_decay(const char* who, double weight_decay) {
  FRUGAL_CHECK(std::isfinite(weight_decay) && weight_decay >= 0, who,
               ": weight_decay must be >= 0, got ", weight_decay);
}

}  // namespace

OptimizerFactory SGD(double lr, double momentum, double weight_decay, bool nesterov) {
  check_lr("SGD", lr);
  FRUGAL_CHECK(std::isfinite(momentum) && momentum >= 0, "SGD: momentum must be >= 0, got ",
               momentum);
  check_weight_decay("SGD", weight_decay);
  FRUGAL_CHECK(!nesterov || momentum > 0, "SGD: nesterov needs momentum > 0, got momentum ",
               momentum);
  return [=](torch::nn::Module& module) {
    OptimizerConfig config;
    config.optimizer = std::make_shared<torch::optim::SGD>(trainable_parameters(module, "SGD"),
                                                           torch::optim::SGDOptions(lr)
                                                               .momentum(momentum)
                                                               .weight_decay(weight_decay)
                                                               .nesterov(nesterov));
    return config;
  };
}

OptimizerFactory Adam(double lr, double weight_decay) {
  check_lr("Adam", lr);
  check_weight_decay("Adam", weight_decay);
  return [=](torch::nn::Module& module) {
    OptimizerConfig config;
    config.optimizer = std::make_shared<torch::optim::Adam>(
        trainable_parameters(module, "Adam"),
        torch::optim::AdamOptions(lr).weight_decay(weight_decay));
    return config;
  };
}

OptimizerFactory AdamW(double lr, double weight_decay) {
  check_lr("AdamW", lr);
  check_weight_decay("AdamW", weight_decay);
  return [=](torch::nn::Module& module) {
    OptimizerConfig config;
    config.optimizer = std::make_shared<torch::optim::AdamW>(
        trainable_parameters(module, "AdamW"),
        torch::optim::AdamWOptions(lr).weight_decay(weight_decay));
    return config;
  };
}

OptimizerFactory with_scheduler(
    OptimizerFactory base,
    std::function<std::shared_ptr<LRScheduler>(torch::optim::Optimizer&)> make, Interval interval,
    std::string monitor) {
  FRUGAL_CHECK(static_cast<bool>(base), "with_scheduler: the optimizer factory is empty");
  FRUGAL_CHECK(static_cast<bool>(make), "with_scheduler: the scheduler maker is empty");
  return [base = std::move(base), make = std::move(make), interval,
          monitor = std::move(monitor)](torch::nn::Module& module) {
    OptimizerConfig config = base(module);
    FRUGAL_CHECK(config.optimizer != nullptr, "with_scheduler: the factory built no optimizer");
    config.scheduler = make(*config.optimizer);
    FRUGAL_CHECK(config.scheduler != nullptr, "with_scheduler: the scheduler maker returned null");
    FRUGAL_CHECK(!config.scheduler->needs_metric() || !monitor.empty(),
                 "with_scheduler: this scheduler (e.g. ReduceLROnPlateau) steps on a metric; "
                 "pass monitor, e.g. \"val/loss\"");
    config.interval = interval;
    config.monitor = monitor;
    return config;
  };
}

}  // namespace frugal
