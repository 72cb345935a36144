// Gradient accumulation: k micro-batches of b equal one batch of k*b (fp32, no batch-dependent
// layers), including the epoch's last, shorter window; the per-epoch schedule.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_support.h"

namespace {

using frugal::Trainer;

std::vector<at::Tensor> train(int64_t batch, int64_t k, frugal::OptimizerFactory opt,
                              int64_t epochs = 3,
                              frugal::TrainerOptions::AccumulationSchedule schedule = {}) {
  torch::manual_seed(4);
  torch::nn::Sequential net(torch::nn::Linear(8, 16), torch::nn::Tanh(), torch::nn::Linear(16, 3));
  frugal::Classifier task(net, std::move(opt));
  auto d = frugal::testing::make_toy_data(44);  // 11 micro-batches of 4; with k = 3: 3, 3, 3, 2
  auto src = std::make_shared<frugal::TensorLoader>(d.x, d.y, frugal::TensorLoaderOptions(batch));
  auto options = frugal::testing::quiet_options().max_epochs(epochs);
  if (schedule.empty()) {
    options.accumulate_grad_batches(k);
  } else {
    options.accumulation_schedule(schedule);
  }
  Trainer trainer(options);
  trainer.fit(task, src);
  std::vector<at::Tensor> params;
  for (auto& p : net->parameters()) params.push_back(p.detach().clone());
  params.push_back(torch::tensor({static_cast<double>(trainer.state().global_step)}));
  return params;
}

void expect_close(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const double scale = std::max(1.0, b[i].abs().max().item<double>());
    const double diff = (a[i] - b[i]).abs().max().item<double>();
    EXPECT_LE(diff / scale, 1e-6) << "tensor " << i;
  }
}

TEST(Accumulation, MicroBatchesEqualOneLargeBatchIncludingTheShortLastWindow) {
  // Micro-batch 4 with k = 3 against batch 12: 44 samples = 3 windows of 12 and one of 8.
  expect_close(train(4, 3, frugal::SGD(0.2)), train(12, 1, frugal::SGD(0.2)));
  expect_close(train(4, 3, frugal::AdamW(1e-2)), train(12, 1, frugal::AdamW(1e-2)));
}

TEST(Accumulation, DividingTheShortWindowByKWouldDiffer) {
  // Guard for the test above: the last window (2 micro-batches) matters; a 1-epoch run with
  // k = 3 differs from k = 2 windows, so the equality is not vacuous.
  auto a = train(4, 3, frugal::SGD(0.2), 1);
  auto b = train(4, 2, frugal::SGD(0.2), 1);
  EXPECT_GT((a[0] - b[0]).abs().max().item<double>(), 1e-4);
  EXPECT_EQ(a.back().item<double>(), 4);  // windows 3, 3, 3, 2
  EXPECT_EQ(b.back().item<double>(), 6);  // windows 2, 2, 2, 2, 2, 1
}

TEST(Accumulation, ScheduleChangesTheFactorPerEpoch) {
  // {0: 2, 1: 4, 2: 1}: 6 + 3 + 11 optimizer steps over 3 epochs of 11 micro-batches.
  auto p = train(4, 1, frugal::SGD(0.1), 3, {{0, 2}, {1, 4}, {2, 1}});
  EXPECT_EQ(p.back().item<double>(), 6 + 3 + 11);
  frugal::TrainerOptions o;
  o.accumulation_schedule({{0, 8}, {4, 4}, {8, 1}});
  EXPECT_EQ(o.accumulation_for_epoch(0), 8);
  EXPECT_EQ(o.accumulation_for_epoch(5), 4);
  EXPECT_EQ(o.accumulation_for_epoch(100), 1);
}

TEST(Accumulation, ScheduleOptionsAreChecked) {
  auto error = [](frugal::TrainerOptions o) {
    try {
      o.validate();
    } catch (const frugal::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(
      error(frugal::TrainerOptions().accumulate_grad_batches(2).accumulation_schedule({{0, 4}})),
      ::testing::HasSubstr("accumulation_schedule and accumulate_grad_batches=2"));
  EXPECT_THAT(error(frugal::TrainerOptions().accumulation_schedule({{1, 0}})),
              ::testing::HasSubstr("the factor for epoch 1 must be >= 1, got 0"));
}

TEST(Accumulation, GradientsAreSetToNoneAfterEachStep) {
  struct Check : frugal::Callback {
    int64_t defined_at_start = 0;
    void on_train_batch_start(Trainer& t, frugal::Task& task, const frugal::Batch&,
                              int64_t i) override {
      if (i % 2 == 0) {
        for (auto& p : task.module().parameters()) defined_at_start += p.grad().defined();
      }
    }
  };
  auto check = std::make_shared<Check>();
  torch::nn::Linear net(8, 3);
  frugal::Classifier task(net, frugal::SGD(0.1));
  auto d = frugal::testing::make_toy_data(16);
  Trainer trainer(frugal::testing::quiet_options().max_epochs(1).accumulate_grad_batches(2),
                  {check});
  trainer.fit(task,
              std::make_shared<frugal::TensorLoader>(d.x, d.y, frugal::TensorLoaderOptions(4)));
  EXPECT_EQ(check->defined_at_start, 0);
}

}  // namespace
