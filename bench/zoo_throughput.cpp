// The zoo's sizes and CPU speed: parameters, fp32 MB, images/s for batch 32 at 224x224 and 64x64,
// train step (forward + backward + SGD step) and eval forward; medians of --repeats timed steps
// after one warm-up step. The reference in the same run is resnet18 (ratios printed per model).
//
//   build/bench/bench_zoo_throughput --repeats 3 --sizes 64,224 --threads 2
//   build/bench/bench_zoo_throughput --channels-last   # NHWC against NCHW, interleaved, per model
#include <fmt/format.h>
#include <frugal/frugal.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>

#include "models/layout.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Images per second of `repeats` timed steps (one warm-up).
double images_per_s(frugal::models::ZooModel& m, int64_t batch, int64_t size, bool train,
                    int repeats, bool channels_last = false) {
  auto x = torch::randn({batch, 3, size, size});
  if (channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  auto y = torch::randint(0, 1000, {batch}, torch::kLong);
  torch::optim::SGD opt(m.parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  std::vector<double> secs;
  for (int r = 0; r <= repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    if (train) {
      m.train();
      opt.zero_grad();
      torch::nn::functional::cross_entropy(m.forward(x), y).backward();
      opt.step();
    } else {
      m.eval();
      torch::NoGradGuard g;
      m.forward(x);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) secs.push_back(s);
  }
  return static_cast<double>(batch) / median(secs);
}

// The model's 4-D parameters and buffers in `format`, as TrainerOptions::channels_last sets them.
void set_layout(torch::nn::Module& m, at::MemoryFormat format) {
  for (at::Tensor t : m.parameters()) t.mutable_grad() = at::Tensor();  // of the other layout
  frugal::detail::set_memory_format(m.parameters(), format);
  frugal::detail::set_memory_format(m.buffers(), format);
}

// Per model and size: images/s in NCHW and NHWC, alternating, and the ratio NHWC / NCHW.
void compare_layouts(const std::vector<std::string>& models, const std::vector<int64_t>& sizes,
                     int64_t batch, int repeats) {
  std::cout << "| model | size | train NCHW | train NHWC | NHWC/NCHW | eval NCHW | eval NHWC | "
               "NHWC/NCHW |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& name : models) {
    auto m = frugal::models::create_model(name);
    for (auto s : sizes) {
      double v[2][2];  // [layout][train, eval]
      for (int layout = 0; layout < 2; ++layout) {
        set_layout(*m, layout ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
        v[layout][0] = images_per_s(*m, batch, s, true, repeats, layout == 1);
        v[layout][1] = images_per_s(*m, batch, s, false, repeats, layout == 1);
      }
      std::cout << fmt::format(
                       "| {} | {} | {:.1f} | {:.1f} | {:.2f} | {:.1f} | {:.1f} | {:.2f} |\n", name,
                       s, v[0][0], v[1][0], v[1][0] / v[0][0], v[0][1], v[1][1], v[1][1] / v[0][1])
                << std::flush;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 3;
  int64_t batch = 32;
  int threads = 0;
  std::vector<int64_t> sizes = {64, 224};
  std::vector<std::string> models = frugal::models::model_names();
  CLI::App app{"Zoo sizes and CPU images/s"};
  app.add_option("--repeats", repeats)->check(CLI::PositiveNumber);
  app.add_option("--batch", batch)->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "torch threads (0: default)");
  app.add_option("--sizes", sizes, "image sizes")->delimiter(',');
  app.add_option("--models", models, "zoo models")->delimiter(',');
  bool channels_last = false;
  app.add_flag("--channels-last", channels_last, "compare NHWC with NCHW instead");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) torch::set_num_threads(threads);
  torch::manual_seed(0);
  std::cout << fmt::format("batch {}, {} threads, median of {} steps\n", batch,
                           torch::get_num_threads(), repeats);
  if (channels_last) {
    compare_layouts(models, sizes, batch, repeats);
    return 0;
  }
  std::cout << "| model | params | MB (fp32) |";
  for (auto s : sizes) std::cout << fmt::format(" train {0}px img/s | eval {0}px img/s |", s);
  std::cout << "\n|---|---:|---:|";
  for (size_t i = 0; i < sizes.size(); ++i) std::cout << "---:|---:|";
  std::cout << "\n";
  for (const auto& name : models) {
    auto m = frugal::models::create_model(name);
    int64_t params = 0, bytes = 0;
    for (const auto& [k, t] : frugal::module_state(*m)) bytes += t.numel() * t.element_size();
    for (const auto& p : m->parameters()) params += p.numel();
    std::cout << fmt::format("| {} | {} | {:.1f} |", name, params, bytes / 1e6) << std::flush;
    for (auto s : sizes) {
      const double tr = images_per_s(*m, batch, s, true, repeats);
      const double ev = images_per_s(*m, batch, s, false, repeats);
      std::cout << fmt::format(" {:.1f} | {:.1f} |", tr, ev) << std::flush;
    }
    std::cout << "\n";
  }
  return 0;
}
