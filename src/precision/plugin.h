// Precision: everything that depends on the numeric precision of training, behind one object the
// Trainer calls — autocast around forward, backward (scaled for fp16), unscale before clipping,
// and the optimizer step (skipped on overflow). No precision `if` ladders in the loop.
#pragma once

#include <frugal/precision/grad_scaler.h>
#include <frugal/state_dict.h>
#include <frugal/trainer.h>

#include <functional>
#include <memory>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace frugal::detail {

class PrecisionPlugin {
 public:
  virtual ~PrecisionPlugin() = default;

  /// RAII scope for forward + loss: autocast on while alive (thread-local); restores the previous
  /// autocast state (enabled and dtype) when it ends.
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
    at::ScalarType previous_dtype_ = at::kFloat;
  };
  virtual std::unique_ptr<ForwardScope> forward_scope() const = 0;

  virtual void backward(const at::Tensor& loss);
  /// Brings gradients to their true scale (no-op unless loss scaling); once per optimizer step,
  /// before anything looks at gradients (hooks, clipping, grad-norm logging).
  virtual void unscale(torch::optim::Optimizer& /*optimizer*/) {}
  /// Steps unless gradients overflowed or `skip` is set; returns whether it stepped. The Trainer
  /// counts a false as a skipped step and does not step the LR scheduler for it.
  virtual bool step(torch::optim::Optimizer& optimizer, bool skip);
  virtual StateDict state_dict() const { return {}; }
  virtual void load_state_dict(const StateDict& /*state*/) {}
  virtual Precision mode() const = 0;
};

/// The plugin for `precision` on `device`; throws naming the option when unsupported.
std::unique_ptr<PrecisionPlugin> make_precision(Precision precision, c10::Device device);

/// The "16-mixed" plugin: dynamic loss scaling with a GradScaler of `options`, and fp16 autocast
/// on `device` around forward when `autocast` is set. Without autocast it is fp32 with loss
/// scaling, which runs anywhere: the tests use it to drive the scaler's control flow on a CPU whose
/// LibTorch has no fp16 autocast.
std::unique_ptr<PrecisionPlugin> make_loss_scaling_plugin(GradScalerOptions options,
                                                          c10::Device device, bool autocast);

/// Test hook: while set, make_precision (and so the Trainer) returns what `factory` makes instead
/// of the built-in plugins; an empty function restores them. Not thread-safe; set it before fit.
using PrecisionFactory =
    std::function<std::unique_ptr<PrecisionPlugin>(Precision precision, c10::Device device)>;
void set_precision_factory(PrecisionFactory factory);

}  // namespace frugal::detail
