// The deployment table of docs/deploy.md: per model and per method, the file size, CPU latency at
// batch 1 and 64, and Fashion-MNIST test accuracy.
//
// Models (1 x 28 x 28 inputs, 10 classes): a 784-1024-1024-10 MLP, SmallCnnBn, and the zoo's
// ResNet-18 and MobileNetV2 built for one input channel. Each is trained from scratch with Adam
// for --epochs over the first --train-samples training images. Methods, each from that model:
//   fp32            the trained model; file: save_safetensors
//   dynamic int8    quantize_dynamic_graph (every Linear int8); file: QuantizedModel::save
//   static int8     quantize_static calibrated on --calibration-batches of 64 training images
//   fp32 + the same fine-tuning: the trained model trained on --finetune-samples more images,
//                   the accuracy the pruned rows compare with (not timed, no file)
//   pruned 50 / 90  global L1 unstructured masks (--per-layer: also per weight tensor)
//   (l1_unstructured_prune_masks, what ModelPruning
//                   computes), then --finetune-samples of training with the masks kept;
//                   file: save_sparse_safetensors (bit mask + non-zeros for tensors >= 50 % zero)
//   channel-pruned  prune_channels (50 % of every prunable channel group), then the same
//                   fine-tuning; file: save_safetensors of the smaller model
//   channel-pruned + static int8
// Latency: every method of a model timed in each repeat, interleaved (medians).
//
//   build/bench/bench_deploy_table --threads 2 --repeats 5
#include <fmt/format.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "bench_support.h"
#include "frugal/callbacks/model_pruning.h"
#include "frugal/data/datasets/mnist.h"
#include "frugal/deploy/quantize.h"
#include "frugal/deploy/quantized_model.h"
#include "frugal/error.h"
#include "frugal/io/sparse_weights.h"
#include "frugal/io/weights.h"
#include "frugal/models/channel_pruning.h"
#include "frugal/models/small.h"
#include "frugal/models/zoo.h"

namespace nn = torch::nn;
namespace fs = std::filesystem;

namespace {

using Forward = std::function<at::Tensor(const at::Tensor&)>;

struct Model {
  std::string label;
  std::shared_ptr<nn::Module> module;
  Forward forward;
};

Model make_model(const std::string& name) {
  if (name == "mlp") {
    auto net = frugal::models::Mlp(784, 1024, 10, 2);
    return {"MLP 784-1024-1024-10", net.ptr(),
            [net](const at::Tensor& x) mutable { return net->forward(x); }};
  }
  if (name == "cnn") {
    auto net = frugal::models::SmallCnnBn();
    return {"SmallCnnBn", net.ptr(),
            [net](const at::Tensor& x) mutable { return net->forward(x); }};
  }
  auto zoo = frugal::models::create_model(name, 10, /*in_channels=*/1);
  return {name + " (zoo, 1 channel)", zoo, [zoo](const at::Tensor& x) { return zoo->forward(x); }};
}

/// Adam over `samples` training images (batch 128, shuffled by `seed`); masks (if any) are
/// applied to the gradients and the weights after every step, as ModelPruning does.
void train(Model& m, const frugal::datasets::Split& data, int64_t samples, int64_t epochs,
           uint64_t seed, const std::vector<at::Tensor>& params = {},
           const std::vector<at::Tensor>& masks = {}) {
  m.module->train();
  torch::optim::Adam opt(m.module->parameters(), torch::optim::AdamOptions(1e-3));
  const int64_t n = std::min<int64_t>(samples, data.images.size(0));
  torch::manual_seed(seed);
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    at::Tensor order = torch::randperm(data.images.size(0)).slice(0, 0, n);
    for (int64_t i = 0; i + 128 <= n; i += 128) {
      at::Tensor idx = order.slice(0, i, i + 128);
      opt.zero_grad();
      torch::nn::functional::cross_entropy(m.forward(data.images.index_select(0, idx)),
                                           data.labels.index_select(0, idx))
          .backward();
      for (size_t k = 0; k < masks.size(); ++k) params[k].mutable_grad().mul_(masks[k]);
      opt.step();
      torch::NoGradGuard no_grad;
      for (size_t k = 0; k < masks.size(); ++k) params[k].mul_(masks[k]);
    }
  }
  m.module->eval();
}

double accuracy(const Forward& forward, const frugal::datasets::Split& test) {
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t i = 0; i < test.images.size(0); i += 500) {
    at::Tensor x = test.images.slice(0, i, i + 500);
    correct += forward(x).argmax(1).eq(test.labels.slice(0, i, i + 500)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(test.images.size(0));
}

double time_ms(const Forward& forward, const at::Tensor& x, double budget_ms) {
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 2; ++i) forward(x);
  int iterations = 0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  do {
    forward(x);
    ++iterations;
    elapsed =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  } while (elapsed < budget_ms || iterations < 3);
  return elapsed / iterations;
}

double file_mb(const std::string& path) { return static_cast<double>(fs::file_size(path)) / 1e6; }

struct Row {
  std::string method;
  Forward forward;
  double mb = 0;
  double acc = 0;
  std::string note;
  std::vector<double> t1, t64;
};

/// Copies `from`'s parameters and buffers into a fresh `to` of the same architecture.
void copy_state(nn::Module& from, nn::Module& to) {
  frugal::load_state_dict(to, frugal::module_state(from));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Deployment table: size, latency and accuracy per model and method (CPU)"};
  int threads = 2, repeats = 5, calibration_batches = 10;
  int64_t epochs = 1, train_samples = 20000, finetune_samples = 10000;
  std::string data_dir = frugal::datasets::FashionMnist::kDefaultDir;
  std::string out_dir = "/tmp/frugal_deploy_table";
  std::vector<std::string> models = {"mlp", "cnn", "resnet18", "mobilenet_v2"};
  bool per_layer = false;
  app.add_option("--threads", threads, "intra-op threads (at::set_num_threads)");
  app.add_option("--repeats", repeats, "timed repeats (median reported)");
  app.add_option("--epochs", epochs, "training epochs over --train-samples");
  app.add_option("--train-samples", train_samples, "training images used");
  app.add_option("--finetune-samples", finetune_samples, "images of fine-tuning after pruning");
  app.add_option("--calibration-batches", calibration_batches, "batches of 64 for static int8");
  app.add_option("--data", data_dir, "Fashion-MNIST folder");
  app.add_option("--out", out_dir, "folder for the files whose sizes are reported");
  app.add_option("--models", models, "mlp, cnn, resnet18, mobilenet_v2, ... (zoo names)");
  app.add_flag("--per-layer", per_layer,
               "also prune 50 / 90 % of each weight tensor (not globally) and fine-tune");
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(threads);
  fs::create_directories(out_dir);
  const auto data = frugal::datasets::FashionMnist::load(data_dir);
  const auto& train_split = data.train();
  const auto& test = data.test();
  std::vector<at::Tensor> calibration;
  for (int i = 0; i < calibration_batches; ++i)
    calibration.push_back(train_split.images.slice(0, 64 * i, 64 * (i + 1)));
  const at::Tensor x1 = test.images.slice(0, 0, 1), x64 = test.images.slice(0, 0, 64);
  std::string engine = "none";
  std::vector<std::string> table;
  for (const std::string& name : models) {
    torch::manual_seed(0);
    Model base = make_model(name);
    const auto t0 = std::chrono::steady_clock::now();
    train(base, train_split, train_samples, epochs, 1);
    const double train_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string stem = out_dir + "/" + name;
    std::vector<Row> rows;
    auto add = [&](Row r) {
      fmt::print("  {:<28} {:>8.3f} MB  accuracy {:.4f} {}\n", r.method, r.mb, r.acc, r.note);
      std::fflush(stdout);
      rows.push_back(std::move(r));
    };
    fmt::print("{}: trained in {:.1f} s\n", base.label, train_s);
    frugal::save_safetensors(*base.module, stem + ".fp32.safetensors");
    add({"fp32", base.forward, file_mb(stem + ".fp32.safetensors"), accuracy(base.forward, test)});

    auto dyn = frugal::quantize_dynamic_graph(*base.module, x64);
    dyn->save(stem + ".dynamic.safetensors");
    add({"dynamic int8", [dyn](const at::Tensor& x) mutable { return dyn->forward(x); },
         file_mb(stem + ".dynamic.safetensors"),
         accuracy([dyn](const at::Tensor& x) mutable { return dyn->forward(x); }, test),
         fmt::format("({} int8 ops)", dyn->int8_ops())});

    auto stat = frugal::quantize_static(*base.module, calibration);
    engine = stat->engine();
    stat->save(stem + ".static.safetensors");
    Forward stat_forward = [stat](const at::Tensor& x) mutable { return stat->forward(x); };
    add({"static int8", stat_forward, file_mb(stem + ".static.safetensors"),
         accuracy(stat_forward, test),
         fmt::format("({} int8 ops, {} float)", stat->int8_ops(), stat->float_ops())});

    {
      // The reference for the pruned rows, which train on --finetune-samples more images: the
      // unpruned model trained as long.
      Model longer = make_model(name);
      copy_state(*base.module, *longer.module);
      train(longer, train_split, finetune_samples, 1, 2);
      add({"fp32 + the same fine-tuning", longer.forward, 0, accuracy(longer.forward, test),
           "(reference for the pruned rows; not timed)"});
      rows.back().forward = nullptr;
    }

    for (const auto& [amount, global] : std::vector<std::pair<double, bool>>{
             {0.5, true}, {0.9, true}, {0.5, false}, {0.9, false}}) {
      if (!global && !per_layer) continue;
      Model pruned = make_model(name);
      copy_state(*base.module, *pruned.module);
      std::vector<at::Tensor> params, masks;
      for (auto& p : frugal::default_prunable_parameters(*pruned.module, {"weight"})) {
        if (p.second.dim() < 2) continue;  // convolution and Linear weights, not BatchNorm
        params.push_back(p.second);
        masks.push_back(torch::ones_like(p.second));
      }
      frugal::l1_unstructured_prune_masks(params, masks, amount, global);
      int64_t dead_layers = 0;  // weights pruned to (almost) nothing: a layer cut off
      for (const auto& m : masks) dead_layers += m.mean().item<double>() < 0.01;
      {
        torch::NoGradGuard no_grad;
        for (size_t k = 0; k < params.size(); ++k) params[k].mul_(masks[k]);
      }
      train(pruned, train_split, finetune_samples, 1, 2, params, masks);
      const std::string path = fmt::format("{}.pruned{}{}.safetensors", stem, int(amount * 100),
                                           global ? "" : "-per-layer");
      frugal::save_sparse_safetensors(*pruned.module, path, 0.5);
      add({fmt::format("pruned {}% unstructured{}", int(amount * 100), global ? "" : " per layer"),
           pruned.forward, file_mb(path), accuracy(pruned.forward, test),
           fmt::format("(sparse file; {} of {} weights >= 99 % zero)", dead_layers, masks.size())});
    }

    Model slim = make_model(name);
    copy_state(*base.module, *slim.module);
    try {
      const auto report =
          frugal::prune_channels(*slim.module, frugal::ChannelPruningOptions().amount(0.5));
      train(slim, train_split, finetune_samples, 1, 3);
      frugal::save_safetensors(*slim.module, stem + ".channels.safetensors");
      add({"channel-pruned 50%", slim.forward, file_mb(stem + ".channels.safetensors"),
           accuracy(slim.forward, test),
           fmt::format("({} -> {} parameters)", report.parameters_before,
                       report.parameters_after)});
      auto slim_int8 = frugal::quantize_static(*slim.module, calibration);
      slim_int8->save(stem + ".channels.static.safetensors");
      Forward f = [slim_int8](const at::Tensor& x) mutable { return slim_int8->forward(x); };
      add({"channel-pruned 50% + static int8", f, file_mb(stem + ".channels.static.safetensors"),
           accuracy(f, test)});
    } catch (const frugal::Error& e) {
      fmt::print("  channel pruning: {}\n", e.what());
    }

    // Latency: all methods in every repeat, interleaved.
    for (int r = 0; r < repeats; ++r) {
      for (auto& row : rows) {
        if (!row.forward) continue;
        row.t1.push_back(time_ms(row.forward, x1, 300));
        row.t64.push_back(time_ms(row.forward, x64, 600));
      }
    }
    using frugal::bench::median;
    const double f1 = median(rows[0].t1), f64 = median(rows[0].t64);
    for (auto& row : rows) {
      if (!row.forward) {
        table.push_back(fmt::format("| {} | {} | - | - | - | {:.4f} ({:+.4f}) |", base.label,
                                    row.method, row.acc, row.acc - rows[0].acc));
        continue;
      }
      const double m1 = median(row.t1), m64 = median(row.t64);
      table.push_back(fmt::format(
          "| {} | {} | {:.3f} ({:.2f}x) | {:.3f} ({:.2f}x) | {:.2f} ({:.2f}x) | {:.4f} ({:+.4f}) |",
          base.label, row.method, row.mb, row.mb / rows[0].mb, m1, f1 / m1, m64, f64 / m64, row.acc,
          row.acc - rows[0].acc));
    }
    fmt::print("{}\n", table.back());
  }
  fmt::print(
      "\n| model | method | file MB (vs fp32) | CPU ms batch 1 (speed-up) | CPU ms batch 64 "
      "(speed-up) | test accuracy (change) |\n|---|---|---|---|---|---|\n");
  for (const auto& row : table) fmt::print("{}\n", row);
  fmt::print(
      "({} thread(s), int8 engine {}, trained {} epoch(s) on {} images, pruned models fine-tuned "
      "on {} images; latency medians of {} interleaved repeats)\n",
      threads, engine, epochs, train_samples, finetune_samples, repeats);
  return 0;
}
