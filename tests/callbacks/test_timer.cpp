// Timer: the wall-clock budget, its stop reason, and the elapsed time kept across a resume.
#include <frugal/frugal.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "test_support.h"

using frugal::testing::error_message;
using frugal::testing::quiet_options;
using frugal::testing::temp_dir;

namespace {

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

frugal::Classifier small_task() {
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  return frugal::Classifier(net, frugal::SGD(0.1));
}

struct SlowBatches : frugal::Callback {
  explicit SlowBatches(int ms) : ms(ms) {}
  void on_train_batch_end(frugal::Trainer&, frugal::Task&, const at::Tensor&, const frugal::Batch&,
                          int64_t) override {
    ++batches;
    sleep_ms(ms);
  }
  int ms;
  int64_t batches = 0;
};

}  // namespace

TEST(Timer, RefusesANonPositiveBudget) {
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "max_seconds must be > 0, got 0",
                      error_message([] { frugal::Timer timer(0.0); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "got -1",
                      error_message([] { frugal::Timer timer(-1.0); }));
}

TEST(Timer, StateKeyAndStateDictRoundTrip) {
  frugal::Timer timer(10.0);
  EXPECT_EQ(timer.state_key(), "Timer");
  EXPECT_EQ(timer.elapsed_seconds(), 0.0);
  timer.load_state_dict({{"elapsed_seconds", 4.5}});
  EXPECT_EQ(timer.elapsed_seconds(), 4.5);
  const frugal::StateDict state = timer.state_dict();
  ASSERT_EQ(state.count("elapsed_seconds"), 1u);
  EXPECT_EQ(state.at("elapsed_seconds").toDouble(), 4.5);
  EXPECT_EQ(timer.max_seconds(), 10.0);
}

TEST(Timer, LoadRefusesAStateWithoutElapsedSeconds) {
  frugal::Timer timer(10.0);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "elapsed_seconds",
                      error_message([&] { timer.load_state_dict({}); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "elapsed_seconds", error_message([&] {
                        timer.load_state_dict({{"elapsed_seconds", std::string("1")}});
                      }));
}

TEST(Timer, RequestsAStopOnceTheBudgetIsUsed) {
  frugal::Trainer trainer(quiet_options(temp_dir("timer_hooks")));
  auto task = small_task();
  frugal::Timer timer(0.05);
  timer.on_train_start(trainer, task);
  timer.on_train_batch_end(trainer, task, at::Tensor(), frugal::Batch{}, 0);
  EXPECT_FALSE(trainer.state().should_stop) << "a fresh budget";
  sleep_ms(70);
  timer.on_train_batch_end(trainer, task, at::Tensor(), frugal::Batch{}, 1);
  ASSERT_TRUE(trainer.state().should_stop);
  EXPECT_EQ(trainer.state().stop_reason.rfind("max_time of 0.05 s reached after 0.", 0), 0u)
      << trainer.state().stop_reason;
  EXPECT_GE(timer.elapsed_seconds(), 0.07);
}

TEST(Timer, ElapsedTimeStopsAtTrainEndAndContinuesAfterAResume) {
  frugal::Trainer trainer(quiet_options(temp_dir("timer_resume")));
  auto task = small_task();
  frugal::Timer first(1.0);
  first.on_train_start(trainer, task);
  sleep_ms(30);
  first.on_train_end(trainer, task);
  const double used = first.elapsed_seconds();
  EXPECT_GE(used, 0.03);
  sleep_ms(20);
  EXPECT_EQ(first.elapsed_seconds(), used) << "no time counts outside training";

  // A resumed run that has used 0.95 s of a 1 s budget stops after 50 ms more.
  frugal::Timer resumed(1.0);
  resumed.load_state_dict({{"elapsed_seconds", 0.95}});
  resumed.on_train_start(trainer, task);
  resumed.on_train_batch_end(trainer, task, at::Tensor(), frugal::Batch{}, 0);
  EXPECT_FALSE(trainer.state().should_stop);
  sleep_ms(70);
  resumed.on_train_batch_end(trainer, task, at::Tensor(), frugal::Batch{}, 1);
  EXPECT_TRUE(trainer.state().should_stop);
  EXPECT_GE(resumed.elapsed_seconds(), 1.0);
  EXPECT_LT(resumed.elapsed_seconds(), 10.0);
}

TEST(Timer, StopsAFitMidEpoch) {
  auto toy = frugal::testing::make_toy_data(64);
  auto train = std::make_shared<frugal::TensorLoader>(toy.x, toy.y, frugal::TensorLoaderOptions(8));
  auto task = small_task();
  auto timer = std::make_shared<frugal::Timer>(0.15);
  auto slow = std::make_shared<SlowBatches>(20);
  frugal::Trainer trainer(quiet_options(temp_dir("timer_fit")).max_epochs(100), {timer, slow});
  trainer.fit(task, train);

  EXPECT_EQ(trainer.state().stop_reason.rfind("max_time of 0.15 s reached after ", 0), 0u)
      << trainer.state().stop_reason;
  // The Timer checks before SlowBatches sleeps, so at batch k it has seen >= 20 (k - 1) ms: the
  // 0.15 s budget is used up by batch 9 at the latest, however slow the machine.
  EXPECT_GE(slow->batches, 2);
  EXPECT_LE(slow->batches, 9);
  EXPECT_EQ(trainer.state().global_step, slow->batches);
  EXPECT_GE(timer->elapsed_seconds(), 0.15);
  EXPECT_LT(timer->elapsed_seconds(), 5.0);
}
