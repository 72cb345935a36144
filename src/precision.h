// Precision: everything that depends on the numeric precision of training, behind one object the
// Trainer calls — autocast around forward, backward (scaled for fp16), unscale before clipping,
// and the optimizer step (skipped on overflow). No precision `if` ladders in the loop.
#pragma once

#include <frugal/state_dict.h>
#include <frugal/trainer.h>

#include <memory>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace frugal::detail {

class PrecisionPlugin {
 public:
  virtual ~PrecisionPlugin() = default;

  /// RAII scope for forward + loss: autocast on while alive (thread-local).
  class ForwardScope {
   public:
    ForwardScope(c10::DeviceType device, bool enabled, at::ScalarType dtype);
    ~ForwardScope();
    ForwardScope(const ForwardScope&) = delete;
    ForwardScope& operator=(const ForwardScope&) = delete;

   private:
    c10::DeviceType device_;
    bool enabled_;
    bool previous_enabled_ = false;
  };
  virtual std::unique_ptr<ForwardScope> forward_scope() const = 0;

  virtual void backward(const at::Tensor& loss) const;
  /// Brings gradients to their true scale (no-op unless loss scaling); once per optimizer step.
  virtual void unscale(torch::optim::Optimizer& /*optimizer*/) {}
  /// Steps unless gradients overflowed or `skip` is set; returns whether it stepped.
  virtual bool step(torch::optim::Optimizer& optimizer, bool skip);
  virtual StateDict state_dict() const { return {}; }
  virtual void load_state_dict(const StateDict& /*state*/) {}
  virtual Precision mode() const = 0;
};

/// The plugin for `precision` on `device`; throws naming the option when unsupported.
std::unique_ptr<PrecisionPlugin> make_precision(Precision precision, c10::Device device);

}  // namespace frugal::detail
