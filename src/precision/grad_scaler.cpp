#include "frugal/precision/grad_scaler.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "compat.h"
#include "frugal/error.h"

namespace frugal {

namespace detail {

bool has_aten_amp_ops(c10::Device device) {
  return device.is_cuda() || (device.is_cpu() && compat::kAmpOpsOnCpu);
}

namespace {

bool use_aten(AmpOps ops, c10::Device device) {
  return ops == AmpOps::kAten || (ops == AmpOps::kAuto && has_aten_amp_ops(device));
}

}  // namespace

// Note [GradScaler's fallback kernels]: they follow ATen's CPU kernels
// (aten/src/ATen/native/cpu/AmpGradScalerKernels.cpp) operation by operation, so that results
// are bitwise identical: the inf/NaN check looks at the values before they are multiplied, the
// product is computed in the gradient's opmath type (float for bf16/fp16, else its own type) and
// rounded once to the gradient's dtype, and the new scale is float(double(scale) * factor), not
// grown past fp32's range. They use only tensor ops, so they run on any device without a sync.
void non_finite_check_and_unscale(const std::vector<at::Tensor>& grads, at::Tensor& found_inf,
                                  const at::Tensor& inv_scale, AmpOps ops) {
  if (grads.empty()) return;
  if (use_aten(ops, grads.front().device())) {
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
    return;
  }
  for (const at::Tensor& g : grads) {
    found_inf.logical_or_(g.isfinite().all().logical_not());
    g.mul_(inv_scale);
  }
}

void update_scale(at::Tensor& scale, at::Tensor& growth_tracker, const at::Tensor& found_inf,
                  double growth_factor, double backoff_factor, int64_t growth_interval,
                  AmpOps ops) {
  if (use_aten(ops, scale.device())) {
    at::_amp_update_scale_(scale, growth_tracker, found_inf, growth_factor, backoff_factor,
                           growth_interval);
    return;
  }
  const at::Tensor found = found_inf.ne(0);
  const at::Tensor successful = growth_tracker + 1;
  const at::Tensor grow = successful.eq(growth_interval).logical_and(found.logical_not());
  const at::Tensor wide = scale.to(at::kDouble);
  const at::Tensor backed_off = wide.mul(backoff_factor).to(at::kFloat);
  const at::Tensor grown = wide.mul(growth_factor).to(at::kFloat);
  const at::Tensor next =
      at::where(found, backed_off, at::where(grow.logical_and(grown.isfinite()), grown, scale));
  growth_tracker.copy_(successful.masked_fill(found.logical_or(grow), 0));
  scale.copy_(next);
}

}  // namespace detail

namespace {

void validate(const GradScalerOptions& o, const char* where) {
  FRUGAL_CHECK(std::isfinite(o.init_scale()) && o.init_scale() > 0, where,
               ": init_scale must be a finite number > 0, got ", o.init_scale());
  FRUGAL_CHECK(std::isfinite(o.growth_factor()) && o.growth_factor() > 1.0, where,
               ": growth_factor must be a finite number > 1, got ", o.growth_factor());
  FRUGAL_CHECK(o.backoff_factor() > 0.0 && o.backoff_factor() < 1.0, where,
               ": backoff_factor must be in (0, 1), got ", o.backoff_factor());
  FRUGAL_CHECK(
      o.growth_interval() >= 1 && o.growth_interval() <= std::numeric_limits<int32_t>::max(), where,
      ": growth_interval must be >= 1 (and fit in int32), got ", o.growth_interval());
}

}  // namespace

GradScaler::GradScaler(GradScalerOptions options) : options_(options) {
  validate(options_, "GradScalerOptions");
}

void GradScaler::require_scale(const char* what) const {
  FRUGAL_CHECK(scale_.defined(), "GradScaler::", what,
               "() before any scale(loss): scale the loss (GradScaler::scale) and run backward "
               "on it first in each iteration");
}

at::Tensor GradScaler::scale(const at::Tensor& loss) {
  if (!options_.enabled()) return loss;
  if (!scale_.defined()) {
    const auto on = at::TensorOptions().device(loss.device());
    scale_ = at::full({1}, options_.init_scale(), on.dtype(at::kFloat));
    growth_tracker_ = at::full({1}, init_growth_tracker_, on.dtype(at::kInt));
  }
  return loss * (scale_.device() == loss.device() ? scale_ : scale_.to(loss.device(), true));
}

void GradScaler::unscale_(torch::optim::Optimizer& optimizer) {
  if (!options_.enabled()) return;
  require_scale("unscale_");
  OptimizerState& state = per_optimizer_[&optimizer];
  FRUGAL_CHECK(state.stage != Stage::kUnscaled,
               "GradScaler::unscale_() has already been called on this optimizer since the last "
               "update()");
  FRUGAL_CHECK(state.stage != Stage::kStepped,
               "GradScaler::unscale_() is being called after step(); call it before step(), "
               "once per iteration");

  // Gradients grouped by (device, dtype): one kernel launch per group.
  struct Group {
    c10::Device device;
    at::ScalarType dtype;
    std::vector<at::Tensor> grads;
  };
  std::vector<Group> groups;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      const at::Tensor& grad = p.grad();
      if (!grad.defined()) continue;
      FRUGAL_CHECK(grad.scalar_type() != at::kHalf,
                   "GradScaler: Attempting to unscale FP16 gradients. Keep the parameters in "
                   "fp32 (autocast runs the fp16 ops); fp16 parameters cannot be loss-scaled");
      const at::Tensor values = grad.is_sparse() ? grad._values() : grad;
      auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
        return g.device == values.device() && g.dtype == values.scalar_type();
      });
      if (it == groups.end()) {
        groups.push_back({values.device(), values.scalar_type(), {}});
        it = groups.end() - 1;
      }
      it->grads.push_back(values);
    }
  }
  FRUGAL_CHECK(!groups.empty(),
               "GradScaler::unscale_(): none of the optimizer's parameters has a gradient (was "
               "backward run on the scaled loss?)");

  at::NoGradGuard no_grad;
  // Computed in double, as PyTorch: scale.double().reciprocal().float().
  const at::Tensor inv_scale = scale_.to(at::kDouble).reciprocal().to(at::kFloat);
  for (const Group& g : groups) {
    auto found = std::find_if(state.found_inf.begin(), state.found_inf.end(),
                              [&](const auto& f) { return f.first == g.device; });
    if (found == state.found_inf.end()) {
      state.found_inf.emplace_back(
          g.device, at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(g.device)));
      found = state.found_inf.end() - 1;
    }
    const at::Tensor inv =
        inv_scale.device() == g.device ? inv_scale : inv_scale.to(g.device, true);
    detail::non_finite_check_and_unscale(g.grads, found->second, inv);
  }
  state.stage = Stage::kUnscaled;
}

bool GradScaler::step(torch::optim::Optimizer& optimizer) {
  if (!options_.enabled()) {
    optimizer.step();
    return true;
  }
  require_scale("step");
  if (per_optimizer_[&optimizer].stage == Stage::kReady) unscale_(optimizer);
  OptimizerState& state = per_optimizer_[&optimizer];
  FRUGAL_CHECK(state.stage != Stage::kStepped,
               "GradScaler::step() has already been called since the last update()");
  double found = 0;
  for (const auto& f : state.found_inf) found += f.second.item<double>();  // the one host sync
  state.stage = Stage::kStepped;
  if (found != 0) return false;
  optimizer.step();
  return true;
}

void GradScaler::skip(torch::optim::Optimizer& optimizer) {
  if (!options_.enabled()) return;
  require_scale("skip");
  OptimizerState& state = per_optimizer_[&optimizer];
  FRUGAL_CHECK(state.stage != Stage::kStepped,
               "GradScaler::skip() after step() since the last update()");
  if (state.found_inf.empty()) {
    state.found_inf.emplace_back(scale_.device(), at::ones_like(scale_));
  } else {
    for (auto& f : state.found_inf) f.second.fill_(1.0);
  }
  state.stage = Stage::kStepped;
}

void GradScaler::update() {
  if (!options_.enabled()) return;
  require_scale("update");
  at::Tensor found_inf;
  for (const auto& [optimizer, state] : per_optimizer_) {
    for (const auto& f : state.found_inf) {
      at::Tensor here =
          f.second.device() == scale_.device() ? f.second : f.second.to(scale_.device(), true);
      found_inf = found_inf.defined() ? found_inf + here : here;
    }
  }
  FRUGAL_CHECK(found_inf.defined(),
               "GradScaler::update(): no inf checks were recorded since the last update(); call "
               "step(optimizer) (or unscale_) first");
  at::NoGradGuard no_grad;
  detail::update_scale(scale_, growth_tracker_, found_inf, options_.growth_factor(),
                       options_.backoff_factor(), options_.growth_interval());
  per_optimizer_.clear();
}

void GradScaler::update(double new_scale) {
  if (!options_.enabled()) return;
  require_scale("update");
  FRUGAL_CHECK(std::isfinite(new_scale) && new_scale > 0,
               "GradScaler::update(new_scale): new_scale must be a finite number > 0, got ",
               new_scale);
  scale_.fill_(new_scale);
  per_optimizer_.clear();
}

double GradScaler::get_scale() const {
  if (!options_.enabled()) return 1.0;
  return scale_.defined() ? scale_.item<double>() : options_.init_scale();
}

int64_t GradScaler::get_growth_tracker() const {
  if (!options_.enabled()) return 0;
  return growth_tracker_.defined() ? growth_tracker_.item<int64_t>() : init_growth_tracker_;
}

StateDict GradScaler::state_dict() const {
  if (!options_.enabled()) return {};
  return {{"scale", get_scale()},
          {"growth_factor", options_.growth_factor()},
          {"backoff_factor", options_.backoff_factor()},
          {"growth_interval", options_.growth_interval()},
          {"_growth_tracker", get_growth_tracker()}};
}

void GradScaler::load_state_dict(const StateDict& state) {
  if (!options_.enabled()) return;
  FRUGAL_CHECK(!state.empty(),
               "GradScaler::load_state_dict: the state is empty, possibly because it was saved "
               "from a disabled GradScaler");
  auto number = [&](const char* key) -> const c10::IValue& {
    auto it = state.find(key);
    FRUGAL_CHECK(it != state.end(), "GradScaler::load_state_dict: no \"", key,
                 "\" in the state (expected scale, growth_factor, backoff_factor, "
                 "growth_interval, _growth_tracker)");
    FRUGAL_CHECK(it->second.isDouble() || it->second.isInt(), "GradScaler::load_state_dict: \"",
                 key, "\" must be a number, got ", it->second.tagKind());
    return it->second;
  };
  auto real = [&](const char* key) {
    const c10::IValue& v = number(key);
    return v.isDouble() ? v.toDouble() : static_cast<double>(v.toInt());
  };
  auto integer = [&](const char* key) {
    const c10::IValue& v = number(key);
    FRUGAL_CHECK(v.isInt(), "GradScaler::load_state_dict: \"", key, "\" must be an integer, got ",
                 v.toDouble());
    return v.toInt();
  };
  GradScalerOptions loaded = options_;
  loaded.init_scale(real("scale"))
      .growth_factor(real("growth_factor"))
      .backoff_factor(real("backoff_factor"))
      .growth_interval(integer("growth_interval"));
  validate(loaded, "GradScaler::load_state_dict");
  const int64_t tracker = integer("_growth_tracker");
  FRUGAL_CHECK(tracker >= 0 && tracker < loaded.growth_interval(),
               "GradScaler::load_state_dict: _growth_tracker must be in [0, growth_interval = ",
               loaded.growth_interval(), "), got ", tracker);

  options_ = loaded;
  init_growth_tracker_ = tracker;
  if (scale_.defined()) {
    scale_.fill_(loaded.init_scale());
    growth_tracker_.fill_(tracker);
  }
}

}  // namespace frugal
