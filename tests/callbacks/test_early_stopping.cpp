// EarlyStopping: each option against a scripted metric sequence and the epoch it must stop at.
//
// The task logs one scripted value per epoch as "val/loss" from its validation step (and as
// "train/metric" from its training step), so every expectation below is computed by hand.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "test_support.h"

namespace {

using frugal::Batch;
using frugal::EarlyStopping;
using frugal::EarlyStoppingOptions;
using frugal::Trainer;
using ::testing::HasSubstr;

const double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Logs values[epoch + offset] (the last value once past the end) as "val/loss" in validation
/// and as "train/metric" (epoch value) in training. The module trains for real (SGD on a tiny
/// regression with a BatchNorm), so its parameters and buffers change every epoch.
struct ScriptedTask : frugal::Task {
  torch::nn::Sequential net;
  std::vector<double> values;
  int64_t offset = 0;

  explicit ScriptedTask(std::vector<double> v, int64_t epoch_offset = 0)
      : values(std::move(v)), offset(epoch_offset) {
    torch::manual_seed(0);
    net = torch::nn::Sequential(torch::nn::Linear(2, 4), torch::nn::BatchNorm1d(4),
                                torch::nn::Linear(4, 1));
  }
  double value(const frugal::StepContext& ctx) const {
    const auto i = static_cast<size_t>(ctx.trainer().state().epoch + offset);
    return values[std::min(i, values.size() - 1)];
  }
  torch::nn::Module& module() override { return *net; }
  at::Tensor training_step(const Batch& b, frugal::StepContext& ctx) override {
    at::Tensor loss = (net->forward(b.data).squeeze(1) - b.target).pow(2).mean();
    ctx.log("train/loss", loss.detach());
    ctx.log("train/metric", value(ctx), frugal::LogOptions().on_step(false).on_epoch(true));
    return loss;
  }
  void validation_step(const Batch&, frugal::StepContext& ctx) override {
    ctx.log("val/loss", value(ctx));
  }
  frugal::OptimizerConfig configure_optimizers() override { return frugal::SGD(0.05)(*net); }
};

std::shared_ptr<frugal::TensorLoader> data(int64_t n = 8, int64_t batch_size = 4) {
  auto gen = at::detail::createCPUGenerator(1);
  at::Tensor x = torch::randn({n, 2}, gen);
  return std::make_shared<frugal::TensorLoader>(x, x.sum(1),
                                                frugal::TensorLoaderOptions(batch_size));
}

/// Silent options (messages go to `out` when given).
EarlyStoppingOptions quiet(const std::string& monitor, std::ostream* out = nullptr) {
  return EarlyStoppingOptions(monitor).verbose(out != nullptr).log_stream(out);
}

frugal::TrainerOptions opts(int64_t max_epochs) {
  return frugal::testing::quiet_options().max_epochs(max_epochs);
}

/// Fits `task` with `es` on 2 training batches and 1 validation batch per epoch.
Trainer& fit(Trainer& trainer, ScriptedTask& task, bool with_val = true) {
  trainer.fit(task, data(), with_val ? data(4, 4) : nullptr);
  return trainer;
}

/// Counts the validation runs of a fit.
struct CountValidations : frugal::Callback {
  int64_t n = 0;
  void on_validation_end(Trainer& t, frugal::Task&) override {
    if (!t.state().sanity_checking) ++n;
  }
};

TEST(EarlyStopping, PatienceCountsNonImprovingChecksAndEqualIsNotBetter) {
  // checks: 1.0 best, 0.5 best, 0.5 equal (wait 1), 0.75 (wait 2 = patience) -> stop at epoch 3.
  ScriptedTask task({1.0, 0.5, 0.5, 0.75, 0.25});
  auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(2));
  Trainer trainer(opts(10), {es});
  fit(trainer, task);
  EXPECT_EQ(trainer.state().epoch, 4);  // epochs 0..3 ran
  EXPECT_EQ(es->stopped_epoch(), 3);
  EXPECT_EQ(es->wait_count(), 2);
  EXPECT_EQ(es->best_score(), 0.5);
  EXPECT_EQ(es->best_epoch(), 1);
  EXPECT_THAT(es->stopping_reason(), HasSubstr("val/loss did not improve in the last 2 checks"));
  EXPECT_EQ(trainer.state().stop_reason, "EarlyStopping: " + es->stopping_reason());
}

TEST(EarlyStopping, PatienceZeroStopsAtTheFirstNonImprovingCheck) {
  ScriptedTask task({1.0, 0.5, 0.75});
  auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(0));
  Trainer trainer(opts(10), {es});
  fit(trainer, task);
  EXPECT_EQ(es->stopped_epoch(), 2);
  EXPECT_EQ(trainer.state().epoch, 3);
}

TEST(EarlyStopping, NoStopWhenTheMetricKeepsImproving) {
  ScriptedTask task({1.0, 0.75, 0.5, 0.25, 0.125});
  auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(1));
  Trainer trainer(opts(5), {es});
  fit(trainer, task);
  EXPECT_EQ(trainer.state().epoch, 5);
  EXPECT_FALSE(trainer.state().should_stop);
  EXPECT_EQ(es->stopped_epoch(), -1);
  EXPECT_EQ(es->stopping_reason(), "");
  EXPECT_EQ(es->best_score(), 0.125);
}

TEST(EarlyStopping, MinDeltaImprovementMustBeStrictlyLargerThanDelta) {
  // min_delta 0.25 (values exact in binary): 1.0 -> 0.75 improves by exactly 0.25: not enough.
  {
    ScriptedTask task({1.0, 0.75});
    auto es = std::make_shared<EarlyStopping>(quiet("val/loss").min_delta(0.25).patience(1));
    Trainer trainer(opts(10), {es});
    fit(trainer, task);
    EXPECT_EQ(es->stopped_epoch(), 1);
    EXPECT_EQ(es->best_score(), 1.0);
  }
  // 1.0 -> 0.5 improves by 0.5: new best; 0.5 -> 0.375 by 0.125: not; stop at epoch 2.
  {
    ScriptedTask task({1.0, 0.5, 0.375});
    auto es = std::make_shared<EarlyStopping>(quiet("val/loss").min_delta(0.25).patience(1));
    Trainer trainer(opts(10), {es});
    fit(trainer, task);
    EXPECT_EQ(es->stopped_epoch(), 2);
    EXPECT_EQ(es->best_score(), 0.5);
  }
  // Small steps do not move the best: 0.875 and 0.75 are not > 0.25 below 1.0, 0.625 is; then
  // three flat checks reach patience 3 at epoch 6.
  {
    ScriptedTask task({1.0, 0.875, 0.75, 0.625, 0.625});
    auto es = std::make_shared<EarlyStopping>(quiet("val/loss").min_delta(0.25).patience(3));
    Trainer trainer(opts(20), {es});
    fit(trainer, task);
    EXPECT_EQ(es->best_score(), 0.625);
    EXPECT_EQ(es->best_epoch(), 3);
    EXPECT_EQ(es->stopped_epoch(), 6);
    EXPECT_EQ(trainer.state().epoch, 7);
  }
}

TEST(EarlyStopping, ModeMaxWantsHigherValues) {
  // 0.5 best, 0.75 best, 0.75 (wait 1), 0.625 (wait 2) -> stop at epoch 3.
  for (auto options :
       {quiet("val/loss").patience(2).mode_max(), quiet("val/loss").patience(2).mode("max")}) {
    ScriptedTask task({0.5, 0.75, 0.75, 0.625, 0.875});
    auto es = std::make_shared<EarlyStopping>(options);
    Trainer trainer(opts(10), {es});
    fit(trainer, task);
    EXPECT_EQ(es->stopped_epoch(), 3);
    EXPECT_EQ(es->best_score(), 0.75);
  }
  // min_delta in max mode: 0.5 -> 0.75 is exactly 0.25 more: not an improvement.
  ScriptedTask task({0.5, 0.75});
  auto es =
      std::make_shared<EarlyStopping>(quiet("val/loss").patience(1).mode_max().min_delta(0.25));
  Trainer trainer(opts(10), {es});
  fit(trainer, task);
  EXPECT_EQ(es->stopped_epoch(), 1);
  EXPECT_EQ(es->best_score(), 0.5);
}

TEST(EarlyStopping, CheckFiniteStopsAtTheFirstNaN) {
  ScriptedTask task({1.0, 0.5, kNaN, 0.25});
  auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(10));
  Trainer trainer(opts(10), {es});
  fit(trainer, task);
  EXPECT_EQ(es->stopped_epoch(), 2);
  EXPECT_EQ(trainer.state().epoch, 3);
  EXPECT_THAT(es->stopping_reason(), HasSubstr("val/loss = nan is not finite"));
  EXPECT_THAT(es->stopping_reason(), HasSubstr("Previous best value was 0.5"));
}

TEST(EarlyStopping, WithoutCheckFiniteANaNCountsAsNoImprovement) {
  // NaN compares false, so it is a non-improving check: patience 1 stops at epoch 2 anyway, but
  // for patience, not for the NaN.
  ScriptedTask task({1.0, 0.5, kNaN, 0.25});
  auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(1).check_finite(false));
  Trainer trainer(opts(10), {es});
  fit(trainer, task);
  EXPECT_EQ(es->stopped_epoch(), 2);
  EXPECT_THAT(es->stopping_reason(), HasSubstr("did not improve in the last 1 checks"));
  // With patience 2 the NaN is forgiven once, and 0.25 is a new best.
  ScriptedTask task2({1.0, 0.5, kNaN, 0.25});
  auto es2 = std::make_shared<EarlyStopping>(quiet("val/loss").patience(2).check_finite(false));
  Trainer trainer2(opts(4), {es2});
  fit(trainer2, task2);
  EXPECT_EQ(trainer2.state().epoch, 4);
  EXPECT_EQ(es2->stopped_epoch(), -1);
  EXPECT_EQ(es2->best_score(), 0.25);
}

TEST(EarlyStopping, StoppingThresholdStopsWhenStrictlyBetter) {
  // threshold 0.5 (min): 0.5 is not < 0.5; 0.25 is -> stop at epoch 3 despite improving.
  ScriptedTask task({1.0, 0.75, 0.5, 0.25, 0.125});
  auto es =
      std::make_shared<EarlyStopping>(quiet("val/loss").patience(100).stopping_threshold(0.5));
  Trainer trainer(opts(10), {es});
  fit(trainer, task);
  EXPECT_EQ(es->stopped_epoch(), 3);
  EXPECT_EQ(es->stopping_reason(), "Stopping threshold reached: val/loss = 0.25 < 0.5.");
  // max mode: stop once above.
  ScriptedTask up({0.25, 0.5, 0.75, 1.0});
  auto es_max = std::make_shared<EarlyStopping>(
      quiet("val/loss").patience(100).mode_max().stopping_threshold(0.5));
  Trainer trainer_max(opts(10), {es_max});
  fit(trainer_max, up);
  EXPECT_EQ(es_max->stopped_epoch(), 2);
  EXPECT_EQ(es_max->stopping_reason(), "Stopping threshold reached: val/loss = 0.75 > 0.5.");
}

TEST(EarlyStopping, DivergenceThresholdStopsWhenStrictlyWorse) {
  // threshold 2 (min): 2 is not > 2; 3 is -> stop at epoch 3 (patience would not stop it yet).
  ScriptedTask task({1.0, 1.5, 2.0, 3.0});
  auto es =
      std::make_shared<EarlyStopping>(quiet("val/loss").patience(100).divergence_threshold(2.0));
  Trainer trainer(opts(10), {es});
  fit(trainer, task);
  EXPECT_EQ(es->stopped_epoch(), 3);
  EXPECT_EQ(es->stopping_reason(), "Divergence threshold reached: val/loss = 3 > 2.");
  // max mode: stop once below.
  ScriptedTask down({1.0, 0.5, 0.25});
  auto es_max = std::make_shared<EarlyStopping>(
      quiet("val/loss").patience(100).mode_max().divergence_threshold(0.5));
  Trainer trainer_max(opts(10), {es_max});
  fit(trainer_max, down);
  EXPECT_EQ(es_max->stopped_epoch(), 2);
  EXPECT_EQ(es_max->stopping_reason(), "Divergence threshold reached: val/loss = 0.25 < 0.5.");
}

TEST(EarlyStopping, PatienceCountsValidationChecksNotEpochs) {
  // Validation runs after epochs 1, 3, 5, 7 (check_val_every_n_epoch 2). Checks see 0.75 (best),
  // 0.5 (best), 0.625 (wait 1), 0.75 (wait 2) -> stop at epoch 7, not 5 as epochs would give.
  ScriptedTask task({1.0, 0.75, 1.0, 0.5, 1.0, 0.625, 1.0, 0.75, 1.0});
  auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(2));
  auto count = std::make_shared<CountValidations>();
  Trainer trainer(opts(20).check_val_every_n_epoch(2), {es, count});
  fit(trainer, task);
  EXPECT_EQ(es->stopped_epoch(), 7);
  EXPECT_EQ(trainer.state().epoch, 8);
  EXPECT_EQ(count->n, 4);
  EXPECT_EQ(es->best_epoch(), 3);
}

TEST(EarlyStopping, TwoValidationsPerEpochAreTwoChecks) {
  // val_check_interval 0.5 with 2 training batches: a check after each batch, both seeing the
  // epoch's value. Checks: 1.0 best, 1.0 (wait 1) | 1.0 (wait 2) -> asks to stop in epoch 1,
  // at its first check (the Trainer keeps the first reason it was given). As in Lightning, the
  // stop takes effect right after that validation: epoch 1's second batch is not trained.
  ScriptedTask task({1.0});
  auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(2));
  auto count = std::make_shared<CountValidations>();
  Trainer trainer(opts(10).val_check_interval(0.5), {es, count});
  fit(trainer, task);
  EXPECT_EQ(es->stopped_epoch(), 1);
  EXPECT_EQ(trainer.state().epoch, 1);
  EXPECT_EQ(trainer.state().global_step, 3);
  EXPECT_EQ(count->n, 3);
  EXPECT_THAT(trainer.state().stop_reason, HasSubstr("did not improve in the last 2 checks"));
}

TEST(EarlyStopping, ChecksAtTrainEpochEndWithATrainingMetric) {
  // No validation: by default (unset) the check runs at the training epoch end.
  // train/metric: 1.0 best, 0.75 best, 1.0 (wait 1), 1.0 (wait 2) -> stop at epoch 3.
  const std::vector<double> values = {1.0, 0.75, 1.0, 1.0, 0.5};
  {
    ScriptedTask task(values);
    auto es = std::make_shared<EarlyStopping>(quiet("train/metric").patience(2));
    Trainer trainer(opts(10), {es});
    fit(trainer, task, /*with_val=*/false);
    EXPECT_EQ(es->stopped_epoch(), 3);
  }
  // Explicitly true: at each training epoch end even though validation runs only every 2
  // epochs, so patience counts epochs here.
  {
    ScriptedTask task(values);
    auto es = std::make_shared<EarlyStopping>(
        quiet("train/metric").patience(2).check_on_train_epoch_end(true));
    Trainer trainer(opts(10).check_val_every_n_epoch(2), {es});
    fit(trainer, task);
    EXPECT_EQ(es->stopped_epoch(), 3);
    EXPECT_EQ(trainer.state().epoch, 4);
  }
  // Explicitly false and no validation: no check ever runs (a strict callback does not even
  // notice that val/loss is missing).
  {
    ScriptedTask task(values);
    auto es = std::make_shared<EarlyStopping>(
        quiet("val/loss").patience(0).check_on_train_epoch_end(false));
    Trainer trainer(opts(4), {es});
    fit(trainer, task, /*with_val=*/false);
    EXPECT_EQ(trainer.state().epoch, 4);
    EXPECT_EQ(es->stopped_epoch(), -1);
  }
  // Explicitly false with a training metric and validation every 2 epochs: checks only after the
  // 2 validations (epochs 1 and 3), which see 0.75 (best) and 1.0 (wait 1) -> no stop.
  {
    ScriptedTask task(values);
    auto es = std::make_shared<EarlyStopping>(
        quiet("train/metric").patience(2).check_on_train_epoch_end(false));
    Trainer trainer(opts(4).check_val_every_n_epoch(2), {es});
    fit(trainer, task);
    EXPECT_EQ(trainer.state().epoch, 4);
    EXPECT_EQ(es->wait_count(), 1);
  }
}

TEST(EarlyStopping, StrictMissingMetricIsAnErrorListingTheLoggedOnes) {
  ScriptedTask task({1.0});
  auto es = std::make_shared<EarlyStopping>(quiet("val/acc"));
  Trainer trainer(opts(3), {es});
  const std::string message = frugal::testing::error_message([&] { fit(trainer, task); });
  EXPECT_THAT(message, HasSubstr("EarlyStopping could not find the monitored metric \"val/acc\"; "
                                 "logged metrics: train/loss, train/metric, val/loss"));
  EXPECT_THAT(message, HasSubstr("strict(false)"));
}

TEST(EarlyStopping, NonStrictMissingMetricSkipsTheCheckAndWarnsOnce) {
  ScriptedTask task({1.0});
  std::ostringstream out;
  auto es = std::make_shared<EarlyStopping>(quiet("val/acc", &out).strict(false).patience(0));
  Trainer trainer(opts(4), {es});
  fit(trainer, task);
  EXPECT_EQ(trainer.state().epoch, 4);
  EXPECT_FALSE(trainer.state().should_stop);
  const std::string text = out.str();
  const std::string warning = "could not find the monitored metric \"val/acc\"";
  ASSERT_THAT(text, HasSubstr(warning));
  EXPECT_EQ(text.find(warning), text.rfind(warning)) << text;
}

TEST(EarlyStopping, MinEpochsIsHonoured) {
  // Flat metric, patience 1: asks to stop at epoch 1, but the Trainer runs to min_epochs 5.
  ScriptedTask task({1.0});
  auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(1));
  Trainer trainer(opts(10).min_epochs(5), {es});
  fit(trainer, task);
  EXPECT_EQ(trainer.state().epoch, 5);
  EXPECT_THAT(trainer.state().stop_reason, HasSubstr("did not improve in the last 1 checks"));
  EXPECT_EQ(es->wait_count(), 4);
  EXPECT_EQ(es->stopped_epoch(), 4);  // the last check that asked
}

TEST(EarlyStopping, SanityCheckAndFastDevRunAreSkipped) {
  // With the sanity check counted, the flat metric would stop at epoch 0 (patience 1).
  {
    ScriptedTask task({1.0});
    auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(1));
    Trainer trainer(opts(10).num_sanity_val_steps(1), {es});
    fit(trainer, task);
    EXPECT_EQ(es->stopped_epoch(), 1);
    EXPECT_EQ(trainer.state().epoch, 2);
  }
  // fast_dev_run: no check, so a strict callback on a missing metric raises nothing.
  {
    ScriptedTask task({1.0});
    auto es = std::make_shared<EarlyStopping>(quiet("missing/metric"));
    Trainer trainer(frugal::testing::quiet_options().fast_dev_run(1), {es});
    EXPECT_NO_THROW(fit(trainer, task));
    EXPECT_EQ(es->best_epoch(), -1);
  }
  // trainer.validate() outside fit is not a check either.
  {
    ScriptedTask task({1.0});
    auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(0));
    Trainer trainer(opts(1), {es});
    trainer.validate(task, data(4, 4));
    trainer.validate(task, data(4, 4));
    EXPECT_EQ(es->best_epoch(), -1);
    EXPECT_EQ(es->wait_count(), 0);
  }
}

TEST(EarlyStopping, VerboseReportsImprovementsAndTheReason) {
  ScriptedTask task({1.0, 0.5, 0.75});
  std::ostringstream out;
  auto es = std::make_shared<EarlyStopping>(quiet("val/loss", &out).patience(1));
  Trainer trainer(opts(10), {es});
  fit(trainer, task);
  EXPECT_EQ(out.str(),
            "EarlyStopping: Metric val/loss improved. New best score: 1\n"
            "EarlyStopping: Metric val/loss improved by 0.5 >= min_delta = 0. New best score: 0.5\n"
            "EarlyStopping: Monitored metric val/loss did not improve in the last 1 checks. Best "
            "score: 0.5 (epoch 1). Signaling Trainer to stop.\n");
}

/// Copies the module's parameters and buffers at the validation end of one epoch.
struct SnapshotAt : frugal::Callback {
  int64_t epoch;
  std::vector<at::Tensor> saved;
  explicit SnapshotAt(int64_t e) : epoch(e) {}
  void on_validation_end(Trainer& t, frugal::Task& task) override {
    if (t.state().epoch != epoch || t.state().sanity_checking) return;
    saved = state_of(task.module());
  }
  static std::vector<at::Tensor> state_of(torch::nn::Module& m) {
    std::vector<at::Tensor> out;
    for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
    for (const auto& b : m.buffers()) out.push_back(b.detach().clone());
    return out;
  }
};

bool same(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].equal(b[i])) return false;
  }
  return true;
}

TEST(EarlyStopping, RestoreBestWeightsLoadsTheBestEpochsParametersAndBuffers) {
  // Best at epoch 1; stops at epoch 3 (patience 2); the module ends with epoch 1's weights.
  const std::vector<double> values = {3.0, 1.0, 2.0, 2.0, 2.0};
  ScriptedTask task(values);
  auto es =
      std::make_shared<EarlyStopping>(quiet("val/loss").patience(2).restore_best_weights(true));
  auto best = std::make_shared<SnapshotAt>(1);
  auto last = std::make_shared<SnapshotAt>(3);
  Trainer trainer(opts(10), {es, best, last});
  fit(trainer, task);
  EXPECT_EQ(es->stopped_epoch(), 3);
  ASSERT_FALSE(best->saved.empty());
  ASSERT_FALSE(last->saved.empty());
  EXPECT_FALSE(same(best->saved, last->saved));  // training did move the weights
  EXPECT_TRUE(es->restored_best_weights());
  EXPECT_TRUE(same(SnapshotAt::state_of(*task.net), best->saved));

  // Off: the last weights stay.
  ScriptedTask task2(values);
  auto es2 = std::make_shared<EarlyStopping>(quiet("val/loss").patience(2));
  auto last2 = std::make_shared<SnapshotAt>(3);
  Trainer trainer2(opts(10), {es2, last2});
  fit(trainer2, task2);
  EXPECT_FALSE(es2->restored_best_weights());
  EXPECT_TRUE(same(SnapshotAt::state_of(*task2.net), last2->saved));
}

TEST(EarlyStopping, RestoreBestWeightsAlsoWhenTrainingEndsWithoutAStop) {
  // Unlike Keras, the best weights are restored at the end of fit even when max_epochs ended it.
  ScriptedTask task({3.0, 1.0, 2.0, 2.0});
  auto es =
      std::make_shared<EarlyStopping>(quiet("val/loss").patience(100).restore_best_weights(true));
  auto best = std::make_shared<SnapshotAt>(1);
  Trainer trainer(opts(4), {es, best});
  fit(trainer, task);
  EXPECT_FALSE(trainer.state().should_stop);
  EXPECT_TRUE(es->restored_best_weights());
  EXPECT_TRUE(same(SnapshotAt::state_of(*task.net), best->saved));
}

/// Saves and loads a StateDict through LibTorch's pickler, as a checkpoint does.
frugal::StateDict through_pickle(const frugal::StateDict& state) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [k, v] : state) dict.insert(k, v);
  std::vector<char> bytes = torch::jit::pickle_save(dict);
  frugal::StateDict out;
  for (const auto& e : torch::jit::pickle_load(bytes).toGenericDict()) {
    out[e.key().toStringRef()] = e.value();
  }
  return out;
}

TEST(EarlyStopping, StateRoundTripStopsAtTheSameCheckAsAnUninterruptedRun) {
  // Uninterrupted: 5, 4, 3 (best), 3.5 (w1), 3.25 (w2), 3.125 (w3) -> stop at epoch 5.
  const std::vector<double> values = {5.0, 4.0, 3.0, 3.5, 3.25, 3.125, 3.0, 2.0};
  ScriptedTask whole(values);
  auto es = std::make_shared<EarlyStopping>(quiet("val/loss").patience(3));
  Trainer t_whole(opts(20), {es});
  fit(t_whole, whole);
  ASSERT_EQ(es->stopped_epoch(), 5);

  // Interrupted after 4 epochs (wait 1), state saved, a fresh callback continues from epoch 4.
  ScriptedTask first(values);
  auto es_a = std::make_shared<EarlyStopping>(quiet("val/loss").patience(3));
  Trainer t_a(opts(4), {es_a});
  fit(t_a, first);
  ASSERT_EQ(es_a->wait_count(), 1);
  const frugal::StateDict state = through_pickle(es_a->state_dict());
  EXPECT_EQ(state.at("wait_count").toInt(), 1);
  EXPECT_EQ(state.at("best_score").toDouble(), 3.0);
  EXPECT_EQ(state.at("patience").toInt(), 3);
  EXPECT_EQ(state.at("stopped_epoch").toInt(), -1);

  ScriptedTask second(values, /*epoch_offset=*/4);
  auto es_b = std::make_shared<EarlyStopping>(quiet("val/loss").patience(3));
  es_b->load_state_dict(state);
  Trainer t_b(opts(20), {es_b});
  fit(t_b, second);
  EXPECT_EQ(es_b->stopped_epoch() + 4, es->stopped_epoch());  // same check: global epoch 5
  EXPECT_EQ(es_b->stopping_reason(), es->stopping_reason());
  EXPECT_EQ(es_b->wait_count(), es->wait_count());

  // Without the state, the continuation would not stop there (3.25 would be a new best).
  ScriptedTask third(values, 4);
  auto es_c = std::make_shared<EarlyStopping>(quiet("val/loss").patience(3));
  Trainer t_c(opts(20), {es_c});
  fit(t_c, third);
  EXPECT_NE(es_c->stopped_epoch() + 4, es->stopped_epoch());

  // A fresh state (best score +inf) round-trips too.
  auto es_fresh = std::make_shared<EarlyStopping>(quiet("val/loss"));
  es_fresh->load_state_dict(through_pickle(EarlyStopping(quiet("val/loss")).state_dict()));
  EXPECT_EQ(es_fresh->best_score(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(es_fresh->stopped_epoch(), -1);

  // A stopped state round-trips its reason and epoch.
  auto es_d = std::make_shared<EarlyStopping>(quiet("val/loss").patience(3));
  es_d->load_state_dict(through_pickle(es->state_dict()));
  EXPECT_EQ(es_d->stopped_epoch(), 5);
  EXPECT_EQ(es_d->stopping_reason(), es->stopping_reason());
  EXPECT_EQ(es_d->best_score(), 3.0);
  EXPECT_EQ(es_d->best_epoch(), 2);
}

TEST(EarlyStopping, ResumeFromATrainerCheckpointStopsAtTheSameEpoch) {
  // As above, through the Trainer: 4 epochs, a checkpoint, then a new Trainer and callback
  // resume from it and stop at epoch 5 like the uninterrupted run.
  const std::vector<double> values = {5.0, 4.0, 3.0, 3.5, 3.25, 3.125, 3.0, 2.0};
  const std::string path = frugal::testing::temp_dir("early_stopping_resume") + "/last.ckpt";
  ScriptedTask first(values);
  auto es_a = std::make_shared<EarlyStopping>(quiet("val/loss").patience(3));
  Trainer t_a(opts(4), {es_a});
  fit(t_a, first);
  t_a.save_checkpoint(path);

  ScriptedTask second(values);
  auto es_b = std::make_shared<EarlyStopping>(quiet("val/loss").patience(3));
  Trainer t_b(opts(20), {es_b});
  t_b.fit(second, data(), data(4, 4), path);
  EXPECT_EQ(es_b->stopped_epoch(), 5);
  EXPECT_EQ(t_b.state().epoch, 6);
  EXPECT_EQ(es_b->best_score(), 3.0);
  EXPECT_EQ(es_b->best_epoch(), 2);
}

TEST(EarlyStopping, BestWeightsSurviveTheStateRoundTrip) {
  // Run A: best at epoch 1, state saved after epoch 2. Run B continues without a new best, and
  // ends with run A's epoch-1 weights.
  ScriptedTask first({3.0, 1.0, 2.0});
  auto es_a =
      std::make_shared<EarlyStopping>(quiet("val/loss").patience(100).restore_best_weights(true));
  auto best = std::make_shared<SnapshotAt>(1);
  Trainer t_a(opts(3), {es_a, best});
  fit(t_a, first);
  const frugal::StateDict state = through_pickle(es_a->state_dict());
  ASSERT_EQ(state.count("best_weights/0.weight"), 1u);
  ASSERT_EQ(state.count("best_weights/1.running_mean"), 1u);
  EXPECT_TRUE(state.at("best_weights/0.weight").toTensor().device().is_cpu());

  ScriptedTask second({3.0, 1.0, 2.0}, /*epoch_offset=*/2);
  auto es_b =
      std::make_shared<EarlyStopping>(quiet("val/loss").patience(100).restore_best_weights(true));
  es_b->load_state_dict(state);
  Trainer t_b(opts(2), {es_b});
  fit(t_b, second);
  EXPECT_TRUE(es_b->restored_best_weights());
  EXPECT_EQ(es_b->best_epoch(), 1);
  EXPECT_TRUE(same(SnapshotAt::state_of(*second.net), best->saved));
  // Without restore_best_weights, no tensors are saved.
  EXPECT_EQ(EarlyStopping(quiet("val/loss")).state_dict().count("best_weights/0.weight"), 0u);
}

TEST(EarlyStopping, StateKeyNamesMonitorAndMode) {
  EarlyStopping a(quiet("val/loss"));
  EarlyStopping b(quiet("val/loss").mode_max());
  EarlyStopping c(quiet("val/acc"));
  EXPECT_EQ(a.state_key(), "EarlyStopping{monitor=val/loss, mode=min}");
  EXPECT_NE(a.state_key(), b.state_key());
  EXPECT_NE(a.state_key(), c.state_key());
  EXPECT_EQ(EarlyStopping("val/loss").options().patience(), 3);
}

TEST(EarlyStopping, BadOptionsAreRefusedNamingTheOption) {
  auto message = [](EarlyStoppingOptions o) {
    return frugal::testing::error_message([&] { EarlyStopping es(o); });
  };
  EXPECT_THAT(message(EarlyStoppingOptions("val/loss").patience(-1)),
              HasSubstr("patience must be >= 0, got -1"));
  EXPECT_THAT(message(EarlyStoppingOptions("val/loss").min_delta(-0.5)),
              HasSubstr("min_delta must be >= 0, got -0.5"));
  EXPECT_THAT(message(EarlyStoppingOptions("val/loss").mode("avg")),
              HasSubstr("mode must be \"min\" or \"max\", got \"avg\""));
  EXPECT_THAT(message(EarlyStoppingOptions("")), HasSubstr("monitor must name a logged metric"));
  EXPECT_THAT(message(EarlyStoppingOptions("val/loss").stopping_threshold(kNaN)),
              HasSubstr("stopping_threshold must be a number"));
}

TEST(EarlyStopping, LoadStateDictRefusesIncompleteState) {
  EarlyStopping es(quiet("val/loss"));
  EXPECT_THAT(frugal::testing::error_message([&] { es.load_state_dict({}); }),
              HasSubstr("checkpoint state has no 'wait_count'"));
}

}  // namespace
