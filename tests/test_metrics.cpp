// Metrics: naming, stage defaults, batch-size weighted epoch means, reductions, logger queues.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test_support.h"

namespace {

using frugal::LogOptions;
using frugal::Metrics;
using frugal::Stage;

TEST(Metrics, TrainingDefaultsToStepValidationToEpoch) {
  Metrics m;
  m.set_context(Stage::kTrain, 4);
  m.log("train/loss", at::scalar_tensor(2.0));
  EXPECT_DOUBLE_EQ(m.get("train/loss").value(), 2.0);
  m.set_context(Stage::kValidate, 4);
  m.begin_epoch(Stage::kValidate);
  m.log("val/loss", at::scalar_tensor(1.0));
  EXPECT_FALSE(m.contains("val/loss"));  // only at epoch end
  m.set_context(Stage::kValidate, 2);
  m.log("val/loss", at::scalar_tensor(4.0));
  auto names = m.end_epoch(Stage::kValidate);
  EXPECT_EQ(names, std::vector<std::string>{"val/loss"});
  EXPECT_DOUBLE_EQ(m.get("val/loss").value(), (4 * 1.0 + 2 * 4.0) / 6);
}

TEST(Metrics, StepAndEpochGiveSuffixedNamesAndPlainEpochValue) {
  Metrics m;
  m.set_context(Stage::kTrain, 1);
  m.begin_epoch(Stage::kTrain);
  for (double v : {1.0, 2.0, 6.0}) {
    m.log("loss", at::scalar_tensor(v), LogOptions().on_step(true).on_epoch(true));
  }
  EXPECT_DOUBLE_EQ(m.get("loss_step").value(), 6.0);
  m.end_epoch(Stage::kTrain);
  EXPECT_DOUBLE_EQ(m.get("loss_epoch").value(), 3.0);
  EXPECT_DOUBLE_EQ(m.get("loss").value(), 3.0);
}

TEST(Metrics, ExplicitBatchSizeAndReductions) {
  Metrics m;
  m.set_context(Stage::kValidate, 10);
  m.begin_epoch(Stage::kValidate);
  m.log("w", 1.0, LogOptions().batch_size(1));
  m.log("w", 3.0, LogOptions().batch_size(3));
  m.log("s", 1.5, LogOptions().reduce(frugal::Reduce::kSum));
  m.log("s", 2.5, LogOptions().reduce(frugal::Reduce::kSum));
  m.log("mx", 1.0, LogOptions().reduce(frugal::Reduce::kMax));
  m.log("mx", 7.0, LogOptions().reduce(frugal::Reduce::kMax));
  m.log("mn", 1.0, LogOptions().reduce(frugal::Reduce::kMin));
  m.log("mn", -2.0, LogOptions().reduce(frugal::Reduce::kMin));
  m.end_epoch(Stage::kValidate);
  EXPECT_DOUBLE_EQ(m.get("w").value(), (1 * 1.0 + 3 * 3.0) / 4);
  EXPECT_DOUBLE_EQ(m.get("s").value(), 1.5 + 2.5);  // a plain sum, as Lightning's "sum"
  EXPECT_DOUBLE_EQ(m.get("mx").value(), 7.0);
  EXPECT_DOUBLE_EQ(m.get("mn").value(), -2.0);
}

TEST(Metrics, LoggerQueuesEmptyWhenTakenAndRespectLoggerFlag) {
  Metrics m;
  m.set_context(Stage::kTrain, 1);
  m.log("a", 1.0);
  m.log("hidden", 2.0, LogOptions().logger(false).prog_bar(true));
  auto step = m.take_step_metrics();
  EXPECT_EQ(step.size(), 1u);
  EXPECT_DOUBLE_EQ(step.at("a"), 1.0);
  EXPECT_TRUE(m.take_step_metrics().empty());
  EXPECT_DOUBLE_EQ(m.progress_bar_metrics().at("hidden"), 2.0);
  EXPECT_DOUBLE_EQ(m.get("hidden").value(), 2.0);  // still monitorable
}

TEST(Metrics, ValuesStayOnTheirDeviceAndGraphIsDetached) {
  Metrics m;
  m.set_context(Stage::kTrain, 2);
  at::Tensor w = torch::ones({1}, torch::requires_grad());
  m.log("x", (w * 3).sum(), LogOptions().on_epoch(true));
  m.end_epoch(Stage::kTrain);
  EXPECT_DOUBLE_EQ(m.get("x_epoch").value(), 3.0);
}

TEST(Metrics, ValuesOfAnyDtypeAccumulateInDouble) {
  // A value is stored in its own dtype and read as a double; the epoch accumulator is a double
  // whatever the values' dtype, so float32 and bfloat16 losses and integer counts average exactly
  // as their double values would (here: sums that float32 would round).
  Metrics m;
  m.set_context(Stage::kTrain, 3);
  m.begin_epoch(Stage::kTrain);
  const float f = 0.1f;
  const std::vector<at::Tensor> values = {
      at::scalar_tensor(f, at::kFloat), at::scalar_tensor(16777217.0, at::kDouble).to(at::kFloat),
      at::scalar_tensor(1.5, at::kBFloat16), at::scalar_tensor(7, at::kLong),
      at::scalar_tensor(true, at::kBool)};
  double sum = 0;
  for (const auto& v : values) {
    m.log("x", v, LogOptions().on_step(true).on_epoch(true));
    m.log("mx", v, LogOptions().on_step(false).on_epoch(true).reduce(frugal::Reduce::kMax));
    EXPECT_DOUBLE_EQ(m.get("x_step").value(), v.item<double>()) << v.scalar_type();
    sum += 3 * v.item<double>();
  }
  m.end_epoch(Stage::kTrain);
  EXPECT_EQ(m.get("x_epoch").value(), sum / 15);
  EXPECT_EQ(m.get("mx").value(), 16777216.0);  // float32's rounding of 16777217, as logged
  EXPECT_EQ(static_cast<float>(m.get("x_step").value()), 1.0f);
}

TEST(Metrics, BadValuesAreRefusedWithTheirName) {
  Metrics m;
  try {
    m.log("acc", torch::ones({2, 3}));
    FAIL();
  } catch (const frugal::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(
                              "log(\"acc\"): expected a scalar (one element), got shape [2, 3]"));
  }
  EXPECT_THROW(m.log("x", 1.0, LogOptions().on_step(false).on_epoch(false)), frugal::Error);
  EXPECT_THROW(m.log("", 1.0), frugal::Error);
}

TEST(Metrics, StagesAccumulateSeparately) {
  Metrics m;
  m.set_context(Stage::kTrain, 1);
  m.begin_epoch(Stage::kTrain);
  m.log("t", 1.0, LogOptions().on_step(false).on_epoch(true));
  m.set_context(Stage::kValidate, 1);
  m.begin_epoch(Stage::kValidate);
  m.log("v", 5.0);
  m.end_epoch(Stage::kValidate);
  m.set_context(Stage::kTrain, 1);
  m.log("t", 3.0, LogOptions().on_step(false).on_epoch(true));
  m.end_epoch(Stage::kTrain);
  EXPECT_DOUBLE_EQ(m.get("t").value(), 2.0);
  EXPECT_DOUBLE_EQ(m.get("v").value(), 5.0);
}

}  // namespace
