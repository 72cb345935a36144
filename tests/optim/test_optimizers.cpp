// Tests for the optimizer factories: the optimizer type and its options, frozen parameters left
// out, with_scheduler's attachments, and the argument errors.
#include <frugal/error.h>
#include <frugal/optim/lr_scheduler.h>
#include <frugal/optim/optimizers.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

namespace {

/// Two linear layers; the first can be frozen.
struct TwoLayers : torch::nn::Module {
  TwoLayers() {
    first = register_module("first", torch::nn::Linear(4, 3));
    second = register_module("second", torch::nn::Linear(3, 2));
  }
  void freeze_first() {
    for (auto& p : first->parameters()) p.set_requires_grad(false);
  }
  torch::nn::Linear first{nullptr};
  torch::nn::Linear second{nullptr};
};

/// Every parameter of the optimizer, in order.
std::vector<at::Tensor> optimizer_params(const torch::optim::Optimizer& optimizer) {
  std::vector<at::Tensor> out;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& p : group.params()) out.push_back(p);
  }
  return out;
}

void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected a frugal::Error containing \"" << needle << "\"";
  } catch (const frugal::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << needle;
  }
}

TEST(OptimTest, SGDBuildsTorchSGDWithItsOptions) {
  TwoLayers net;
  const frugal::OptimizerConfig config = frugal::SGD(0.05, 0.9, 1e-4, true)(net);
  auto* sgd = dynamic_cast<torch::optim::SGD*>(config.optimizer.get());
  ASSERT_NE(sgd, nullptr);
  const auto& options = static_cast<const torch::optim::SGDOptions&>(sgd->defaults());
  EXPECT_DOUBLE_EQ(options.lr(), 0.05);
  EXPECT_DOUBLE_EQ(options.momentum(), 0.9);
  EXPECT_DOUBLE_EQ(options.weight_decay(), 1e-4);
  EXPECT_TRUE(options.nesterov());
  EXPECT_EQ(optimizer_params(*sgd).size(), net.parameters().size());
  EXPECT_EQ(config.scheduler, nullptr);
}

TEST(OptimTest, AdamBuildsTorchAdam) {
  TwoLayers net;
  const frugal::OptimizerConfig config = frugal::Adam(2e-3, 1e-5)(net);
  auto* adam = dynamic_cast<torch::optim::Adam*>(config.optimizer.get());
  ASSERT_NE(adam, nullptr);
  const auto& options = static_cast<const torch::optim::AdamOptions&>(adam->defaults());
  EXPECT_DOUBLE_EQ(options.lr(), 2e-3);
  EXPECT_DOUBLE_EQ(options.weight_decay(), 1e-5);
  EXPECT_DOUBLE_EQ(adam->param_groups().at(0).options().get_lr(), 2e-3);
}

TEST(OptimTest, AdamWBuildsTorchAdamWWithDefaults) {
  TwoLayers net;
  const frugal::OptimizerConfig config = frugal::AdamW()(net);
  auto* adamw = dynamic_cast<torch::optim::AdamW*>(config.optimizer.get());
  ASSERT_NE(adamw, nullptr);
  const auto& options = static_cast<const torch::optim::AdamWOptions&>(adamw->defaults());
  EXPECT_DOUBLE_EQ(options.lr(), 1e-3);
  EXPECT_DOUBLE_EQ(options.weight_decay(), 1e-2);
}

TEST(OptimTest, FrozenParametersAreLeftOut) {
  TwoLayers net;
  net.freeze_first();
  for (const auto& factory : {frugal::SGD(0.1), frugal::Adam(), frugal::AdamW()}) {
    const auto params = optimizer_params(*factory(net).optimizer);
    ASSERT_EQ(params.size(), 2u);  // second.weight, second.bias
    EXPECT_TRUE(params[0].is_same(net.second->weight));
    EXPECT_TRUE(params[1].is_same(net.second->bias));
  }
}

TEST(OptimTest, SharedParameterIsOptimizedOnce) {
  TwoLayers net;
  // The same Linear under a second name: its parameters are reached twice.
  net.register_module("alias", net.second);
  const auto params = optimizer_params(*frugal::SGD(0.1)(net).optimizer);
  EXPECT_EQ(params.size(), 4u);
}

TEST(OptimTest, AllFrozenIsAClearError) {
  TwoLayers net;
  for (auto& p : net.parameters()) p.set_requires_grad(false);
  expect_error([&] { frugal::AdamW()(net); },
               "AdamW: the module has no parameters that require grad");
}

TEST(OptimTest, FactoryBuildsAFreshOptimizerEachCall) {
  TwoLayers net;
  auto factory = frugal::SGD(0.1);
  EXPECT_NE(factory(net).optimizer, factory(net).optimizer);
}

TEST(OptimTest, WithSchedulerAttachesSchedulerIntervalAndMonitor) {
  TwoLayers net;
  auto factory = frugal::with_scheduler(
      frugal::SGD(0.1),
      [](torch::optim::Optimizer& opt) {
        return std::make_shared<frugal::CosineAnnealingLR>(opt, /*t_max=*/10);
      },
      frugal::Interval::kStep);
  const frugal::OptimizerConfig config = factory(net);
  ASSERT_NE(config.optimizer, nullptr);
  ASSERT_NE(config.scheduler, nullptr);
  EXPECT_NE(dynamic_cast<frugal::CosineAnnealingLR*>(config.scheduler.get()), nullptr);
  EXPECT_EQ(config.interval, frugal::Interval::kStep);
  EXPECT_EQ(config.monitor, "");
  EXPECT_EQ(config.frequency, 1);
  // The scheduler drives the optimizer that was built with it.
  config.scheduler->step();
  EXPECT_DOUBLE_EQ(config.optimizer->param_groups().at(0).options().get_lr(),
                   config.scheduler->get_last_lr().at(0));
  EXPECT_LT(config.scheduler->get_last_lr().at(0), 0.1);
}

TEST(OptimTest, WithSchedulerPassesTheMonitorForPlateau) {
  TwoLayers net;
  auto make_plateau = [](torch::optim::Optimizer& opt) {
    return std::make_shared<frugal::ReduceLROnPlateau>(opt);
  };
  const frugal::OptimizerConfig config = frugal::with_scheduler(
      frugal::Adam(), make_plateau, frugal::Interval::kEpoch, "val/loss")(net);
  EXPECT_TRUE(config.scheduler->needs_metric());
  EXPECT_EQ(config.interval, frugal::Interval::kEpoch);
  EXPECT_EQ(config.monitor, "val/loss");

  expect_error([&] { frugal::with_scheduler(frugal::Adam(), make_plateau)(net); },
               "with_scheduler: this scheduler (e.g. ReduceLROnPlateau) steps on a metric; pass "
               "monitor");
}

TEST(OptimTest, WithSchedulerRefusesEmptyPieces) {
  TwoLayers net;
  auto make = [](torch::optim::Optimizer& opt) { return std::make_shared<frugal::StepLR>(opt, 1); };
  expect_error([&] { frugal::with_scheduler(nullptr, make); },
               "with_scheduler: the optimizer factory is empty");
  expect_error([&] { frugal::with_scheduler(frugal::SGD(0.1), nullptr); },
               "with_scheduler: the scheduler maker is empty");
  expect_error(
      [&] {
        frugal::with_scheduler(frugal::SGD(0.1), [](torch::optim::Optimizer&) {
          return std::shared_ptr<frugal::LRScheduler>();
        })(net);
      },
      "with_scheduler: the scheduler maker returned null");
}

TEST(OptimTest, BadArgumentsAreRefusedWhenTheFactoryIsMade) {
  expect_error([] { frugal::SGD(0.0); }, "SGD: lr must be > 0, got 0");
  expect_error([] { frugal::SGD(-0.1); }, "SGD: lr must be > 0, got -0.1");
  expect_error([] { frugal::SGD(0.1, -0.9); }, "SGD: momentum must be >= 0, got -0.9");
  expect_error([] { frugal::SGD(0.1, 0.9, -1.0); }, "SGD: weight_decay must be >= 0, got -1");
  expect_error([] { frugal::SGD(0.1, 0.0, 0.0, true); },
               "SGD: nesterov needs momentum > 0, got momentum 0");
  expect_error([] { frugal::Adam(0.0); }, "Adam: lr must be > 0, got 0");
  expect_error([] { frugal::Adam(1e-3, -1e-2); }, "Adam: weight_decay must be >= 0, got -0.01");
  expect_error([] { frugal::AdamW(-1e-3); }, "AdamW: lr must be > 0, got -0.001");
  expect_error([] { frugal::AdamW(std::nan("")); }, "AdamW: lr must be > 0, got nan");
  expect_error([] { frugal::AdamW(1e-3, -0.5); }, "AdamW: weight_decay must be >= 0, got -0.5");
}

}  // namespace
