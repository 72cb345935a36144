// 1,000 consecutive short fits in one process, as a trials loop runs them: each with the CSV
// logger, a ModelCheckpoint, EarlyStopping and validation. Resident memory stays flat (the growth
// per fit is printed), and no file descriptor or thread is left behind.
#include <dirent.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <memory>
#include <string>

#include "test_support.h"
#include "under_asan.h"

namespace {

int count_entries(const char* dir) {
  DIR* d = opendir(dir);
  if (d == nullptr) return -1;
  int n = 0;
  while (const dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

double rss_mib() {
  return static_cast<double>(frugal::read_memory_stats().rss) / (1024.0 * 1024.0);
}

void one_fit(const std::string& root, int i) {
  static const auto data = frugal::testing::make_toy_data(48);
  torch::manual_seed(i);
  auto net =
      torch::nn::Sequential(torch::nn::Linear(8, 16), torch::nn::ReLU(), torch::nn::Linear(16, 3));
  frugal::Classifier task(net, frugal::AdamW(1e-2));
  frugal::Trainer trainer(
      frugal::testing::quiet_options(root).logger(true).max_epochs(2).log_every_n_steps(1),
      {std::make_shared<frugal::ModelCheckpoint>(
           frugal::ModelCheckpointOptions().monitor("val/loss").save_last(true)),
       std::make_shared<frugal::EarlyStopping>(
           frugal::EarlyStoppingOptions("val/loss").verbose(false))});
  auto train =
      std::make_shared<frugal::TensorLoader>(data.x.slice(0, 0, 32), data.y.slice(0, 0, 32),
                                             frugal::TensorLoaderOptions(8).shuffle(true).seed(i));
  auto val = std::make_shared<frugal::TensorLoader>(data.x.slice(0, 32), data.y.slice(0, 32),
                                                    frugal::TensorLoaderOptions(16));
  trainer.fit(task, train, val);
}

TEST(ManyFits, AThousandFitsLeaveNoMemoryFilesOrThreadsBehind) {
  FRUGAL_SKIP_UNDER_ASAN();  // LeakSanitizer checks this build for leaks instead
  const std::string root = frugal::testing::temp_dir("many_fits");
  constexpr int kFits = 1000, kWarmup = 100;
  one_fit(root, 0);  // starts LibTorch's thread pool and its one-time allocations
  const int fds = count_entries("/proc/self/fd");
  const int threads = count_entries("/proc/self/task");
  for (int i = 1; i < kWarmup; ++i) one_fit(root, i);
  const double rss_warm = rss_mib();
  for (int i = kWarmup; i < kFits; ++i) one_fit(root, i);
  const double rss_end = rss_mib();
  const double kib_per_fit = (rss_end - rss_warm) * 1024.0 / (kFits - kWarmup);
  std::printf("RSS after %d fits %.1f MiB, after %d fits %.1f MiB: %.2f KiB per fit\n", kWarmup,
              rss_warm, kFits, rss_end, kib_per_fit);
  EXPECT_EQ(count_entries("/proc/self/fd"), fds) << "file descriptors left open";
  EXPECT_EQ(count_entries("/proc/self/task"), threads) << "threads left running";
  EXPECT_LT(kib_per_fit, 8.0) << "resident memory grows with every fit";
  EXPECT_EQ(count_entries((root + "/frugal_logs").c_str()), kFits) << "one version_N per fit";
}

}  // namespace
