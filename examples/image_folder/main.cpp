// Train an image classifier on any folder of JPEG/PNG files with frugal's Trainer.
//
//   build/examples/image_folder/image_folder --data DIR              # DIR/train/<class>/...,
//   DIR/val/<class>/... build/examples/image_folder/image_folder --data DIR --val-fraction 0.2
//   --augment --image-size 96 build/examples/image_folder/image_folder --data DIR --print-samples
//   # what the loader sees
//
// DIR holds train/ and val/ folders of class sub-folders, or the class sub-folders themselves
// (then --val-fraction of each class, drawn with --seed, is held out for validation). Images are
// decoded by frugal's ImageLoader threads into uint8 batches and normalized (ImageNet mean/std)
// by the model's first layer, on the training device. Flags after --max-epochs are the Trainer's,
// named as in the Fashion-MNIST example.
#include <frugal/frugal.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

namespace {

namespace fs = std::filesystem;

struct Args {
  std::string model = "resnet8";
  int64_t max_epochs = 10;
  int64_t max_steps = -1;
  int64_t batch_size = 64;
  double lr = 1e-3;
  double weight_decay = 1e-4;
  int64_t seed = 42;
  std::string limit_train_batches = "1.0";
  std::string limit_val_batches = "1.0";
  int64_t fast_dev_run = 0;
  std::string precision = "32";
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
  std::string data;
  double val_fraction = 0.1;
  int64_t image_size = 64;
  bool augment = false;
  int64_t decode_threads = 0;
  bool print_samples = false;
  std::string on_bad_sample = "raise";
};

/// Counts training samples, for samples/s.
struct SampleCounter : frugal::Callback {
  int64_t samples = 0;
  void on_train_batch_end(frugal::Trainer&, frugal::Task&, const at::Tensor&,
                          const frugal::Batch& batch, int64_t) override {
    samples += batch.size();
  }
};

torch::nn::Sequential make_model(const std::string& name, int64_t classes, int64_t size) {
  torch::nn::Sequential net;
  // uint8 N x 3 x H x W in, normalized where the batch has landed (4x fewer bytes to move).
  net->push_back(torch::nn::Functional([](const at::Tensor& x) {
    return frugal::normalize_batch(x, {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225});
  }));
  if (name == "resnet8") {
    net->extend(*frugal::models::SmallResNet(classes, 3));
  } else if (name == "cnn") {
    net->extend(*frugal::models::SmallCnn(classes, 3, size));
  } else {
    throw frugal::Error("--model must be resnet8 or cnn, got \"" + name + "\"");
  }
  return net;
}

/// A seeded stratified split: of each class, round(fraction * n) samples (at least one when the
/// class has two or more) go to validation; both parts keep the folder's order.
void split(const std::vector<frugal::ImageSample>& all, double fraction, uint64_t seed,
           std::vector<frugal::ImageSample>* train, std::vector<frugal::ImageSample>* val) {
  std::map<int64_t, std::vector<size_t>> by_class;
  for (size_t i = 0; i < all.size(); ++i) by_class[all[i].label].push_back(i);
  std::vector<bool> is_val(all.size(), false);
  std::mt19937_64 gen(seed);
  for (auto& [label, members] : by_class) {
    std::shuffle(members.begin(), members.end(), gen);
    int64_t n = static_cast<int64_t>(std::llround(fraction * members.size()));
    if (n == 0 && members.size() >= 2 && fraction > 0) n = 1;
    for (int64_t k = 0; k < n; ++k) is_val[members[k]] = true;
  }
  for (size_t i = 0; i < all.size(); ++i) (is_val[i] ? val : train)->push_back(all[i]);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"Train an image classifier on a folder of images with frugal"};
  app.add_option("--data", a.data, "DIR with train/ and val/, or with the class folders")
      ->required();
  app.add_option("--val-fraction", a.val_fraction,
                 "without DIR/train: the share of each class held out for validation")
      ->capture_default_str();
  app.add_option("--image-size", a.image_size, "side of the square images the model sees")
      ->capture_default_str();
  app.add_flag("--augment", a.augment,
               "train with RandomResizedCrop + horizontal flip (else resize + centre crop)");
  app.add_option("--decode-threads", a.decode_threads, "image decode threads (0: CPUs - 1)")
      ->capture_default_str();
  app.add_option("--on-bad-sample", a.on_bad_sample, "raise or skip")->capture_default_str();
  app.add_flag("--print-samples", a.print_samples,
               "print the class table and every sample as <class index>\\t<path relative to DIR> "
               "(train, then val, unshuffled) and exit");
  app.add_option("--max-epochs", a.max_epochs)->capture_default_str();
  app.add_option("--max-steps", a.max_steps, "optimizer steps (-1: no limit)")
      ->capture_default_str();
  app.add_option("--batch-size", a.batch_size)->capture_default_str();
  app.add_option("--lr", a.lr, "AdamW learning rate (cosine-annealed per epoch)")
      ->capture_default_str();
  app.add_option("--weight-decay", a.weight_decay)->capture_default_str();
  app.add_option("--seed", a.seed)->capture_default_str();
  app.add_option("--limit-train-batches", a.limit_train_batches, "fraction (0.1) or count (100)")
      ->capture_default_str();
  app.add_option("--limit-val-batches", a.limit_val_batches)->capture_default_str();
  app.add_option("--fast-dev-run", a.fast_dev_run, "run n batches of train/val/test")
      ->capture_default_str();
  app.add_option("--precision", a.precision, "32, bf16-mixed or 16-mixed")->capture_default_str();
  app.add_option("--accumulate-grad-batches", a.accumulate_grad_batches)->capture_default_str();
  app.add_option("--gradient-clip-val", a.gradient_clip_val)->capture_default_str();
  app.add_option("--default-root-dir", a.default_root_dir)->capture_default_str();
  app.add_option("--logger", a.logger,
                 "files under DEFAULT_ROOT_DIR/frugal_logs/version_N: csv (metrics.csv, "
                 "hparams.yaml, report.html), tensorboard (event file), both or none")
      ->check(CLI::IsMember({"csv", "tensorboard", "both", "none"}))
      ->capture_default_str();
  app.add_option("--num-threads", a.num_threads, "LibTorch intra-op threads (0: all cores)")
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
    FRUGAL_CHECK(a.image_size >= 8, "--image-size must be >= 8, got ", a.image_size);
    FRUGAL_CHECK(a.val_fraction >= 0 && a.val_fraction < 1,
                 "--val-fraction must be in [0, 1), got ", a.val_fraction);
    FRUGAL_CHECK(a.on_bad_sample == "raise" || a.on_bad_sample == "skip",
                 "--on-bad-sample must be raise or skip, got \"", a.on_bad_sample, "\"");
    std::vector<std::string> classes;
    std::vector<frugal::ImageSample> train_samples, val_samples;
    if (fs::is_directory(a.data + "/train")) {
      frugal::ImageFolder train(a.data + "/train");
      FRUGAL_CHECK(fs::is_directory(a.data + "/val"), "--data ", a.data,
                   ": has train/ but no val/ folder");
      frugal::ImageFolder val(a.data + "/val");
      FRUGAL_CHECK(train.classes() == val.classes(), "--data ", a.data,
                   ": train/ and val/ have different class folders");
      classes = train.classes();
      train_samples = train.samples();
      val_samples = val.samples();
    } else {
      frugal::ImageFolder all(a.data);
      classes = all.classes();
      split(all.samples(), a.val_fraction, static_cast<uint64_t>(a.seed), &train_samples,
            &val_samples);
    }
    if (a.print_samples) {
      for (size_t c = 0; c < classes.size(); ++c)
        std::cout << "class\t" << c << "\t" << classes[c] << "\n";
      for (const auto* part : {&train_samples, &val_samples}) {
        for (const auto& s : *part) {
          std::cout << s.label << "\t" << fs::path(s.path).lexically_relative(a.data).string()
                    << "\n";
        }
      }
      return 0;
    }
    FRUGAL_CHECK(!val_samples.empty(), "--data ", a.data,
                 ": no validation samples (add val/ or raise --val-fraction)");

    if (a.num_threads > 0) torch::set_num_threads(static_cast<int>(a.num_threads));
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
            .accumulate_grad_batches(a.accumulate_grad_batches)
            .gradient_clip_val(a.gradient_clip_val)
            .default_root_dir(a.default_root_dir)
            .accelerator(a.accelerator)
            .log_every_n_steps(a.log_every_n_steps)
            .enable_progress_bar(!a.no_progress_bar);
    if (!a.max_time.empty()) options.max_time(a.max_time);
    FRUGAL_CHECK(a.batch_size >= 1, "--batch-size must be >= 1, got ", a.batch_size);

    const int64_t size = a.image_size;
    frugal::TransformPtr train_tf =
        a.augment ? frugal::compose({std::make_shared<frugal::RandomResizedCrop>(size),
                                     std::make_shared<frugal::RandomHorizontalFlip>()})
                  : frugal::compose({std::make_shared<frugal::Resize>(size),
                                     std::make_shared<frugal::CenterCrop>(size)});
    // torchvision's evaluation convention: Resize(size * 8 / 7) + CenterCrop(size) (256 -> 224).
    frugal::TransformPtr val_tf = frugal::compose({std::make_shared<frugal::Resize>(size * 8 / 7),
                                                   std::make_shared<frugal::CenterCrop>(size)});
    const auto bad =
        a.on_bad_sample == "skip" ? frugal::OnBadSample::kSkip : frugal::OnBadSample::kRaise;
    auto train_loader =
        std::make_shared<frugal::ImageLoader>(train_samples, train_tf, size, size,
                                              frugal::ImageLoaderOptions(a.batch_size)
                                                  .shuffle(true)
                                                  .seed(static_cast<uint64_t>(a.seed))
                                                  .threads(a.decode_threads)
                                                  .on_bad_sample(bad));
    auto val_loader = std::make_shared<frugal::ImageLoader>(val_samples, val_tf, size, size,
                                                            frugal::ImageLoaderOptions(a.batch_size)
                                                                .pad_shards(false)
                                                                .threads(a.decode_threads)
                                                                .on_bad_sample(bad));

    torch::manual_seed(static_cast<uint64_t>(a.seed));  // the model's initial weights
    torch::nn::Sequential net = make_model(a.model, static_cast<int64_t>(classes.size()), size);
    const int64_t epochs_for_schedule = std::max<int64_t>(1, a.max_epochs);
    frugal::Classifier task(
        net, frugal::with_scheduler(frugal::AdamW(a.lr, a.weight_decay),
                                    [epochs_for_schedule](torch::optim::Optimizer& opt) {
                                      return std::make_shared<frugal::CosineAnnealingLR>(
                                          opt, epochs_for_schedule);
                                    }));
    auto counter = std::make_shared<SampleCounter>();
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
    frugal::Trainer trainer(options, {counter, checkpoints}, loggers);
    const auto start = std::chrono::steady_clock::now();
    trainer.fit(task, train_loader, val_loader, a.ckpt_path);
    const double train_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double val_acc = trainer.metrics().get("val/acc").value_or(NAN);
    const double val_loss = trainer.metrics().get("val/loss").value_or(NAN);
    const std::string sha = frugal::params_sha256(*net);
    if (!trainer.is_global_zero()) return 0;
    std::cout << "val accuracy: " << val_acc << "  (loss " << val_loss << ", "
              << trainer.state().epoch << " epochs, " << trainer.state().global_step << " steps, "
              << train_seconds << " s, " << train_samples.size() << " train / "
              << val_samples.size() << " val images, " << classes.size() << " classes)\n";
    if (!a.metrics_json.empty()) {
      nlohmann::json j = {
          {"val_acc", val_acc},
          {"val_loss", val_loss},
          {"epochs", trainer.state().epoch},
          {"global_step", trainer.state().global_step},
          {"train_seconds", train_seconds},
          {"samples_per_second", counter->samples / std::max(train_seconds, 1e-9)},
          {"peak_rss_mb", frugal::read_memory_stats().peak_rss / 1048576.0},
          {"params_sha256", sha},
          {"stop_reason", trainer.state().stop_reason},
          {"best_model_path", checkpoints->best_model_path()},
          {"train_samples", train_samples.size()},
          {"val_samples", val_samples.size()},
          {"bad_samples", train_loader->bad_samples() + val_loader->bad_samples()},
      };
      frugal::detail::write_file_atomically(a.metrics_json, j.dump(2) + "\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
