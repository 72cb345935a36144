#include "distributed/strategy.h"

#include "distributed/data_parallel.h"
#include "frugal/error.h"

namespace frugal::detail {

namespace {
class SingleDevice final : public Strategy {
 public:
  explicit SingleDevice(c10::Device device) : device_(device) {}
  c10::Device device() const override { return device_; }

 private:
  c10::Device device_;
};
}  // namespace

std::unique_ptr<Strategy> make_strategy(const TrainerOptions& options,
                                        c10::DeviceType device_type) {
  const std::optional<DistributedEnv> env = read_distributed_env();
  // One process drives one device: devices=n means n processes on this node, started by the
  // launcher (as Lightning under torchrun).
  FRUGAL_CHECK(options.devices() <= 1 || (env && env->local_world_size == options.devices()),
               "devices=", options.devices(), " needs ", options.devices(),
               " processes on this node, one per device: start the program with torchrun "
               "--nproc_per_node ",
               options.devices(), " (or frugal-launch); this process sees LOCAL_WORLD_SIZE=",
               env ? env->local_world_size : 1);
  const bool ddp =
      options.strategy() == "ddp" || (options.strategy() == "auto" && env && env->world_size > 1);
  if (!ddp || options.strategy() == "single_device") {
    return std::make_unique<SingleDevice>(
        c10::Device(device_type, device_type == c10::kCUDA ? 0 : -1));
  }
  FRUGAL_CHECK(env.has_value(),
               "strategy=\"ddp\" needs the launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR, "
               "MASTER_PORT): start the program with torchrun, srun or frugal-launch");
  return make_data_parallel(options, device_type, *env);
}

}  // namespace frugal::detail
