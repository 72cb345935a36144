// Peak memory of gradient accumulation: micro-batch b with k = 4 against batch b alone and batch
// 4b, on the example CNN. Each configuration runs in its own child process (peak RSS is per
// process), interleaved and repeated; prints the medians of peak RSS growth during training and
// the ratios. Target: micro-batch b with k = 4 within 10% of batch b, and well below batch 4b.
//
//   build/bench/bench_accumulation_memory --batch 64 --repeats 3
#include <frugal/frugal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "bench_support.h"

namespace {

/// Trains `steps` optimizer steps with micro-batch `batch` and accumulation `k`; prints the
/// growth of peak RSS over the RSS before training, in bytes.
int child(int64_t batch, int64_t k, int64_t steps) {
  torch::set_num_threads(1);
  torch::manual_seed(0);
  const int64_t n = batch * k * steps;
  auto x = torch::randn({n, 1, 28, 28});
  auto y = torch::randint(10, {n}, torch::kLong);
  auto net = frugal::models::SmallCnn();
  frugal::Classifier task(net, frugal::AdamW(1e-3));
  auto source = std::make_shared<frugal::TensorLoader>(x, y, frugal::TensorLoaderOptions(batch));
  frugal::Trainer trainer(frugal::TrainerOptions()
                              .num_threads(1)  // as set above
                              .max_epochs(1)
                              .accumulate_grad_batches(k)
                              .enable_progress_bar(false)
                              .logger(false)
                              .accelerator("cpu")
                              .num_sanity_val_steps(0));
  const int64_t before = frugal::read_memory_stats().rss;
  frugal::reset_peak_memory();
  trainer.fit(task, source);
  const int64_t peak = frugal::read_memory_stats().peak_rss;
  std::printf("%lld\n", static_cast<long long>(peak - before));
  return 0;
}

double run_child(const std::string& self, int64_t batch, int64_t k, int64_t steps) {
  const std::string cmd = self + " --child --batch " + std::to_string(batch) + " --k " +
                          std::to_string(k) + " --steps " + std::to_string(steps);
  FILE* pipe = ::popen(cmd.c_str(), "r");
  FRUGAL_CHECK(pipe != nullptr, "cannot run ", cmd);
  long long bytes = -1;
  if (std::fscanf(pipe, "%lld", &bytes) != 1) bytes = -1;
  FRUGAL_CHECK(::pclose(pipe) == 0 && bytes >= 0, "child failed: ", cmd);
  return static_cast<double>(bytes);
}

using frugal::bench::median;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Peak memory of gradient accumulation"};
  bool is_child = false;
  int64_t batch = 64, k = 4, steps = 10, repeats = 3;
  app.add_flag("--child", is_child);
  app.add_option("--batch", batch, "micro-batch b")->capture_default_str();
  app.add_option("--k", k, "accumulation factor")->capture_default_str();
  app.add_option("--steps", steps, "optimizer steps per run")->capture_default_str();
  app.add_option("--repeats", repeats)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (is_child) return child(batch, k, steps);

  std::vector<double> micro, single, big;
  for (int64_t r = 0; r < repeats; ++r) {  // interleaved
    micro.push_back(run_child(argv[0], batch, k, steps));
    single.push_back(run_child(argv[0], batch, 1, steps));
    big.push_back(run_child(argv[0], batch * k, 1, steps));
  }
  const double mib = 1024.0 * 1024.0;
  std::printf("peak RSS growth during training, median of %lld runs (SmallCnn, 1 thread):\n",
              static_cast<long long>(repeats));
  std::printf("  batch %-4lld            : %8.1f MiB\n", static_cast<long long>(batch),
              median(single) / mib);
  std::printf("  batch %-4lld x k=%-3lld     : %8.1f MiB\n", static_cast<long long>(batch),
              static_cast<long long>(k), median(micro) / mib);
  std::printf("  batch %-4lld            : %8.1f MiB\n", static_cast<long long>(batch * k),
              median(big) / mib);
  std::printf("ratio (b x k) / b   = %.3f   (target <= 1.10)\n", median(micro) / median(single));
  std::printf("ratio (b x k) / kb  = %.3f   (target well below 1)\n", median(micro) / median(big));
  return 0;
}
