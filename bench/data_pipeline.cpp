// The image pipeline against torchvision's (bench/data_pipeline.py, run by scripts/bench data):
// frugal's ImageLoader over an image folder with RandomResizedCrop(224) + flip (+ normalize on
// the "device", here the CPU, in the consumer pass), batch 256, 3 epochs. Prints one JSON line:
// images/s of epochs 2..E (steady state) for the loader alone and with a dummy consumer, the
// time to the first batch, peak RSS and RSS after each epoch.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <string>

#include "frugal/data/image_folder.h"
#include "frugal/data/image_loader.h"

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
  std::string data;
  int64_t batch = 256, epochs = 3, threads = 0;
  bool consumer = false;
  app.add_option("--data", data, "image folder (class sub-folders)")->required();
  app.add_option("--batch", batch, "batch size");
  app.add_option("--epochs", epochs, "epochs (the first is the warm-up)");
  app.add_option("--threads", threads, "decode threads (0: CPUs - 1)");
  app.add_flag("--consumer", consumer, "normalize each batch and reduce it (a dummy consumer)");
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(1);

  const double t0 = now();
  frugal::ImageFolder folder(data);
  frugal::ImageLoader loader(
      folder.samples(),
      frugal::compose({std::make_shared<frugal::RandomResizedCrop>(224),
                       std::make_shared<frugal::RandomHorizontalFlip>()}),
      224, 224, frugal::ImageLoaderOptions(batch).shuffle(true).seed(0).threads(threads));
  double first_batch = -1, steady_start = 0;
  int64_t steady_images = 0;
  double checksum = 0;
  std::vector<double> rss;
  for (int64_t e = 0; e < epochs; ++e) {
    if (e == 1) steady_start = now();
    loader.start_epoch(e);
    while (auto b = loader.next()) {
      if (first_batch < 0) first_batch = now() - t0;
      if (consumer) {
        at::Tensor x =
            frugal::normalize_batch(b->data, {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225});
        checksum += x.sum().item<double>();
      }
      if (e >= 1) steady_images += b->size();
    }
    rss.push_back(status_kib("VmRSS") / 1024.0);
  }
  const double steady = now() - steady_start;
  fmt::print(
      "{{\"loader\": \"frugal\", \"consumer\": {}, \"threads\": {}, \"images\": {}, "
      "\"images_per_s\": {:.1f}, \"first_batch_s\": {:.3f}, \"peak_rss_mib\": {:.1f}, "
      "\"rss_mib_per_epoch\": [{:.1f}], \"checksum\": {}}}\n",
      consumer, loader.threads(), folder.size(), steady_images / steady, first_batch,
      status_kib("VmHWM") / 1024.0, fmt::join(rss, ", "), checksum);
  return 0;
}
