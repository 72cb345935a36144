// Dynamic int8 quantization (frugal::quantize_dynamic) against float32 on the CPU: a 3-layer MLP
// (784-1024-1024-10) and SmallCnn (whose only Linear layers are its head), each trained for
// --epochs on Fashion-MNIST, then per engine of this LibTorch build: latency at batch 1 and 64
// (fp32 and int8 interleaved in every repeat; medians), archive size (torch::save), ONNX size of
// the float model, and test accuracy. Prints a Markdown table (docs/deploy.md) and the ratios.
//
//   build/bench/bench_quantize_dynamic --threads 1 --repeats 7
#include <fmt/format.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include "bench_support.h"
#include "frugal/data/datasets/mnist.h"
#include "frugal/deploy/onnx.h"
#include "frugal/deploy/quantize.h"
#include "frugal/models/small.h"

namespace nn = torch::nn;

namespace {

double megabytes(nn::Sequential net) {
  std::ostringstream out;
  torch::save(net, out);
  return static_cast<double>(out.str().size()) / 1e6;
}

void train(nn::Sequential net, const frugal::datasets::FashionMnist& data, int64_t epochs) {
  net->train();
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
  auto loader = data.train_loader(128, /*seed=*/1);
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    loader->start_epoch(epoch);
    while (auto batch = loader->next()) {
      opt.zero_grad();
      torch::nn::functional::cross_entropy(net->forward(batch->data), batch->target).backward();
      opt.step();
    }
  }
  net->eval();
}

double accuracy(nn::Sequential net, const frugal::datasets::Split& test) {
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t i = 0; i < test.images.size(0); i += 1000) {
    at::Tensor x = test.images.slice(0, i, i + 1000);
    correct +=
        net->forward(x).argmax(1).eq(test.labels.slice(0, i, i + 1000)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(test.images.size(0));
}

/// Milliseconds per forward pass of `net` on `x`, `iterations` passes after a warm-up.
double time_ms(nn::Sequential net, const at::Tensor& x, int iterations) {
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) net->forward(x);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) net->forward(x);
  const std::chrono::duration<double, std::milli> elapsed =
      std::chrono::steady_clock::now() - start;
  return elapsed.count() / iterations;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Dynamic int8 quantization against float32 (CPU)"};
  int threads = 1, repeats = 7;
  int64_t epochs = 1;
  std::string data_dir = frugal::datasets::FashionMnist::kDefaultDir;
  std::vector<std::string> models = {"mlp", "cnn"};
  app.add_option("--threads", threads, "intra-op threads (at::set_num_threads)");
  app.add_option("--repeats", repeats, "timed repeats (median reported)");
  app.add_option("--epochs", epochs, "training epochs before measuring accuracy");
  app.add_option("--data", data_dir, "Fashion-MNIST folder");
  app.add_option("--models", models, "mlp and/or cnn");
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(threads);
  torch::manual_seed(0);
  const auto data = frugal::datasets::FashionMnist::load(data_dir);
  std::vector<std::string> rows;
  for (const std::string& name : models) {
    nn::Sequential net =
        name == "mlp" ? frugal::models::Mlp(784, 1024, 10, 2) : frugal::models::SmallCnn();
    const std::string label = name == "mlp" ? "MLP 784-1024-1024-10" : "SmallCnn";
    const auto t0 = std::chrono::steady_clock::now();
    train(net, data, epochs);
    const double train_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double fp32_acc = accuracy(net, data.test());
    double onnx_mb = 0;
    if (frugal::onnx_export_available()) {
      onnx_mb = frugal::export_onnx_to_string(*net, data.test().images.slice(0, 0, 2)).size() / 1e6;
    }
    fmt::print("{}: trained {} epoch(s) in {:.1f} s, fp32 test accuracy {:.4f}\n", label, epochs,
               train_s, fp32_acc);
    // Every engine's int8 model and the float model are timed in each repeat, interleaved, so
    // that the machine's load changes hit all of them alike.
    const std::vector<std::string> engines = frugal::quantization_engines();
    std::vector<nn::Sequential> quantized;
    std::vector<double> accuracies;
    for (const std::string& engine : engines) {
      frugal::DynamicQuantizeOptions options;
      options.engine = engine;
      quantized.push_back(frugal::quantize_dynamic(net, options));
      accuracies.push_back(accuracy(quantized.back(), data.test()));
    }
    const at::Tensor x1 = data.test().images.slice(0, 0, 1);
    const at::Tensor x64 = data.test().images.slice(0, 0, 64);
    const int it1 = name == "mlp" ? 200 : 50, it64 = name == "mlp" ? 30 : 5;
    // [0] float, [1 + i] engine i
    std::vector<std::vector<double>> t1(engines.size() + 1), t64(engines.size() + 1);
    for (int r = 0; r < repeats; ++r) {
      for (size_t m = 0; m <= engines.size(); ++m) {
        nn::Sequential model = m == 0 ? net : quantized[m - 1];
        t1[m].push_back(time_ms(model, x1, it1));
        t64[m].push_back(time_ms(model, x64, it64));
      }
    }
    using frugal::bench::median;
    const double mf1 = median(t1[0]), mf64 = median(t64[0]), fmb = megabytes(net);
    rows.push_back(fmt::format("| {} | fp32 | {:.2f} (ONNX {:.2f}) | {:.3f} | {:.2f} | {:.4f} |",
                               label, fmb, onnx_mb, mf1, mf64, fp32_acc));
    for (size_t i = 0; i < engines.size(); ++i) {
      const double mq1 = median(t1[i + 1]), mq64 = median(t64[i + 1]);
      const double qmb = megabytes(quantized[i]);
      rows.push_back(fmt::format(
          "| {} | dynamic int8 ({}) | {:.2f} | {:.3f} ({:.2f}x) | {:.2f} ({:.2f}x) | {:.4f} "
          "({:+.4f}) |",
          label, engines[i], qmb, mq1, mf1 / mq1, mq64, mf64 / mq64, accuracies[i],
          accuracies[i] - fp32_acc));
      fmt::print(
          "  {}: speed-up batch 1 {:.2f}x, batch 64 {:.2f}x; size {:.2f}x; accuracy {:+.4f}\n",
          engines[i], mf1 / mq1, mf64 / mq64, qmb / fmb, accuracies[i] - fp32_acc);
    }
  }
  fmt::print(
      "\n| model | method | file MB | CPU ms batch 1 | CPU ms batch 64 | test accuracy |\n"
      "|---|---|---|---|---|---|\n");
  for (const auto& row : rows) fmt::print("{}\n", row);
  fmt::print("({} thread(s), medians of {} interleaved repeats)\n", threads, repeats);
  return 0;
}
