// ModelPruning (Lightning's callback of that name, L1 unstructured): magnitude pruning during
// training, with a schedule, masks kept while training goes on, and made permanent at the end.
//
//   auto pruning = std::make_shared<frugal::ModelPruning>(frugal::ModelPruningOptions()
//       .amount_fn([](int64_t epoch) { return epoch < 3 ? 0.3 : 0.0; }));
//   frugal::Trainer trainer(options, {pruning});
//
// Semantics, as Lightning 2.x with torch.nn.utils.prune (checked against PyTorch's own pruning
// in tests/callbacks/test_model_pruning.cpp):
// - which tensors: by default the "weight" and then the "bias" parameters of every module that
//   is not a container (Sequential, ModuleList, ModuleDict), as Lightning's default
//   parameters_to_prune; or the parameters named in `parameters` ("0.weight", ...);
// - when: at the end of every training epoch e, with amount(e) (0: none that epoch);
// - how much: `amount` is a fraction of the entries still unpruned, round(amount x remaining)
//   (Python's round: half to even), the smallest |w| first: over all tensors together
//   (use_global_unstructured, Lightning's default) or per tensor;
// - the lottery ticket hypothesis (Lightning's default: on): after each pruning the unpruned
//   weights go back to their values at the start of fit;
// - masks kept: pruned entries are zero at every forward; their gradients are zeroed before the
//   optimizer step (so clipping and the optimizer never see them) and they are zeroed again
//   after it. The masks (and the lottery-ticket weights) are saved in checkpoints: a resumed run
//   continues exactly;
// - make_pruning_permanent (default): at the end of training the masks are dropped; the weights
//   keep their zeros. Checkpoints always hold the zeros (Lightning makes them permanent there).
//
// Unstructured sparsity saves no time on dense kernels (pytorch #36214): docs/deploy.md measures
// size (sparse storage) and latency.
#pragma once

#include <ATen/core/Tensor.h>
#include <frugal/callback.h>
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}

namespace frugal {

struct ModelPruningOptions {
  /// "l1_unstructured" (the only one for now: the smallest magnitudes).
  TORCH_ARG(std::string, pruning_fn) = "l1_unstructured";
  /// Fraction of the still-unpruned entries to prune at each epoch's end, in [0, 1].
  TORCH_ARG(double, amount) = 0.5;
  /// When set: the fraction for epoch e (0: no pruning that epoch); `amount` is ignored.
  TORCH_ARG(std::function<double(int64_t)>, amount_fn);
  /// One ranking over all the tensors (Lightning's default) or one per tensor.
  TORCH_ARG(bool, use_global_unstructured) = true;
  /// Parameter names to prune ("features.0.0.weight"); empty: Lightning's default (above).
  TORCH_ARG(std::vector<std::string>, parameters);
  /// Which parameter names the default takes, in this order ("weight", "bias").
  TORCH_ARG(std::vector<std::string>, parameter_names) = {"weight", "bias"};
  /// Reset the unpruned weights to their values at the start of fit after each pruning.
  TORCH_ARG(bool, use_lottery_ticket_hypothesis) = true;
  /// Drop the masks at the end of training (the zeros stay).
  TORCH_ARG(bool, make_pruning_permanent) = true;
  /// Print the sparsity after each pruning.
  TORCH_ARG(bool, verbose) = false;
};

/// L1 unstructured pruning of `tensors` whose current masks are `masks` (1 = kept, same shapes,
/// float), as torch.nn.utils.prune's l1_unstructured (global_unstructured when `global`):
/// round(amount x remaining) more entries, the smallest |value| among those still kept, are set
/// to 0 in the masks. The tensors are not changed.
void l1_unstructured_prune_masks(const std::vector<at::Tensor>& tensors,
                                 std::vector<at::Tensor>& masks, double amount, bool global);

/// The parameters ModelPruning prunes by default: `names` (e.g. weight, bias) of every module
/// that is not a container, names outermost, modules in order (Lightning's order).
std::vector<std::pair<std::string, at::Tensor>> default_prunable_parameters(
    torch::nn::Module& module, const std::vector<std::string>& names = {"weight", "bias"});

class ModelPruning : public Callback {
 public:
  /// Checks the options (frugal::Error naming the bad one).
  explicit ModelPruning(ModelPruningOptions options = {});

  std::string state_key() const override { return "ModelPruning"; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  void on_fit_start(Trainer&, Task&) override;
  void on_before_optimizer_step(Trainer&, Task&, torch::optim::Optimizer&) override;
  void on_train_batch_end(Trainer&, Task&, const at::Tensor& loss, const Batch&,
                          int64_t batch_idx) override;
  void on_train_epoch_end(Trainer&, Task&) override;
  void on_train_end(Trainer&, Task&) override;

  /// Pruned entries / entries over all pruned tensors (0 before any pruning).
  double sparsity() const;
  /// Per tensor: its name and pruned fraction.
  std::vector<std::pair<std::string, double>> sparsities() const;
  /// The names of the tensors being pruned (after fit starts).
  std::vector<std::string> parameter_names() const;
  const ModelPruningOptions& options() const { return options_; }

 private:
  void apply_masks();
  ModelPruningOptions options_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> masks_;
  std::vector<at::Tensor> originals_;  // the lottery ticket: values at the start of fit
  StateDict pending_;                  // state loaded before fit resolved the parameters
  bool active_ = false;                // masks in force
  bool permanent_ = false;             // made permanent at the end of training
};

}  // namespace frugal
