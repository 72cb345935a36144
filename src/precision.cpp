#include "precision.h"

#include <torch/torch.h>

#include "compat.h"
#include "frugal/error.h"

namespace frugal::detail {

PrecisionPlugin::ForwardScope::ForwardScope(c10::DeviceType device, bool enabled,
                                            at::ScalarType dtype)
    : device_(device), enabled_(enabled) {
  if (!enabled_) return;
  previous_enabled_ = compat::autocast_enabled(device_);
  compat::set_autocast(device_, true, dtype);
  at::autocast::increment_nesting();
}

PrecisionPlugin::ForwardScope::~ForwardScope() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  compat::set_autocast(device_, previous_enabled_,
                       device_ == c10::DeviceType::CUDA ? at::kHalf : at::kBFloat16);
}

void PrecisionPlugin::backward(const at::Tensor& loss) const { loss.backward(); }

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

}  // namespace

std::unique_ptr<PrecisionPlugin> make_precision(Precision precision, c10::Device device) {
  switch (precision) {
    case Precision::k32:
      return std::make_unique<Fp32>();
    case Precision::kBf16Mixed:
      return std::make_unique<Bf16Mixed>(device.type());
    case Precision::k16Mixed:
      FRUGAL_CHECK(device.is_cuda(),
                   "precision=\"16-mixed\" needs a CUDA device: LibTorch's CPU autocast has no "
                   "fp16; use precision=\"bf16-mixed\" on CPU");
      FRUGAL_CHECK(false,
                   "precision=\"16-mixed\" (fp16 with dynamic loss scaling) is not supported yet; "
                   "use \"bf16-mixed\" or \"32\"");
  }
  FRUGAL_CHECK(false, "unknown precision value ", static_cast<int>(precision));
  return nullptr;
}

}  // namespace frugal::detail
