// Strategy: how training is spread over devices. The Trainer calls these at fixed points of the
// step; single-device training does nothing at any of them, data-parallel training (see
// distributed.h) synchronises gradients, buffers, metrics and decisions over a c10d process group.
#pragma once

#include <c10/core/Device.h>
#include <frugal/trainer.h>

#include <memory>
#include <vector>

namespace torch::nn {
class Module;
}

namespace frugal::detail {

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual int64_t rank() const { return 0; }
  virtual int64_t world_size() const { return 1; }
  /// The device this process trains on.
  virtual c10::Device device() const = 0;
  /// Once per fit, after the module is on its device and the optimizer exists: make every rank
  /// start from rank 0's parameters and buffers, and prepare gradient synchronisation.
  virtual void setup(torch::nn::Module& /*module*/, const std::vector<at::Tensor>& /*params*/) {}
  /// Makes every rank hold rank 0's parameters and buffers (validate/test, which may run without
  /// a fit, or on weights that only rank 0 loaded).
  virtual void broadcast_module(torch::nn::Module& /*module*/) {}
  /// Before the forward pass of every training micro-batch.
  virtual void before_forward(torch::nn::Module& /*module*/) {}
  /// Before backward: `sync` is true on the last micro-batch of an accumulation window (the only
  /// one whose gradients are communicated; the others accumulate locally, as DDP's no_sync).
  /// With `sync`, `votes` are this rank's flags for the decisions every rank must take together
  /// at the end of the step (see Note [Step decisions travel with the gradients] in trainer.cpp).
  virtual void before_backward(bool sync, const std::vector<bool>& votes) {
    votes_ = sync ? votes : std::vector<bool>();
  }
  /// After backward: with `sync`, waits until every gradient is averaged over all ranks and
  /// returns the votes given to before_backward, each true if it is true on any rank (one
  /// process: as given); without `sync`, nothing.
  virtual std::vector<bool> after_backward(bool /*sync*/) { return std::move(votes_); }
  /// Sums every tensor over all ranks, in place.
  virtual void all_reduce_sum(std::vector<at::Tensor>& /*tensors*/) {}
  /// For each flag: true on every rank if it is true on any rank.
  virtual std::vector<bool> any(std::vector<bool> flags) { return flags; }
  virtual void barrier() {}
  /// End of fit: release hooks (the process group lives as long as the Trainer).
  virtual void teardown() {}

 protected:
  std::vector<bool> votes_;  // before_backward's, until after_backward
};

/// The strategy the options and the environment ask for (RANK/WORLD_SIZE from torchrun or
/// Slurm with strategy "auto" or "ddp"); `device_type` is the resolved accelerator.
std::unique_ptr<Strategy> make_strategy(const TrainerOptions& options, c10::DeviceType device_type);

}  // namespace frugal::detail
