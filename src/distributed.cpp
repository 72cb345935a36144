#include "distributed.h"

#include <cstdlib>
#include <string>

#include "frugal/error.h"

namespace frugal::detail {

namespace {
std::optional<std::string> env_var(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

int64_t env_int(const char* name, const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  FRUGAL_CHECK(end && *end == '\0' && v >= 0, "environment variable ", name,
               " must be a non-negative integer, got \"", text, "\"");
  return static_cast<int64_t>(v);
}
}  // namespace

std::optional<DistributedEnv> read_distributed_env() {
  DistributedEnv env;
  if (auto ws = env_var("WORLD_SIZE")) {
    env.world_size = env_int("WORLD_SIZE", *ws);
    auto rank = env_var("RANK");
    FRUGAL_CHECK(rank.has_value(), "WORLD_SIZE is set but RANK is not");
    env.rank = env_int("RANK", *rank);
    env.local_rank = env_var("LOCAL_RANK") ? env_int("LOCAL_RANK", *env_var("LOCAL_RANK")) : 0;
    env.local_world_size = env_var("LOCAL_WORLD_SIZE")
                               ? env_int("LOCAL_WORLD_SIZE", *env_var("LOCAL_WORLD_SIZE"))
                               : env.world_size;
  } else if (auto ntasks = env_var("SLURM_NTASKS")) {
    env.world_size = env_int("SLURM_NTASKS", *ntasks);
    env.rank = env_var("SLURM_PROCID") ? env_int("SLURM_PROCID", *env_var("SLURM_PROCID")) : 0;
    env.local_rank = env_var("SLURM_LOCALID") ? env_int("SLURM_LOCALID", *env_var("SLURM_LOCALID")) : 0;
    env.local_world_size = env_var("SLURM_NTASKS_PER_NODE")
                               ? env_int("SLURM_NTASKS_PER_NODE", *env_var("SLURM_NTASKS_PER_NODE"))
                               : env.world_size;
  } else {
    return std::nullopt;
  }
  FRUGAL_CHECK(env.world_size >= 1, "WORLD_SIZE must be >= 1, got ", env.world_size);
  FRUGAL_CHECK(env.rank < env.world_size, "RANK (", env.rank, ") must be < WORLD_SIZE (",
               env.world_size, ")");
  if (auto addr = env_var("MASTER_ADDR")) env.master_addr = *addr;
  if (auto port = env_var("MASTER_PORT")) env.master_port = env_int("MASTER_PORT", *port);
  env.agent_store = env_var("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  if (auto rc = env_var("TORCHELASTIC_RESTART_COUNT")) {
    env.restart_count = env_int("TORCHELASTIC_RESTART_COUNT", *rc);
  }
  return env;
}

std::unique_ptr<Strategy> make_data_parallel(const TrainerOptions& /*options*/,
                                             c10::DeviceType /*device_type*/,
                                             const DistributedEnv& env) {
  FRUGAL_CHECK(false, "data-parallel training (WORLD_SIZE=", env.world_size,
               ") is being implemented; run with one process");
  return nullptr;
}

}  // namespace frugal::detail
