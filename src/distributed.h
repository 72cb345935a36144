// Data-parallel training over a c10d process group (Gloo for CPU, NCCL for CUDA), set up from
// the environment torchrun (or Slurm, or frugal's launcher) provides.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "strategy.h"

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

/// Joins the process group described by `env` and returns the data-parallel strategy.
std::unique_ptr<Strategy> make_data_parallel(const TrainerOptions& options,
                                             c10::DeviceType device_type,
                                             const DistributedEnv& env);

}  // namespace frugal::detail
