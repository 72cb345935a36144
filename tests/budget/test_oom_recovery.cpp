// Out-of-memory recovery during training (TrainerOptions::oom_recovery): the control flow, tested
// on CPU by a task that raises the CUDA allocator's error (c10::OutOfMemoryError) when a batch is
// larger than a "memory limit" — in the forward pass, or in the middle of the backward pass after
// some gradients have already been accumulated. The update must be the one the full micro-batch
// gives (compared with a run that never runs out of memory), the metrics must not count the failed
// attempt, and the halved micro-batch must survive a checkpoint.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <stdexcept>

#include "test_support.h"

namespace {

using frugal::testing::error_message;
using frugal::testing::quiet_options;

[[noreturn]] void throw_oom(int64_t size) {
  TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate a batch of ",
                   size, " (injected)");
}

// A two-layer classifier with a fake memory limit. The backward limit is checked by a hook on the
// hidden activation, which runs after the output layer's gradients were accumulated, so a failed
// backward leaves them half-updated (what the recovery must undo).
struct LimitedTask : frugal::Task {
  torch::nn::Linear l1{nullptr};
  torch::nn::Linear l2{nullptr};
  torch::nn::Sequential net;
  int64_t forward_limit = 1 << 30;
  int64_t backward_limit = 1 << 30;
  int64_t backward_limit_from_batch = 0;  // the backward limit applies from this batch index on
  int64_t ooms = 0;                       // errors raised
  bool other_error = false;               // raise a std::runtime_error at batch 1 instead

  LimitedTask() {
    torch::manual_seed(11);
    l1 = torch::nn::Linear(8, 16);
    l2 = torch::nn::Linear(16, 3);
    net = torch::nn::Sequential(l1, l2);
  }
  torch::nn::Module& module() override { return *net; }
  at::Tensor training_step(const frugal::Batch& b, frugal::StepContext& ctx) override {
    if (other_error && ctx.batch_idx() == 1) throw std::runtime_error("a bug in training_step");
    const int64_t size = b.size();
    if (size > forward_limit) {
      ++ooms;
      throw_oom(size);
    }
    at::Tensor h = torch::tanh(l1->forward(b.data));
    if (size > backward_limit && ctx.batch_idx() >= backward_limit_from_batch) {
      h.register_hook([this, size](const at::Tensor&) -> at::Tensor {
        ++ooms;
        throw_oom(size);
      });
    }
    at::Tensor loss = torch::nn::functional::cross_entropy(l2->forward(h), b.target);
    ctx.log("train/loss", loss, frugal::LogOptions().on_step(false).on_epoch(true));
    return loss;
  }
  frugal::OptimizerConfig configure_optimizers() override { return frugal::AdamW(1e-2, 0.0)(*net); }
};

struct Outcome {
  std::vector<at::Tensor> params;
  double epoch_loss = 0;
  int64_t recoveries = 0;
  int64_t split = 0;
  int64_t steps = 0;
  std::map<std::string, double> metrics;
};

Outcome finish(frugal::Trainer& trainer, LimitedTask& task) {
  Outcome run;
  for (auto& p : task.net->parameters()) run.params.push_back(p.detach().clone());
  run.metrics = trainer.callback_metrics();
  run.epoch_loss = run.metrics.at("train/loss");
  run.recoveries = trainer.state().oom_recoveries;
  run.split = trainer.state().micro_batch_split;
  run.steps = trainer.state().global_step;
  return run;
}

// 96 samples in batches of `batch`, windows of k, two epochs.
Outcome train(LimitedTask& task, int64_t batch, int64_t k, bool recovery, int64_t epochs = 2) {
  auto d = frugal::testing::make_toy_data(96);
  auto src = std::make_shared<frugal::TensorLoader>(
      d.x, d.y, frugal::TensorLoaderOptions(batch).shuffle(true).seed(3));
  frugal::Trainer trainer(
      quiet_options().max_epochs(epochs).seed(5).accumulate_grad_batches(k).oom_recovery(recovery));
  trainer.fit(task, src);
  return finish(trainer, task);
}

void expect_same_update(const Outcome& a, const Outcome& b) {
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i) {
    const double diff = (a.params[i] - b.params[i]).abs().max().item<double>();
    EXPECT_LE(diff, 1e-6) << "parameter " << i;
  }
  EXPECT_NEAR(a.epoch_loss, b.epoch_loss, 1e-6);
  EXPECT_EQ(a.steps, b.steps);
}

// Trains `task` (with its fake limits) under oom_recovery and an unlimited task without it, on the
// same batches and windows; the updates must agree. Returns the recovering run.
Outcome train_against_unlimited(LimitedTask& task, int64_t batch, int64_t k, int64_t epochs = 2) {
  LimitedTask unlimited;
  const Outcome reference = train(unlimited, batch, k, /*recovery=*/false, epochs);
  const Outcome run = train(task, batch, k, /*recovery=*/true, epochs);
  expect_same_update(run, reference);
  return run;
}

TEST(OomRecovery, ForwardOutOfMemoryHalvesTheMicroBatchAndKeepsTheUpdate) {
  LimitedTask task;
  task.forward_limit = 8;
  const Outcome run = train_against_unlimited(task, 16, 2);
  EXPECT_EQ(task.ooms, 1);  // once; from then on every batch runs as two halves
  EXPECT_EQ(run.recoveries, 1);
  EXPECT_EQ(run.split, 2);
  EXPECT_EQ(run.metrics.at("train/oom_recoveries"), 1);
  // Not vacuous: training on the halves as separate steps would give other parameters.
  LimitedTask halves;
  const Outcome other = train(halves, 8, 2, false);
  EXPECT_GT((other.params[0] - run.params[0]).abs().max().item<double>(), 1e-4);
}

TEST(OomRecovery, BackwardOutOfMemoryInsideAWindowUndoesThePartialGradients) {
  // Batch 0 of the first window succeeds at 16; batch 1 fails in backward after the output
  // layer's gradients have grown (and after its loss was logged): the window is redone from its
  // start as halves. One epoch, so that the epoch loss compared is the one of the failed window.
  LimitedTask task;
  task.backward_limit = 8;
  task.backward_limit_from_batch = 1;
  const Outcome run = train_against_unlimited(task, 16, 3, /*epochs=*/1);
  EXPECT_EQ(task.ooms, 1);
  EXPECT_EQ(run.recoveries, 1);
}

TEST(OomRecovery, RepeatedErrorsHalveAgainUntilTheStepFits) {
  LimitedTask task;
  task.forward_limit = 4;  // 16 -> 8 -> 4
  const Outcome run = train_against_unlimited(task, 16, 2);
  EXPECT_EQ(task.ooms, 2);
  EXPECT_EQ(run.recoveries, 2);
  EXPECT_EQ(run.split, 4);
}

TEST(OomRecovery, AnUnevenBatchIsSplitByItsRealSize) {
  // 96 samples in batches of 20: the epoch's last batch has 16; with k = 2 the last window is
  // 20 + 16. Halving gives parts of 10 and 8, each weighted by its share.
  LimitedTask task;
  task.forward_limit = 10;
  EXPECT_EQ(train_against_unlimited(task, 20, 2).recoveries, 1);
}

TEST(OomRecovery, GivesUpWithAClearErrorAtMicroBatchOne) {
  LimitedTask task;
  task.forward_limit = 0;
  const std::string message = error_message([&] { train(task, 4, 1, true); });
  EXPECT_THAT(message,
              ::testing::HasSubstr("out of memory at epoch 0, batch 0 with micro-batch 1"));
  EXPECT_THAT(message, ::testing::HasSubstr("cannot halve (2 recoveries so far)"));
  EXPECT_THAT(message, ::testing::HasSubstr("CUDA out of memory. Tried to allocate a batch of 1"));
}

TEST(OomRecovery, OffByDefaultAndOtherErrorsPassThrough) {
  LimitedTask task;
  task.forward_limit = 8;
  EXPECT_THROW(train(task, 16, 1, /*recovery=*/false), c10::OutOfMemoryError);
  EXPECT_EQ(task.ooms, 1);
  LimitedTask buggy;
  buggy.other_error = true;
  EXPECT_THAT(error_message([&] { train(buggy, 16, 1, true); }),
              ::testing::HasSubstr("a bug in training_step"));
}

TEST(OomRecovery, TheHalvedMicroBatchSurvivesACheckpoint) {
  const std::string dir = frugal::testing::temp_dir("oom_recovery_ckpt");
  const std::string ckpt = (std::filesystem::path(dir) / "epoch1.ckpt").string();
  auto d = frugal::testing::make_toy_data(96);
  auto loader = [&] {
    return std::make_shared<frugal::TensorLoader>(
        d.x, d.y, frugal::TensorLoaderOptions(16).shuffle(true).seed(3));
  };
  auto options = [&](int64_t epochs) {
    return quiet_options(dir).max_epochs(epochs).seed(5).accumulate_grad_batches(2).oom_recovery(
        true);
  };
  LimitedTask straight;
  straight.forward_limit = 8;
  const Outcome full = train(straight, 16, 2, true);

  LimitedTask first;
  first.forward_limit = 8;
  {
    frugal::Trainer trainer(options(1));
    trainer.fit(first, loader());
    trainer.save_checkpoint(ckpt);
  }
  LimitedTask resumed;
  resumed.forward_limit = 8;
  frugal::Trainer trainer(options(2));
  trainer.fit(resumed, loader(), {}, ckpt);
  const Outcome run = finish(trainer, resumed);
  EXPECT_EQ(resumed.ooms, 0);  // resumed with micro-batch 8: no second error
  EXPECT_EQ(run.split, 2);
  EXPECT_EQ(run.recoveries, 1);
  for (size_t i = 0; i < run.params.size(); ++i) {
    EXPECT_TRUE(run.params[i].equal(full.params[i])) << "parameter " << i;
  }
}

}  // namespace
