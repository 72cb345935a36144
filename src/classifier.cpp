#include "frugal/classifier.h"

#include <torch/torch.h>

#include "frugal/error.h"

namespace frugal {

Classifier::Classifier(std::shared_ptr<torch::nn::Module> module, Forward forward,
                       OptimizerFactory optimizer)
    : module_(std::move(module)), forward_(std::move(forward)), optimizer_(std::move(optimizer)) {
  FRUGAL_CHECK(module_ != nullptr, "Classifier: the module is null");
  FRUGAL_CHECK(forward_ != nullptr, "Classifier: the forward function is empty");
  FRUGAL_CHECK(optimizer_ != nullptr, "Classifier: the optimizer factory is empty");
}

Classifier::Classifier(torch::nn::AnyModule module, OptimizerFactory optimizer)
    : Classifier(
          module.ptr(),
          [module](const at::Tensor& x) mutable { return module.forward<at::Tensor>(x); },
          std::move(optimizer)) {}

namespace {
at::Tensor checked_logits(const at::Tensor& logits, const Batch& batch) {
  FRUGAL_CHECK(logits.dim() == 2 && logits.size(0) == batch.size(),
               "Classifier: the model must return logits of shape [batch, classes] = [",
               batch.size(), ", C], got ", logits.sizes(), " for input ", batch.data.sizes());
  FRUGAL_CHECK(batch.target.dim() == 1 && batch.target.size(0) == batch.size(),
               "Classifier: targets must have shape [", batch.size(), "], got ",
               batch.target.sizes());
  return logits;
}
}  // namespace

at::Tensor Classifier::training_step(const Batch& batch, StepContext& ctx) {
  at::Tensor logits = checked_logits(forward_(batch.data), batch);
  at::Tensor loss = torch::nn::functional::cross_entropy(logits, batch.target);
  // argmax has no gradient, so no detach; the mean taken in double (what the metrics accumulate
  // in) by one operator, without a separate conversion of the 0/1 values.
  at::Tensor correct = logits.argmax(1).eq(batch.target).mean(at::kDouble);
  ctx.log("train/loss", loss, LogOptions().prog_bar(true));
  ctx.log("train/acc", correct, LogOptions().on_step(false).on_epoch(true));
  return loss;
}

void Classifier::evaluate(const Batch& batch, StepContext& ctx, const char* prefix) {
  at::Tensor logits = checked_logits(forward_(batch.data), batch);
  at::Tensor loss = torch::nn::functional::cross_entropy(logits, batch.target);
  at::Tensor acc = logits.argmax(1).eq(batch.target).to(at::kFloat).mean();
  // Reduced over data-parallel ranks (weighted by each rank's sample count), so a validation or
  // test over unpadded shards counts every sample exactly once and every rank sees the same value.
  ctx.log(std::string(prefix) + "/loss", loss, LogOptions().prog_bar(true).sync_dist(true));
  ctx.log(std::string(prefix) + "/acc", acc, LogOptions().prog_bar(true).sync_dist(true));
}

void Classifier::validation_step(const Batch& batch, StepContext& ctx) {
  evaluate(batch, ctx, "val");
}

void Classifier::test_step(const Batch& batch, StepContext& ctx) { evaluate(batch, ctx, "test"); }

OptimizerConfig Classifier::configure_optimizers() { return optimizer_(*module_); }

}  // namespace frugal
