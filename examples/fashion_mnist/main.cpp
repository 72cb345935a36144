// Fashion-MNIST image classification with frugal's Trainer.
//
//   build/examples/fashion_mnist/fashion_mnist                  # defaults: CNN, 15 epochs
//   build/examples/fashion_mnist/fashion_mnist --fast-dev-run 2 # a smoke test
//   build/examples/fashion_mnist/fashion_mnist --model mlp --max-epochs 5 --metrics-json m.json
//
// Validation (early stopping, the best checkpoint) uses --val-size images held out of the training
// set by a seeded draw; the test set is touched once, at the end.
// Flags are named after TrainerOptions. Prints the test accuracy at the end; --metrics-json
// writes the run's summary (with a SHA-256 of the final parameters, to compare runs bit for bit).
#include <frugal/frugal.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "../common/trainer_cli.h"

namespace {

struct Args {
  std::string data_dir = frugal::datasets::FashionMnist::kDefaultDir;
  std::string model = "cnn";
  int64_t val_size = 5000;
  frugal_examples::TrainerArgs train;
};

torch::nn::Sequential make_model(const std::string& name) {
  if (name == "cnn") return frugal::models::SmallCnn();
  if (name == "cnn-bn") return frugal::models::SmallCnnBn();
  if (name == "mlp") return frugal::models::Mlp();
  throw frugal::Error("--model must be cnn, cnn-bn or mlp, got \"" + name + "\"");
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"Train a Fashion-MNIST classifier with frugal"};
  app.add_option("--data-dir", a.data_dir, "folder with the IDX files (gzip'd or plain)");
  app.add_option("--model", a.model, "cnn, cnn-bn or mlp")->capture_default_str();
  app.add_option("--val-size", a.val_size,
                 "training images held out (seeded by --seed) for validation")
      ->capture_default_str();
  a.train.max_epochs = 15;
  frugal_examples::add_trainer_options(app, a.train);
  CLI11_PARSE(app, argc, argv);

  try {
    const frugal_examples::TrainerArgs& t = a.train;
    const frugal::TrainerOptions options = frugal_examples::trainer_options(t);
    auto data = frugal::datasets::FashionMnist::load(a.data_dir);
    torch::manual_seed(static_cast<uint64_t>(a.train.seed));  // the model's initial weights
    torch::nn::Sequential net = make_model(a.model);
    frugal::Classifier task(net, frugal_examples::adamw_cosine(t));
    auto counter = std::make_shared<frugal_examples::SampleCounter>();
    auto memory = std::make_shared<frugal::MemoryMonitor>();
    auto checkpoints = frugal_examples::checkpoint_callback(t);
    frugal::Trainer trainer(options, {counter, memory, checkpoints}, frugal_examples::loggers(t));

    const auto start = std::chrono::steady_clock::now();
    // A seeded held-out part of the training set validates; the test set is used once, below.
    const int64_t n = data.train().images.size(0);
    FRUGAL_CHECK(a.val_size >= 1 && a.val_size < n, "--val-size must be in [1, ", n - 1, "], got ",
                 a.val_size);
    at::Generator split_gen = at::detail::createCPUGenerator(static_cast<uint64_t>(a.train.seed));
    const at::Tensor perm = at::randperm(n, split_gen, at::TensorOptions().dtype(at::kLong));
    const at::Tensor val_idx = std::get<0>(perm.slice(0, 0, a.val_size).sort());
    const at::Tensor train_idx = std::get<0>(perm.slice(0, a.val_size).sort());
    auto train_loader =
        std::make_shared<frugal::TensorLoader>(data.train().images.index_select(0, train_idx),
                                               data.train().labels.index_select(0, train_idx),
                                               frugal::TensorLoaderOptions(a.train.batch_size)
                                                   .shuffle(true)
                                                   .seed(static_cast<uint64_t>(a.train.seed)));
    auto val_loader = std::make_shared<frugal::TensorLoader>(
        data.train().images.index_select(0, val_idx), data.train().labels.index_select(0, val_idx),
        frugal::TensorLoaderOptions(256).pad_shards(false));
    trainer.fit(task, train_loader, val_loader, a.train.ckpt_path);
    const double train_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double val_acc = trainer.metrics().get("val/acc").value_or(NAN);
    const double val_loss = trainer.metrics().get("val/loss").value_or(NAN);
    auto test = trainer.test(task, data.test_loader(256));

    const double test_acc = test.count("test/acc") ? test["test/acc"] : NAN;
    const double test_loss = test.count("test/loss") ? test["test/loss"] : NAN;
    const std::string sha = frugal::params_sha256(*net);
    if (!trainer.is_global_zero()) return 0;  // data parallel: rank 0 reports
    std::cout << "test accuracy: " << test_acc << "  (loss " << test_loss << ", "
              << trainer.state().epoch << " epochs, " << trainer.state().global_step << " steps, "
              << train_seconds << " s)\n";
    if (!a.train.metrics_json.empty()) {
      nlohmann::json j = {
          {"test_acc", test_acc},
          {"test_loss", test_loss},
          {"epochs", trainer.state().epoch},
          {"global_step", trainer.state().global_step},
          {"train_seconds", train_seconds},
          {"samples_per_second", counter->samples / std::max(train_seconds, 1e-9)},
          {"peak_rss_mb", frugal::read_memory_stats().peak_rss / 1048576.0},
          {"params_sha256", sha},
          {"stop_reason", trainer.state().stop_reason},
          {"best_model_path", checkpoints->best_model_path()},
          {"val_acc", val_acc},
          {"val_loss", val_loss},
      };
      frugal::detail::write_file_atomically(a.train.metrics_json, j.dump(2) + "\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
