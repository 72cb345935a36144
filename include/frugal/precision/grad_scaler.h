// GradScaler: dynamic loss scaling for fp16 mixed precision, with the defaults and semantics of
// PyTorch's torch.amp.GradScaler. fp16 gradients of small losses underflow to zero; scaling the
// loss by S before backward keeps them representable, and dividing the gradients by S before the
// optimizer step gives the true gradients back. S shrinks when a gradient overflows (that step is
// skipped) and grows again after `growth_interval` clean steps.
//
//   frugal::GradScaler scaler;                       // init_scale 2^16, growth 2, backoff 0.5
//   scaler.scale(loss).backward();
//   scaler.unscale_(optimizer);                      // optional: to clip true gradients
//   clip_grad_norm_(params, 1.0);
//   bool stepped = scaler.step(optimizer);           // skipped when a gradient is inf/NaN
//   scaler.update();
//
// The Trainer uses it through precision "16-mixed"; docs/precision.md has the full order.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <frugal/state_dict.h>
#include <torch/arg.h>

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace frugal {

struct GradScalerOptions {
  /// The first loss scale.
  TORCH_ARG(double, init_scale) = 65536.0;
  /// The scale is multiplied by this after `growth_interval` consecutive clean steps (> 1).
  TORCH_ARG(double, growth_factor) = 2.0;
  /// The scale is multiplied by this after a step with inf/NaN gradients (in (0, 1)).
  TORCH_ARG(double, backoff_factor) = 0.5;
  /// Consecutive clean steps before the scale grows (>= 1).
  TORCH_ARG(int64_t, growth_interval) = 2000;
  /// false: every call passes through (scale 1, always steps), as PyTorch's enabled=False.
  TORCH_ARG(bool, enabled) = true;
};

class GradScaler {
 public:
  /// Throws frugal::Error naming the first bad option.
  explicit GradScaler(GradScalerOptions options = {});

  /// `loss` times the current scale. The scale lives on `loss`'s device from the first call on.
  at::Tensor scale(const at::Tensor& loss);
  /// Divides the optimizer's gradients by the scale in place and records whether any is inf/NaN.
  /// At most once per optimizer between update()s, and not after step(); fp16 gradients are
  /// refused (keep parameters fp32 and let autocast do the fp16).
  void unscale_(torch::optim::Optimizer& optimizer);
  /// unscale_() if not done yet, then optimizer.step() unless a gradient was inf/NaN. Returns
  /// whether it stepped; reading that costs one device-to-host copy (as in PyTorch).
  bool step(torch::optim::Optimizer& optimizer);
  /// Records that the caller skips this optimizer's step for its own reason (frugal: a non-finite
  /// loss under NanLossPolicy::kSkip): update() treats it as an overflow, so the scale backs off
  /// and the growth count restarts, as when the scaler itself finds inf/NaN gradients. Gradients
  /// are left as they are.
  void skip(torch::optim::Optimizer& optimizer);
  /// Backs the scale off if any optimizer stepped over inf/NaN gradients since the last update(),
  /// else counts a clean step and grows the scale every `growth_interval` of them. No host sync.
  void update();
  /// Sets the scale to `new_scale` (PyTorch's update(new_scale)); the growth count is kept.
  void update(double new_scale);

  /// The current scale (1 when disabled); reads it from the device.
  double get_scale() const;
  /// Clean steps counted towards the next growth.
  int64_t get_growth_tracker() const;
  bool is_enabled() const { return options_.enabled(); }
  const GradScalerOptions& options() const { return options_; }

  /// PyTorch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker.
  /// Empty when disabled.
  StateDict state_dict() const;
  /// Restores a state_dict() (also options); throws naming a missing or bad key.
  void load_state_dict(const StateDict& state);

 private:
  enum class Stage { kReady, kUnscaled, kStepped };
  struct OptimizerState {
    Stage stage = Stage::kReady;
    std::vector<std::pair<c10::Device, at::Tensor>> found_inf;  // f32[1] per gradient device
  };
  void require_scale(const char* what) const;

  GradScalerOptions options_;
  int64_t init_growth_tracker_ = 0;
  at::Tensor scale_;           // f32[1], on the device of the first scaled loss
  at::Tensor growth_tracker_;  // int32[1], beside scale_
  std::map<const torch::optim::Optimizer*, OptimizerState> per_optimizer_;
};

namespace detail {

/// Which kernels GradScaler's two steps run on: ATen's `_amp_*` ops (CUDA; CPU from LibTorch
/// 2.3), or plain tensor ops that give identical results (CPU on older LibTorch). kAuto picks
/// ATen's where this LibTorch has them for the tensors' device. Exposed for tests.
enum class AmpOps { kAuto, kAten, kFallback };
bool has_aten_amp_ops(c10::Device device);
/// `_amp_foreach_non_finite_check_and_unscale_`: grads (one device and dtype) *= inv_scale;
/// found_inf (f32[1]) set to 1 if any element was inf/NaN before.
void non_finite_check_and_unscale(const std::vector<at::Tensor>& grads, at::Tensor& found_inf,
                                  const at::Tensor& inv_scale, AmpOps ops = AmpOps::kAuto);
/// `_amp_update_scale_`: scale (f32[1]) and growth_tracker (int32[1]) updated in place.
void update_scale(at::Tensor& scale, at::Tensor& growth_tracker, const at::Tensor& found_inf,
                  double growth_factor, double backoff_factor, int64_t growth_interval,
                  AmpOps ops = AmpOps::kAuto);

}  // namespace detail

}  // namespace frugal
