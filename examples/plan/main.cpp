// Plan a Fashion-MNIST run: quick trials of an MLP, the CNN, the CNN with BatchNorm and a small
// ResNet, each at a few micro-batches (and precisions, if asked), ranked under a memory budget.
//
//   build/examples/plan/plan                                  # defaults: 10% of the data, 2 epochs
//   build/examples/plan/plan --memory-budget 48 --weight-accuracy 4
//   build/examples/plan/plan --models cnn,resnet --precisions 32,bf16-mixed --micro-batches 64
//
//   build/examples/plan/plan --image-folder data/train --image-size 64 \
//       --models mobilenet_v3_small,efficientnet_b0,resnet18 --micro-batches 32
//
// Validation uses a held-out part of the training set (--val-size samples, seeded), so the test
// set plays no part in choosing. With --image-folder DIR the candidates train on that folder of
// class sub-folders instead (decoded once by an ImageLoader, Resize + CenterCrop to --image-size,
// normalized with ImageNet's mean and std, held in memory). Writes trials.csv, trials.json and
// report.html into --output.
#include <frugal/frugal.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>

#include "../common/image_data.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace {

struct Args {
  std::string data_dir = frugal::datasets::FashionMnist::kDefaultDir;
  std::string image_folder;
  int64_t image_size = 64;
  int64_t decode_threads = 0;
  std::vector<std::string> models = {"mlp", "cnn", "cnn-bn", "resnet"};
  std::vector<std::string> precisions = {"32", "bf16-mixed"};
  std::vector<int64_t> micro_batches = {32, 128};
  std::vector<int64_t> accumulates = {1};
  std::vector<double> lrs = {1e-3};
  double memory_budget_mib = 64.0;
  double max_epoch_seconds = 0.0;
  double fraction = 0.1;
  int64_t epochs = 2;
  int64_t val_size = 5000;
  int64_t seed = 42;
  double weight_memory = 1.0;
  double weight_speed = 1.0;
  double weight_accuracy = 1.0;
  double weight_latency = 0.0;
  double weight_size = 0.0;
  std::string output = "plan";
  std::string accelerator = "auto";
  int64_t num_threads = 0;
  bool no_fixed_mmap_threshold = false;
};

bool is_zoo(const std::string& name) {
  for (const auto& zoo : frugal::models::model_names())
    if (name == zoo) return true;
  return false;
}

// What the models are built for: Fashion-MNIST's 10 classes, 1 channel, 28 pixels by default.
struct Shape {
  int64_t classes = 10;
  int64_t channels = 1;
  int64_t size = 28;
};

torch::nn::Sequential make_small_model(const std::string& name, const Shape& s = {}) {
  if (name == "mlp") return frugal::models::Mlp(s.channels * s.size * s.size, 256, s.classes);
  if (name == "cnn") return frugal::models::SmallCnn(s.classes, s.channels, s.size);
  if (name == "cnn-bn") return frugal::models::SmallCnnBn(s.classes, s.channels, s.size);
  if (name == "resnet") return frugal::models::SmallResNet(s.classes, s.channels);
  throw frugal::Error(
      "--models: each must be mlp, cnn, cnn-bn, resnet or a zoo model (mobilenet_v3_small, "
      "mobilenet_v3_large, mobilenet_v2, efficientnet_b0, resnet18, resnet34, resnet50), got \"" +
      name + "\"");
}

// A Classifier (AdamW at the trial's lr) on a small model or on a zoo model by torchvision's name.
std::unique_ptr<frugal::Task> make_task(const std::string& name, double lr, const Shape& shape) {
  if (!is_zoo(name))
    return std::make_unique<frugal::Classifier>(make_small_model(name, shape), frugal::AdamW(lr));
  std::shared_ptr<frugal::models::ZooModel> net =
      frugal::models::create_model(name, shape.classes, shape.channels);
  return std::make_unique<frugal::Classifier>(
      std::static_pointer_cast<torch::nn::Module>(net),
      [net](const at::Tensor& x) { return net->forward(x); }, frugal::AdamW(lr));
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"Compare Fashion-MNIST models with quick trial runs and rank them"};
  app.add_option("--data-dir", a.data_dir, "folder with the IDX files (gzip'd or plain)");
  app.add_option("--image-folder", a.image_folder,
                 "train on this folder of class sub-folders instead of Fashion-MNIST");
  app.add_option("--image-size", a.image_size, "with --image-folder: the side the models see")
      ->capture_default_str();
  app.add_option("--decode-threads", a.decode_threads,
                 "with --image-folder: decode threads (0: CPUs - 1)");
  app.add_option("--models", a.models,
                 "mlp, cnn, cnn-bn, resnet, or zoo models: mobilenet_v3_small, "
                 "mobilenet_v3_large, mobilenet_v2, efficientnet_b0, resnet18, resnet34, resnet50")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--precisions", a.precisions, "32, bf16-mixed, 16-mixed (CUDA)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--micro-batches", a.micro_batches)->delimiter(',')->capture_default_str();
  app.add_option("--accumulates", a.accumulates, "accumulate_grad_batches values")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--lrs", a.lrs, "AdamW learning rates")->delimiter(',')->capture_default_str();
  app.add_option("--memory-budget", a.memory_budget_mib,
                 "limit on a trial's peak memory growth, MiB (0: none)")
      ->capture_default_str();
  app.add_option("--max-epoch-seconds", a.max_epoch_seconds,
                 "limit on the estimated seconds of one full training epoch (0: none)")
      ->capture_default_str();
  app.add_option("--fraction", a.fraction, "share of the training samples each trial uses")
      ->capture_default_str();
  app.add_option("--epochs", a.epochs, "epochs per trial")->capture_default_str();
  app.add_option("--val-size", a.val_size, "training samples held out for validation")
      ->capture_default_str();
  app.add_option("--seed", a.seed)->capture_default_str();
  app.add_option("--weight-memory", a.weight_memory)->capture_default_str();
  app.add_option("--weight-speed", a.weight_speed)->capture_default_str();
  app.add_option("--weight-accuracy", a.weight_accuracy)->capture_default_str();
  app.add_option("--weight-latency", a.weight_latency,
                 "weight of the batch-1 inference latency in the score (0: reported only)")
      ->capture_default_str();
  app.add_option("--weight-size", a.weight_size,
                 "weight of the fp32 model size in the score (0: reported only)")
      ->capture_default_str();
  app.add_option("--output", a.output, "folder for trials.csv and trials.json (\"\": none)")
      ->capture_default_str();
  app.add_option("--accelerator", a.accelerator, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--num-threads", a.num_threads,
                 "LibTorch intra-op threads (0: the CPUs this process may use)")
      ->capture_default_str();
  app.add_flag("--no-fixed-mmap-threshold", a.no_fixed_mmap_threshold,
               "keep glibc's moving mmap threshold (CPU memory figures get noisy; "
               "docs/budget.md)");
  CLI11_PARSE(app, argc, argv);

  try {
#ifdef __GLIBC__
    if (!a.no_fixed_mmap_threshold) mallopt(M_MMAP_THRESHOLD, 64 * 1024);
#endif
    FRUGAL_CHECK(a.num_threads >= 0, "--num-threads must be >= 0, got ", a.num_threads);
    FRUGAL_CHECK(a.memory_budget_mib >= 0, "--memory-budget must be >= 0 MiB, got ",
                 a.memory_budget_mib);
    frugal::TrialsOptions options = frugal::TrialsOptions()
                                        .data_fraction(a.fraction)
                                        .epochs(a.epochs)
                                        .seed(a.seed)
                                        .accelerator(a.accelerator)
                                        .max_memory_bytes(a.memory_budget_mib * 1024.0 * 1024.0)
                                        .max_epoch_seconds(a.max_epoch_seconds)
                                        .weight_memory(a.weight_memory)
                                        .weight_speed(a.weight_speed)
                                        .weight_accuracy(a.weight_accuracy)
                                        .weight_latency(a.weight_latency)
                                        .weight_size(a.weight_size)
                                        .output_dir(a.output)
                                        .out(&std::cout);
    options.trainer().num_threads(a.num_threads);
    frugal::Trials trials(options);  // checks the options before the data is read

    frugal::TrialGrid grid;
    grid.models(a.models).micro_batches(a.micro_batches).accumulates(a.accumulates).lrs(a.lrs);
    std::vector<frugal::Precision> precisions;
    for (const auto& p : a.precisions) precisions.push_back(frugal::parse_precision(p));
    grid.precisions(precisions);
    FRUGAL_CHECK(a.image_size >= 8, "--image-size must be >= 8, got ", a.image_size);
    for (const auto& name : a.models) {
      if (!is_zoo(name)) make_small_model(name);  // an unknown name fails here, before any trial
    }
    at::Tensor images, labels;
    Shape shape;
    if (a.image_folder.empty()) {
      const auto data = frugal::datasets::FashionMnist::load(a.data_dir);
      images = data.train().images;
      labels = data.train().labels;
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      std::tie(images, labels) = frugal_examples::load_image_folder(
          a.image_folder, a.image_size, a.decode_threads, &shape.classes);
      shape.channels = 3;
      shape.size = a.image_size;
      std::cout << "decoded " << images.size(0) << " images of " << shape.classes
                << " classes from " << a.image_folder << " in "
                << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
                << " s\n";
    }
    for (const auto& name : a.models) {
      trials.add_model(name, [name, shape](const frugal::TrialConfig& config) {
        return make_task(name, config.lr, shape);
      });
    }
    trials.add_grid(grid);

    const int64_t n = images.size(0);
    FRUGAL_CHECK(a.val_size >= 1 && a.val_size < n, "--val-size must be in [1, ", n - 1, "], got ",
                 a.val_size);
    // A seeded split of the training set: the last val_size samples of a permutation validate.
    at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(a.seed) + 1);
    const at::Tensor perm = torch::randperm(n, gen, torch::kLong);
    const at::Tensor train_index = perm.narrow(0, 0, n - a.val_size);
    const at::Tensor val_index = perm.narrow(0, n - a.val_size, a.val_size);
    const auto start = std::chrono::steady_clock::now();
    const frugal::TrialsReport report =
        trials.run(images.index_select(0, train_index), labels.index_select(0, train_index),
                   images.index_select(0, val_index), labels.index_select(0, val_index));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (const frugal::TrialResult* best = report.best()) {
      std::cout << "best: " << best->config.describe() << "\n";
    } else {
      std::cout << "no candidate ran within the limits; see the status column\n";
    }
    std::cout << "trials took " << std::llround(seconds) << " s\n";
    return report.best() != nullptr ? 0 : 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
