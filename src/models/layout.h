// The 4-D tensors of a model in a memory format, in place: what TrainerOptions::channels_last and
// PredictorOptions::channels_last (and bench_zoo_throughput --channels-last) do to weights.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace frugal::detail {

/// Every 4-D tensor of `tensors` (parameters, buffers) re-laid out in `format`; the values and
/// the tensors' identity (what an optimizer holds) stay.
inline void set_memory_format(const std::vector<at::Tensor>& tensors, at::MemoryFormat format) {
  for (const auto& t : tensors) {
    if (t.dim() == 4) t.set_data(t.data().contiguous(format));
  }
}

}  // namespace frugal::detail
