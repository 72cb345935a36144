// Data-parallel training over a c10d process group (Gloo for CPU, NCCL for CUDA), set up from
// the environment torchrun (or Slurm, or frugal's launcher) provides.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "distributed/strategy.h"

namespace frugal::detail {

/// What the environment says about this process's place in a data-parallel job.
struct DistributedEnv {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  int64_t local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  bool agent_store = false;  // TORCHELASTIC_USE_AGENT_STORE=True: connect as a client
  int64_t restart_count = 0;
};

/// Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (torchrun),
/// falling back to SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; nullopt when neither is set.
/// Malformed values are an error naming the variable.
std::optional<DistributedEnv> read_distributed_env();

/// Knobs of data-parallel training. Read from the environment for now:
/// FRUGAL_DDP_TIMEOUT_SECONDS (default 300: a collective or the rendezvous waiting longer fails
/// with an error naming the rank), FRUGAL_DDP_BUCKET_MB (25), FRUGAL_DDP_FIND_UNUSED_PARAMETERS
/// (0: a trainable parameter without gradient is an error naming it; 1: it counts as zero).
struct DataParallelConfig {
  double timeout_seconds = 300;
  int64_t bucket_cap_bytes = 25 * 1024 * 1024;
  bool find_unused_parameters = false;
  /// FRUGAL_DDP_OVERLAP=0 launches every bucket after backward instead of from the hooks (for
  /// bench/ddp_scaling, which measures how much communication the overlap hides).
  bool overlap = true;
  /// CPU (Gloo) only: wait for a collective by polling it, yielding the core, instead of sleeping
  /// on its condition variable. FRUGAL_DDP_SPIN_WAIT=0 turns it off. See Note [Waiting for Gloo].
  bool spin_wait = true;
  /// CPU ranks that all run on one machine sum gradients (and buffers) through shared memory
  /// instead of Gloo (Note [Shared-memory all-reduce]); FRUGAL_DDP_SHM=0 turns it off.
  bool shared_memory = true;
};
DataParallelConfig read_data_parallel_config(const TrainerOptions& options);

/// Gradient buckets: parameter indices in reverse order, a new bucket when the next one would
/// pass `cap_bytes` or has another dtype or device (a parameter larger than the cap gets its own).
std::vector<std::vector<size_t>> assign_buckets(const std::vector<at::Tensor>& params,
                                                int64_t cap_bytes);

/// Joins the process group described by `env` and returns the data-parallel strategy.
std::unique_ptr<Strategy> make_data_parallel(const TrainerOptions& options,
                                             c10::DeviceType device_type,
                                             const DistributedEnv& env);

}  // namespace frugal::detail
