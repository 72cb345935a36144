// Precision benchmark (for scripts/gpu-check on a GPU machine; runs on CPU too, without
// 16-mixed): the example CNN and a ResNet-18-sized model on Fashion-MNIST at 32 / bf16-mixed /
// 16-mixed, through the Trainer as users run it. Prints samples/s and peak memory (CUDA peak
// allocated, or peak RSS growth on CPU) per configuration, and writes JSON for the comparison
// with PyTorch Lightning (bench/lightning_precision.py).
//
//   build/bench/bench_gpu_precision --steps 200 --batch 128 --json out.json
#include <frugal/frugal.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

namespace {

struct Result {
  std::string model, precision;
  double samples_per_second = 0;
  double peak_mb = 0;
};

Result run(const std::string& model, const std::string& precision, int64_t batch, int64_t steps,
           const frugal::datasets::Split& data, c10::Device device) {
  torch::manual_seed(0);
  torch::nn::Sequential net =
      model == "resnet18" ? frugal::models::ResNet18(10, 1) : frugal::models::SmallCnn();
  frugal::Classifier task(net, frugal::AdamW(1e-3));
  const int64_t n = std::min<int64_t>(data.images.size(0), batch * (steps + 10));
  auto source = std::make_shared<frugal::TensorLoader>(
      data.images.slice(0, 0, n), data.labels.slice(0, 0, n),
      frugal::TensorLoaderOptions(batch).shuffle(true).drop_last(true));
  auto options = frugal::TrainerOptions()
                     .precision(precision)
                     .accelerator(device.is_cuda() ? "cuda" : "cpu")
                     .enable_progress_bar(false)
                     .logger(false)
                     .num_sanity_val_steps(0);
  // Warm-up (kernels, allocator, cuDNN autotuning), then the timed run.
  frugal::Trainer(frugal::TrainerOptions(options).max_steps(10)).fit(task, source);
  frugal::reset_peak_memory(device);
  const int64_t rss_before = frugal::read_memory_stats(device).rss;
  if (device.is_cuda()) torch::cuda::synchronize();
  const auto start = std::chrono::steady_clock::now();
  frugal::Trainer(frugal::TrainerOptions(options).max_steps(steps)).fit(task, source);
  if (device.is_cuda()) torch::cuda::synchronize();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const frugal::MemoryStats mem = frugal::read_memory_stats(device);
  Result r{model, precision, static_cast<double>(steps * batch) / seconds, 0};
  r.peak_mb = (device.is_cuda() ? static_cast<double>(mem.cuda_peak_allocated)
                                : static_cast<double>(mem.peak_rss - rss_before)) /
              (1024.0 * 1024.0);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"frugal precision benchmark (GPU; CPU without 16-mixed)"};
  int64_t steps = 200, batch = 128;
  std::string json, data_dir = frugal::datasets::FashionMnist::kDefaultDir;
  std::vector<std::string> models{"cnn", "resnet18"};
  app.add_option("--steps", steps)->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--models", models)->capture_default_str();
  app.add_option("--data-dir", data_dir)->capture_default_str();
  app.add_option("--json", json, "write the results here");
  CLI11_PARSE(app, argc, argv);
  try {
    const bool cuda = torch::cuda::is_available();
    const c10::Device device = cuda ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
    auto data = frugal::datasets::FashionMnist::load(data_dir);
    nlohmann::json out = nlohmann::json::array();
    std::printf("%-9s %-11s %12s %12s   (%s, batch %lld, %lld steps)\n", "model", "precision",
                "samples/s", "peak MiB", cuda ? "CUDA" : "CPU", static_cast<long long>(batch),
                static_cast<long long>(steps));
    for (const auto& model : models) {
      for (const char* precision : {"32", "bf16-mixed", "16-mixed"}) {
        if (!cuda && std::string(precision) == "16-mixed") continue;  // no fp16 autocast on CPU
        Result r = run(model, precision, batch, steps, data.train(), device);
        std::printf("%-9s %-11s %12.1f %12.1f\n", r.model.c_str(), r.precision.c_str(),
                    r.samples_per_second, r.peak_mb);
        out.push_back({{"model", r.model},
                       {"precision", r.precision},
                       {"samples_per_second", r.samples_per_second},
                       {"peak_mb", r.peak_mb},
                       {"device", device.str()}});
      }
    }
    if (!json.empty()) std::ofstream(json) << out.dump(2) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
