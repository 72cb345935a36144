#include "frugal/task.h"

#include "frugal/error.h"

namespace frugal {

const Trainer& StepContext::trainer() const {
  FRUGAL_CHECK(trainer_ != nullptr,
               "StepContext::trainer(): this step runs outside a fit (find_batch_size on its own "
               "has no Trainer; give it one with BatchSizeFinderOptions::context)");
  return *trainer_;
}

void Task::validation_step(const Batch& /*batch*/, StepContext& /*ctx*/) {}

void Task::test_step(const Batch& batch, StepContext& ctx) { validation_step(batch, ctx); }

}  // namespace frugal
