// ModelPruning (see frugal/callbacks/model_pruning.h), after Lightning's
// pytorch_lightning/callbacks/pruning.py and torch/nn/utils/prune.py.
#include "frugal/callbacks/model_pruning.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cfenv>
#include <cmath>
#include <iostream>
#include <map>

#include "frugal/error.h"
#include "frugal/task.h"
#include "frugal/trainer.h"

namespace frugal {

namespace {

// torch.nn.utils.prune._compute_nparams_toprune for a float amount: Python's round (half to
// even) of amount x size.
int64_t entries_to_prune(double amount, int64_t size) {
  const int saved = std::fegetround();
  std::fesetround(FE_TONEAREST);
  const auto n = static_cast<int64_t>(std::nearbyint(amount * static_cast<double>(size)));
  std::fesetround(saved);
  return n;
}

// One ranking: `values` and `mask` 1-D of the same length; prunes among mask == 1.
void prune_flat(const at::Tensor& values, at::Tensor mask, double amount) {
  const at::Tensor kept = mask.nonzero().view(-1);  // positions still unpruned
  const int64_t k = entries_to_prune(amount, kept.numel());
  if (k == 0) return;
  const at::Tensor magnitude = values.index_select(0, kept).abs();
  const at::Tensor smallest = std::get<1>(magnitude.topk(k, 0, /*largest=*/false));
  mask.index_fill_(0, kept.index_select(0, smallest), 0);
}

bool is_container(torch::nn::Module& m) {
  return dynamic_cast<torch::nn::SequentialImpl*>(&m) != nullptr ||
         dynamic_cast<torch::nn::ModuleListImpl*>(&m) != nullptr ||
         dynamic_cast<torch::nn::ModuleDictImpl*>(&m) != nullptr;
}

}  // namespace

void l1_unstructured_prune_masks(const std::vector<at::Tensor>& tensors,
                                 std::vector<at::Tensor>& masks, double amount, bool global) {
  FRUGAL_CHECK(tensors.size() == masks.size(), "l1_unstructured_prune_masks: ", tensors.size(),
               " tensors but ", masks.size(), " masks");
  FRUGAL_CHECK(amount >= 0 && amount <= 1, "pruning amount must be in [0, 1], got ", amount);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < tensors.size(); ++i) {
    FRUGAL_CHECK(tensors[i].sizes() == masks[i].sizes(), "l1_unstructured_prune_masks: tensor ", i,
                 " has shape ", tensors[i].sizes(), ", its mask ", masks[i].sizes());
  }
  if (!global) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      at::Tensor flat = masks[i].view(-1);
      prune_flat(tensors[i].detach().reshape(-1), flat, amount);
    }
    return;
  }
  // torch.nn.utils.prune.global_unstructured: one vector of every tensor, in order.
  std::vector<at::Tensor> values, flat_masks;
  for (size_t i = 0; i < tensors.size(); ++i) {
    values.push_back(tensors[i].detach().reshape(-1).to(at::kFloat));
    flat_masks.push_back(masks[i].reshape(-1));
  }
  at::Tensor mask = at::cat(flat_masks);
  prune_flat(at::cat(values), mask, amount);
  int64_t offset = 0;
  for (auto& m : masks) {
    m.copy_(mask.narrow(0, offset, m.numel()).view(m.sizes()));
    offset += m.numel();
  }
}

std::vector<std::pair<std::string, at::Tensor>> default_prunable_parameters(
    torch::nn::Module& module, const std::vector<std::string>& names) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  const auto modules = module.named_modules();
  for (const std::string& name : names) {
    for (const auto& item : modules) {
      if (is_container(*item.value())) continue;
      for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) {
        if (p.key() == name) {
          out.emplace_back(item.key().empty() ? name : item.key() + "." + name, p.value());
        }
      }
    }
  }
  return out;
}

ModelPruning::ModelPruning(ModelPruningOptions options) : options_(std::move(options)) {
  FRUGAL_CHECK(options_.pruning_fn() == "l1_unstructured",
               "ModelPruning: pruning_fn must be \"l1_unstructured\", got \"",
               options_.pruning_fn(), "\"");
  FRUGAL_CHECK(options_.amount() >= 0 && options_.amount() <= 1,
               "ModelPruning: amount must be in [0, 1] (a fraction of the unpruned entries), got ",
               options_.amount());
  for (const auto& n : options_.parameter_names()) {
    FRUGAL_CHECK(n == "weight" || n == "bias",
                 "ModelPruning: parameter_names may hold \"weight\" and \"bias\", got \"", n, "\"");
  }
}

StateDict ModelPruning::state_dict() const {
  if (params_.empty()) return pending_;
  StateDict state;
  state["active"] = active_;
  for (size_t i = 0; i < names_.size(); ++i) {
    state["mask:" + names_[i]] = masks_[i].cpu();
    if (!originals_.empty()) state["original:" + names_[i]] = originals_[i].cpu();
  }
  return state;
}

void ModelPruning::load_state_dict(const StateDict& state) { pending_ = state; }

void ModelPruning::on_fit_start(Trainer&, Task& task) {
  std::vector<std::pair<std::string, at::Tensor>> chosen;
  if (options_.parameters().empty()) {
    chosen = default_prunable_parameters(task.module(), options_.parameter_names());
  } else {
    std::map<std::string, at::Tensor> all;
    for (const auto& p : task.module().named_parameters(true)) all[p.key()] = p.value();
    for (const auto& n : options_.parameters()) {
      auto it = all.find(n);
      FRUGAL_CHECK(it != all.end(), "ModelPruning: the model has no parameter \"", n,
                   "\" (parameters names e.g. \"", all.empty() ? "" : all.begin()->first, "\")");
      chosen.emplace_back(n, it->second);
    }
  }
  FRUGAL_CHECK(!chosen.empty(), "ModelPruning: the model has no parameter to prune");
  names_.clear();
  params_.clear();
  masks_.clear();
  originals_.clear();
  for (auto& [name, p] : chosen) {
    names_.push_back(name);
    params_.push_back(p);
    masks_.push_back(at::ones(p.sizes(), p.options().dtype(at::kFloat)));
    if (options_.use_lottery_ticket_hypothesis()) originals_.push_back(p.detach().clone());
  }
  active_ = false;
  permanent_ = false;
  if (!pending_.empty()) {
    // A resumed run: its masks (and lottery ticket) as saved, for the same parameters.
    for (size_t i = 0; i < names_.size(); ++i) {
      auto it = pending_.find("mask:" + names_[i]);
      FRUGAL_CHECK(it != pending_.end() && it->second.isTensor() &&
                       it->second.toTensor().sizes() == masks_[i].sizes(),
                   "ModelPruning: the checkpoint has no mask of shape ", masks_[i].sizes(),
                   " for \"", names_[i], "\" (was it saved with other pruning options?)");
      masks_[i].copy_(it->second.toTensor());
      if (!originals_.empty()) {
        auto o = pending_.find("original:" + names_[i]);
        FRUGAL_CHECK(o != pending_.end() && o->second.isTensor(),
                     "ModelPruning: the checkpoint has no lottery-ticket weights for \"", names_[i],
                     "\"");
        originals_[i].copy_(o->second.toTensor());
      }
    }
    if (auto a = pending_.find("active"); a != pending_.end()) active_ = a->second.toBool();
    pending_.clear();
  }
}

void ModelPruning::apply_masks() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) params_[i].mul_(masks_[i].to(params_[i].dtype()));
}

void ModelPruning::on_before_optimizer_step(Trainer&, Task&, torch::optim::Optimizer&) {
  if (!active_) return;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor g = params_[i].mutable_grad();
    if (g.defined()) g.mul_(masks_[i].to(g.dtype()));
  }
}

void ModelPruning::on_train_batch_end(Trainer&, Task&, const at::Tensor&, const Batch&, int64_t) {
  // After the optimizer step: moments of entries pruned earlier must not revive them.
  if (active_) apply_masks();
}

void ModelPruning::on_train_epoch_end(Trainer& trainer, Task&) {
  const int64_t epoch = trainer.state().epoch;
  const double amount = options_.amount_fn() ? options_.amount_fn()(epoch) : options_.amount();
  FRUGAL_CHECK(amount >= 0 && amount <= 1, "ModelPruning: amount_fn(", epoch, ") returned ", amount,
               ", expected a fraction in [0, 1]");
  if (amount == 0) return;
  l1_unstructured_prune_masks(params_, masks_, amount, options_.use_global_unstructured());
  active_ = true;
  if (!originals_.empty()) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) params_[i].copy_(originals_[i]);
  }
  apply_masks();
  if (options_.verbose() && trainer.is_global_zero()) {
    std::cout << fmt::format(
                     "ModelPruning: epoch {}: pruned {} more, {:.2f}% of {} tensors now "
                     "zero\n",
                     epoch, amount, 100 * sparsity(), params_.size())
              << std::flush;
  }
}

void ModelPruning::on_train_end(Trainer&, Task&) {
  if (!options_.make_pruning_permanent() || !active_) return;
  apply_masks();
  active_ = false;
  permanent_ = true;
}

double ModelPruning::sparsity() const {
  double pruned = 0, total = 0;
  for (size_t i = 0; i < masks_.size(); ++i) {
    // After make_pruning_permanent the masks are dropped: the weights' zeros count.
    const at::Tensor zero = permanent_ ? (params_[i] == 0) : (masks_[i] == 0);
    pruned += static_cast<double>(zero.sum().item<int64_t>());
    total += static_cast<double>(masks_[i].numel());
  }
  return total > 0 ? pruned / total : 0.0;
}

std::vector<std::pair<std::string, double>> ModelPruning::sparsities() const {
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 0; i < names_.size(); ++i) {
    const double n = static_cast<double>(params_[i].numel());
    const double zeros = static_cast<double>((params_[i] == 0).sum().item<int64_t>());
    out.emplace_back(names_[i], n > 0 ? zeros / n : 0.0);
  }
  return out;
}

std::vector<std::string> ModelPruning::parameter_names() const { return names_; }

}  // namespace frugal
