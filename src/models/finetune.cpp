// Freezing, unfreezing and parameter groups (see frugal/models/finetune.h).
#include "frugal/models/finetune.h"

#include <torch/torch.h>

#include <unordered_set>

#include "frugal/error.h"

namespace frugal {

bool name_under_prefix(const std::string& name, const std::string& prefix) {
  if (prefix.empty()) return true;
  return name == prefix ||
         (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
          name[prefix.size()] == '.');
}

namespace {
bool under_any(const std::string& name, const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes)
    if (name_under_prefix(name, p)) return true;
  return false;
}

bool is_batchnorm(torch::nn::Module& m) {
  return m.as<torch::nn::BatchNorm1d>() || m.as<torch::nn::BatchNorm2d>() ||
         m.as<torch::nn::BatchNorm3d>();
}

std::vector<std::string> set_requires_grad(torch::nn::Module& module,
                                           const std::vector<std::string>& prefixes, bool on,
                                           const char* who) {
  auto params = module.named_parameters(/*recurse=*/true);
  for (const auto& p : prefixes) {
    bool found = false;
    for (const auto& q : params)
      if (name_under_prefix(q.key(), p)) found = true;
    FRUGAL_CHECK(found, who, ": no parameter is named '", p, "' or starts with '", p,
                 ".' (first names: ", params.size() ? params.keys()[0] : std::string("none"), ")");
  }
  std::vector<std::string> names;
  for (auto& q : params) {
    if (!prefixes.empty() && !under_any(q.key(), prefixes)) continue;
    q.value().set_requires_grad(on);
    names.push_back(q.key());
  }
  return names;
}
}  // namespace

std::vector<std::string> freeze(torch::nn::Module& module,
                                const std::vector<std::string>& prefixes) {
  FRUGAL_CHECK(!prefixes.empty(), "freeze: give at least one name prefix (\"\" freezes all)");
  auto names = set_requires_grad(module, prefixes, false, "freeze");
  keep_frozen_batchnorm_eval(module);
  return names;
}

std::vector<std::string> unfreeze(torch::nn::Module& module,
                                  const std::vector<std::string>& prefixes) {
  auto names = set_requires_grad(module, prefixes, true, "unfreeze");
  for (auto& m : module.named_modules("", /*include_self=*/false))
    if (is_batchnorm(*m.value()) && (prefixes.empty() || under_any(m.key(), prefixes)))
      m.value()->train(module.is_training());
  return names;
}

void keep_frozen_batchnorm_eval(torch::nn::Module& module) {
  for (auto& m : module.modules(/*include_self=*/true)) {
    if (!is_batchnorm(*m)) continue;
    // Only layers with affine parameters, all frozen: a BatchNorm without parameters
    // (affine = false) keeps training its statistics as usual.
    const auto params = m->parameters(false);
    bool frozen = !params.empty();
    for (const auto& p : params)
      if (p.requires_grad()) frozen = false;
    if (frozen) m->eval();
  }
}

OptimizerFactory with_param_groups(OptimizerFactory base, std::vector<ParamGroupSpec> groups) {
  FRUGAL_CHECK(static_cast<bool>(base), "with_param_groups: the base optimizer factory is empty");
  for (const auto& g : groups)
    FRUGAL_CHECK(std::isfinite(g.lr) && g.lr > 0, "with_param_groups: lr for '", g.prefix,
                 "' must be > 0, got ", g.lr);
  return [base, groups](torch::nn::Module& module) {
    OptimizerConfig config = base(module);
    auto& opt = *config.optimizer;
    FRUGAL_CHECK(opt.param_groups().size() == 1,
                 "with_param_groups: the base optimizer already has ", opt.param_groups().size(),
                 " parameter groups");
    const auto& base_options = opt.param_groups()[0].options();
    std::unordered_set<const c10::TensorImpl*> in_optimizer;
    for (const auto& p : opt.param_groups()[0].params())
      in_optimizer.insert(p.unsafeGetTensorImpl());
    std::vector<std::vector<at::Tensor>> split(groups.size() + 1);
    std::unordered_set<const c10::TensorImpl*> seen;
    for (const auto& q : module.named_parameters(true)) {
      const auto* impl = q.value().unsafeGetTensorImpl();
      if (!in_optimizer.count(impl) || !seen.insert(impl).second) continue;
      size_t k = 0;
      while (k < groups.size() && !name_under_prefix(q.key(), groups[k].prefix)) ++k;
      split[k].push_back(q.value());
    }
    std::vector<torch::optim::OptimizerParamGroup> new_groups;
    for (size_t k = 0; k < split.size(); ++k) {
      if (split[k].empty()) continue;
      auto options = base_options.clone();
      if (k < groups.size()) options->set_lr(groups[k].lr);
      new_groups.emplace_back(split[k], std::move(options));
    }
    opt.param_groups() = std::move(new_groups);
    return config;
  };
}

}  // namespace frugal
