// Activation checkpointing: peak memory and step time of a deep Sequential (16 conv/ReLU blocks on
// 32x32 images) trained with checkpoint_sequential (segments 4) against the plain Sequential.
// Each configuration runs in its own child process (peak RSS is per process), interleaved and
// repeated; prints the medians of peak RSS growth during training and of the step time, and the
// ratios checkpointed / plain. Expected: well under half the activation memory, about one extra
// forward per step (~1.3x step time).
//
//   build/bench/bench_activation_checkpoint --batch 64 --segments 4 --repeats 3
//   build/bench/bench_activation_checkpoint --mmap-threshold 1048576   # RSS = live tensors
#include <frugal/frugal.h>
#include <malloc.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_support.h"

namespace {

torch::nn::Sequential make_net(int64_t blocks, int64_t channels) {
  torch::nn::Sequential net;
  net->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, channels, 3).padding(1)));
  net->push_back(torch::nn::ReLU());
  for (int64_t b = 1; b < blocks; ++b) {
    net->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)));
    net->push_back(torch::nn::ReLU());
  }
  net->push_back(torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)));
  net->push_back(torch::nn::Flatten());
  net->push_back(torch::nn::Linear(channels, 10));
  return net;
}

struct Result {
  double peak_bytes = 0;
  double step_ms = 0;
};

/// Trains `steps` SGD steps (after one warm-up step) with or without checkpointing; prints the
/// growth of peak RSS over the RSS before training (bytes) and the median step time (ms).
int child(bool checkpointed, int64_t batch, int64_t blocks, int64_t channels, int64_t segments,
          int64_t steps, int64_t threads, int64_t mmap_threshold) {
  // glibc raises its mmap threshold to the size of each freed large block (up to 32 MiB), after
  // which freed activations stay in the heap: RSS then shows the heap's high-water mark rather
  // than the live tensors. A fixed threshold returns each large tensor to the OS when freed.
  if (mmap_threshold > 0) ::mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold));
  torch::set_num_threads(static_cast<int>(threads));
  torch::manual_seed(0);
  auto net = make_net(blocks, channels);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(1e-3));
  auto x = torch::randn({batch, 3, 32, 32});
  auto y = torch::randint(10, {batch}, torch::kLong);
  auto step = [&] {
    auto out = checkpointed ? frugal::checkpoint_sequential(net, segments, x) : net->forward(x);
    torch::nn::functional::cross_entropy(out, y).backward();
    opt.step();
    opt.zero_grad();
  };
  const int64_t before = frugal::read_memory_stats().rss;
  frugal::reset_peak_memory();
  step();  // warm-up: allocates the gradients
  std::vector<double> ms;
  for (int64_t i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  const int64_t peak = frugal::read_memory_stats().peak_rss;
  std::sort(ms.begin(), ms.end());
  std::printf("%lld %.3f\n", static_cast<long long>(peak - before), ms[ms.size() / 2]);
  return 0;
}

Result run_child(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  FRUGAL_CHECK(pipe != nullptr, "cannot run ", command);
  long long bytes = -1;
  double ms = -1;
  if (std::fscanf(pipe, "%lld %lf", &bytes, &ms) != 2) bytes = -1;
  FRUGAL_CHECK(::pclose(pipe) == 0 && bytes >= 0, "child failed: ", command);
  return {static_cast<double>(bytes), ms};
}

using frugal::bench::median;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Activation checkpointing: peak memory and step time"};
  bool is_child = false, checkpointed = false;
  int64_t batch = 64, blocks = 16, channels = 32, segments = 4, steps = 4, repeats = 3, threads = 1,
          mmap_threshold = 0;
  app.add_flag("--child", is_child);
  app.add_flag("--checkpointed", checkpointed);
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--blocks", blocks, "conv/ReLU blocks")->capture_default_str();
  app.add_option("--channels", channels)->capture_default_str();
  app.add_option("--segments", segments)->capture_default_str();
  app.add_option("--steps", steps, "timed steps per run (after one warm-up)")
      ->capture_default_str();
  app.add_option("--repeats", repeats, "child processes per configuration")->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads")->capture_default_str();
  app.add_option("--mmap-threshold", mmap_threshold,
                 "glibc M_MMAP_THRESHOLD in bytes for the children (0: glibc's dynamic default)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (is_child)
    return child(checkpointed, batch, blocks, channels, segments, steps, threads, mmap_threshold);

  const std::string common = " --child --batch " + std::to_string(batch) + " --blocks " +
                             std::to_string(blocks) + " --channels " + std::to_string(channels) +
                             " --segments " + std::to_string(segments) + " --steps " +
                             std::to_string(steps) + " --threads " + std::to_string(threads) +
                             " --mmap-threshold " + std::to_string(mmap_threshold);
  std::vector<double> plain_mem, plain_ms, ckpt_mem, ckpt_ms;
  for (int64_t r = 0; r < repeats; ++r) {  // interleaved
    const Result p = run_child(std::string(argv[0]) + common);
    const Result c = run_child(std::string(argv[0]) + common + " --checkpointed");
    plain_mem.push_back(p.peak_bytes);
    plain_ms.push_back(p.step_ms);
    ckpt_mem.push_back(c.peak_bytes);
    ckpt_ms.push_back(c.step_ms);
  }
  const double mib = 1024.0 * 1024.0;
  std::printf(
      "%lld conv/ReLU blocks, %lld channels, 32x32, batch %lld, %lld thread(s); medians of %lld "
      "child processes x %lld steps; malloc mmap threshold: %s\n",
      static_cast<long long>(blocks), static_cast<long long>(channels),
      static_cast<long long>(batch), static_cast<long long>(threads),
      static_cast<long long>(repeats), static_cast<long long>(steps),
      mmap_threshold > 0 ? (std::to_string(mmap_threshold) + " B").c_str() : "glibc default");
  std::printf("  %-28s %16s %14s\n", "configuration", "peak RSS growth", "step time");
  std::printf("  %-28s %12.1f MiB %11.1f ms\n", "plain Sequential", median(plain_mem) / mib,
              median(plain_ms));
  std::printf("  %-28s %12.1f MiB %11.1f ms\n",
              ("checkpoint_sequential, " + std::to_string(segments) + " seg").c_str(),
              median(ckpt_mem) / mib, median(ckpt_ms));
  std::printf("ratio checkpointed / plain: memory %.3f, step time %.3f\n",
              median(ckpt_mem) / median(plain_mem), median(ckpt_ms) / median(plain_ms));
  return 0;
}
