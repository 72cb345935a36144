// Optimizer factories: describe an optimizer now, build it on the module's parameters later
// (after the Trainer has moved the module to its device).
//
//   frugal::Classifier task(net, frugal::AdamW(1e-3, /*weight_decay=*/1e-2));
#pragma once

#include <frugal/task.h>

#include <functional>
#include <memory>

namespace frugal {

/// Makes the optimizer (and optionally a scheduler) for a module. The factories below check their
/// arguments when called (frugal::Error, e.g. "SGD: lr must be > 0, got 0") and build the
/// optimizer on the module's parameters that require grad.
using OptimizerFactory = std::function<OptimizerConfig(torch::nn::Module& module)>;

OptimizerFactory SGD(double lr, double momentum = 0.0, double weight_decay = 0.0,
                     bool nesterov = false);
OptimizerFactory Adam(double lr = 1e-3, double weight_decay = 0.0);
OptimizerFactory AdamW(double lr = 1e-3, double weight_decay = 1e-2);

/// Adds a scheduler made by `make(optimizer)` to what `base` builds, stepped per `interval`
/// (see docs/schedulers.md). A scheduler that needs a metric (ReduceLROnPlateau) needs `monitor`.
OptimizerFactory with_scheduler(
    OptimizerFactory base,
    std::function<std::shared_ptr<LRScheduler>(torch::optim::Optimizer&)> make,
    Interval interval = Interval::kEpoch, std::string monitor = "");

}  // namespace frugal
