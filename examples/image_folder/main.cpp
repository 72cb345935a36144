// Train an image classifier on any folder of JPEG/PNG files with frugal's Trainer.
//
//   build/examples/image_folder/image_folder --data DIR              # DIR/train/<class>/...,
//   DIR/val/<class>/... build/examples/image_folder/image_folder --data DIR --val-fraction 0.2
//   --augment --image-size 96 build/examples/image_folder/image_folder --data DIR --print-samples
//   # what the loader sees
//
// DIR holds train/ and val/ folders of class sub-folders, or the class sub-folders themselves
// (then --val-fraction of each class, drawn with --seed, is held out for validation). With
// --packed FILE (made by frugal-pack), the training images come from that cache: packed from
// DIR/train (validation then reads DIR/val), or from a folder of class sub-folders (then
// --data is not needed, and --val-fraction splits the cache's samples as it would the folder's).
// Images are
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

#include "../common/trainer_cli.h"

namespace {

namespace fs = std::filesystem;

struct Args {
  std::string model = "resnet8";
  std::string data;
  std::string packed;
  double val_fraction = 0.1;
  int64_t image_size = 64;
  bool augment = false;
  int64_t decode_threads = 0;
  bool print_samples = false;
  std::string on_bad_sample = "raise";
  frugal_examples::TrainerArgs train;
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

/// A seeded stratified split of samples with these labels: of each class, round(fraction * n)
/// samples (at least one when the class has two or more) go to validation; both parts keep the
/// given order.
void split(const std::vector<int64_t>& labels, double fraction, uint64_t seed,
           std::vector<int64_t>* train, std::vector<int64_t>* val) {
  std::map<int64_t, std::vector<size_t>> by_class;
  for (size_t i = 0; i < labels.size(); ++i) by_class[labels[i]].push_back(i);
  std::vector<bool> is_val(labels.size(), false);
  std::mt19937_64 gen(seed);
  for (auto& [label, members] : by_class) {
    std::shuffle(members.begin(), members.end(), gen);
    int64_t n = static_cast<int64_t>(std::llround(fraction * members.size()));
    if (n == 0 && members.size() >= 2 && fraction > 0) n = 1;
    for (int64_t k = 0; k < n; ++k) is_val[members[k]] = true;
  }
  for (size_t i = 0; i < labels.size(); ++i) (is_val[i] ? val : train)->push_back(int64_t(i));
}

std::vector<frugal::ImageSample> pick(const std::vector<frugal::ImageSample>& all,
                                      const std::vector<int64_t>& indices) {
  std::vector<frugal::ImageSample> out;
  for (const int64_t i : indices) out.push_back(all[static_cast<size_t>(i)]);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"Train an image classifier on a folder of images with frugal"};
  app.add_option("--data", a.data, "DIR with train/ and val/, or with the class folders");
  app.add_option("--packed", a.packed,
                 "train from this cache (frugal-pack) of DIR/train, or of a class folder");
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
  a.train.precision = "32";
  frugal_examples::add_trainer_options(app, a.train);
  CLI11_PARSE(app, argc, argv);

  try {
    FRUGAL_CHECK(a.image_size >= 8, "--image-size must be >= 8, got ", a.image_size);
    FRUGAL_CHECK(a.val_fraction >= 0 && a.val_fraction < 1,
                 "--val-fraction must be in [0, 1), got ", a.val_fraction);
    FRUGAL_CHECK(a.on_bad_sample == "raise" || a.on_bad_sample == "skip",
                 "--on-bad-sample must be raise or skip, got \"", a.on_bad_sample, "\"");
    FRUGAL_CHECK(!a.data.empty() || !a.packed.empty(), "give --data DIR or --packed FILE");
    std::vector<std::string> classes;
    std::vector<frugal::ImageSample> train_samples, val_samples;
    std::shared_ptr<const frugal::PackedFile> cache;
    std::vector<int64_t> train_subset, val_subset;  // of the cache
    const bool split_folders = !a.data.empty() && fs::is_directory(a.data + "/train");
    if (!a.packed.empty()) {
      cache = frugal::PackedFile::open(a.packed);
      classes = cache->classes();
    }
    if (split_folders) {
      FRUGAL_CHECK(fs::is_directory(a.data + "/val"), "--data ", a.data,
                   ": has train/ but no val/ folder");
      frugal::ImageFolder val(a.data + "/val");
      if (cache) {
        FRUGAL_CHECK(cache->classes() == val.classes(), "--packed ", a.packed,
                     " has other classes than ", a.data, "/val (was it packed from ", a.data,
                     "/train?)");
        train_samples = cache->samples();
      } else {
        frugal::ImageFolder train(a.data + "/train");
        FRUGAL_CHECK(train.classes() == val.classes(), "--data ", a.data,
                     ": train/ and val/ have different class folders");
        classes = train.classes();
        train_samples = train.samples();
      }
      val_samples = val.samples();
    } else {
      std::vector<frugal::ImageSample> all;
      if (cache) {
        all = cache->samples();
      } else {
        frugal::ImageFolder folder(a.data);
        classes = folder.classes();
        all = folder.samples();
      }
      std::vector<int64_t> labels;
      for (const auto& s : all) labels.push_back(s.label);
      std::vector<int64_t> train_idx, val_idx;
      split(labels, a.val_fraction, static_cast<uint64_t>(a.train.seed), &train_idx, &val_idx);
      train_samples = pick(all, train_idx);
      val_samples = pick(all, val_idx);
      if (cache) {
        train_subset = train_idx;
        val_subset = val_idx;
      }
    }
    if (a.print_samples) {
      for (size_t c = 0; c < classes.size(); ++c)
        std::cout << "class\t" << c << "\t" << classes[c] << "\n";
      for (const auto* part : {&train_samples, &val_samples}) {
        for (const auto& s : *part) {
          const bool from_folder = !cache || (part == &val_samples && split_folders);
          std::cout << s.label << "\t"
                    << (from_folder ? fs::path(s.path).lexically_relative(a.data).string() : s.path)
                    << "\n";
        }
      }
      return 0;
    }
    FRUGAL_CHECK(!train_samples.empty(), "--data ", a.data, " --packed ", a.packed,
                 ": no training samples (lower --val-fraction)");
    FRUGAL_CHECK(!val_samples.empty(), "--data ", a.data, " --packed ", a.packed,
                 ": no validation samples (add val/ or raise --val-fraction)");

    const frugal_examples::TrainerArgs& t = a.train;
    const frugal::TrainerOptions options = frugal_examples::trainer_options(t);

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
    const auto train_options = frugal::ImageLoaderOptions(a.train.batch_size)
                                   .shuffle(true)
                                   .seed(static_cast<uint64_t>(a.train.seed))
                                   .threads(a.decode_threads)
                                   .on_bad_sample(bad);
    const auto val_options = frugal::ImageLoaderOptions(a.train.batch_size)
                                 .pad_shards(false)
                                 .threads(a.decode_threads)
                                 .on_bad_sample(bad);
    auto train_loader = cache ? std::make_shared<frugal::ImageLoader>(cache, train_tf, size, size,
                                                                      train_options, train_subset)
                              : std::make_shared<frugal::ImageLoader>(train_samples, train_tf, size,
                                                                      size, train_options);
    auto val_loader =
        cache && !split_folders
            ? std::make_shared<frugal::ImageLoader>(cache, val_tf, size, size, val_options,
                                                    val_subset)
            : std::make_shared<frugal::ImageLoader>(val_samples, val_tf, size, size, val_options);

    torch::manual_seed(static_cast<uint64_t>(a.train.seed));  // the model's initial weights
    torch::nn::Sequential net = make_model(a.model, static_cast<int64_t>(classes.size()), size);
    frugal::Classifier task(net, frugal_examples::adamw_cosine(t));
    auto counter = std::make_shared<frugal_examples::SampleCounter>();
    auto checkpoints = frugal_examples::checkpoint_callback(t);
    frugal::Trainer trainer(options, {counter, checkpoints}, frugal_examples::loggers(t));
    const auto start = std::chrono::steady_clock::now();
    trainer.fit(task, train_loader, val_loader, a.train.ckpt_path);
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
    if (!a.train.metrics_json.empty()) {
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
      frugal::detail::write_file_atomically(a.train.metrics_json, j.dump(2) + "\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
