// The image pipeline against torchvision's (bench/data_pipeline.py, run by scripts/bench data):
// frugal's ImageLoader over an image folder (--data) or a packed cache (--packed, frugal-pack)
// with RandomResizedCrop(224) + flip (+ normalize on the "device", here the CPU, in the consumer
// pass), batch 256, 3 epochs. Prints one JSON line: images/s of epochs 2..E (steady state) for
// the loader alone and with a dummy consumer, the time to the first batch (from process start:
// indexing included), peak RSS and RSS after each epoch. --first-batch-only stops there.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <string>

#include "frugal/data/image_folder.h"
#include "frugal/data/image_loader.h"
#include "frugal/data/lmdb.h"
#include "frugal/data/packed.h"

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int64_t status_kib(const std::string& key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  }
  return -1;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app("frugal image pipeline benchmark");
  std::string data, packed, lmdb;
  int64_t batch = 256, epochs = 3, threads = 0;
  bool consumer = false, first_batch_only = false;
  app.add_option("--data", data, "image folder (class sub-folders)");
  app.add_option("--packed", packed, "a packed cache (frugal-pack) instead of --data");
  app.add_option("--lmdb", lmdb, "an LMDB database (frugal-pack --format lmdb) instead");
  app.add_flag("--first-batch-only", first_batch_only, "stop after the first batch");
  app.add_option("--batch", batch, "batch size");
  app.add_option("--epochs", epochs, "epochs (the first is the warm-up)");
  app.add_option("--threads", threads, "decode threads (0: CPUs - 1)");
  app.add_flag("--consumer", consumer, "normalize each batch and reduce it (a dummy consumer)");
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(1);

  if (data.empty() + packed.empty() + lmdb.empty() != 2) {
    fmt::print(stderr, "give one of --data DIR, --packed FILE, --lmdb FILE\n");
    return 2;
  }
  const double t0 = now();
  const frugal::TransformPtr transform =
      frugal::compose({std::make_shared<frugal::RandomResizedCrop>(224),
                       std::make_shared<frugal::RandomHorizontalFlip>()});
  const auto options = frugal::ImageLoaderOptions(batch).shuffle(true).seed(0).threads(threads);
  std::unique_ptr<frugal::ImageLoader> loader_ptr;
  if (!data.empty()) {
    frugal::ImageFolder folder(data);
    loader_ptr =
        std::make_unique<frugal::ImageLoader>(folder.samples(), transform, 224, 224, options);
  } else if (!lmdb.empty()) {
    loader_ptr = std::make_unique<frugal::ImageLoader>(frugal::LmdbFile::open(lmdb), transform, 224,
                                                       224, options);
  } else {
    loader_ptr = std::make_unique<frugal::ImageLoader>(frugal::PackedFile::open(packed), transform,
                                                       224, 224, options);
  }
  frugal::ImageLoader& loader = *loader_ptr;
  double first_batch = -1, steady_start = 0;
  int64_t steady_images = 0;
  double checksum = 0;
  std::vector<double> rss;
  for (int64_t e = 0; e < epochs; ++e) {
    if (e == 1) steady_start = now();
    loader.start_epoch(e);
    while (auto b = loader.next()) {
      if (first_batch < 0) first_batch = now() - t0;
      if (first_batch_only) break;
      if (consumer) {
        at::Tensor x =
            frugal::normalize_batch(b->data, {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225});
        checksum += x.sum().item<double>();
      }
      if (e >= 1) steady_images += b->size();
    }
    rss.push_back(status_kib("VmRSS") / 1024.0);
    if (first_batch_only) break;
  }
  const double steady = now() - steady_start;
  fmt::print(
      "{{\"loader\": \"{}\", \"consumer\": {}, \"threads\": {}, \"images\": {}, "
      "\"images_per_s\": {:.1f}, \"first_batch_s\": {:.3f}, \"peak_rss_mib\": {:.1f}, "
      "\"rss_anon_mib\": {:.1f}, "
      "\"rss_mib_per_epoch\": [{:.1f}], \"checksum\": {}}}\n",
      !data.empty()   ? "frugal"
      : !lmdb.empty() ? "frugal-lmdb"
                      : "frugal-packed",
      consumer, loader.threads(), loader.num_samples(),
      first_batch_only ? 0.0 : steady_images / steady, first_batch, status_kib("VmHWM") / 1024.0,
      status_kib("RssAnon") / 1024.0, fmt::join(rss, ", "), checksum);
  return 0;
}
