// BackboneFinetuning (see frugal/callbacks/backbone_finetuning.h), after Lightning's
// pytorch_lightning/callbacks/finetuning.py.
#include "frugal/callbacks/backbone_finetuning.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <unordered_set>

#include "frugal/error.h"
#include "frugal/models/finetune.h"
#include "frugal/task.h"
#include "frugal/trainer.h"

namespace frugal {

BackboneFinetuning::BackboneFinetuning(BackboneFinetuningOptions options)
    : options_(std::move(options)) {
  FRUGAL_CHECK(!options_.backbone().empty(),
               "BackboneFinetuning: backbone must name at least one parameter prefix");
  FRUGAL_CHECK(options_.unfreeze_backbone_at_epoch() >= 0,
               "BackboneFinetuning: unfreeze_backbone_at_epoch must be >= 0, got ",
               options_.unfreeze_backbone_at_epoch());
  FRUGAL_CHECK(static_cast<bool>(options_.lambda_func()),
               "BackboneFinetuning: lambda_func is empty");
  FRUGAL_CHECK(options_.backbone_initial_ratio_lr() > 0,
               "BackboneFinetuning: backbone_initial_ratio_lr must be > 0, got ",
               options_.backbone_initial_ratio_lr());
  FRUGAL_CHECK(options_.backbone_initial_lr() >= 0,
               "BackboneFinetuning: backbone_initial_lr must be >= 0, got ",
               options_.backbone_initial_lr());
}

StateDict BackboneFinetuning::state_dict() const {
  return {{"backbone_lr", backbone_lr_}, {"group_index", group_index_}};
}

void BackboneFinetuning::load_state_dict(const StateDict& state) {
  if (auto it = state.find("backbone_lr"); it != state.end()) backbone_lr_ = it->second.toDouble();
  if (auto it = state.find("group_index"); it != state.end()) group_index_ = it->second.toInt();
}

void BackboneFinetuning::setup(Trainer& trainer, Task& task, TrainerFn fn) {
  // Before the optimizer is built, so that it starts with the head only (Lightning freezes in
  // setup too). A resumed run past the unfreezing epoch keeps the backbone trainable.
  if (fn == TrainerFn::kFit && trainer.state().epoch < options_.unfreeze_backbone_at_epoch())
    freeze(task.module(), options_.backbone());
}

void BackboneFinetuning::on_train_epoch_start(Trainer& trainer, Task& task) {
  auto* opt = trainer.optimizer();
  FRUGAL_CHECK(opt != nullptr, "BackboneFinetuning: the trainer has no optimizer");
  const int64_t epoch = trainer.state().epoch;
  const double head_lr = opt->param_groups()[0].options().get_lr();
  if (epoch == options_.unfreeze_backbone_at_epoch()) {
    backbone_lr_ = options_.backbone_initial_lr() > 0
                       ? options_.backbone_initial_lr()
                       : head_lr * options_.backbone_initial_ratio_lr();
    unfreeze(task.module(), options_.backbone());
    // The backbone's parameters that are not in the optimizer yet form a new group.
    std::unordered_set<const c10::TensorImpl*> present;
    for (const auto& g : opt->param_groups())
      for (const auto& p : g.params()) present.insert(p.unsafeGetTensorImpl());
    std::vector<at::Tensor> params;
    for (const auto& q : task.module().named_parameters(true)) {
      bool under = false;
      for (const auto& prefix : options_.backbone())
        under = under || name_under_prefix(q.key(), prefix);
      if (under && present.insert(q.value().unsafeGetTensorImpl()).second)
        params.push_back(q.value());
    }
    if (!params.empty()) {
      auto options = opt->param_groups()[0].options().clone();
      options->set_lr(backbone_lr_);
      opt->add_param_group(torch::optim::OptimizerParamGroup(params, std::move(options)));
      group_index_ = static_cast<int64_t>(opt->param_groups().size()) - 1;
    }
    if (options_.verbose())
      std::cerr << fmt::format(
          "BackboneFinetuning: epoch {}: backbone unfrozen, lr {:g} (head {:g})\n", epoch,
          backbone_lr_, head_lr);
  } else if (epoch > options_.unfreeze_backbone_at_epoch() && group_index_ >= 0 &&
             group_index_ < static_cast<int64_t>(opt->param_groups().size())) {
    double next = options_.lambda_func()(epoch + 1) * backbone_lr_;
    if (options_.should_align() && next > head_lr) next = head_lr;
    backbone_lr_ = next;
    opt->param_groups()[static_cast<size_t>(group_index_)].options().set_lr(backbone_lr_);
    if (options_.verbose())
      std::cerr << fmt::format("BackboneFinetuning: epoch {}: backbone lr {:g} (head {:g})\n",
                               epoch, backbone_lr_, head_lr);
  }
}

}  // namespace frugal
