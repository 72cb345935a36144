// TrainerOptions: every bad value is refused at construction with a message naming the option.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/version.h>

#include "test_support.h"

namespace {

using frugal::BatchLimit;
using frugal::TrainerOptions;
using ::testing::HasSubstr;

void expect_refused(const TrainerOptions& options, const std::string& text) {
  try {
    options.validate();
    FAIL() << "expected an error containing: " << text;
  } catch (const frugal::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(text));
  }
}

TEST(TrainerOptions, DefaultsAreValid) { EXPECT_NO_THROW(TrainerOptions().validate()); }

TEST(TrainerOptions, BadValuesNameTheOptionAndValue) {
  expect_refused(TrainerOptions().max_epochs(-2),
                 "max_epochs must be >= 0 (or -1 for the default), got -2");
  expect_refused(TrainerOptions().min_epochs(5).max_epochs(3),
                 "min_epochs (5) must not exceed max_epochs (3)");
  expect_refused(TrainerOptions().max_steps(-5), "max_steps must be >= 0");
  expect_refused(TrainerOptions().limit_train_batches(1.5),
                 "limit_train_batches as a fraction must be in [0, 1], got 1.5");
  expect_refused(TrainerOptions().limit_val_batches(-3),
                 "limit_val_batches as a batch count must be >= 0, got -3");
  expect_refused(TrainerOptions().val_check_interval(0.0),
                 "val_check_interval as a fraction of an epoch must be in (0, 1]");
  expect_refused(TrainerOptions().check_val_every_n_epoch(0),
                 "check_val_every_n_epoch=0 needs val_check_interval as a batch count");
  expect_refused(TrainerOptions().log_every_n_steps(0), "log_every_n_steps must be >= 1, got 0");
  expect_refused(TrainerOptions().accumulate_grad_batches(0),
                 "accumulate_grad_batches must be >= 1, got 0");
  expect_refused(TrainerOptions().gradient_clip_val(-1), "gradient_clip_val must be >= 0");
  expect_refused(TrainerOptions().gradient_clip_algorithm("max"),
                 "gradient_clip_algorithm must be \"norm\" or \"value\", got \"max\"");
  expect_refused(TrainerOptions().num_sanity_val_steps(-2),
                 "num_sanity_val_steps must be >= 0 (or -1 for all), got -2");
  expect_refused(TrainerOptions().fast_dev_run(-1), "fast_dev_run must be >= 0");
  expect_refused(TrainerOptions().strategy("fsdp"), "strategy must be");
  expect_refused(TrainerOptions().default_root_dir(""), "default_root_dir must not be empty");
}

TEST(TrainerOptions, PrecisionStrings) {
  EXPECT_EQ(frugal::parse_precision("32"), frugal::Precision::k32);
  EXPECT_EQ(frugal::parse_precision("bf16-mixed"), frugal::Precision::kBf16Mixed);
  EXPECT_EQ(frugal::parse_precision("16-mixed"), frugal::Precision::k16Mixed);
  EXPECT_EQ(TrainerOptions().precision("bf16").precision(), frugal::Precision::kBf16Mixed);
  try {
    frugal::parse_precision("fp8");
    FAIL();
  } catch (const frugal::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("precision must be one of \"32\", \"16-mixed\", "
                                    "\"bf16-mixed\", \"auto\", got \"fp8\""));
  }
}

TEST(TrainerOptions, SixteenMixedOnCpuSuggestsBf16) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  GTEST_SKIP() << "LibTorch >= 2.4 has fp16 autocast on CPU";
#endif
  try {
    frugal::Trainer t(TrainerOptions()
                          .precision("16-mixed")
                          .accelerator("cpu")
                          .logger(false)
                          .enable_progress_bar(false));
    auto data = frugal::testing::make_toy_data(4);
    torch::nn::Linear net(8, 3);
    frugal::Classifier task(net, frugal::SGD(0.1));
    t.fit(task, std::make_shared<frugal::TensorLoader>(data.x, data.y));
    FAIL();
  } catch (const frugal::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("bf16-mixed"));
  }
}

TEST(TrainerOptions, BatchLimitParseAndResolve) {
  EXPECT_TRUE(BatchLimit::parse("0.25").is_fraction);
  EXPECT_FALSE(BatchLimit::parse("100").is_fraction);
  EXPECT_EQ(BatchLimit::parse("0.25").resolve(10), 2);
  EXPECT_EQ(BatchLimit::parse("1.0").resolve(938), 938);
  EXPECT_EQ(BatchLimit::parse("100").resolve(938), 100);
  EXPECT_EQ(BatchLimit::parse("5000").resolve(938), 938);
  EXPECT_THROW(BatchLimit::parse("abc"), frugal::Error);
  EXPECT_THROW(BatchLimit::parse(""), frugal::Error);
}

TEST(TrainerOptions, MaxTimeParsesLightningFormat) {
  EXPECT_DOUBLE_EQ(TrainerOptions().max_time("00:12:00:00").max_time_seconds(), 12 * 3600.0);
  EXPECT_DOUBLE_EQ(TrainerOptions().max_time("01:00:00:30").max_time_seconds(), 86400.0 + 30);
  EXPECT_DOUBLE_EQ(TrainerOptions().max_time("05:00").max_time_seconds(), 300.0);
  EXPECT_DOUBLE_EQ(TrainerOptions().max_time(std::chrono::minutes(2)).max_time_seconds(), 120.0);
  EXPECT_THROW(TrainerOptions().max_time("1:2:3:4:5"), frugal::Error);
  EXPECT_THROW(TrainerOptions().max_time("aa:bb"), frugal::Error);
}

TEST(TrainerOptions, ToMapHasEveryOption) {
  auto m = TrainerOptions().max_epochs(7).precision("bf16-mixed").to_map();
  EXPECT_EQ(m.at("max_epochs"), "7");
  EXPECT_EQ(m.at("precision"), "bf16-mixed");
  EXPECT_EQ(m.at("accumulate_grad_batches"), "1");
  EXPECT_EQ(m.at("limit_train_batches"), "1");
}

TEST(TrainerOptions, TrainerValidatesAtConstruction) {
  EXPECT_THROW(frugal::Trainer(TrainerOptions().accumulate_grad_batches(0)), frugal::Error);
}

}  // namespace
