// BackboneFinetuning (Lightning's callback of that name): the backbone is frozen at setup
// (its BatchNorm layers in eval mode), trained from `unfreeze_backbone_at_epoch` on in a new
// optimizer parameter group at a lower learning rate, which then grows each epoch.
//
//   auto ft = std::make_shared<frugal::BackboneFinetuning>(frugal::BackboneFinetuningOptions()
//       .backbone({"features"}).unfreeze_backbone_at_epoch(3));
#pragma once

#include <frugal/callback.h>
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace frugal {

struct BackboneFinetuningOptions {
  /// Name prefixes of the backbone's parameters ("features" for the MobileNets/EfficientNet,
  /// {"conv1", "bn1", "layer1", ...} for ResNets).
  TORCH_ARG(std::vector<std::string>, backbone) = {};
  /// The epoch (0-based) at whose start the backbone is unfrozen.
  TORCH_ARG(int64_t, unfreeze_backbone_at_epoch) = 10;
  /// Multiplier of the backbone's lr for epoch e (Lightning's lambda_func: 1.5 each epoch).
  TORCH_ARG(std::function<double(int64_t)>, lambda_func) = [](int64_t) { return 1.5; };
  /// Backbone lr at unfreezing = head lr x this ratio, unless backbone_initial_lr > 0.
  TORCH_ARG(double, backbone_initial_ratio_lr) = 0.1;
  TORCH_ARG(double, backbone_initial_lr) = 0.0;
  /// Never let the backbone's lr exceed the head's.
  TORCH_ARG(bool, should_align) = false;
  /// Print the learning rates when they change.
  TORCH_ARG(bool, verbose) = false;
};

class BackboneFinetuning : public Callback {
 public:
  /// Checks the options (frugal::Error naming the bad one).
  explicit BackboneFinetuning(BackboneFinetuningOptions options);

  std::string state_key() const override { return "BackboneFinetuning"; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  void setup(Trainer&, Task&, TrainerFn fn) override;
  void on_train_epoch_start(Trainer&, Task&) override;

  /// The backbone's current lr (0 while frozen).
  double backbone_lr() const { return backbone_lr_; }
  const BackboneFinetuningOptions& options() const { return options_; }

 private:
  BackboneFinetuningOptions options_;
  double backbone_lr_ = 0.0;
  int64_t group_index_ = -1;  // the backbone's parameter group in the optimizer
};

}  // namespace frugal
