#include "precision/plugin.h"

#include <torch/torch.h>

#include "compat.h"
#include "frugal/error.h"

namespace frugal {

const char* to_string(Precision precision) {
  switch (precision) {
    case Precision::k32:
      return "32";
    case Precision::k16Mixed:
      return "16-mixed";
    case Precision::kBf16Mixed:
      return "bf16-mixed";
    case Precision::kAuto:
      return "auto";
  }
  return "?";
}

Precision parse_precision(const std::string& text) {
  if (text == "32" || text == "32-true") return Precision::k32;
  if (text == "16-mixed" || text == "16") return Precision::k16Mixed;
  if (text == "bf16-mixed" || text == "bf16") return Precision::kBf16Mixed;
  if (text == "auto") return Precision::kAuto;
  FRUGAL_CHECK(false,
               "precision must be one of \"32\", \"16-mixed\", \"bf16-mixed\", \"auto\", got \"",
               text, "\"");
  return Precision::k32;
}

}  // namespace frugal

namespace frugal::detail {

PrecisionPlugin::ForwardScope::ForwardScope(c10::DeviceType device, bool enabled,
                                            at::ScalarType dtype)
    : device_(device), enabled_(enabled) {
  if (!enabled_) return;
  previous_enabled_ = compat::autocast_enabled(device_);
  previous_dtype_ = compat::autocast_dtype(device_);
  compat::set_autocast(device_, true, dtype);
  at::autocast::increment_nesting();
}

PrecisionPlugin::ForwardScope::~ForwardScope() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  compat::set_autocast(device_, previous_enabled_, previous_dtype_);
}

void PrecisionPlugin::backward(const at::Tensor& loss) { loss.backward(); }

bool PrecisionPlugin::step(torch::optim::Optimizer& optimizer, bool skip) {
  if (skip) return false;
  optimizer.step();
  return true;
}

namespace {

/// "32": plain fp32, no autocast.
class Fp32 final : public PrecisionPlugin {
 public:
  std::unique_ptr<ForwardScope> forward_scope() const override { return nullptr; }
  Precision mode() const override { return Precision::k32; }
};

/// "bf16-mixed": forward under bf16 autocast; parameters, gradients and optimizer state stay
/// fp32. bf16 has fp32's exponent range, so no loss scaling is needed.
class Bf16Mixed final : public PrecisionPlugin {
 public:
  explicit Bf16Mixed(c10::DeviceType device) : device_(device) {}
  std::unique_ptr<ForwardScope> forward_scope() const override {
    return std::make_unique<ForwardScope>(device_, true, at::kBFloat16);
  }
  Precision mode() const override { return Precision::kBf16Mixed; }

 private:
  c10::DeviceType device_;
};

/// "16-mixed": forward under fp16 autocast, dynamic loss scaling around backward and the step.
/// Parameters, gradients and optimizer state stay fp32.
///
/// Note [A step skipped for a non-finite loss counts as an overflow]: under
/// NanLossPolicy::kSkip the Trainer asks to skip a step whose loss was inf/NaN. The scaler then
/// backs off and restarts its growth count, exactly as if it had found the inf/NaN gradients
/// such a loss produces (which is what PyTorch's GradScaler does with it). So the growth
/// tracker always counts consecutive steps that were taken, and the checkpointed scaler state
/// is the same whichever of the two noticed the problem first.
class Fp16Mixed final : public PrecisionPlugin {
 public:
  Fp16Mixed(GradScalerOptions options, c10::Device device, bool autocast)
      : scaler_(options), device_(device.type()), autocast_(autocast) {}

  std::unique_ptr<ForwardScope> forward_scope() const override {
    if (!autocast_) return nullptr;
    return std::make_unique<ForwardScope>(device_, true, at::kHalf);
  }
  void backward(const at::Tensor& loss) override { scaler_.scale(loss).backward(); }
  void unscale(torch::optim::Optimizer& optimizer) override { scaler_.unscale_(optimizer); }
  bool step(torch::optim::Optimizer& optimizer, bool skip) override {
    bool stepped = false;
    if (skip) {
      scaler_.skip(optimizer);
    } else {
      stepped = scaler_.step(optimizer);
    }
    scaler_.update();
    return stepped;
  }
  StateDict state_dict() const override { return scaler_.state_dict(); }
  /// An empty state (a checkpoint written with precision "32" or "bf16-mixed") leaves the scaler
  /// at its initial scale, so a run may switch to "16-mixed" on resume.
  void load_state_dict(const StateDict& state) override {
    if (!state.empty()) scaler_.load_state_dict(state);
  }
  Precision mode() const override { return Precision::k16Mixed; }

 private:
  GradScaler scaler_;
  c10::DeviceType device_;
  bool autocast_;
};

PrecisionFactory& factory_override() {
  static PrecisionFactory factory;
  return factory;
}

}  // namespace

std::unique_ptr<PrecisionPlugin> make_loss_scaling_plugin(GradScalerOptions options,
                                                          c10::Device device, bool autocast) {
  if (autocast) {
    FRUGAL_CHECK(device.is_cuda() || (device.is_cpu() && compat::kCpuFp16Autocast),
                 "precision=\"16-mixed\" needs a CUDA device: this LibTorch's CPU autocast has no "
                 "fp16 (it needs LibTorch >= 2.4); use precision=\"bf16-mixed\" on CPU");
  }
  return std::make_unique<Fp16Mixed>(options, device, autocast);
}

void set_precision_factory(PrecisionFactory factory) { factory_override() = std::move(factory); }

std::unique_ptr<PrecisionPlugin> make_precision(Precision precision, c10::Device device) {
  if (precision == Precision::kAuto) precision = resolve_precision(precision, device).precision;
  if (factory_override()) return factory_override()(precision, device);
  switch (precision) {
    case Precision::k32:
      return std::make_unique<Fp32>();
    case Precision::kBf16Mixed:
      return std::make_unique<Bf16Mixed>(device.type());
    case Precision::k16Mixed:
      return make_loss_scaling_plugin(GradScalerOptions(), device, /*autocast=*/true);
    case Precision::kAuto:
      break;  // resolved above
  }
  FRUGAL_CHECK(false, "unknown precision value ", static_cast<int>(precision));
  return nullptr;
}

}  // namespace frugal::detail
