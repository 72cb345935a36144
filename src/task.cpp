#include "frugal/task.h"

namespace frugal {

void Task::validation_step(const Batch& /*batch*/, StepContext& /*ctx*/) {}

void Task::test_step(const Batch& batch, StepContext& ctx) { validation_step(batch, ctx); }

}  // namespace frugal
