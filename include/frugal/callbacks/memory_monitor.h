// MemoryMonitor: process RSS and its peak on CPU; on CUDA, allocated / reserved / peak per device.
// Logs them as metrics (mem/*, in MB), warns once when a threshold is crossed, can stop training
// with a clear reason, and prints a peak-memory summary at the end of fit.
//
//   std::make_shared<frugal::MemoryMonitor>(
//       frugal::MemoryMonitorOptions().warn_bytes(7.5e9).stop_bytes(7.9e9));
#pragma once

#include <frugal/callback.h>
#include <torch/arg.h>

#include <cstdint>
#include <ostream>
#include <string>

namespace frugal {

struct MemoryMonitorOptions {
  /// Warn once when the monitored peak (CUDA reserved peak on GPU, RSS on CPU) exceeds this.
  TORCH_ARG(double, warn_bytes) = 0.0;
  /// Stop training (with a reason) when it exceeds this. <= 0: never.
  TORCH_ARG(double, stop_bytes) = 0.0;
  /// Log memory metrics (mem/rss_mb, mem/peak_rss_mb and, on CUDA, mem/cuda_*_mb; MB = 2^20
  /// bytes) every n training batches. They are host numbers: no device sync.
  TORCH_ARG(int64_t, every_n_batches) = 50;
  /// Print the peak-memory summary at the end of fit.
  TORCH_ARG(bool, print_summary) = true;
  // An alias, not `std::ostream*`: TORCH_ARG spells `const type&`, which would make the pointee
  // const for a raw pointer type.
  using StreamPtr = std::ostream*;
  TORCH_ARG(StreamPtr, out) = nullptr;
};

/// A snapshot of memory use, in bytes.
struct MemoryStats {
  int64_t rss = 0;       // current resident set size of this process
  int64_t peak_rss = 0;  // peak RSS (VmHWM) since start or the last reset
  int64_t cuda_allocated = 0;
  int64_t cuda_reserved = 0;
  int64_t cuda_peak_allocated = 0;
  int64_t cuda_peak_reserved = 0;
};

/// Reads the current process's memory (from /proc/self/status; CUDA allocator stats on `device`,
/// where LibTorch has CUDA; on CPU the cuda_* fields stay 0).
MemoryStats read_memory_stats(c10::Device device = c10::kCPU);
/// Resets the peak counters (VmHWM via /proc/self/clear_refs where permitted; CUDA peak stats).
void reset_peak_memory(c10::Device device = c10::kCPU);

class MemoryMonitor : public Callback {
 public:
  explicit MemoryMonitor(MemoryMonitorOptions options = {});
  const MemoryMonitorOptions& options() const { return options_; }

  void on_fit_start(Trainer&, Task&) override;
  void on_train_batch_end(Trainer&, Task&, const at::Tensor&, const Batch&, int64_t) override;
  void on_train_epoch_end(Trainer&, Task&) override;
  void on_validation_end(Trainer&, Task&) override;
  void on_fit_end(Trainer&, Task&) override;

  /// Peak seen during the last fit.
  const MemoryStats& peak() const { return peak_; }
  bool warned() const { return warned_; }
  /// The summary text printed at fit end.
  std::string summary() const;

 private:
  void sample(Trainer& trainer, bool log);
  std::ostream& warn_out() const;
  MemoryMonitorOptions options_;
  MemoryStats peak_;
  bool cuda_ = false;  // the last fit ran on a CUDA device
  bool warned_ = false;
  bool stop_requested_ = false;
  int64_t batches_ = 0;  // training batches of this fit, across epochs
};

}  // namespace frugal
