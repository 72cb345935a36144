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

namespace {

struct Args {
  std::string data_dir = frugal::datasets::FashionMnist::kDefaultDir;
  std::string model = "cnn";
  int64_t max_epochs = 15;
  int64_t max_steps = -1;
  int64_t batch_size = 64;
  int64_t val_size = 5000;
  double lr = 1e-3;
  double weight_decay = 1e-4;
  int64_t seed = 42;
  std::string limit_train_batches = "1.0";
  std::string limit_val_batches = "1.0";
  int64_t fast_dev_run = 0;
  std::string precision = "auto";
  int64_t accumulate_grad_batches = 1;
  double gradient_clip_val = 0.0;
  std::string default_root_dir = ".";
  std::string logger = "both";
  int64_t num_threads = 0;
  std::string metrics_json;
  bool no_progress_bar = false;
  bool deterministic = false;
  std::string accelerator = "auto";
  int64_t log_every_n_steps = 50;
  std::string ckpt_path;
  int64_t save_every_n_steps = 0;
  int64_t save_top_k = 1;
  std::string monitor = "val/acc";
  bool no_save_last = false;
  std::string max_time;
};

/// Counts training samples, for samples/s.
struct SampleCounter : frugal::Callback {
  int64_t samples = 0;
  void on_train_batch_end(frugal::Trainer&, frugal::Task&, const at::Tensor&,
                          const frugal::Batch& batch, int64_t) override {
    samples += batch.size();
  }
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
  app.add_option("--max-epochs", a.max_epochs)->capture_default_str();
  app.add_option("--max-steps", a.max_steps, "optimizer steps (-1: no limit)")
      ->capture_default_str();
  app.add_option("--batch-size", a.batch_size)->capture_default_str();
  app.add_option("--val-size", a.val_size,
                 "training images held out (seeded by --seed) for validation")
      ->capture_default_str();
  app.add_option("--lr", a.lr, "AdamW learning rate (cosine-annealed per epoch)")
      ->capture_default_str();
  app.add_option("--weight-decay", a.weight_decay)->capture_default_str();
  app.add_option("--seed", a.seed)->capture_default_str();
  app.add_option("--limit-train-batches", a.limit_train_batches, "fraction (0.1) or count (100)")
      ->capture_default_str();
  app.add_option("--limit-val-batches", a.limit_val_batches)->capture_default_str();
  app.add_option("--fast-dev-run", a.fast_dev_run, "run n batches of train/val/test")
      ->capture_default_str();
  app.add_option("--precision", a.precision, "auto, 32, bf16-mixed or 16-mixed")
      ->capture_default_str();
  app.add_option("--accumulate-grad-batches", a.accumulate_grad_batches)->capture_default_str();
  app.add_option("--gradient-clip-val", a.gradient_clip_val)->capture_default_str();
  app.add_option("--default-root-dir", a.default_root_dir)->capture_default_str();
  app.add_option("--logger", a.logger,
                 "files under DEFAULT_ROOT_DIR/frugal_logs/version_N: csv (metrics.csv, "
                 "hparams.yaml, report.html), tensorboard (event file), both or none")
      ->check(CLI::IsMember({"csv", "tensorboard", "both", "none"}))
      ->capture_default_str();
  app.add_option(
         "--num-threads", a.num_threads,
         "LibTorch intra-op threads (0: the CPUs this process may use; -1: LibTorch's own default)")
      ->capture_default_str();
  app.add_option("--accelerator", a.accelerator, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--log-every-n-steps", a.log_every_n_steps)->capture_default_str();
  app.add_option("--metrics-json", a.metrics_json, "write the final summary as JSON here");
  app.add_option("--ckpt-path", a.ckpt_path, "resume from a checkpoint: a path, last or best");
  app.add_option("--save-every-n-steps", a.save_every_n_steps,
                 "checkpoint every n optimizer steps (0: every epoch)")
      ->capture_default_str();
  app.add_option("--save-top-k", a.save_top_k, "keep the best k checkpoints (-1: all, 0: none)")
      ->capture_default_str();
  app.add_option("--monitor", a.monitor, "metric ranking checkpoints (\"\": none)")
      ->capture_default_str();
  app.add_flag("--no-save-last", a.no_save_last, "do not keep last.ckpt");
  app.add_option("--max-time", a.max_time, "wall-clock limit, DD:HH:MM:SS");
  app.add_flag("--no-progress-bar", a.no_progress_bar);
  app.add_flag("--deterministic", a.deterministic);
  CLI11_PARSE(app, argc, argv);

  try {
    FRUGAL_CHECK(a.num_threads >= -1, "--num-threads must be >= 0 (or -1), got ", a.num_threads);
    frugal::TrainerOptions options =
        frugal::TrainerOptions()
            .max_epochs(a.max_epochs)
            .max_steps(a.max_steps)
            .seed(a.seed)
            .deterministic(a.deterministic)
            .limit_train_batches(frugal::BatchLimit::parse(a.limit_train_batches))
            .limit_val_batches(frugal::BatchLimit::parse(a.limit_val_batches))
            .fast_dev_run(a.fast_dev_run)
            .precision(a.precision)
            .num_threads(a.num_threads)
            .accumulate_grad_batches(a.accumulate_grad_batches)
            .gradient_clip_val(a.gradient_clip_val)
            .default_root_dir(a.default_root_dir)
            .accelerator(a.accelerator)
            .log_every_n_steps(a.log_every_n_steps)
            .enable_progress_bar(!a.no_progress_bar);
    if (!a.max_time.empty()) options.max_time(a.max_time);
    FRUGAL_CHECK(a.batch_size >= 1, "--batch-size must be >= 1, got ", a.batch_size);

    auto data = frugal::datasets::FashionMnist::load(a.data_dir);
    torch::manual_seed(static_cast<uint64_t>(a.seed));  // the model's initial weights
    torch::nn::Sequential net = make_model(a.model);
    const int64_t epochs_for_schedule = std::max<int64_t>(1, a.max_epochs);
    frugal::Classifier task(
        net, frugal::with_scheduler(frugal::AdamW(a.lr, a.weight_decay),
                                    [epochs_for_schedule](torch::optim::Optimizer& opt) {
                                      return std::make_shared<frugal::CosineAnnealingLR>(
                                          opt, epochs_for_schedule);
                                    }));
    auto counter = std::make_shared<SampleCounter>();
    auto memory = std::make_shared<frugal::MemoryMonitor>();
    auto checkpoints = std::make_shared<frugal::ModelCheckpoint>(
        frugal::ModelCheckpointOptions()
            .dirpath(a.default_root_dir + "/checkpoints")
            .filename(a.monitor.empty() ? "{epoch}-{step}"
                                        : "{epoch}-{step}-{" + a.monitor + ":.4f}")
            .monitor(a.monitor)
            .mode(a.monitor.find("loss") != std::string::npos ? "min" : "max")
            .save_top_k(a.save_top_k)
            .save_last(!a.no_save_last)
            .every_n_train_steps(a.save_every_n_steps));
    std::vector<std::shared_ptr<frugal::Logger>> loggers = {
        std::make_shared<frugal::ConsoleLogger>()};
    for (auto& lg : frugal::make_file_loggers(a.logger, a.default_root_dir)) loggers.push_back(lg);
    frugal::Trainer trainer(options, {counter, memory, checkpoints}, loggers);

    const auto start = std::chrono::steady_clock::now();
    // A seeded held-out part of the training set validates; the test set is used once, below.
    const int64_t n = data.train().images.size(0);
    FRUGAL_CHECK(a.val_size >= 1 && a.val_size < n, "--val-size must be in [1, ", n - 1, "], got ",
                 a.val_size);
    at::Generator split_gen = at::detail::createCPUGenerator(static_cast<uint64_t>(a.seed));
    const at::Tensor perm = at::randperm(n, split_gen, at::TensorOptions().dtype(at::kLong));
    const at::Tensor val_idx = std::get<0>(perm.slice(0, 0, a.val_size).sort());
    const at::Tensor train_idx = std::get<0>(perm.slice(0, a.val_size).sort());
    auto train_loader =
        std::make_shared<frugal::TensorLoader>(data.train().images.index_select(0, train_idx),
                                               data.train().labels.index_select(0, train_idx),
                                               frugal::TensorLoaderOptions(a.batch_size)
                                                   .shuffle(true)
                                                   .seed(static_cast<uint64_t>(a.seed)));
    auto val_loader = std::make_shared<frugal::TensorLoader>(
        data.train().images.index_select(0, val_idx), data.train().labels.index_select(0, val_idx),
        frugal::TensorLoaderOptions(256).pad_shards(false));
    trainer.fit(task, train_loader, val_loader, a.ckpt_path);
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
    if (!a.metrics_json.empty()) {
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
      frugal::detail::write_file_atomically(a.metrics_json, j.dump(2) + "\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
