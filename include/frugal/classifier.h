// Classifier: a ready Task that wraps any LibTorch model for classification — cross-entropy loss,
// accuracy — so "wrap a model, train it" is one line.
//
//   torch::nn::Sequential net(...);
//   frugal::Classifier task(net, frugal::AdamW(1e-3));
//
// Logs train/loss (step, progress bar), train/acc (epoch), val/loss, val/acc, test/loss,
// test/acc (epoch means weighted by batch size).
#pragma once

#include <frugal/optim/optimizers.h>
#include <frugal/task.h>

#include <functional>
#include <memory>
#include <utility>

namespace torch::nn {
class AnyModule;
}

namespace frugal {

class Classifier : public Task {
 public:
  using Forward = std::function<at::Tensor(const at::Tensor&)>;

  /// Any module with its forward function.
  Classifier(std::shared_ptr<torch::nn::Module> module, Forward forward,
             OptimizerFactory optimizer = AdamW(1e-3));
  /// A type-erased module (AnyModule) whose forward takes and returns one tensor.
  Classifier(torch::nn::AnyModule module, OptimizerFactory optimizer = AdamW(1e-3));
  /// A ModuleHolder (torch::nn::Sequential, or a user's TORCH_MODULE type).
  template <typename Holder, typename = decltype(std::declval<Holder>().ptr())>
  Classifier(Holder holder, OptimizerFactory optimizer = AdamW(1e-3))
      : Classifier(
            holder.ptr(), [holder](const at::Tensor& x) mutable { return holder->forward(x); },
            std::move(optimizer)) {}

  torch::nn::Module& module() override { return *module_; }
  std::shared_ptr<torch::nn::Module> module_ptr() const { return module_; }
  at::Tensor forward(const at::Tensor& x) { return forward_(x); }

  at::Tensor training_step(const Batch& batch, StepContext& ctx) override;
  void validation_step(const Batch& batch, StepContext& ctx) override;
  void test_step(const Batch& batch, StepContext& ctx) override;
  OptimizerConfig configure_optimizers() override;

 private:
  void evaluate(const Batch& batch, StepContext& ctx, const char* prefix);
  std::shared_ptr<torch::nn::Module> module_;
  Forward forward_;
  OptimizerFactory optimizer_;
};

}  // namespace frugal
