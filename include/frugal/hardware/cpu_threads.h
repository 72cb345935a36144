// How many CPU threads LibTorch uses, decided from what the process may actually run on.
//
// LibTorch's own default (OpenMP's: the machine's cores, or 1 where its heuristics say so) ignores
// the affinity mask, cgroup CPU quotas (containers, CI runners) and the other ranks started on the
// same machine. frugal decides instead, in this order:
//   1. the user: TrainerOptions::num_threads (the examples' --num-threads) when > 0;
//   2. OMP_NUM_THREADS when set (its first value: "4" or "4,2");
//   3. the CPUs this process may run on: the affinity mask (sched_getaffinity), capped by the
//      cgroup CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us, rounded up), divided
//      among the ranks a launcher started on this machine (LOCAL_WORLD_SIZE), at least 1 each,
//      less the threads the training data source keeps busy beside it (ImageLoader's decode
//      threads: BatchSource::worker_threads()), at least 1, so that the two do not fight for
//      the same cores. The Trainer applies this once more when fit() sees its data source.
//
//   frugal::ThreadDecision d = frugal::apply_cpu_threads(/*user=*/0);
//   std::cout << d.threads << " threads: " << d.reason << "\n";
//
// The Trainer calls apply_cpu_threads when it is built; docs/guide.md has the details.
#pragma once

#include <optional>
#include <string>

namespace frugal {

/// What the thread count is decided from (all read from the process, or given by a test).
struct CpuThreadInputs {
  /// CPUs in the affinity mask (sched_getaffinity); <= 0: unknown.
  int affinity_cpus = 0;
  /// The cgroup CPU quota in CPUs (e.g. 1.5 for "150000 100000"); none: no limit found.
  std::optional<double> quota_cpus;
  /// Processes a launcher started on this machine (LOCAL_WORLD_SIZE); 1 when unset.
  int local_world_size = 1;
  /// OMP_NUM_THREADS as set in the environment; none: unset.
  std::optional<std::string> omp_num_threads;
  /// TrainerOptions::num_threads; <= 0: not set.
  int user_threads = 0;
  /// Threads of the training data source that run beside the computation (decode threads).
  int data_threads = 0;
};

struct ThreadDecision {
  int threads = 1;
  /// Why, in words: "user option", "OMP_NUM_THREADS=3", "2 CPUs in the affinity mask, ...".
  std::string reason;
};

/// The pure rule above. Throws frugal::Error for an OMP_NUM_THREADS or LOCAL_WORLD_SIZE that is
/// not a positive integer.
ThreadDecision decide_cpu_threads(const CpuThreadInputs& inputs);

/// Parses the contents of a cgroup v2 `cpu.max` file ("max 100000" or "150000 100000"): the quota
/// in CPUs, none when unlimited; throws frugal::Error naming the text when it is malformed.
std::optional<double> parse_cgroup_v2_cpu_max(const std::string& contents);
/// The same for cgroup v1's `cpu.cfs_quota_us` ("-1" or "150000") and `cpu.cfs_period_us`.
std::optional<double> parse_cgroup_v1_cpu_quota(const std::string& quota_us,
                                                const std::string& period_us);

/// The tightest CPU quota on the way from this process's cgroup up to the root. `proc_self_cgroup`
/// is the contents of /proc/self/cgroup; `cgroup_root` where the hierarchy is mounted
/// ("/sys/fs/cgroup"; a test passes a folder of sample files). Handles v2 (the "0::/path" line,
/// cpu.max in each folder) and v1 (the line whose controllers include "cpu", under
/// <root>/cpu,cpuacct or <root>/cpu). When the path does not exist under the root (a container
/// whose cgroup namespace hides it), the root's own files count. Unreadable files count as no
/// limit.
std::optional<double> read_cgroup_cpu_quota(const std::string& proc_self_cgroup,
                                            const std::string& cgroup_root);

/// Reads the inputs of this process: affinity, cgroup quota, LOCAL_WORLD_SIZE, OMP_NUM_THREADS.
CpuThreadInputs probe_cpu_thread_inputs(int user_threads);

/// probe + decide + at::set_num_threads(threads); returns the decision.
ThreadDecision apply_cpu_threads(int user_threads, int data_threads = 0);

/// The BLAS LibTorch computes with, in words: "OpenBLAS 0.3.21 (openmp, Haswell)", "MKL",
/// "reference BLAS (netlib)", ... From the loaded libraries (dl_iterate_phdr), else from
/// LibTorch's build configuration (at::show_config's BLAS_INFO).
std::string blas_description();

/// "LibTorch 1.13.1 (CPU)" or "LibTorch 2.11.0 (CUDA 13.0)".
std::string libtorch_description();

}  // namespace frugal
