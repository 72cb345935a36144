#include "frugal/callbacks/batch_size_finder.h"

#include <torch/torch.h>

#include <ostream>

#include "frugal/error.h"
#include "frugal/trainer.h"

namespace frugal {

BatchSizeFinder::BatchSizeFinder(at::Tensor data, at::Tensor targets,
                                 BatchSizeFinderOptions options)
    : data_(std::move(data)), targets_(std::move(targets)), options_(std::move(options)) {
  options_.validate();
}

void BatchSizeFinder::on_fit_start(Trainer& trainer, Task& task) {
  // Backward here would run the data-parallel gradient hooks outside the loop's order.
  FRUGAL_CHECK(trainer.world_size() == 1,
               "BatchSizeFinder runs on a single device; with world size ", trainer.world_size(),
               " run find_batch_size before fit (or the Trainer's memory_budget mode)");
  torch::optim::Optimizer* optimizer = trainer.optimizer();
  FRUGAL_CHECK(optimizer != nullptr, "BatchSizeFinder: the Trainer has no optimizer yet");
  BatchSizeFinderOptions options = options_;
  options.device(trainer.device()).precision(trainer.options().precision());
  options.context(&trainer);
  result_ = find_batch_size(task, *optimizer, data_, targets_, options);
  if (trainer.is_global_zero() && options.out() != nullptr) *options.out() << result_.describe();
}

}  // namespace frugal
