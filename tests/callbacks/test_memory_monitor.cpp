// MemoryMonitor and read_memory_stats: real RSS numbers, thresholds, metrics, summary.
#include <fmt/format.h>
#include <frugal/frugal.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <sstream>

#include "test_support.h"
#include "under_asan.h"

using frugal::testing::error_message;
using frugal::testing::quiet_options;
using frugal::testing::temp_dir;

namespace {

constexpr int64_t kMiB = 1024 * 1024;

frugal::Classifier small_task() {
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  return frugal::Classifier(net, frugal::SGD(0.1));
}

std::shared_ptr<frugal::TensorLoader> toy_loader() {
  auto toy = frugal::testing::make_toy_data(64);
  return std::make_shared<frugal::TensorLoader>(toy.x, toy.y, frugal::TensorLoaderOptions(8));
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST(ReadMemoryStats, SeesRssGrowAfterTouching200MB) {
  FRUGAL_SKIP_UNDER_ASAN();
  const frugal::MemoryStats before = frugal::read_memory_stats();
  ASSERT_GT(before.rss, 1 * kMiB) << "a running test process has more than 1 MiB resident";
  EXPECT_GE(before.peak_rss, before.rss);

  const size_t size = 200 * kMiB;
  std::unique_ptr<char[]> block(new char[size]);
  std::memset(block.get(), 1, size);  // touch every page
  const frugal::MemoryStats after = frugal::read_memory_stats();
  EXPECT_GE(after.rss - before.rss, 190 * kMiB)
      << "before " << before.rss << " after " << after.rss;
  EXPECT_LE(after.rss - before.rss, 260 * kMiB);
  EXPECT_GE(after.peak_rss, after.rss);
  EXPECT_EQ(block[size - 1], 1);

  // The CPU build has no CUDA numbers.
  EXPECT_EQ(after.cuda_allocated, 0);
  EXPECT_EQ(after.cuda_peak_reserved, 0);

  block.reset();
  const frugal::MemoryStats freed = frugal::read_memory_stats();
  EXPECT_LE(freed.rss, after.rss - 150 * kMiB) << "a 200 MB block goes back to the system";
  // The kernel keeps VmHWM from slightly lagging counters: allow it a few pages of slack.
  EXPECT_GE(freed.peak_rss, after.rss - 8 * kMiB) << "the peak remembers it";

  if (::access("/proc/self/clear_refs", W_OK) != 0) {
    GTEST_SKIP() << "/proc/self/clear_refs is not writable here: peak reset not testable";
  }
  frugal::reset_peak_memory();
  const frugal::MemoryStats reset = frugal::read_memory_stats();
  EXPECT_LT(reset.peak_rss, after.rss - 150 * kMiB) << "the reset peak is the current RSS";
  EXPECT_GE(reset.peak_rss, reset.rss);
}

TEST(MemoryMonitor, RefusesBadOptionsNamingThem) {
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "every_n_batches must be >= 1, got 0",
                      error_message([] {
                        frugal::MemoryMonitor m(frugal::MemoryMonitorOptions().every_n_batches(0));
                      }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "warn_bytes must be >= 0", error_message([] {
                        frugal::MemoryMonitor m(frugal::MemoryMonitorOptions().warn_bytes(-1));
                      }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "stop_bytes must be >= 0", error_message([] {
                        frugal::MemoryMonitor m(frugal::MemoryMonitorOptions().stop_bytes(-1));
                      }));
}

TEST(MemoryMonitor, LogsRssMetricsEveryNBatches) {
  frugal::Trainer trainer(quiet_options(temp_dir("memmon_hooks")));
  auto task = small_task();
  frugal::MemoryMonitor monitor(frugal::MemoryMonitorOptions().every_n_batches(3));
  monitor.on_fit_start(trainer, task);
  monitor.on_train_batch_end(trainer, task, at::Tensor(), frugal::Batch{}, 0);
  monitor.on_train_batch_end(trainer, task, at::Tensor(), frugal::Batch{}, 1);
  EXPECT_FALSE(trainer.metrics().contains("mem/rss_mb")) << "not before the third batch";
  monitor.on_train_batch_end(trainer, task, at::Tensor(), frugal::Batch{}, 2);
  ASSERT_TRUE(trainer.metrics().contains("mem/rss_mb"));
  const double rss_mb = *trainer.metrics().get("mem/rss_mb");
  const double now_mb = static_cast<double>(frugal::read_memory_stats().rss) / kMiB;
  EXPECT_GT(rss_mb, 1.0);
  EXPECT_NEAR(rss_mb, now_mb, 0.2 * now_mb);
  EXPECT_GE(*trainer.metrics().get("mem/peak_rss_mb"), rss_mb);
  EXPECT_FALSE(trainer.metrics().contains("mem/cuda_allocated_mb")) << "CPU run: no CUDA metrics";
  EXPECT_FALSE(monitor.warned());
  EXPECT_FALSE(trainer.state().should_stop);
}

TEST(MemoryMonitor, WarnsOnceAndStopsWhenThresholdsAreCrossed) {
  std::ostringstream out;
  auto monitor = std::make_shared<frugal::MemoryMonitor>(frugal::MemoryMonitorOptions()
                                                             .warn_bytes(1e6)
                                                             .stop_bytes(2e6)
                                                             .every_n_batches(1)
                                                             .print_summary(false)
                                                             .out(&out));
  auto task = small_task();
  frugal::Trainer trainer(quiet_options(temp_dir("memmon_stop")).max_epochs(5), {monitor});
  trainer.fit(task, toy_loader());

  EXPECT_TRUE(monitor->warned());
  const std::string text = out.str();
  EXPECT_EQ(count(text, "warning threshold"), 1u) << text;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "MemoryMonitor: peak RSS is ", text);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "over the warning threshold 1.0 MiB (warn_bytes=1e+06)", text);
  const std::string& reason = trainer.state().stop_reason;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "MemoryMonitor: peak RSS is ", reason);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "over the limit 1.9 MiB (stop_bytes=2e+06)", reason);
  // The process is far over 2 MB from the start: the first sample (at fit start) stops the run
  // after its first optimizer step.
  EXPECT_EQ(trainer.state().global_step, 1);
}

TEST(MemoryMonitor, QuietBelowThresholds) {
  std::ostringstream out;
  auto monitor = std::make_shared<frugal::MemoryMonitor>(
      frugal::MemoryMonitorOptions().warn_bytes(1e15).stop_bytes(2e15).every_n_batches(1).out(
          &out));
  auto task = small_task();
  frugal::Trainer trainer(quiet_options(temp_dir("memmon_quiet")).max_epochs(2), {monitor});
  trainer.fit(task, toy_loader());
  EXPECT_FALSE(monitor->warned());
  EXPECT_FALSE(trainer.state().should_stop);
  EXPECT_EQ(trainer.state().global_step, 16);
  EXPECT_EQ(count(out.str(), "threshold"), 0u);
  // Only the summary was printed.
  EXPECT_EQ(out.str(), monitor->summary() + "\n");
}

TEST(MemoryMonitor, SummaryNamesThePeakOfTheFit) {
  std::ostringstream out;
  auto monitor = std::make_shared<frugal::MemoryMonitor>(
      frugal::MemoryMonitorOptions().every_n_batches(1).out(&out));

  // A callback that holds 100 MB during one batch: the peak must include it.
  struct Hog : frugal::Callback {
    void on_train_batch_start(frugal::Trainer&, frugal::Task&, const frugal::Batch&,
                              int64_t batch_idx) override {
      if (batch_idx == 2) block = torch::ones({100 * kMiB / 4});  // touched floats
    }
    void on_train_batch_end(frugal::Trainer&, frugal::Task&, const at::Tensor&,
                            const frugal::Batch&, int64_t batch_idx) override {
      if (batch_idx == 3) block = at::Tensor();
    }
    at::Tensor block;
  };
  auto task = small_task();
  const int64_t rss_before = frugal::read_memory_stats().rss;
  frugal::Trainer trainer(quiet_options(temp_dir("memmon_summary")).max_epochs(1),
                          {std::make_shared<Hog>(), monitor});
  trainer.fit(task, toy_loader());

  const frugal::MemoryStats& peak = monitor->peak();
  EXPECT_GE(peak.peak_rss, rss_before + 90 * kMiB);
  EXPECT_GE(peak.rss, rss_before + 90 * kMiB) << "sampled while the block was held";
  const std::string expected =
      fmt::format("Peak memory: RSS {:.1f} MiB", static_cast<double>(peak.peak_rss) / kMiB);
  EXPECT_EQ(monitor->summary(), expected);
  EXPECT_EQ(out.str(), expected + "\n");
  // The metric went through the trainer's metrics like any step metric.
  EXPECT_TRUE(trainer.metrics().contains("mem/peak_rss_mb"));
}
