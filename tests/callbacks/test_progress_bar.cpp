// ProgressBar: the text it renders, terminal redraws vs plain lines, refresh limits, its cost.
#include <fmt/format.h>
#include <frugal/frugal.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <regex>
#include <sstream>

#include "test_support.h"

using frugal::testing::quiet_options;
using frugal::testing::temp_dir;

namespace {

frugal::Classifier small_task() {
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  return frugal::Classifier(net, frugal::SGD(0.1));
}

// n samples in batches of 8.
std::shared_ptr<frugal::TensorLoader> loader(int64_t n, uint64_t seed = 0) {
  auto toy = frugal::testing::make_toy_data(n, 8, 3, seed);
  return std::make_shared<frugal::TensorLoader>(toy.x, toy.y, frugal::TensorLoaderOptions(8));
}

std::shared_ptr<frugal::ProgressBar> bar(std::ostringstream& out, bool terminal,
                                         double every_seconds = 1e6,
                                         int64_t refresh_ms = 10000000) {
  return std::make_shared<frugal::ProgressBar>(frugal::ProgressBarOptions()
                                                   .terminal(terminal)
                                                   .print_every_seconds(every_seconds)
                                                   .refresh_ms(refresh_ms)
                                                   .out(&out));
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, separator)) parts.push_back(part);
  return parts;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

#define EXPECT_MATCHES(text, pattern)                      \
  EXPECT_TRUE(std::regex_match(text, std::regex(pattern))) \
      << "text:    " << (text) << "\npattern: " << (pattern)

const std::string kSpeed = R"(it/s [0-9]+\.[0-9]+)";
const std::string kNumber = R"([0-9]+\.[0-9]{4})";

}  // namespace

TEST(ProgressBar, PlainLinesAtEachValidationAndEpochEnd) {
  std::ostringstream out;
  auto task = small_task();
  frugal::Trainer trainer(quiet_options(temp_dir("bar_plain")).max_epochs(2),
                          {bar(out, /*terminal=*/false)});
  trainer.fit(task, loader(64), loader(16, 1));

  EXPECT_EQ(out.str().find('\r'), std::string::npos) << "no redraws when not on a terminal";
  EXPECT_EQ(out.str().find("\x1b["), std::string::npos);
  const auto lines = split(out.str(), '\n');
  ASSERT_EQ(lines.size(), 4u) << out.str();
  const std::string val_metrics =
      " train/loss=" + kNumber + " val/acc=" + kNumber + " val/loss=" + kNumber;
  EXPECT_MATCHES(lines[0], "Validation 2/2 \\[" + kSpeed + ", took 0:00:0[0-9]\\]" + val_metrics);
  EXPECT_MATCHES(lines[1], "Epoch 1/2  8/8 \\[" + kSpeed + ", took 0:00:0[0-9]\\]" + val_metrics);
  EXPECT_MATCHES(lines[2], "Validation 2/2 \\[" + kSpeed + ", took 0:00:0[0-9]\\]" + val_metrics);
  EXPECT_MATCHES(lines[3], "Epoch 2/2  8/8 \\[" + kSpeed + ", took 0:00:0[0-9]\\]" + val_metrics);

  // The numbers are the trainer's progress-bar metrics, 4 decimals.
  const auto metrics = trainer.metrics().progress_bar_metrics();
  ASSERT_EQ(metrics.count("train/loss"), 1u);
  EXPECT_NE(lines[3].find(fmt::format("train/loss={:.4f}", metrics.at("train/loss"))),
            std::string::npos);
  EXPECT_NE(lines[3].find(fmt::format("val/loss={:.4f}", metrics.at("val/loss"))),
            std::string::npos);
}

TEST(ProgressBar, PlainLineEveryIntervalWithCountsAndEta) {
  std::ostringstream out;
  auto task = small_task();
  frugal::Trainer trainer(quiet_options(temp_dir("bar_plain_every")).max_epochs(1),
                          {bar(out, false, /*every_seconds=*/0.0)});
  trainer.fit(task, loader(64));
  const auto lines = split(out.str(), '\n');
  ASSERT_EQ(lines.size(), 9u) << "8 batch lines and the epoch-end line:\n" << out.str();
  for (int i = 0; i < 8; ++i) {
    const std::string when = i < 7 ? "ETA 0:00:0[0-9]" : "took 0:00:0[0-9]";
    EXPECT_MATCHES(lines[i], fmt::format("Epoch 1/1  {}/8 \\[{}, {}\\] train/loss={}", i + 1,
                                         kSpeed, when, kNumber));
  }
  EXPECT_EQ(lines[8].substr(0, 15), "Epoch 1/1  8/8 ");
}

TEST(ProgressBar, TerminalRedrawsOneLineAndEndsItAtEpochEnd) {
  std::ostringstream out;
  auto task = small_task();
  frugal::Trainer trainer(quiet_options(temp_dir("bar_terminal")).max_epochs(2),
                          {bar(out, /*terminal=*/true, 1e6, /*refresh_ms=*/0)});
  trainer.fit(task, loader(32));
  const std::string text = out.str();
  // Two epochs of 4 batches: 4 draws + the final one each, each "\r<line>\x1b[K".
  EXPECT_EQ(count(text, "\r"), 10u) << text;
  EXPECT_EQ(count(text, "\x1b[K"), 10u);
  const auto lines = split(text, '\n');
  ASSERT_EQ(lines.size(), 2u) << "one finished line per epoch";
  for (int epoch = 0; epoch < 2; ++epoch) {
    const auto draws = split(lines[epoch], '\r');
    ASSERT_EQ(draws.size(), 6u);  // "" before the first '\r'
    EXPECT_EQ(draws[0], "");
    for (int i = 1; i <= 4; ++i) {
      EXPECT_EQ(draws[i].substr(0, 15), fmt::format("Epoch {}/2  {}/4 ", epoch + 1, i));
      EXPECT_EQ(draws[i].substr(draws[i].size() - 3), "\x1b[K");
    }
    EXPECT_MATCHES(draws[5],
                   fmt::format("Epoch {}/2  4/4 \\[{}, took 0:00:00\\] train/loss={}\x1b\\[K",
                               epoch + 1, kSpeed, kNumber));
  }
  EXPECT_EQ(text.back(), '\n');
}

TEST(ProgressBar, TerminalRefreshIsRateLimited) {
  std::ostringstream out;
  auto task = small_task();
  frugal::Trainer trainer(quiet_options(temp_dir("bar_terminal_slow")).max_epochs(2),
                          {bar(out, true, 1e6, /*refresh_ms=*/10000000)});
  trainer.fit(task, loader(64));
  // No batch was due for a redraw: only the two epoch-end lines.
  EXPECT_EQ(count(out.str(), "\r"), 2u) << out.str();
  EXPECT_EQ(count(out.str(), "\n"), 2u);
}

TEST(ProgressBar, SanityCheckLeavesNoLine) {
  std::ostringstream plain;
  std::ostringstream terminal;
  auto task = small_task();
  frugal::Trainer trainer(
      quiet_options(temp_dir("bar_sanity")).max_epochs(1).num_sanity_val_steps(2),
      {bar(plain, false, 1e6), bar(terminal, true, 1e6, /*refresh_ms=*/0)});
  trainer.fit(task, loader(16), loader(32, 1));
  EXPECT_EQ(plain.str().find("Sanity"), std::string::npos) << plain.str();
  EXPECT_EQ(split(plain.str(), '\n').size(), 2u) << "validation and epoch lines only";

  const std::string text = terminal.str();
  const size_t sanity = text.find("\rSanity check 1/2 [");
  ASSERT_NE(sanity, std::string::npos) << text;
  const size_t cleared = text.find("\r\x1b[K", sanity);
  ASSERT_NE(cleared, std::string::npos) << "the sanity line is erased";
  EXPECT_EQ(text.find('\n'), text.find('\n', cleared)) << "and never finished with a newline";
  EXPECT_NE(text.find("\rValidation 4/4 [", cleared), std::string::npos);
}

TEST(ProgressBar, UnlimitedEpochsShowNoTotalAndAStoppedEpochShowsEta) {
  std::ostringstream out;
  auto task = small_task();
  frugal::Trainer trainer(quiet_options(temp_dir("bar_unlimited")).max_steps(5), {bar(out, false)});
  ASSERT_EQ(trainer.max_epochs(), -1);
  trainer.fit(task, loader(64));
  const auto lines = split(out.str(), '\n');
  ASSERT_EQ(lines.size(), 1u) << out.str();
  EXPECT_MATCHES(lines[0],
                 "Epoch 1  5/8 \\[" + kSpeed + ", ETA 0:00:0[0-9]\\] train/loss=" + kNumber);
}

TEST(ProgressBar, TestLoopIsLabelled) {
  std::ostringstream out;
  auto task = small_task();
  frugal::Trainer trainer(quiet_options(temp_dir("bar_test")), {bar(out, false)});
  const auto results = trainer.test(task, loader(24, 2));
  const auto lines = split(out.str(), '\n');
  ASSERT_EQ(lines.size(), 1u) << out.str();
  EXPECT_MATCHES(lines[0], "Test 3/3 \\[" + kSpeed + ", took 0:00:00\\] test/acc=" + kNumber +
                               " test/loss=" + kNumber);
  EXPECT_NE(lines[0].find(fmt::format("test/loss={:.4f}", results.at("test/loss"))),
            std::string::npos);
}

TEST(ProgressBar, RendersOnlyProgressBarMetricsFromHooks) {
  std::ostringstream out;
  frugal::Trainer trainer(quiet_options(temp_dir("bar_hooks")).max_steps(100));
  auto task = small_task();
  frugal::ProgressBar progress(frugal::ProgressBarOptions().terminal(false).out(&out));
  progress.on_train_epoch_start(trainer, task);
  trainer.metrics().log("train/loss", 0.33124, frugal::LogOptions().prog_bar(true));
  trainer.metrics().log("hidden", 1.0);
  progress.on_train_epoch_end(trainer, task);
  EXPECT_EQ(progress.last_line(), "Epoch 1  0 [it/s -, ETA ?] train/loss=0.3312");
  EXPECT_EQ(out.str(), progress.last_line() + "\n");
}

TEST(ProgressBar, BatchHookCostsAClockReadWhenNotDue) {
  std::ostringstream out;
  frugal::Trainer trainer(quiet_options(temp_dir("bar_cost")));
  auto task = small_task();
  frugal::ProgressBar progress(
      frugal::ProgressBarOptions().terminal(true).refresh_ms(10000000).out(&out));
  trainer.metrics().log("train/loss", torch::ones({}), frugal::LogOptions().prog_bar(true));
  progress.on_train_epoch_start(trainer, task);
  const at::Tensor loss = torch::ones({});
  const frugal::Batch batch;
  constexpr int kCalls = 200000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i) progress.on_train_batch_end(trainer, task, loss, batch, i);
  const double ns_per_call =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() /
      kCalls;
  EXPECT_EQ(out.str(), "") << "nothing was due";
  EXPECT_LT(ns_per_call, 1000.0) << "a batch hook must not fetch metrics or format text";
}

TEST(ProgressBar, AnErrorEndsTheOpenTerminalLine) {
  struct FailAtThirdBatch : frugal::Callback {
    void on_train_batch_end(frugal::Trainer&, frugal::Task&, const at::Tensor&,
                            const frugal::Batch&, int64_t batch_idx) override {
      if (batch_idx == 2) throw std::runtime_error("boom");
    }
  };
  std::ostringstream out;
  auto task = small_task();
  frugal::Trainer trainer(
      quiet_options(temp_dir("bar_error")).max_epochs(1),
      {bar(out, true, 1e6, /*refresh_ms=*/0), std::make_shared<FailAtThirdBatch>()});
  EXPECT_THROW(trainer.fit(task, loader(32)), std::runtime_error);
  const std::string text = out.str();
  EXPECT_EQ(count(text, "\r"), 3u) << text;
  EXPECT_EQ(count(text, "\n"), 1u);
  EXPECT_EQ(text.substr(text.size() - 4), "\x1b[K\n");
  EXPECT_NE(text.find("\rEpoch 1/1  3/4 ["), std::string::npos);
}
