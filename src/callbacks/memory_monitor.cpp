#include "frugal/callbacks/memory_monitor.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "frugal/error.h"
#include "frugal/trainer.h"

#ifdef FRUGAL_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace frugal {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

std::string mib(double bytes) { return fmt::format("{:.1f} MiB", bytes / kMiB); }

// "VmRSS:\t  123456 kB" -> 123456 * 1024; leaves `out` alone on other lines.
void parse_status_line(const char* line, const char* key, int64_t& out) {
  const size_t key_length = std::strlen(key);
  if (std::strncmp(line, key, key_length) != 0) return;
  long long kib = 0;
  if (std::sscanf(line + key_length, " %lld", &kib) == 1) out = static_cast<int64_t>(kib) * 1024;
}

#ifdef FRUGAL_WITH_CUDA
c10::DeviceIndex cuda_index(c10::Device device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}
#endif

}  // namespace

MemoryStats read_memory_stats(c10::Device device) {
  MemoryStats stats;
  if (std::FILE* file = std::fopen("/proc/self/status", "re")) {
    char line[256];
    while (std::fgets(line, sizeof(line), file) != nullptr) {
      parse_status_line(line, "VmRSS:", stats.rss);
      parse_status_line(line, "VmHWM:", stats.peak_rss);
    }
    std::fclose(file);
  }
  stats.peak_rss = std::max(stats.peak_rss, stats.rss);
#ifdef FRUGAL_WITH_CUDA
  if (device.is_cuda()) {
    try {
      const auto cuda = c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_index(device));
      constexpr size_t kAggregate = 0;  // StatType::AGGREGATE in every LibTorch version
      stats.cuda_allocated = cuda.allocated_bytes[kAggregate].current;
      stats.cuda_peak_allocated = cuda.allocated_bytes[kAggregate].peak;
      stats.cuda_reserved = cuda.reserved_bytes[kAggregate].current;
      stats.cuda_peak_reserved = cuda.reserved_bytes[kAggregate].peak;
    } catch (const c10::Error&) {
      // The allocator is not initialised before the first CUDA allocation: nothing allocated.
    }
  }
#else
  (void)device;
#endif
  return stats;
}

void reset_peak_memory(c10::Device device) {
  // "5" resets VmHWM to the current RSS (proc(5)); refused on some kernels and containers, and a
  // stale peak is then the only consequence.
  const int fd = ::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    [[maybe_unused]] const ssize_t written = ::write(fd, "5", 1);
    ::close(fd);
  }
#ifdef FRUGAL_WITH_CUDA
  if (device.is_cuda()) {
    try {
      c10::cuda::CUDACachingAllocator::resetPeakStats(cuda_index(device));
    } catch (const c10::Error&) {
    }
  }
#else
  (void)device;
#endif
}

MemoryMonitor::MemoryMonitor(MemoryMonitorOptions options) : options_(std::move(options)) {
  FRUGAL_CHECK(options_.every_n_batches() >= 1,
               "MemoryMonitorOptions: every_n_batches must be >= 1, got ",
               options_.every_n_batches());
  FRUGAL_CHECK(options_.warn_bytes() >= 0.0,
               "MemoryMonitorOptions: warn_bytes must be >= 0 (0: never), got ",
               options_.warn_bytes());
  FRUGAL_CHECK(options_.stop_bytes() >= 0.0,
               "MemoryMonitorOptions: stop_bytes must be >= 0 (0: never), got ",
               options_.stop_bytes());
}

std::ostream& MemoryMonitor::warn_out() const {
  return options_.out() ? *options_.out() : std::cerr;
}

void MemoryMonitor::on_fit_start(Trainer& trainer, Task&) {
  cuda_ = trainer.device().is_cuda();
  peak_ = MemoryStats{};
  warned_ = false;
  stop_requested_ = false;
  batches_ = 0;
  reset_peak_memory(trainer.device());  // the peak reported is this fit's
  sample(trainer, /*log=*/false);
}

void MemoryMonitor::on_train_batch_end(Trainer& trainer, Task&, const at::Tensor&, const Batch&,
                                       int64_t) {
  if (++batches_ % options_.every_n_batches() == 0) sample(trainer, /*log=*/true);
}

void MemoryMonitor::on_train_epoch_end(Trainer& trainer, Task&) { sample(trainer, false); }

void MemoryMonitor::on_validation_end(Trainer& trainer, Task&) { sample(trainer, false); }

void MemoryMonitor::on_fit_end(Trainer& trainer, Task&) {
  sample(trainer, false);
  if (options_.print_summary() && trainer.is_global_zero()) {
    std::ostream& out = options_.out() ? *options_.out() : std::cout;
    out << summary() << "\n" << std::flush;
  }
}

void MemoryMonitor::sample(Trainer& trainer, bool log) {
  const MemoryStats now = read_memory_stats(trainer.device());
  peak_.rss = std::max(peak_.rss, now.rss);
  peak_.peak_rss = std::max(peak_.peak_rss, now.peak_rss);
  peak_.cuda_allocated = std::max(peak_.cuda_allocated, now.cuda_allocated);
  peak_.cuda_reserved = std::max(peak_.cuda_reserved, now.cuda_reserved);
  peak_.cuda_peak_allocated = std::max(peak_.cuda_peak_allocated, now.cuda_peak_allocated);
  peak_.cuda_peak_reserved = std::max(peak_.cuda_peak_reserved, now.cuda_peak_reserved);

  if (log) {
    const auto options = LogOptions().on_step(true).on_epoch(false);
    Metrics& metrics = trainer.metrics();
    metrics.log("mem/rss_mb", now.rss / kMiB, options);
    metrics.log("mem/peak_rss_mb", now.peak_rss / kMiB, options);
    if (cuda_) {
      metrics.log("mem/cuda_allocated_mb", now.cuda_allocated / kMiB, options);
      metrics.log("mem/cuda_reserved_mb", now.cuda_reserved / kMiB, options);
      metrics.log("mem/cuda_peak_allocated_mb", now.cuda_peak_allocated / kMiB, options);
      metrics.log("mem/cuda_peak_reserved_mb", now.cuda_peak_reserved / kMiB, options);
    }
  }

  // Note [What MemoryMonitor watches]
  // On a GPU the limit that kills a run is the device's: the caching allocator's reserved bytes
  // (what cudaMalloc holds), not what tensors use. On CPU it is the process's resident set.
  const double watched = static_cast<double>(cuda_ ? peak_.cuda_peak_reserved : peak_.peak_rss);
  const char* what = cuda_ ? "CUDA peak reserved memory" : "peak RSS";
  const std::string rank =
      trainer.world_size() > 1 ? fmt::format(" (rank {})", trainer.global_rank()) : "";
  if (!warned_ && options_.warn_bytes() > 0.0 && watched >= options_.warn_bytes()) {
    warned_ = true;
    warn_out() << fmt::format(
                      "frugal: MemoryMonitor{}: {} is {}, over the warning threshold {} "
                      "(warn_bytes={:g})\n",
                      rank, what, mib(watched), mib(options_.warn_bytes()), options_.warn_bytes())
               << std::flush;
  }
  if (!stop_requested_ && options_.stop_bytes() > 0.0 && watched >= options_.stop_bytes()) {
    stop_requested_ = true;
    trainer.request_stop(
        fmt::format("MemoryMonitor{}: {} is {}, over the limit {} (stop_bytes={:g})", rank, what,
                    mib(watched), mib(options_.stop_bytes()), options_.stop_bytes()));
  }
}

std::string MemoryMonitor::summary() const {
  std::string text = fmt::format("Peak memory: RSS {}", mib(static_cast<double>(peak_.peak_rss)));
  if (cuda_) {
    text += fmt::format(", CUDA allocated {}, CUDA reserved {}",
                        mib(static_cast<double>(peak_.cuda_peak_allocated)),
                        mib(static_cast<double>(peak_.cuda_peak_reserved)));
  }
  return text;
}

}  // namespace frugal
