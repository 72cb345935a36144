// Small optimizer helpers shared by the Trainer and the batch-size finder.
#pragma once

#include <torch/optim/optimizer.h>

namespace frugal::detail {

/// Drops every parameter's gradient (set-to-none: no memory held between steps, no zero kernels).
inline void zero_grad_set_to_none(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) p.mutable_grad() = at::Tensor();
  }
}

}  // namespace frugal::detail
