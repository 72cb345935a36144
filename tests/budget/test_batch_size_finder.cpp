// Batch-size finder on CPU with a byte budget: the size chosen respects the budget (measured) and
// the next power of two does not; model, optimizer and RNG state are bitwise unchanged by a
// search; an injected out-of-memory error is caught and the search goes on; bad options are
// refused by name; a budget plan trains exactly like the same micro-batch and accumulation set by
// hand.
#include <frugal/budget/batch_size_finder.h>
#include <frugal/callbacks/batch_size_finder.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "compat.h"
#include "test_support.h"
#include "under_asan.h"

namespace {

using frugal::BatchSizeFinderOptions;
using frugal::BatchSizeTrial;
using frugal::testing::error_message;

constexpr double kMiB = 1024.0 * 1024.0;

// Note [Reproducible CPU measurements] (docs/budget.md): glibc raises its mmap threshold each time
// a large block is freed, after which big tensors come from the heap and a trial's peak RSS depends
// on what earlier trials left there (sizes measured 15% apart in either direction). A fixed
// threshold (what MALLOC_MMAP_THRESHOLD_=65536 does) keeps every large tensor in its own mapping,
// and peak RSS growth becomes a steady function of the batch size.
const bool kFixedMmapThreshold = mallopt(M_MMAP_THRESHOLD, 64 * 1024) == 1;

// Activations dominate (about 0.25 MiB per sample), parameters are tiny: memory grows with the
// batch clearly enough to put a budget between two sizes.
torch::nn::Sequential conv_net() {
  torch::manual_seed(0);
  return torch::nn::Sequential(
      torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 32, 3).padding(1)), torch::nn::ReLU(),
      torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 32, 3).padding(1)), torch::nn::ReLU(),
      torch::nn::AdaptiveAvgPool2d(1), torch::nn::Flatten(), torch::nn::Linear(32, 10));
}

struct Images {
  at::Tensor x;
  at::Tensor y;
};
Images images(int64_t n) {
  auto gen = at::detail::createCPUGenerator(1);
  return {torch::randn({n, 3, 16, 16}, gen), torch::randint(10, {n}, gen, torch::kLong)};
}

// Every tensor of the optimizer's state, in parameter order, cloned.
std::vector<at::Tensor> optimizer_state(torch::optim::Optimizer& optimizer) {
  std::vector<at::Tensor> out;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      using Key = std::decay_t<decltype(optimizer.state())>::key_type;
      auto it = optimizer.state().find(frugal::compat::optimizer_state_key<Key>(p));
      if (it == optimizer.state().end()) continue;
      auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
      out.push_back(torch::tensor({s.step()}, torch::kDouble));
      out.push_back(s.exp_avg().clone());
      out.push_back(s.exp_avg_sq().clone());
    }
  }
  return out;
}

void expect_bitwise_equal(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].sizes(), b[i].sizes()) << "state tensor " << i;
    EXPECT_TRUE(torch::equal(a[i], b[i])) << "state tensor " << i << " changed";
  }
}

at::Tensor cpu_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

TEST(BatchSizeFinder, OptionsAreRefusedByName) {
  auto data = images(16);
  frugal::Classifier task(conv_net(), frugal::Adam(1e-3));
  auto find = [&](BatchSizeFinderOptions o) {
    return error_message([&] { frugal::find_batch_size(task, data.x, data.y, o); });
  };
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "budget_bytes must be > 0",
                      find(BatchSizeFinderOptions()));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "budget_bytes must be >= 0, got -1",
                      find(BatchSizeFinderOptions().budget_bytes(-1)));
  const auto ok = BatchSizeFinderOptions().budget_bytes(1e9);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "start_size must be >= 1, got 0",
                      find(BatchSizeFinderOptions(ok).start_size(0)));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "max_size must be <= the number of samples (16), got 17",
                      find(BatchSizeFinderOptions(ok).max_size(17)));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "max_size must be >= 1 (or -1: all samples), got 0",
                      find(BatchSizeFinderOptions(ok).max_size(0)));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "start_size (8) must be <= max_size (4)",
                      find(BatchSizeFinderOptions(ok).start_size(8).max_size(4)));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "steps_per_trial must be >= 1, got 0",
                      find(BatchSizeFinderOptions(ok).steps_per_trial(0)));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "max_trials must be >= 1, got 0",
                      find(BatchSizeFinderOptions(ok).max_trials(0)));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "targets must have 16 rows", error_message([&] {
                        frugal::find_batch_size(task, data.x, data.y.narrow(0, 0, 3), ok);
                      }));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "effective_batch_size=10 is not divisible by the world size 4",
      error_message([&] { frugal::plan_budget(task, data.x, data.y, 1e9, 10, 4); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "memory_budget must be > 0 bytes on cpu, got 0",
                      error_message([&] { frugal::plan_budget(task, data.x, data.y, 0, 8); }));
  // A budget nothing fits says how much the smallest size needs.
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "even start_size=1 does not fit on cpu (uses",
                      find(BatchSizeFinderOptions().budget_bytes(1).warmup(false)));
}

TEST(BatchSizeFinder, ChosenSizeRespectsCpuBudgetAndNextPowerOfTwoDoesNot) {
  FRUGAL_SKIP_UNDER_ASAN();
  auto data = images(256);
  frugal::Classifier task(conv_net(), frugal::Adam(1e-3));
  const auto base = BatchSizeFinderOptions().budget_bytes(1e12);
  ASSERT_TRUE(kFixedMmapThreshold);
  const BatchSizeTrial m64 = frugal::measure_batch_size(task, data.x, data.y, 64, base);
  const BatchSizeTrial m128 = frugal::measure_batch_size(task, data.x, data.y, 128, base);
  std::cout << "measured: 64 -> " << m64.bytes / kMiB << " MiB, 128 -> " << m128.bytes / kMiB
            << " MiB\n";
  ASSERT_GT(m128.bytes - m64.bytes, 4 * kMiB) << "the model must make memory grow with the batch";
  const double budget = 0.5 * static_cast<double>(m64.bytes + m128.bytes);

  std::ostringstream log;
  const frugal::BatchSizeResult found = frugal::find_batch_size(
      task, data.x, data.y, BatchSizeFinderOptions().budget_bytes(budget).out(&log));
  std::cout << found.describe();
  EXPECT_GE(found.batch_size, 64);
  EXPECT_LT(found.batch_size, 128);
  EXPECT_LE(static_cast<double>(found.bytes_used), budget);
  // The search saw 128 over budget, then bisected between 64 and 128.
  bool saw_128_over = false;
  for (const auto& t : found.trials) {
    if (t.batch_size == 128) saw_128_over = t.outcome == BatchSizeTrial::Outcome::kOverBudget;
    if (t.fits()) EXPECT_LE(static_cast<double>(t.bytes), budget);
  }
  EXPECT_TRUE(saw_128_over) << found.describe();
  EXPECT_NE(found.describe().find("over budget"), std::string::npos);
  EXPECT_NE(log.str().find("batch size finder: 128:"), std::string::npos) << log.str();

  // Measured again, independently: the size chosen fits, the next power of two does not.
  int64_t next_power = 1;
  while (next_power <= found.batch_size) next_power *= 2;
  const BatchSizeTrial again = frugal::measure_batch_size(task, data.x, data.y, found.batch_size,
                                                          BatchSizeFinderOptions(base));
  const BatchSizeTrial next = frugal::measure_batch_size(task, data.x, data.y, next_power, base);
  EXPECT_LE(static_cast<double>(again.bytes), budget);
  EXPECT_GT(static_cast<double>(next.bytes), budget);

  // Powers only: exactly 64.
  const auto powers = frugal::find_batch_size(
      task, data.x, data.y,
      BatchSizeFinderOptions().budget_bytes(budget).mode(frugal::BatchSizeSearch::kPower));
  EXPECT_EQ(powers.batch_size, 64);
  EXPECT_EQ(powers.trials.back().batch_size, 128);
}

TEST(BatchSizeFinder, SearchLeavesModelOptimizerAndRngBitwiseUnchanged) {
  auto data = images(64);
  torch::manual_seed(3);
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)),
                            torch::nn::BatchNorm2d(8), torch::nn::ReLU(), torch::nn::Flatten(),
                            torch::nn::Dropout(0.3), torch::nn::Linear(8 * 16 * 16, 10));
  frugal::Classifier task(net, frugal::Adam(1e-2));
  frugal::OptimizerConfig config = task.configure_optimizers();
  auto& optimizer = *config.optimizer;
  // One real step first, so the optimizer has state and the BatchNorm statistics have moved.
  auto loss = torch::nn::functional::cross_entropy(net->forward(data.x.narrow(0, 0, 8)),
                                                   data.y.narrow(0, 0, 8));
  loss.backward();
  optimizer.step();  // the gradients stay (not zeroed): the search must leave them as they are
  net->eval();
  std::vector<at::Tensor> grads;
  for (const auto& p : net->parameters()) grads.push_back(p.grad().clone());

  const std::string params = frugal::params_sha256(*net);
  std::vector<at::Tensor> buffers;
  for (const auto& b : net->buffers()) buffers.push_back(b.clone());
  const std::vector<at::Tensor> state = optimizer_state(optimizer);
  ASSERT_EQ(state.size(), 3u * net->parameters().size());
  const at::Tensor rng = cpu_rng_state();

  const auto found = frugal::find_batch_size(task, optimizer, data.x, data.y,
                                             BatchSizeFinderOptions().budget_bytes(1e12));
  EXPECT_EQ(found.batch_size, 64);  // everything fits: up to max_size (all samples)

  EXPECT_EQ(frugal::params_sha256(*net), params);
  std::vector<at::Tensor> buffers_after;
  for (const auto& b : net->buffers()) buffers_after.push_back(b);
  expect_bitwise_equal(buffers_after, buffers);
  expect_bitwise_equal(optimizer_state(optimizer), state);
  EXPECT_TRUE(torch::equal(cpu_rng_state(), rng));
  EXPECT_FALSE(net->is_training());
  std::vector<at::Tensor> grads_after;
  for (const auto& p : net->parameters()) grads_after.push_back(p.grad());
  expect_bitwise_equal(grads_after, grads);
  EXPECT_DOUBLE_EQ(
      static_cast<torch::optim::AdamOptions&>(optimizer.param_groups()[0].options()).lr(), 1e-2);
}

// Throws the error the CUDA allocator throws, from inside a step, for batches above `limit`, in
// the second step of a trial (after the first one has changed parameters and optimizer state).
struct OomAbove : frugal::Classifier {
  OomAbove(torch::nn::Sequential net, int64_t limit)
      : frugal::Classifier(net, frugal::Adam(1e-2)), limit_(limit) {}
  at::Tensor training_step(const frugal::Batch& b, frugal::StepContext& ctx) override {
    at::Tensor loss = frugal::Classifier::training_step(b, ctx);
    if (b.size() > limit_ && ++calls_ % 2 == 0) {
      TORCH_CHECK_WITH(OutOfMemoryError, false,
                       "CUDA out of memory. Tried to allocate 2.00 GiB (injected)");
    }
    return loss;
  }
  int64_t limit_;
  int64_t calls_ = 0;
};

struct FailAbove : frugal::Classifier {
  explicit FailAbove(torch::nn::Sequential net) : frugal::Classifier(net, frugal::Adam(1e-2)) {}
  at::Tensor training_step(const frugal::Batch& b, frugal::StepContext& ctx) override {
    at::Tensor loss = frugal::Classifier::training_step(b, ctx);
    TORCH_CHECK(b.size() <= 4, "a bug in the user's step");
    return loss;
  }
};

TEST(BatchSizeFinder, OutOfMemoryIsCaughtStateRestoredAndSearchGoesOn) {
  auto data = images(128);
  OomAbove task(conv_net(), 40);
  auto config = task.configure_optimizers();
  const std::string params = frugal::params_sha256(task.module());
  const auto found =
      frugal::find_batch_size(task, *config.optimizer, data.x, data.y,
                              BatchSizeFinderOptions().budget_bytes(1e12).warmup(false));
  std::cout << found.describe();
  EXPECT_EQ(found.batch_size, 40);
  ASSERT_GE(found.trials.size(), 7u);
  EXPECT_EQ(found.trials[6].batch_size, 64);
  EXPECT_EQ(found.trials[6].outcome, BatchSizeTrial::Outcome::kOutOfMemory);
  EXPECT_EQ(found.trials[6].bytes, -1);
  EXPECT_NE(found.describe().find("out of memory"), std::string::npos);
  EXPECT_EQ(frugal::params_sha256(task.module()), params);
  EXPECT_TRUE(config.optimizer->state().empty());

  // Any other error is the user's: it propagates, and the state is still restored.
  FailAbove failing(conv_net());
  auto config2 = failing.configure_optimizers();
  const std::string params2 = frugal::params_sha256(failing.module());
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "a bug in the user's step", error_message([&] {
                        frugal::find_batch_size(failing, *config2.optimizer, data.x, data.y,
                                                BatchSizeFinderOptions().budget_bytes(1e12));
                      }));
  EXPECT_EQ(frugal::params_sha256(failing.module()), params2);
  EXPECT_TRUE(config2.optimizer->state().empty());
}

TEST(BatchSizeFinder, CompatRecognisesOutOfMemoryErrors) {
  auto thrown = [](auto f) -> bool {
    try {
      f();
    } catch (const std::exception& e) {
      return frugal::compat::is_out_of_memory(e);
    }
    return false;
  };
  EXPECT_TRUE(thrown([] { TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory."); }));
  EXPECT_TRUE(thrown([] { TORCH_CHECK(false, "CUDA error: out of memory"); }));
  EXPECT_TRUE(thrown([] { TORCH_CHECK(false, "DefaultCPUAllocator: not enough memory: ..."); }));
  EXPECT_FALSE(thrown([] { TORCH_CHECK(false, "shape mismatch"); }));
  EXPECT_FALSE(thrown([] { throw std::runtime_error("out of memory"); }));  // not from LibTorch
}

// Trains `task` on `data` with micro-batch `micro` and accumulation `k`, one epoch, seeded.
std::string train(frugal::Classifier& task, const Images& data, int64_t micro, int64_t k) {
  frugal::Trainer trainer(
      frugal::testing::quiet_options().max_epochs(2).seed(7).accumulate_grad_batches(k));
  auto loader = std::make_shared<frugal::TensorLoader>(
      data.x, data.y, frugal::TensorLoaderOptions(micro).shuffle(true).seed(5).prefetch(false));
  trainer.fit(task, loader);
  return frugal::params_sha256(task.module());
}

TEST(BatchSizeFinder, BudgetPlanTrainsExactlyLikeTheSameSettingsByHand) {
  FRUGAL_SKIP_UNDER_ASAN();
  auto data = images(320);  // 320 = 256 + 64: the epoch ends in a short window
  frugal::Classifier probe(conv_net(), frugal::Adam(1e-3));
  const auto base = BatchSizeFinderOptions().budget_bytes(1e12);
  const auto m32 = frugal::measure_batch_size(probe, data.x, data.y, 32, base);
  const auto m64 = frugal::measure_batch_size(probe, data.x, data.y, 64, base);
  const double budget = 0.5 * static_cast<double>(m32.bytes + m64.bytes);

  frugal::Classifier planned(conv_net(), frugal::Adam(1e-3));
  const frugal::BudgetPlan plan = frugal::plan_budget(planned, data.x, data.y, budget, 256);
  std::cout << plan.describe() << "\n";
  EXPECT_GE(plan.search.batch_size, 32);
  EXPECT_LT(plan.search.batch_size, 64);
  // 256 = 32 x 8: the largest divisor of 256 not above the size found.
  EXPECT_EQ(plan.micro_batch, 32);
  EXPECT_EQ(plan.accumulate, 8);
  EXPECT_EQ(plan.micro_batch * plan.accumulate * plan.world_size, 256);
  EXPECT_NE(plan.describe().find("x accumulate_grad_batches 8"), std::string::npos);

  // The task the plan searched on (trials run on it) trains bit for bit like an untouched one
  // with the same settings set by hand.
  const std::string by_plan = train(planned, data, plan.micro_batch, plan.accumulate);
  frugal::Classifier by_hand_task(conv_net(), frugal::Adam(1e-3));
  EXPECT_EQ(by_plan, train(by_hand_task, data, 32, 8));
}

TEST(BatchSizeFinder, BudgetPlanSplitsTheEffectiveBatchOverRanks) {
  auto data = images(64);
  frugal::Classifier task(conv_net(), frugal::Adam(1e-3));
  // Everything fits: the per-rank batch 48 / 2 = 24 needs no accumulation.
  const auto plan = frugal::plan_budget(task, data.x, data.y, 1e12, 48, 2);
  EXPECT_EQ(plan.micro_batch, 24);
  EXPECT_EQ(plan.accumulate, 1);
  EXPECT_EQ(plan.search.batch_size, 24);  // never searched above the per-rank batch
  EXPECT_NE(plan.describe().find("no accumulation"), std::string::npos);
}

TEST(BatchSizeFinder, CallbackSearchesAtFitStartWithoutChangingTraining) {
  auto data = frugal::testing::make_toy_data(96);
  auto make = [] {
    torch::manual_seed(0);
    return torch::nn::Sequential(torch::nn::Linear(8, 16), torch::nn::ReLU(),
                                 torch::nn::Linear(16, 3));
  };
  auto fit = [&](std::vector<std::shared_ptr<frugal::Callback>> callbacks) {
    frugal::Classifier task(make(), frugal::Adam(1e-2));
    frugal::Trainer trainer(frugal::testing::quiet_options().max_epochs(2).seed(1),
                            std::move(callbacks));
    trainer.fit(task, std::make_shared<frugal::TensorLoader>(
                          data.x, data.y, frugal::TensorLoaderOptions(16).shuffle(true)));
    return frugal::params_sha256(task.module());
  };
  auto finder = std::make_shared<frugal::BatchSizeFinder>(
      data.x, data.y, BatchSizeFinderOptions().budget_bytes(1e12).max_size(64));
  const std::string with_finder = fit({finder});
  EXPECT_EQ(finder->result().batch_size, 64);
  EXPECT_EQ(with_finder, fit({}));
}

}  // namespace
