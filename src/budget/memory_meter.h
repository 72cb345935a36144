// Peak memory growth of one piece of work (a finder trial, a Trials candidate): on CPU the peak
// RSS over the RSS at its start, on CUDA the caching allocator's peak reserved (and allocated)
// bytes over those at its start. See Note [How a trial's memory is measured] in
// batch_size_finder.cpp.
#pragma once

#include <c10/core/Device.h>
#include <frugal/callbacks/memory_monitor.h>

#include <algorithm>
#include <cstdint>

#include "compat.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace frugal::detail {

class PeakMemoryMeter {
 public:
  explicit PeakMemoryMeter(c10::Device device) : device_(device) {}

  /// Empties the CUDA cache, hands free heap pages back to the kernel, resets the peak and takes
  /// the baseline. False when the CPU peak could not be reset (writing /proc/self/clear_refs was
  /// refused): then growth() would report a stale peak.
  bool start() {
    compat::empty_device_cache(device_);
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    reset_peak_memory(device_);
    before_ = read_memory_stats(device_);
    constexpr int64_t kSlack = 1 << 20;
    return device_.is_cuda() || before_.peak_rss <= before_.rss + kSlack;
  }

  /// What start() read.
  const MemoryStats& baseline() const { return before_; }

  /// Peak growth since start(), from `now` (read_memory_stats, or a MemoryMonitor's peak).
  int64_t growth(const MemoryStats& now) const {
    const int64_t peak = device_.is_cuda() ? now.cuda_peak_reserved : now.peak_rss;
    const int64_t base = device_.is_cuda() ? before_.cuda_reserved : before_.rss;
    return std::max<int64_t>(0, peak - base);
  }
  int64_t growth() const { return growth(read_memory_stats(device_)); }

  /// CUDA: peak allocated growth since start(); -1 on CPU.
  int64_t allocated_growth(const MemoryStats& now) const {
    if (!device_.is_cuda()) return -1;
    return std::max<int64_t>(0, now.cuda_peak_allocated - before_.cuda_allocated);
  }

 private:
  c10::Device device_;
  MemoryStats before_;
};

}  // namespace frugal::detail
