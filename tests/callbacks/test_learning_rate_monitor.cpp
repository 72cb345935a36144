// LearningRateMonitor: metric names per optimizer and parameter group, momentum, intervals.
#include <frugal/frugal.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_support.h"

using frugal::testing::error_message;
using frugal::testing::quiet_options;
using frugal::testing::temp_dir;

namespace {

frugal::Classifier small_task() {
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  return frugal::Classifier(net, frugal::SGD(0.1));
}

std::vector<at::Tensor> some_params(int64_t n = 1) {
  std::vector<at::Tensor> params;
  for (int64_t i = 0; i < n; ++i) params.push_back(torch::zeros({2}, torch::requires_grad()));
  return params;
}

double metric(const frugal::Trainer& trainer, const std::string& name) {
  const auto value = trainer.metrics().get(name);
  EXPECT_TRUE(value.has_value()) << name << " was not logged";
  return value.value_or(-1.0);
}

// An optimizer the monitor does not know, whose options do not implement get_lr().
struct BareOptions : torch::optim::OptimizerCloneableOptions<BareOptions> {};
struct BareOptimizer : torch::optim::Optimizer {
  explicit BareOptimizer(std::vector<at::Tensor> params)
      : Optimizer({torch::optim::OptimizerParamGroup(std::move(params))},
                  std::make_unique<BareOptions>()) {}
  at::Tensor step(LossClosure) override { return {}; }
};

}  // namespace

TEST(LearningRateMonitor, OneGroupIsNamedAfterTheOptimizer) {
  frugal::Trainer trainer(quiet_options(temp_dir("lrm_sgd")));
  auto task = small_task();
  torch::optim::SGD sgd(some_params(), torch::optim::SGDOptions(0.05).momentum(0.9));
  frugal::LearningRateMonitor monitor(frugal::Interval::kStep, /*log_momentum=*/true);
  monitor.on_before_optimizer_step(trainer, task, sgd);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-SGD"), 0.05);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-SGD-momentum"), 0.9);
  EXPECT_FALSE(trainer.metrics().contains("lr-SGD/pg0"));
}

TEST(LearningRateMonitor, SeveralGroupsGetOneMetricEach) {
  frugal::Trainer trainer(quiet_options(temp_dir("lrm_groups")));
  auto task = small_task();
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(some_params(), std::make_unique<torch::optim::AdamOptions>(1e-3));
  auto second = std::make_unique<torch::optim::AdamOptions>(1e-2);
  second->betas(std::make_tuple(0.8, 0.99));
  groups.emplace_back(some_params(), std::move(second));
  torch::optim::Adam adam(std::move(groups));

  frugal::LearningRateMonitor monitor(frugal::Interval::kStep, true);
  monitor.on_before_optimizer_step(trainer, task, adam);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-Adam/pg0"), 1e-3);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-Adam/pg1"), 1e-2);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-Adam/pg0-momentum"), 0.9);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-Adam/pg1-momentum"), 0.8);
  EXPECT_FALSE(trainer.metrics().contains("lr-Adam"));
}

TEST(LearningRateMonitor, NamesEveryBuiltInOptimizer) {
  frugal::Trainer trainer(quiet_options(temp_dir("lrm_names")));
  auto task = small_task();
  frugal::LearningRateMonitor monitor(frugal::Interval::kStep, true);

  torch::optim::AdamW adamw(some_params(), torch::optim::AdamWOptions(2e-3));
  torch::optim::RMSprop rmsprop(some_params(), torch::optim::RMSpropOptions(3e-3).momentum(0.5));
  torch::optim::Adagrad adagrad(some_params(), torch::optim::AdagradOptions(4e-3));
  torch::optim::LBFGS lbfgs(some_params(), torch::optim::LBFGSOptions(0.5));
  for (torch::optim::Optimizer* optimizer :
       std::vector<torch::optim::Optimizer*>{&adamw, &rmsprop, &adagrad, &lbfgs}) {
    monitor.on_before_optimizer_step(trainer, task, *optimizer);
  }
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-AdamW"), 2e-3);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-AdamW-momentum"), 0.9);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-RMSprop"), 3e-3);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-RMSprop-momentum"), 0.5);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-Adagrad"), 4e-3);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-Adagrad-momentum"), 0.0);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-LBFGS"), 0.5);
  EXPECT_FALSE(trainer.metrics().contains("lr-Adam"));
}

TEST(LearningRateMonitor, UnknownOptimizerWithoutGetLrIsAClearError) {
  frugal::Trainer trainer(quiet_options(temp_dir("lrm_unknown")));
  auto task = small_task();
  BareOptimizer bare(some_params());
  frugal::LearningRateMonitor monitor(frugal::Interval::kStep);
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "cannot read the learning rate for 'lr-Optimizer'",
      error_message([&] { monitor.on_before_optimizer_step(trainer, task, bare); }));
}

TEST(LearningRateMonitor, MomentumOnlyWhenAsked) {
  frugal::Trainer trainer(quiet_options(temp_dir("lrm_no_momentum")));
  auto task = small_task();
  torch::optim::SGD sgd(some_params(), torch::optim::SGDOptions(0.05).momentum(0.9));
  frugal::LearningRateMonitor monitor(frugal::Interval::kStep);
  monitor.on_before_optimizer_step(trainer, task, sgd);
  EXPECT_TRUE(trainer.metrics().contains("lr-SGD"));
  EXPECT_FALSE(trainer.metrics().contains("lr-SGD-momentum"));
}

TEST(LearningRateMonitor, EpochIntervalIgnoresOptimizerSteps) {
  frugal::Trainer trainer(quiet_options(temp_dir("lrm_epoch_hooks")));
  auto task = small_task();
  torch::optim::SGD sgd(some_params(), torch::optim::SGDOptions(0.05));
  frugal::LearningRateMonitor monitor;  // kEpoch
  monitor.on_before_optimizer_step(trainer, task, sgd);
  EXPECT_FALSE(trainer.metrics().contains("lr-SGD"));
  // Outside fit there is no optimizer: the epoch hook logs nothing and does not fail.
  monitor.on_train_epoch_start(trainer, task);
  EXPECT_FALSE(trainer.metrics().contains("lr-SGD"));
}

namespace {

// Records "lr-SGD" as the loggers receive it.
struct LrLog : frugal::Logger {
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step, int64_t) override {
    auto it = metrics.find("lr-SGD");
    if (it != metrics.end()) values.emplace_back(step, it->second);
  }
  std::vector<std::pair<int64_t, double>> values;
};

}  // namespace

TEST(LearningRateMonitor, FollowsASchedulerDuringFit) {
  auto toy = frugal::testing::make_toy_data(32);
  auto train = std::make_shared<frugal::TensorLoader>(toy.x, toy.y, frugal::TensorLoaderOptions(8));
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  // lr halves after every epoch: 0.1, 0.05, 0.025.
  frugal::Classifier task(net, frugal::with_scheduler(frugal::SGD(0.1), [](auto& optimizer) {
                            return std::make_shared<frugal::StepLR>(optimizer, 1, 0.5);
                          }));
  auto log = std::make_shared<LrLog>();
  frugal::Trainer trainer(quiet_options(temp_dir("lrm_fit")).max_epochs(3).log_every_n_steps(4),
                          {std::make_shared<frugal::LearningRateMonitor>()}, {log});
  trainer.fit(task, train);
  EXPECT_DOUBLE_EQ(metric(trainer, "lr-SGD"), 0.025);
  // Logged at each epoch start, sent with the step metrics of that epoch (every 4 steps).
  ASSERT_EQ(log->values.size(), 3u);
  EXPECT_EQ(log->values[0], std::make_pair(int64_t{4}, 0.1));
  EXPECT_EQ(log->values[1], std::make_pair(int64_t{8}, 0.05));
  EXPECT_EQ(log->values[2], std::make_pair(int64_t{12}, 0.025));
}

TEST(LearningRateMonitor, StepIntervalSeesEveryOptimizerStep) {
  auto toy = frugal::testing::make_toy_data(32);
  auto train = std::make_shared<frugal::TensorLoader>(toy.x, toy.y, frugal::TensorLoaderOptions(8));
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  // lr = 0.1 * 0.5^step, stepped after every optimizer step.
  frugal::Classifier task(
      net, frugal::with_scheduler(
               frugal::SGD(0.1),
               [](auto& optimizer) { return std::make_shared<frugal::StepLR>(optimizer, 1, 0.5); },
               frugal::Interval::kStep));
  auto log = std::make_shared<LrLog>();
  frugal::Trainer trainer(
      quiet_options(temp_dir("lrm_fit_step")).max_epochs(1).log_every_n_steps(1),
      {std::make_shared<frugal::LearningRateMonitor>(frugal::Interval::kStep)}, {log});
  trainer.fit(task, train);
  // The LR each of the 4 steps used (logged before the step, the scheduler steps after it).
  ASSERT_EQ(log->values.size(), 4u);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(log->values[i].first, i + 1);
    EXPECT_DOUBLE_EQ(log->values[i].second, 0.1 * std::pow(0.5, i));
  }
}
