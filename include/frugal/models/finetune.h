// Fine-tuning utilities: freeze parameters by name prefix (frozen BatchNorm layers stay in eval
// mode, so their running statistics do not move), unfreeze, and parameter groups with their own
// learning rates (backbone vs head). See docs/finetuning.md.
//
//   auto net = frugal::models::mobilenet_v3_small(10);
//   frugal::load_state_dict(*net, "pretrained.pt", {.strict = false});
//   net->reset_classifier(5);
//   frugal::freeze(*net, {"features"});
//   frugal::Classifier task(net, frugal::with_param_groups(frugal::AdamW(1e-3),
//                                                          {{"features", 1e-4}}));
#pragma once

#include <frugal/optim/optimizers.h>

#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace frugal {

/// Sets requires_grad = false on every parameter whose name is a prefix or starts with
/// "<prefix>." and puts the BatchNorm layers under those prefixes in eval mode. Returns the
/// frozen parameter names. A prefix that names no parameter is an error (nothing is changed).
std::vector<std::string> freeze(torch::nn::Module& module,
                                const std::vector<std::string>& prefixes);
/// The reverse: requires_grad = true under the prefixes (all parameters when empty); BatchNorm
/// layers there follow the module's training mode again. Returns the unfrozen names.
std::vector<std::string> unfreeze(torch::nn::Module& module,
                                  const std::vector<std::string>& prefixes = {});
/// Puts every BatchNorm layer whose affine parameters are all frozen back in eval mode (one
/// without affine parameters is left alone). The Trainer calls it after each module.train(), so
/// frozen statistics stay fixed.
void keep_frozen_batchnorm_eval(torch::nn::Module& module);
/// True if a parameter name falls under the prefix ("features" covers "features.0.0.weight").
bool name_under_prefix(const std::string& name, const std::string& prefix);

/// A learning rate for the parameters under a name prefix.
struct ParamGroupSpec {
  std::string prefix;
  double lr;
};
/// The optimizer `base` builds, its parameters split into groups: one per spec (the trainable
/// parameters under its prefix, at its lr; first matching spec wins), then the rest at the base
/// lr (group order: specs first, the rest last). Other hyper-parameters are the base's.
OptimizerFactory with_param_groups(OptimizerFactory base, std::vector<ParamGroupSpec> groups);

}  // namespace frugal
